//! `helloworld-server` and `helloworld-client` run as real processes: one client
//! run against the server gives one trace of four spans (client root, client call,
//! server call, server child), whichever exporter the flags choose. The collectors
//! are stand-ins started here on loopback.
#![cfg(unix)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value as Json;
use tonic::transport::server::TcpIncoming;
use tracewire_stackdriver::proto::v2::trace_service_server::{TraceService, TraceServiceServer};
use tracewire_stackdriver::proto::v2::{attribute_value, span, BatchWriteSpansRequest, Span};

const SERVER: &str = env!("CARGO_BIN_EXE_helloworld-server");
const CLIENT: &str = env!("CARGO_BIN_EXE_helloworld-client");
/// The RPC span name (OpenTelemetry: `package.Service/Method`).
const METHOD: &str = "helloworld.Greeter/SayHello";
/// The longest any process step may take.
const PATIENCE: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// Processes.

/// A child process, killed when dropped (also when a test panics).
struct Guard(Child);

impl Guard {
    fn spawn(bin: &str, args: &[&str]) -> Guard {
        let child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        Guard(child)
    }

    /// Waits for the process to exit, at most [`PATIENCE`].
    fn wait(&mut self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "process {} still running after {PATIENCE:?}",
                self.0.id()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `helloworld-server`, its address, and the rest of its stdout.
struct Server {
    process: Guard,
    addr: SocketAddr,
    stdout: JoinHandle<Vec<String>>,
}

impl Server {
    /// Starts the server on a free port with `flags` and reads the address it
    /// prints first.
    fn start(flags: &[&str]) -> Server {
        let mut args = vec!["--addr", "127.0.0.1:0"];
        args.extend_from_slice(flags);
        let mut process = Guard::spawn(SERVER, &args);
        let stdout = process.0.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let stdout = std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next().and_then(Result::ok).unwrap_or_default();
            let _ = tx.send(first);
            lines.map_while(Result::ok).collect()
        });
        let line = rx
            .recv_timeout(PATIENCE)
            .expect("helloworld-server printed nothing");
        let addr = line
            .strip_prefix("listening on http://")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("first line {line:?} is not `listening on http://ADDR`"));
        Server {
            process,
            addr,
            stdout,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sends SIGTERM, asserts a clean exit, and returns what it printed after
    /// the `listening on` line.
    fn terminate(mut self) -> Vec<String> {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.process.0.id().to_string())
            .status()
            .expect("cannot run kill");
        assert!(status.success(), "kill -TERM failed");
        let status = self.process.wait();
        assert!(status.success(), "helloworld-server exited with {status}");
        self.stdout.join().unwrap()
    }
}

/// Runs `helloworld-client` against `server` with `flags`; asserts it succeeded
/// and returns its stdout.
fn run_client(server: &Server, flags: &[&str]) -> String {
    let url = server.url();
    let mut args = vec!["--addr", &url, "--name", "world"];
    args.extend_from_slice(flags);
    let mut client = Guard::spawn(CLIENT, &args);
    let mut stdout = client.0.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let status = client.wait();
    assert!(status.success(), "helloworld-client exited with {status}");
    reader.join().unwrap()
}

/// Polls `f` until it returns `Some`, at most [`PATIENCE`].
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A runtime for the stand-in collectors; the test thread drives processes.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------
// A Zipkin-compatible collector: keeps the JSON spans POSTed to it.

#[derive(Clone, Default)]
struct Zipkin {
    spans: Arc<Mutex<Vec<Json>>>,
}

impl Zipkin {
    /// Listens on a free loopback port; returns the `/api/v2/spans` URL.
    fn start(&self, rt: &tokio::runtime::Runtime) -> String {
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let this = self.clone();
        rt.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let this = this.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let this = this.clone();
                        async move {
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let spans: Vec<Json> = serde_json::from_slice(&body).unwrap();
                            this.spans.lock().unwrap().extend(spans);
                            Ok::<_, Infallible>(
                                hyper::Response::builder()
                                    .status(202)
                                    .body(Full::new(Bytes::new()))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        format!("http://{addr}/api/v2/spans")
    }

    fn spans(&self) -> Vec<Json> {
        self.spans.lock().unwrap().clone()
    }
}

/// The one span of `service` named `name`.
fn zipkin_span<'a>(spans: &'a [Json], service: &str, name: &str) -> &'a Json {
    let found: Vec<&Json> = spans
        .iter()
        .filter(|s| s["localEndpoint"]["serviceName"] == service && s["name"] == name)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "spans of {service} named {name}: {spans:#?}"
    );
    found[0]
}

