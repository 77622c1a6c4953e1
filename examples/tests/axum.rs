//! The `axum` example run as a real process: one `/users/7` request gives one
//! trace of three spans (the axum route, the reqwest call it makes, the route
//! that answers it), a 404 is named by its method alone, and `/debug/pprof`
//! answers without being traced.
#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value as Json;

/// The example, killed when dropped (also when a test panics), and its
/// standard output line by line.
struct Running {
    child: Child,
    addr: SocketAddr,
    lines: mpsc::Receiver<String>,
}

impl Running {
    fn start() -> Running {
        let mut child = Command::new(env!("CARGO_BIN_EXE_axum"))
            .args(["--addr", "127.0.0.1:0"])
            // JSON lines on stdout, exported soon after each span ends.
            .env_remove("OTEL_TRACES_EXPORTER")
            .env_remove("OTEL_SDK_DISABLED")
            .env("OTEL_BSP_SCHEDULE_DELAY", "20")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cannot start the axum example");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut running = Running {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            lines,
        };
        let first = running
            .lines
            .recv_timeout(Duration::from_secs(30))
            .expect("the example printed nothing in 30 s");
        running.addr = first
            .strip_prefix("listening on http://")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("printed {first:?}, not `listening on http://ADDR`"));
        running
    }

    /// The spans printed so far and within `patience` until `done` holds.
    fn spans_until(&self, patience: Duration, done: impl Fn(&[Json]) -> bool) -> Vec<Json> {
        let deadline = Instant::now() + patience;
        let mut spans = Vec::new();
        while !done(&spans) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => spans.push(
                    serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("not a JSON span line: {line:?}: {e}")),
                ),
                Err(_) => break,
            }
        }
        spans
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn get(addr: SocketAddr, path: &str) -> (StatusCode, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let response = client
        .get(format!("http://{addr}{path}").parse().unwrap())
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn named<'a>(spans: &'a [Json], name: &str, kind: &str) -> Option<&'a Json> {
    spans
        .iter()
        .find(|s| s["name"] == name && s["kind"] == kind)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_one_trace_through_axum_and_reqwest() {
    let running = Running::start();
    // First, so a span of it would have been printed by the time the others are.
    let (status, index) = get(running.addr, "/debug/pprof/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(index.contains("profile"), "the pprof index: {index:.200}");
    let (status, body) = get(running.addr, "/users/7").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.starts_with("user 7 ") && body.ends_with(": profile 7\n"),
        "{body:?}"
    );
    let (status, _) = get(running.addr, "/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let spans = running.spans_until(Duration::from_secs(20), |spans| {
        named(spans, "GET /users/{id}", "server").is_some()
            && named(spans, "GET /profiles/{id}", "server").is_some()
            && named(spans, "GET", "client").is_some()
            && named(spans, "GET", "server").is_some()
    });
    let user = named(&spans, "GET /users/{id}", "server").expect("the /users/{id} span");
    let call = named(&spans, "GET", "client").expect("the reqwest span");
    let profile = named(&spans, "GET /profiles/{id}", "server").expect("the /profiles span");
    let unmatched = named(&spans, "GET", "server").expect("the 404's span");

    assert_eq!(user["attributes"]["http.route"], "/users/{id}");
    assert_eq!(user["attributes"]["client.address"], "127.0.0.1");
    assert_eq!(
        user.get("parentSpanId"),
        None,
        "the request starts the trace"
    );
    assert_eq!(call["traceId"], user["traceId"]);
    assert_eq!(call["parentSpanId"], user["spanId"]);
    assert_eq!(
        call["attributes"]["url.full"],
        format!("http://{}/profiles/7", running.addr)
    );
    assert_eq!(profile["traceId"], user["traceId"]);
    assert_eq!(profile["parentSpanId"], call["spanId"]);
    assert_eq!(unmatched["attributes"]["url.path"], "/nope");
    assert_eq!(unmatched["attributes"].get("http.route"), None);
    assert!(
        spans.iter().all(|s| !s["attributes"]["url.path"]
            .as_str()
            .unwrap_or("")
            .starts_with("/debug")),
        "/debug/pprof is mounted after the layer: not traced"
    );
}
