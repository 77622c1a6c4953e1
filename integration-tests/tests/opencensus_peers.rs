//! tracewire servers with default settings against real OpenCensus Go clients
//! (`peers/opencensus-client`, built in GOPATH mode from Debian's
//! `golang-go.opencensus-dev` and `golang-google-grpc-dev`): the server span
//! continues the Go trace, as child of the Go client span.
//!
//! - `opencensus-client http` sends B3 multiple headers (ochttp's default
//!   format) to a hyper server behind `TraceLayer::new`;
//! - `opencensus-client grpc` sends `grpc-trace-bin` (ocgrpc) to a tonic server
//!   behind `GrpcTraceLayer::new`, calling the standard health service.
//!
//! Without `go` or those packages the tests are skipped with a note, except
//! under `CI=true`, where they fail.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use integration_tests::{go_peer, peer_output};
use tower::ServiceBuilder;
use tracewire::export::InMemoryExporter;
use tracewire::trace::SpanData;
use tracewire::{SpanKind, TraceId, TracerProvider};
use tracewire_grpc::GrpcTraceLayer;
use tracewire_http::trace::TraceLayer;

fn pipeline() -> (TracerProvider, InMemoryExporter) {
    let exporter = InMemoryExporter::new();
    let provider = TracerProvider::builder()
        .with_service_name("tracewire-server")
        .with_simple_exporter(exporter.clone())
        .build();
    (provider, exporter)
}

/// The server span, once exported.
async fn server_span(exporter: &InMemoryExporter) -> SpanData {
    for _ in 0..500 {
        if let Some(s) = exporter
            .spans()
            .into_iter()
            .find(|s| s.kind == SpanKind::Server)
        {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no server span exported: {:?}", exporter.spans());
}

/// The Go peer, built once for the tests of this file; `None` to skip.
fn peer() -> Option<&'static Path> {
    static PEER: OnceLock<Option<PathBuf>> = OnceLock::new();
    PEER.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("peers");
        let packages = ["go.opencensus.io", "google.golang.org/grpc"];
        go_peer("opencensus-client", &packages, &dir)
    })
    .as_deref()
}

/// Runs the Go peer at `exe` with `-trace-id trace_id protocol target`; what it
/// printed.
async fn run_peer(
    exe: &Path,
    trace_id: TraceId,
    protocol: &'static str,
    target: String,
) -> std::collections::HashMap<String, String> {
    let owned = exe.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&owned)
            .args(["-trace-id", &trace_id.to_string(), protocol, &target])
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", owned.display()))
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        exe.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    peer_output(&out.stdout)
}

/// The server span continues the peer's trace as the child of its client span.
fn assert_continues(
    server: &SpanData,
    peer: &std::collections::HashMap<String, String>,
    trace_id: TraceId,
) {
    assert_eq!(
        peer["trace_id"],
        trace_id.to_string(),
        "the Go peer used the trace it was given"
    );
    assert_eq!(peer["sampled"], "true");
    assert_eq!(server.span_context.trace_id().to_string(), peer["trace_id"]);
    assert_eq!(
        server.parent_span_id.to_string(),
        peer["span_id"],
        "parent: the Go client span"
    );
    assert!(server.parent_is_remote);
    assert!(server.span_context.is_sampled());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_http_server_continues_an_ochttp_clients_b3_trace() {
    let Some(client) = peer() else {
        return;
    };
    let (provider, exporter) = pipeline();
    let app = ServiceBuilder::new()
        .layer(TraceLayer::new(provider.tracer("server")))
        .service(tower::service_fn(
            |_req: http::Request<hyper::body::Incoming>| async {
                Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from("ok"))))
            },
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let svc = hyper_util::service::TowerToHyperService::new(app.clone());
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });

    let trace_id = TraceId::random();
    let peer = run_peer(client, trace_id, "http", format!("http://{addr}/hello")).await;
    assert_eq!(peer["status"], "200");
    let span = server_span(&exporter).await;
    assert_eq!(span.name, "GET /hello");
    assert_continues(&span, &peer, trace_id);
    server.abort();
}

async fn serve_health(layer: GrpcTraceLayer) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let (_reporter, health) = tonic_health::server::health_reporter();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .layer(layer)
            .add_service(health)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    (addr, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_grpc_server_continues_an_ocgrpc_clients_grpc_trace_bin_trace() {
    let Some(client) = peer() else {
        return;
    };
    let (provider, exporter) = pipeline();
    let (addr, server) = serve_health(GrpcTraceLayer::new(provider.tracer("server"))).await;

    let trace_id = TraceId::random();
    let peer = run_peer(client, trace_id, "grpc", addr.to_string()).await;
    assert_eq!(peer["status"], "SERVING");
    let span = server_span(&exporter).await;
    assert_eq!(span.name, "grpc.health.v1.Health/Check");
    assert_continues(&span, &peer, trace_id);
    server.abort();
}
