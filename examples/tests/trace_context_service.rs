//! The W3C conformance service against a stand-in of the suite's harness: a hyper
//! server on loopback that records the headers of the calls it receives.

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

struct Service(Child, SocketAddr);
impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start() -> Service {
    let mut child = Command::new(env!("CARGO_BIN_EXE_trace-context-service"))
        .args(["--addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .trim_start_matches("listening on http://")
        .parse()
        .unwrap();
    Service(child, addr)
}

type Seen = Arc<Mutex<Vec<(Option<String>, Option<String>)>>>;

async fn harness(seen: Seen) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let h = |n: &str| {
                            req.headers()
                                .get(n)
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned)
                        };
                        seen.lock()
                            .unwrap()
                            .push((h("traceparent"), h("tracestate")));
                        async {
                            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from("ok"))))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

async fn post_test(
    service: SocketAddr,
    harness: SocketAddr,
    headers: &[(&str, &str)],
    calls: usize,
) {
    let body: Vec<_> = (0..calls)
        .map(|i| serde_json::json!({"url": format!("http://{harness}/{i}"), "arguments": []}))
        .collect();
    let mut req = http::Request::post(format!("http://{service}/test"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
    let resp = client
        .request(
            req.body(Full::new(Bytes::from(serde_json::to_vec(&body).unwrap())))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let _ = resp.into_body().collect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_continue_the_incoming_trace_with_a_fresh_parent_id_each() {
    let service = start();
    let seen = Seen::default();
    let addr = harness(seen.clone()).await;
    post_test(
        service.1,
        addr,
        &[
            (
                "traceparent",
                "00-12345678901234567890123456789012-1234567890123456-01",
            ),
            ("tracestate", "foo=1,bar=2"),
        ],
        3,
    )
    .await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "the service answered after every call");
    let mut parents = std::collections::HashSet::new();
    for (tp, ts) in &seen {
        let tp = tp.as_deref().expect("traceparent sent");
        let parts: Vec<&str> = tp.split('-').collect();
        assert_eq!(parts[0], "00");
        assert_eq!(parts[1], "12345678901234567890123456789012");
        assert_ne!(parts[2], "1234567890123456");
        assert_eq!(
            u8::from_str_radix(parts[3], 16).unwrap() & 1,
            1,
            "sampled kept"
        );
        parents.insert(parts[2].to_owned());
        assert_eq!(ts.as_deref(), Some("foo=1,bar=2"));
    }
    assert_eq!(parents.len(), 3, "a new parent id per call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_traceparent_restarts_the_trace_and_drops_tracestate() {
    let service = start();
    let seen = Seen::default();
    let addr = harness(seen.clone()).await;
    post_test(
        service.1,
        addr,
        &[
            (
                "traceparent",
                "00-1234567890123456789012345678901A-1234567890123456-01",
            ),
            ("tracestate", "foo=1"),
        ],
        1,
    )
    .await;
    let seen = seen.lock().unwrap().clone();
    let tp = seen[0].0.as_deref().unwrap();
    assert!(!tp.contains("1234567890123456789012345678901"));
    assert_eq!(seen[0].1, None);
}
