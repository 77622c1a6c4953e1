//! The gRPC layers on a real tonic server and client on loopback, serving the
//! standard health service.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Server};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::ServingStatus;
use tower::ServiceBuilder;
use tracewire::export::InMemoryExporter;
use tracewire::propagation::{baggage, TrustPolicy};
use tracewire::trace::SpanData;
use tracewire::{labels, Context, ContextExt, SpanKind, Status, TracerProvider, Value};
use tracewire_grpc::{
    Failure, GrpcClientLayer, GrpcTraceLayer, MakeSpan, NewSpan, OnFailure, OnRequest, OnResponse,
    TraceInterceptor,
};

/// Records the labels current when the inner service is called (inside the layer).
#[derive(Clone, Default)]
struct SeenLabels(Arc<Mutex<Vec<String>>>);

/// What the service wrapped by the layer saw and did.
#[derive(Clone, Default)]
struct Seen {
    /// The `grpc-method` label current when it was called.
    labels: SeenLabels,
    /// The baggage entry `k` current when it was called (`-` if none).
    baggage: Arc<Mutex<Vec<String>>>,
    /// Set when a background task asked for with `x-spawn-ms` has finished.
    background_done: Arc<AtomicBool>,
}

/// Wraps the health service, inside the trace layer, like a handler would:
/// records what it sees, and on request (metadata `x-spawn-ms`, `x-delay-ms`)
/// spawns a background task carrying the call's context, or answers late.
#[derive(Clone)]
struct Scripted<S> {
    inner: S,
    seen: Seen,
}

fn metadata_ms<B>(req: &http::Request<B>, name: &str) -> Option<Duration> {
    let ms = req.headers().get(name)?.to_str().ok()?.parse().ok()?;
    Some(Duration::from_millis(ms))
}

impl<S> tower::Service<http::Request<tonic::body::Body>> for Scripted<S>
where
    S: tower::Service<http::Request<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let label = labels::current()
            .get("grpc-method")
            .unwrap_or("-")
            .to_owned();
        self.seen.labels.0.lock().unwrap().push(label);
        let k = baggage::current().get("k").unwrap_or("-").to_owned();
        self.seen.baggage.lock().unwrap().push(k);
        if let Some(d) = metadata_ms(&req, "x-spawn-ms") {
            let done = self.seen.background_done.clone();
            tracewire::spawn(async move {
                tokio::time::sleep(d).await;
                done.store(true, Ordering::SeqCst);
            });
        }
        let delay = metadata_ms(&req, "x-delay-ms");
        let fut = self.inner.call(req);
        Box::pin(async move {
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            fut.await
        })
    }
}

async fn serve(provider: &TracerProvider, seen: SeenLabels) -> SocketAddr {
    let seen = Seen {
        labels: seen,
        ..Seen::default()
    };
    serve_scripted(GrpcTraceLayer::new(provider.tracer("server")), seen).await
}

