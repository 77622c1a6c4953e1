//! The `http-labels` and `blobstore` examples, run as real processes: their
//! `/debug/pprof` answers are decoded here and read by `go tool pprof`, the tool
//! people will point at them.
#![cfg(target_os = "linux")]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tracewire::profile::pprof;

/// A running example; killed when dropped, also when a test panics.
struct Running {
    child: Child,
    addr: SocketAddr,
}

impl Running {
    /// Starts `bin --addr 127.0.0.1:0` and reads the address it prints.
    fn start(bin: &str) -> Running {
        let mut child = Command::new(bin)
            .args(["--addr", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let mut running = Running {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("{bin} printed nothing in 30 s"));
        running.addr = line
            .trim()
            .strip_prefix("listening on http://")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("{bin} printed {line:?}, not `listening on http://ADDR`"));
        running
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn get(url: String) -> (StatusCode, Bytes) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let response = client
        .get(url.parse().unwrap())
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, body)
}

/// A file in the temp dir, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn with(name: &str, bytes: &[u8]) -> TempFile {
        let path = std::env::temp_dir().join(format!("tracewire-{}-{name}", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        TempFile(path)
    }
    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Whether `go` is installed. Under CI (`CI=true`) it must be: the test fails
/// without it; elsewhere the `go tool pprof` part is skipped with a note.
fn have_go() -> bool {
    let found = Command::new("go")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but `go` is not installed: cannot check the profile with go tool pprof"
        );
        eprintln!("go not installed: skipping the go tool pprof check");
    }
    found
}

/// Runs `go tool pprof ARGS`, asserts it succeeded, and returns its stdout.
fn go_pprof(args: &[&str]) -> String {
    let out = Command::new("go")
        .args(["tool", "pprof"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "go tool pprof {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http_labels_profile_splits_cpu_by_http_path_and_go_pprof_reads_it() {
    let started = Instant::now();
    let server = Running::start(env!("CARGO_BIN_EXE_http-labels"));

    // Two clients, each alternating /messages and /user for 4 s: both paths get
    // the same number of requests.
    let load_until = Instant::now() + Duration::from_secs(4);
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let (messages, user) = (server.url("/messages"), server.url("/user"));
            tokio::spawn(async move {
                let mut requests = 0u32;
                while Instant::now() < load_until {
                    for url in [&messages, &user] {
                        let (status, _) = get(url.clone()).await;
                        assert_eq!(status, StatusCode::OK, "{url}");
                    }
                    requests += 1;
                }
                requests
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = get(server.url("/debug/pprof/profile?seconds=3")).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let mut pairs = 0;
    for c in clients {
        pairs += c.await.unwrap();
    }
    assert!(pairs > 10, "only {pairs} request pairs in 4 s");

    let profile = pprof::decode(&body).unwrap();
    let cpu_index = profile.sample_index("cpu").expect("a cpu sample type");
    let mut by_label: BTreeMap<(String, String), i64> = BTreeMap::new();
    for s in &profile.sample {
        for (k, v) in profile.labels(s) {
            *by_label.entry((k.to_owned(), v.to_owned())).or_default() += s.value[cpu_index];
        }
    }
    let cpu = |k: &str, v: &str| {
        by_label
            .get(&(k.to_owned(), v.to_owned()))
            .copied()
            .unwrap_or(0)
    };
    let (messages, user, purge) = (
        cpu("http-path", "/messages"),
        cpu("http-path", "/user"),
        cpu("worker", "purge"),
    );
    eprintln!(
        "{pairs} request pairs; CPU ms: /messages {} /user {} purge {}",
        messages / 1_000_000,
        user / 1_000_000,
        purge / 1_000_000
    );
    assert!(messages > 0, "no /messages samples: {by_label:?}");
    assert!(user > 0, "no /user samples: {by_label:?}");
    assert!(purge > 0, "no worker=purge samples: {by_label:?}");
    let share = messages as f64 / (messages + user) as f64;
    assert!(
        share > 0.6,
        "/messages has {:.0}% of the http-path CPU",
        share * 100.0
    );

    // The heap: /user holds its cache (about 8 MiB once full), under its label.
    let (status, heap_body) = get(server.url("/debug/pprof/heap")).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&heap_body)
    );
    let heap = pprof::decode(&heap_body).unwrap();
    let inuse = heap
        .sample_index("inuse_space")
        .expect("an inuse_space sample type");
    let held = |path: &str| -> i64 {
        heap.sample
            .iter()
            .filter(|s| heap.labels(s).any(|(k, v)| k == "http-path" && v == path))
            .map(|s| s.value[inuse])
            .sum()
    };
    let (user_held, messages_held) = (held("/user"), held("/messages"));
    eprintln!("in use: /user {user_held} bytes, /messages {messages_held} bytes");
    assert!(user_held >= 2 << 20, "/user holds {user_held} bytes");
    assert!(
        messages_held < user_held / 4,
        "/messages holds {messages_held}"
    );

    let file = TempFile::with("http-labels.pb.gz", &body);
    if have_go() {
        let heap_file = TempFile::with("http-labels-heap.pb.gz", &heap_body);
        let tags = go_pprof(&["-sample_index=inuse_space", "-tags", heap_file.path()]);
        assert!(
            tags.contains("http-path") && tags.contains("/user"),
            "`go tool pprof -tags` of the heap lacks http-path /user:\n{tags}"
        );
        let tags = go_pprof(&["-tags", file.path()]);
        for want in ["http-path", "/messages", "/user", "worker", "purge"] {
            assert!(
                tags.contains(want),
                "`go tool pprof -tags` lacks {want:?}:\n{tags}"
            );
        }
        let top = go_pprof(&["-top", "-tagfocus", "http-path:/messages", file.path()]);
        assert!(!top.trim().is_empty(), "empty -top output");
        assert!(top.contains("render_messages"), "{top}");
    }
    eprintln!("http-labels test took {:.1?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobstore_open_profile_holds_the_800_open_blobs() {
    let started = Instant::now();
    let server = Running::start(env!("CARGO_BIN_EXE_blobstore"));
    let (status, body) = get(server.url("/debug/pprof/blobstore.Open")).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let profile = pprof::decode(&body).unwrap();
    let live: i64 = profile.sample.iter().map(|s| s.value[0]).sum();
    assert_eq!(live, 800);
    assert!(profile
        .sample
        .iter()
        .all(|s| profile.stack(s).iter().any(|f| f.contains("Store::open"))));

    let (status, index) = get(server.url("/debug/pprof/")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&index).contains("<td>800</td><td><a href=\"blobstore.Open\">"));

    let file = TempFile::with("blobstore.pb.gz", &body);
    if have_go() {
        let top = go_pprof(&["-top", file.path()]);
        assert!(
            top.contains("Store::open") || top.contains("blobstore"),
            "{top}"
        );
    }
    eprintln!("blobstore test took {:.1?}", started.elapsed());
}