#[test]
fn client_and_server_send_one_trace_to_zipkin() {
    let rt = runtime();
    let zipkin = Zipkin::default();
    let url = zipkin.start(&rt);
    let server = Server::start(&["--zipkin", &url]);
    let stdout = run_client(&server, &["--zipkin", &url]);
    assert_eq!(
        stdout, "",
        "with an exporter flag the client prints no spans"
    );
    // The client flushed before exiting: its two spans are in already.
    let from_client = zipkin
        .spans()
        .into_iter()
        .filter(|s| s["localEndpoint"]["serviceName"] == "helloworld-client")
        .count();
    assert_eq!(from_client, 2, "{:#?}", zipkin.spans());
    server.terminate();
    // The server exported its spans on the way out.
    let spans = eventually("the server's spans", || {
        let spans = zipkin.spans();
        (spans.len() >= 4).then_some(spans)
    });
    assert_eq!(spans.len(), 4, "{spans:#?}");

    let root = zipkin_span(&spans, "helloworld-client", "helloworld-client");
    let call = zipkin_span(&spans, "helloworld-client", METHOD);
    let served = zipkin_span(&spans, "helloworld-server", METHOD);
    let child = zipkin_span(&spans, "helloworld-server", "compose greeting");
    for s in &spans {
        assert_eq!(s["traceId"], root["traceId"], "one trace: {spans:#?}");
    }
    assert!(root.get("parentId").is_none());
    assert_eq!(call["parentId"], root["id"]);
    assert_eq!(served["parentId"], call["id"]);
    assert_eq!(child["parentId"], served["id"]);
    assert!(root.get("kind").is_none(), "the root is internal");
    assert_eq!(call["kind"], "CLIENT");
    assert_eq!(served["kind"], "SERVER");
    assert_eq!(served["tags"]["rpc.grpc.status_code"], "0");
    assert_eq!(child["tags"]["greeting.message"], "Hello world!");
    assert!(spans.iter().all(|s| s["tags"].get("error").is_none()));
}

// ---------------------------------------------------------------------------
// A Cloud Trace stand-in: keeps the spans of every BatchWriteSpans request.

#[derive(Clone, Default)]
struct CloudTrace {
    requests: Arc<Mutex<Vec<BatchWriteSpansRequest>>>,
}

#[tonic::async_trait]
impl TraceService for CloudTrace {
    async fn batch_write_spans(
        &self,
        request: tonic::Request<BatchWriteSpansRequest>,
    ) -> Result<tonic::Response<()>, tonic::Status> {
        self.requests.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(()))
    }

    async fn create_span(
        &self,
        _request: tonic::Request<Span>,
    ) -> Result<tonic::Response<Span>, tonic::Status> {
        Err(tonic::Status::unimplemented("not used by the exporter"))
    }
}

impl CloudTrace {
    /// Serves on a free loopback port; returns its URL.
    fn start(&self, rt: &tokio::runtime::Runtime) -> String {
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let service = TraceServiceServer::new(self.clone());
        rt.spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpIncoming::from(listener))
                .await;
        });
        format!("http://{addr}")
    }

    fn spans(&self) -> Vec<Span> {
        let requests = self.requests.lock().unwrap();
        for r in requests.iter() {
            assert_eq!(r.name, "projects/test-project");
        }
        requests.iter().flat_map(|r| r.spans.clone()).collect()
    }
}

fn service_name(s: &Span) -> &str {
    let value = s
        .attributes
        .as_ref()
        .and_then(|a| a.attribute_map.get("service.name"))
        .and_then(|v| v.value.as_ref());
    match value {
        Some(attribute_value::Value::StringValue(t)) => &t.value,
        _ => "",
    }
}

