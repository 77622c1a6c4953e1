//! Helpers for the end-to-end tests: the example binaries as child processes, a
//! Zipkin-compatible collector, `go tool pprof`, and the OpenCensus Go peers in
//! `peers/` built with `go build`.

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// The path of the example binary `name`, built (once) with the profile of the
/// running test.
pub fn example_bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        // target/<profile>/deps/<test> -> target/<profile>
        let exe = std::env::current_exe().expect("test executable path");
        let dir = exe
            .parent()
            .and_then(|d| d.parent())
            .expect("target/<profile>")
            .to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-q", "-p", "examples", "--bins"]);
        if dir.ends_with("release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "cargo build -p examples --bins failed");
        dir
    });
    dir.join(name)
}

/// A child process killed (SIGKILL) when dropped, unless it already exited.
#[derive(Debug)]
pub struct Proc {
    /// The process.
    pub child: Child,
    /// Its standard output, read line by line.
    pub stdout: BufReader<ChildStdout>,
    /// The example's name, for messages.
    pub name: String,
}

impl Proc {
    /// Starts example `name` with `args`; stdout is captured, stderr inherited.
    pub fn start(name: &str, args: &[&str]) -> Proc {
        Proc::start_with_env(name, args, &[])
    }

    /// Like [`start`](Proc::start), with the variables `env` set for the child
    /// (besides the inherited environment).
    pub fn start_with_env(name: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut child = Command::new(example_bin(name))
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        Proc {
            child,
            stdout,
            name: name.to_owned(),
        }
    }

    /// Reads stdout until a line contains `needle`; returns that line.
    pub fn wait_for_line(&mut self, needle: &str) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.stdout.read_line(&mut line).expect("read stdout");
            assert!(n > 0, "{} exited before printing {needle:?}", self.name);
            if line.contains(needle) {
                return line.trim_end().to_owned();
            }
        }
    }

    /// The address printed as `... http://ADDR` on the first line containing
    /// `needle`.
    pub fn wait_for_addr(&mut self, needle: &str) -> SocketAddr {
        let line = self.wait_for_line(needle);
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in {line:?}"));
        url.trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .unwrap_or_else(|e| panic!("bad address in {line:?}: {e}"))
    }

    /// Sends `signal` (e.g. "TERM", "INT") and waits for a clean exit.
    pub fn stop(mut self, signal: &str) {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{signal} {pid}");
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "{} exited with {status}", self.name);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Zipkin-compatible collector on loopback: stores every JSON span POSTed to it.
#[derive(Clone, Debug, Default)]
pub struct Zipkin {
    spans: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Zipkin {
    /// Starts it on a free loopback port; returns its `/api/v2/spans` URL.
    pub async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let spans = self.spans.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let spans = spans.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let spans = spans.clone();
                            async move {
                                let body = req
                                    .into_body()
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                let status =
                                    match serde_json::from_slice::<serde_json::Value>(&body) {
                                        Ok(serde_json::Value::Array(list)) => {
                                            spans.lock().expect("lock").extend(list);
                                            202
                                        }
                                        _ => 400,
                                    };
                                Ok::<_, Infallible>(
                                    http::Response::builder()
                                        .status(status)
                                        .body(Full::new(Bytes::new()))
                                        .expect("response"),
                                )
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        format!("http://{addr}/api/v2/spans")
    }

    /// The spans received so far.
    pub fn spans(&self) -> Vec<serde_json::Value> {
        self.spans.lock().expect("lock").clone()
    }
}

/// GETs `url`, returning status and body.
pub async fn get(url: &str) -> (u16, Bytes) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let uri: http::Uri = url.parse().expect("uri");
    let r = client.get(uri).await.expect("request");
    let status = r.status().as_u16();
    (
        status,
        r.into_body().collect().await.expect("body").to_bytes(),
    )
}

/// Whether `missing` is false; if it is true, fails the test under `CI=true`
/// (where everything the tests need is installed), and otherwise notes that
/// `skipped` is skipped.
/// Whether a tool the test needs is installed: `false` (with a note naming what
/// is `skipped`) when `missing`, except under `CI=true`, where that fails the test.
pub fn available(missing: bool, what: &str, skipped: &str) -> bool {
    if missing {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but {what} is not installed"
        );
        eprintln!("{what} not installed: skipping {skipped}");
    }
    !missing
}

fn go_runs() -> bool {
    Command::new("go")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `go` with `args`; `None` (with a note) if go is missing, except under
/// `CI=true`, where a missing go fails the test.
pub fn go(args: &[&str]) -> Option<String> {
    if !available(!go_runs(), "`go`", "the go tool pprof part") {
        return None;
    }
    let out = Command::new("go").args(args).output().expect("run go");
    assert!(
        out.status.success(),
        "go {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Where Debian's `golang-*-dev` packages install Go sources, as a GOPATH
/// (`golang-go.opencensus-dev`: `go.opencensus.io`; `golang-google-grpc-dev`:
/// `google.golang.org/grpc`).
pub const DEBIAN_GOPATH: &str = "/usr/share/gocode";

/// Builds the Go program in `integration-tests/peers/<name>` with `go build` in
/// GOPATH mode (`GO111MODULE=off`, `GOPATH=`[`DEBIAN_GOPATH`], so offline) into
/// `dir`, and returns the executable's path.
///
/// `None` (with a note) if `go` or one of the `packages` it imports (GOPATH
/// import paths, e.g. `go.opencensus.io`) is not installed, except under
/// `CI=true`, where that fails the test. A build that fails otherwise fails the
/// test.
pub fn go_peer(name: &str, packages: &[&str], dir: &Path) -> Option<PathBuf> {
    let skipped = format!("the {name} peer test");
    if !available(!go_runs(), "`go`", &skipped) {
        return None;
    }
    for package in packages {
        let source = Path::new(DEBIAN_GOPATH).join("src").join(package);
        let what = format!("the Go package {package} ({})", source.display());
        if !available(!source.is_dir(), &what, &skipped) {
            return None;
        }
    }
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("peers")
        .join(name);
    std::fs::create_dir_all(dir).expect("create the peer build directory");
    let exe = dir.join(name);
    let out = Command::new("go")
        .args(["build", "-o"])
        .arg(&exe)
        .arg(".")
        .current_dir(&source)
        .env("GO111MODULE", "off")
        .env("GOPATH", DEBIAN_GOPATH)
        .env("GOFLAGS", "")
        .env("GOCACHE", dir.join("go-build-cache"))
        .output()
        .expect("run go build");
    assert!(
        out.status.success(),
        "go build {}: {}",
        source.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(exe)
}

/// What a Go peer printed: `key=value` pairs on its one line of output.
pub fn peer_output(stdout: &[u8]) -> std::collections::HashMap<String, String> {
    String::from_utf8_lossy(stdout)
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}