async fn serve_scripted<M, Req, Res, Fail>(
    layer: GrpcTraceLayer<M, Req, Res, Fail>,
    seen: Seen,
) -> SocketAddr
where
    M: MakeSpan + Clone + Send + Sync + 'static,
    Req: OnRequest + Clone + Send + Sync + 'static,
    Res: OnResponse + Clone + Send + Sync + 'static,
    Fail: OnFailure + Clone + Send + Sync + 'static,
{
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("backend", ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let layer = ServiceBuilder::new()
        .layer(layer)
        .layer_fn(move |inner| Scripted {
            inner,
            seen: seen.clone(),
        })
        .into_inner();
    tokio::spawn(async move {
        // Keep the reporter alive so watch streams stay open.
        let _reporter = reporter;
        Server::builder()
            .layer(layer)
            .add_service(health)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    addr
}

fn pipeline() -> (TracerProvider, InMemoryExporter) {
    let exporter = InMemoryExporter::new();
    let provider = TracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    (provider, exporter)
}

async fn spans(exporter: &InMemoryExporter, n: usize) -> Vec<SpanData> {
    for _ in 0..300 {
        if exporter.len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    exporter.spans()
}

fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_call_makes_one_trace_with_rpc_attributes_and_the_grpc_method_label() {
    let (p, exporter) = pipeline();
    let seen = SeenLabels::default();
    let addr = serve(&p, seen.clone()).await;
    let svc = ServiceBuilder::new()
        .layer(GrpcClientLayer::new(p.tracer("client")))
        .service(channel(addr));
    let mut client = HealthClient::new(svc);
    let reply = client
        .check(HealthCheckRequest {
            service: "backend".into(),
        })
        .await
        .unwrap();
    assert_eq!(reply.into_inner().status, 1);
    let spans = spans(&exporter, 2).await;
    let server = spans.iter().find(|s| s.kind == SpanKind::Server).unwrap();
    let client = spans.iter().find(|s| s.kind == SpanKind::Client).unwrap();
    // OpenTelemetry RPC conventions: `package.Service/Method`, no leading `/`.
    assert_eq!(server.name, "grpc.health.v1.Health/Check");
    assert_eq!(client.name, "grpc.health.v1.Health/Check");
    assert_eq!(
        server.span_context.trace_id(),
        client.span_context.trace_id()
    );
    assert_eq!(server.parent_span_id, client.span_context.span_id());
    assert_eq!(server.attribute("rpc.system"), Some(&Value::from("grpc")));
    assert_eq!(
        server.attribute("rpc.service"),
        Some(&Value::from("grpc.health.v1.Health"))
    );
    assert_eq!(server.attribute("rpc.method"), Some(&Value::from("Check")));
    assert_eq!(
        server.attribute("rpc.grpc.status_code"),
        Some(&Value::I64(0))
    );
    assert!(!server.status.is_error());
    assert_eq!(
        seen.0.lock().unwrap().as_slice(),
        ["/grpc.health.v1.Health/Check"],
        "the service ran with the grpc-method label (the request path, as before)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_spans_record_the_callers_address_from_tonics_connect_info() {
    let (p, exporter) = pipeline();
    let addr = serve(&p, SeenLabels::default()).await;
    HealthClient::new(channel(addr))
        .check(HealthCheckRequest {
            service: "backend".into(),
        })
        .await
        .unwrap();
    let spans = spans(&exporter, 1).await;
    let server = spans.iter().find(|s| s.kind == SpanKind::Server).unwrap();
    // The caller is this process, on an ephemeral port of its own.
    for key in ["client.address", "network.peer.address"] {
        assert_eq!(
            server.attribute(key),
            Some(&Value::from("127.0.0.1")),
            "{key}"
        );
    }
    let port = match server.attribute("client.port") {
        Some(Value::I64(port)) => *port,
        other => panic!("client.port: {other:?}"),
    };
    assert!(port > 0 && port != i64::from(addr.port()), "{port}");
    assert_eq!(
        server.attribute("network.peer.port"),
        Some(&Value::I64(port))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_add_attributes_and_hear_failures_and_a_panicking_hook_fails_no_call() {
    let (p, exporter) = pipeline();
    let server = GrpcTraceLayer::new(p.tracer("server"))
        .make_span_with(|req: &http::request::Parts, span: &mut NewSpan| {
            let tenant = req.headers.get("x-tenant").and_then(|v| v.to_str().ok());
            span.set_attribute("tenant", tenant.unwrap_or("-").to_owned());
        })
        .on_request(|_: &http::request::Parts, _: &tracewire::Span| {
            panic!("on_request hook failed");
        });
    let addr = serve_scripted(server, Seen::default()).await;
    let failures = Arc::new(Mutex::new(Vec::new()));
    let heard = failures.clone();
    let client = ServiceBuilder::new()
        .layer(
            GrpcClientLayer::new(p.tracer("client"))
                .on_response(|res: &http::response::Parts, span: &tracewire::Span| {
                    let grpc = res.headers.get("content-type").map(|v| v.as_bytes());
                    span.set_attribute("grpc-content-type", grpc == Some(b"application/grpc"));
                })
                .on_failure(move |failure: Failure<'_>, _: &tracewire::Span| {
                    heard.lock().unwrap().push(match failure {
                        Failure::GrpcStatus { code, .. } => code,
                        _ => -1,
                    });
                }),
        )
        .service(channel(addr));
    let mut client = HealthClient::new(client);
    let status = client
        .check(check(&[("x-tenant", "acme")]))
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, 1, "served despite the panicking on_request hook");
    let mut unknown = check(&[]);
    unknown.get_mut().service = "nope".into();
    let err = client.check(unknown).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    let spans = spans(&exporter, 4).await;
    let servers: Vec<_> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Server)
        .collect();
    assert_eq!(servers.len(), 2);
    for s in &servers {
        let panicked = s.events.iter().any(|e| e.name == "hook panicked");
        assert!(panicked, "the panic is an event on {}", s.name);
        assert!(
            !s.status.is_error(),
            "a hook's panic is not the call's error"
        );
    }
    assert_eq!(servers[0].attribute("tenant"), Some(&Value::from("acme")));
    for c in spans.iter().filter(|s| s.kind == SpanKind::Client) {
        assert_eq!(
            c.attribute("grpc-content-type"),
            Some(&Value::Bool(true)),
            "{}",
            c.name
        );
    }
    assert_eq!(
        failures.lock().unwrap().as_slice(),
        [5],
        "the client heard NOT_FOUND, once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_is_an_error_for_the_client_only() {
    let (p, exporter) = pipeline();
    let addr = serve(&p, SeenLabels::default()).await;
    let svc = ServiceBuilder::new()
        .layer(GrpcClientLayer::new(p.tracer("client")))
        .service(channel(addr));
    let status = HealthClient::new(svc)
        .check(HealthCheckRequest {
            service: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    let spans = spans(&exporter, 2).await;
    let server = spans.iter().find(|s| s.kind == SpanKind::Server).unwrap();
    let client = spans.iter().find(|s| s.kind == SpanKind::Client).unwrap();
    assert_eq!(
        server.attribute("rpc.grpc.status_code"),
        Some(&Value::I64(5))
    );
    assert!(!server.status.is_error(), "NOT_FOUND is not a server error");
    assert!(client.status.is_error());
}

/// An HTTP/2 server that is not a gRPC server (a proxy in front of one, say):
/// every request gets `status` with `headers`, and an empty body.
async fn serve_h2_reply(
    status: u16,
    headers: &'static [(&'static str, &'static str)],
) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = hyper::service::service_fn(move |_req| async move {
                let mut response = http::Response::builder().status(status);
                for (k, v) in headers {
                    response = response.header(*k, *v);
                }
                Ok::<_, std::convert::Infallible>(
                    response
                        .body(http_body_util::Empty::<bytes::Bytes>::new())
                        .unwrap(),
                )
            });
            tokio::spawn(async move {
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
            });
        }
    });
    addr
}

/// The client span of one health check against `addr`.
async fn client_span_of_a_call(addr: SocketAddr) -> (tonic::Status, SpanData) {
    let (p, exporter) = pipeline();
    let svc = ServiceBuilder::new()
        .layer(GrpcClientLayer::new(p.tracer("client")))
        .service(channel(addr));
    let status = HealthClient::new(svc)
        .check(HealthCheckRequest {
            service: "backend".into(),
        })
        .await
        .unwrap_err();
    let spans = spans(&exporter, 1).await;
    let client = spans
        .into_iter()
        .find(|s| s.kind == SpanKind::Client)
        .unwrap();
    (status, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_message_is_percent_decoded_in_the_span_status() {
    let addr = serve_h2_reply(
        200,
        &[
            ("content-type", "application/grpc"),
            ("grpc-status", "14"),
            ("grpc-message", "caf%C3%A9%20is%20closed%25"),
        ],
    )
    .await;
    let (status, client) = client_span_of_a_call(addr).await;
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(
        client.status,
        Status::error("café is closed%"),
        "the message as the server meant it"
    );
    assert_eq!(
        client.attribute("rpc.grpc.status_code"),
        Some(&Value::I64(14))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxys_502_without_grpc_status_is_an_unavailable_error() {
    let addr = serve_h2_reply(502, &[("content-type", "text/plain")]).await;
    let (status, client) = client_span_of_a_call(addr).await;
    // tonic maps the HTTP status as the gRPC spec says; so does the span.
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(client.status.is_error(), "{:?}", client.status);
    assert_eq!(
        client.attribute("rpc.grpc.status_code"),
        Some(&Value::I64(14))
    );
    assert_eq!(
        client.attribute("http.response.status_code"),
        Some(&Value::I64(502))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_stream_is_traced_until_it_ends() {
    let (p, exporter) = pipeline();
    let addr = serve(&p, SeenLabels::default()).await;
    let mut client = HealthClient::new(channel(addr));
    let mut stream = client
        .watch(HealthCheckRequest {
            service: "backend".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.status, 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        exporter.is_empty(),
        "the stream is still open, so is its span"
    );
    drop(stream);
    drop(client);
    let spans = spans(&exporter, 1).await;
    assert_eq!(spans[0].name, "grpc.health.v1.Health/Watch");
    assert!(spans[0].duration() >= Duration::from_millis(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_interceptor_injects_the_current_context_including_grpc_trace_bin() {
    let (p, exporter) = pipeline();
    let addr = serve(&p, SeenLabels::default()).await;
    // Only grpc-trace-bin: the server must continue the trace from it alone.
    let bin_only =
        TraceInterceptor::with_propagator(tracewire::propagation::GrpcTraceBinPropagator::new());
    let mut client = HealthClient::with_interceptor(channel(addr), bin_only);
    let caller = p.tracer("caller").start("caller");
    let caller_sc = caller.span_context().clone();
    let ctx = Context::new().with_span(caller);
    let request = HealthCheckRequest {
        service: "backend".into(),
    };
    // The generated client is async: the interceptor runs when the call is first
    // polled, so the call is polled inside the caller's context.
    client.check(request).in_context(ctx).await.unwrap();
    let spans = spans(&exporter, 1).await;
    let server = spans.iter().find(|s| s.kind == SpanKind::Server).unwrap();
    assert_eq!(server.span_context.trace_id(), caller_sc.trace_id());
    assert_eq!(server.parent_span_id, caller_sc.span_id());
}

/// A health check carrying `metadata`.
fn check(metadata: &[(&'static str, &'static str)]) -> tonic::Request<HealthCheckRequest> {
    let mut req = tonic::Request::new(HealthCheckRequest {
        service: "backend".into(),
    });
    for (k, v) in metadata {
        req.metadata_mut().insert(*k, v.parse().unwrap());
    }
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unary_span_ends_with_the_response_not_with_the_tasks_the_service_spawned() {
    let (p, exporter) = pipeline();
    let seen = Seen::default();
    let addr = serve_scripted(GrpcTraceLayer::new(p.tracer("server")), seen.clone()).await;
    let mut client = HealthClient::new(channel(addr));
    let reply = client
        .check(check(&[("x-spawn-ms", "2000")]))
        .await
        .unwrap();
    assert_eq!(reply.into_inner().status, 1);
    let deadline = Instant::now() + Duration::from_secs(5);
    while exporter.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let done_at_export = seen.background_done.load(Ordering::SeqCst);
    let spans = exporter.spans();
    let server = spans.first().expect("the server span");
    assert!(
        server.duration() < Duration::from_millis(500),
        "the server span lasted {:?}: the call's time, not its background task's",
        server.duration()
    );
    assert!(
        !done_at_export,
        "the server span was exported only after the background task ended"
    );
    assert_eq!(
        server.attribute("rpc.grpc.status_code"),
        Some(&Value::I64(0)),
        "the trailers were read before the span ended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_the_client_abandons_ends_its_server_span_as_cancelled() {
    let (p, exporter) = pipeline();
    let addr = serve_scripted(GrpcTraceLayer::new(p.tracer("server")), Seen::default()).await;
    let mut client = HealthClient::new(channel(addr));
    let call = client.check(check(&[("x-delay-ms", "10000")]));
    let abandoned = tokio::time::timeout(Duration::from_millis(300), call).await;
    assert!(abandoned.is_err(), "the server answered within 300 ms");
    let spans = spans(&exporter, 1).await;
    let server = spans.first().expect("the server span ended");
    assert_eq!(server.status, Status::error("cancelled"));
}

const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// The baggage entry `k` the service saw for one call with `baggage: k=v`.
async fn baggage_seen_behind(layer: GrpcTraceLayer) -> String {
    let seen = Seen::default();
    let addr = serve_scripted(layer, seen.clone()).await;
    let mut client = HealthClient::new(channel(addr));
    client
        .check(check(&[("traceparent", CALLER), ("baggage", "k=v")]))
        .await
        .unwrap();
    let seen = seen.baggage.lock().unwrap();
    assert_eq!(seen.len(), 1);
    seen[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_only_server_drops_the_untrusted_callers_baggage() {
    let (p, _exporter) = pipeline();
    let layer = GrpcTraceLayer::new(p.tracer("server")).with_trust(TrustPolicy::LinkOnly);
    assert_eq!(baggage_seen_behind(layer).await, "-");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_only_server_told_to_keep_untrusted_baggage_keeps_it() {
    let (p, _exporter) = pipeline();
    let layer = GrpcTraceLayer::new(p.tracer("server"))
        .with_trust(TrustPolicy::LinkOnly)
        .with_untrusted_baggage(true);
    assert_eq!(baggage_seen_behind(layer).await, "v");
    let trusting = GrpcTraceLayer::new(p.tracer("server"));
    assert_eq!(baggage_seen_behind(trusting).await, "v");
}

const W3C_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const BIN_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const B3_SINGLE: &str = "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1";
const B3_TRACE: &str = "80f198ee56343ba864fe8b2a57d3eff7";
const MULTI_TRACE: &str = "463ac35c9f6413ad48485a3953bb6124";
const CLOUD: &str = "105445aa7843bc8bf206b12000100000/1;o=1";
const CLOUD_TRACE: &str = "105445aa7843bc8bf206b12000100000";

/// A health check carrying every format, each set to garbage if named in `broken`
/// (`grpc-trace-bin` is binary metadata: the OpenCensus encoding of a sampled
/// span in trace `BIN_TRACE`).
fn check_with_all_formats_but(broken: &[&str]) -> tonic::Request<HealthCheckRequest> {
    let ascii = [
        ("traceparent", CALLER),
        ("b3", B3_SINGLE),
        ("x-b3-traceid", MULTI_TRACE),
        ("x-b3-spanid", "a2fb4a1d1a96d312"),
        ("x-b3-sampled", "1"),
        ("x-cloud-trace-context", CLOUD),
    ];
    let ascii: Vec<_> = ascii
        .iter()
        .map(|&(k, v)| (k, if broken.contains(&k) { "garbage" } else { v }))
        .collect();
    let mut req = check(&ascii);
    let bin = tracewire::SpanContext::new(
        tracewire::TraceId::from_hex(BIN_TRACE).unwrap(),
        tracewire::SpanId::from_hex("b7ad6b7169203331").unwrap(),
        tracewire::TraceFlags::SAMPLED,
        false,
        tracewire::TraceState::NONE,
    );
    let bin = tracewire::propagation::binary::to_bytes(&bin);
    let bin: &[u8] = if broken.contains(&"grpc-trace-bin") {
        b"garbage"
    } else {
        &bin
    };
    req.metadata_mut().insert_bin(
        "grpc-trace-bin",
        tonic::metadata::MetadataValue::from_bytes(bin),
    );
    req
}

/// The formats broken in turn, in the order of extraction, and the trace the
/// next one in line carries.
const IN_TURN: [(&[&str], &str); 5] = [
    (&[], W3C_TRACE),
    (&["traceparent"], BIN_TRACE),
    (&["traceparent", "grpc-trace-bin"], B3_TRACE),
    (&["traceparent", "grpc-trace-bin", "b3"], MULTI_TRACE),
    (
        &["traceparent", "grpc-trace-bin", "b3", "x-b3-traceid"],
        CLOUD_TRACE,
    ),
];

/// The server span of one health check through `client` with every format but
/// `broken`.
async fn server_span_with_all_formats_but(
    client: &mut HealthClient<Channel>,
    exporter: &InMemoryExporter,
    broken: &[&str],
) -> SpanData {
    exporter.take();
    client
        .check(check_with_all_formats_but(broken))
        .await
        .unwrap();
    let spans = spans(exporter, 1).await;
    let server = spans.iter().find(|s| s.kind == SpanKind::Server);
    server.expect("the server span").clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_server_takes_w3c_then_grpc_trace_bin_then_b3_then_cloud_trace() {
    let (p, exporter) = pipeline();
    let addr = serve(&p, SeenLabels::default()).await;
    let mut client = HealthClient::new(channel(addr));
    for (broken, trace) in IN_TURN {
        let server = server_span_with_all_formats_but(&mut client, &exporter, broken).await;
        assert_eq!(
            server.span_context.trace_id().to_string(),
            trace,
            "with {broken:?} broken"
        );
        assert!(server.parent_is_remote, "{broken:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_only_server_links_callers_of_every_format() {
    let (p, exporter) = pipeline();
    let layer = GrpcTraceLayer::new(p.tracer("server")).with_trust(TrustPolicy::LinkOnly);
    let addr = serve_scripted(layer, Seen::default()).await;
    let mut client = HealthClient::new(channel(addr));
    for (broken, trace) in IN_TURN {
        let server = server_span_with_all_formats_but(&mut client, &exporter, broken).await;
        assert!(server.is_root(), "{broken:?}");
        let links: Vec<String> = server
            .links
            .iter()
            .map(|l| l.span_context.trace_id().to_string())
            .collect();
        assert_eq!(links, [trace], "{broken:?}");
        assert_ne!(server.span_context.trace_id().to_string(), trace);
    }
}