fn cloud_span<'a>(spans: &'a [Span], service: &str, name: &str) -> &'a Span {
    let found: Vec<&Span> = spans
        .iter()
        .filter(|s| {
            service_name(s) == service && s.display_name.as_ref().is_some_and(|d| d.value == name)
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "spans of {service} named {name}: {spans:#?}"
    );
    found[0]
}

/// `projects/test-project/traces/{trace}/spans/{span}` split into its ids.
fn trace_and_span(s: &Span) -> (&str, &str) {
    let rest = s
        .name
        .strip_prefix("projects/test-project/traces/")
        .unwrap_or_else(|| panic!("span name {:?}", s.name));
    let (trace, span) = rest.split_once("/spans/").unwrap();
    assert_eq!(trace.len(), 32, "{}", s.name);
    assert_eq!(span, s.span_id);
    (trace, span)
}

#[test]
fn client_and_server_send_one_trace_to_cloud_trace() {
    let rt = runtime();
    let collector = CloudTrace::default();
    let url = collector.start(&rt);
    let flags = [
        "--stackdriver-project",
        "test-project",
        "--stackdriver-endpoint",
        &url,
    ];
    let server = Server::start(&flags);
    run_client(&server, &flags);
    server.terminate();
    let spans = eventually("four spans", || {
        let spans = collector.spans();
        (spans.len() >= 4).then_some(spans)
    });
    assert_eq!(spans.len(), 4, "{spans:#?}");

    let root = cloud_span(&spans, "helloworld-client", "helloworld-client");
    let call = cloud_span(&spans, "helloworld-client", METHOD);
    let served = cloud_span(&spans, "helloworld-server", METHOD);
    let child = cloud_span(&spans, "helloworld-server", "compose greeting");
    let (trace, _) = trace_and_span(root);
    for s in &spans {
        assert_eq!(trace_and_span(s).0, trace, "one trace: {spans:#?}");
    }
    assert_eq!(root.parent_span_id, "");
    assert_eq!(call.parent_span_id, root.span_id);
    assert_eq!(served.parent_span_id, call.span_id);
    assert_eq!(child.parent_span_id, served.span_id);
    assert_eq!(root.span_kind, span::SpanKind::Internal as i32);
    assert_eq!(call.span_kind, span::SpanKind::Client as i32);
    assert_eq!(served.span_kind, span::SpanKind::Server as i32);
    // Across processes the parent is remote; within one it is not.
    assert_eq!(served.same_process_as_parent_span, Some(false));
    assert_eq!(child.same_process_as_parent_span, Some(true));
}

// ---------------------------------------------------------------------------
// No exporter flag: JSON lines on stdout.

fn json_lines(out: &[String]) -> BTreeMap<(String, String), Json> {
    out.iter()
        .map(|line| {
            let span: Json = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line: {line:?}: {e}"));
            let key = (
                span["service"].as_str().unwrap().to_owned(),
                span["name"].as_str().unwrap().to_owned(),
            );
            (key, span)
        })
        .collect()
}

#[test]
fn without_exporter_flags_spans_are_json_lines_on_stdout() {
    let server = Server::start(&[]);
    let client_out = run_client(&server, &[]);
    let server_out = server.terminate();

    let client_lines: Vec<String> = client_out.lines().map(str::to_owned).collect();
    assert_eq!(client_lines.len(), 2, "{client_out}");
    assert_eq!(server_out.len(), 2, "{server_out:#?}");
    let spans = json_lines(&[client_lines, server_out].concat());
    let get = |service: &str, name: &str| &spans[&(service.to_owned(), name.to_owned())];
    let root = get("helloworld-client", "helloworld-client");
    let call = get("helloworld-client", METHOD);
    let served = get("helloworld-server", METHOD);
    let child = get("helloworld-server", "compose greeting");
    for s in [root, call, served, child] {
        assert_eq!(s["traceId"], root["traceId"]);
    }
    assert!(root.get("parentSpanId").is_none());
    assert_eq!(call["parentSpanId"], root["spanId"]);
    assert_eq!(served["parentSpanId"], call["spanId"]);
    assert_eq!(child["parentSpanId"], served["spanId"]);
    assert_eq!(call["kind"], "client");
    assert_eq!(served["kind"], "server");
}
