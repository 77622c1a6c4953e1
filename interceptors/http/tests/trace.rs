//! The HTTP layers on real hyper servers and clients on loopback.

mod support;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::AsyncWriteExt;
use tower::{service_fn, ServiceBuilder, ServiceExt};
use tracewire::export::InMemoryExporter;
use tracewire::propagation::{
    baggage, B3Encoding, B3Propagator, CloudTraceContextPropagator, CompositePropagator,
    TraceContextPropagator, TrustPolicy,
};
use tracewire::trace::SpanData;
use tracewire::{labels, SpanKind, Status, TracerProvider, Value};
use tracewire_http::trace::{ClientTraceLayer, TraceLayer};

use support::{catch_panic, pipeline, serve_app};

type BoxBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// A handler that answers with the `http-path` label it saw, and a few special paths.
async fn handler(req: Request<Incoming>) -> Result<Response<BoxBody>, Infallible> {
    let label = labels::current().get("http-path").unwrap_or("-").to_owned();
    let (status, body): (StatusCode, BoxBody) = match req.uri().path() {
        "/fail" => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Full::from("boom").boxed(),
        ),
        "/missing" => (StatusCode::NOT_FOUND, Full::from("no").boxed()),
        "/stream" => {
            let frames = futures_util::stream::unfold(0, |i| async move {
                if i == 3 {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                Some((
                    Ok::<_, Infallible>(hyper::body::Frame::data(Bytes::from("x"))),
                    i + 1,
                ))
            });
            (StatusCode::OK, StreamBody::new(frames).boxed())
        }
        _ => (StatusCode::OK, Full::from(label).boxed()),
    };
    Ok(Response::builder().status(status).body(body).unwrap())
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `handler` (a closure) behind `layer`.
async fn serve_handler<H, F, B>(layer: TraceLayer, handler: H) -> SocketAddr
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + 'static,
    F: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError> + std::fmt::Display,
{
    serve_app(move |_| {
        ServiceBuilder::new()
            .layer(layer.clone())
            .service(service_fn(handler.clone()))
    })
    .await
}

/// `handler` behind `layer`, with the peer address in the request extensions.
async fn serve(layer: TraceLayer) -> SocketAddr {
    serve_app(move |peer| {
        ServiceBuilder::new()
            .map_request(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(peer);
                req
            })
            .layer(layer.clone())
            .service(service_fn(handler))
    })
    .await
}

async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (StatusCode, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = Request::get(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(req.body(Full::default()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Waits until `n` spans are exported (the server span ends after its body).
async fn spans(exporter: &InMemoryExporter, n: usize) -> Vec<SpanData> {
    for _ in 0..200 {
        if exporter.len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    exporter.spans()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_and_server_spans_form_one_trace_and_the_handler_is_labelled() {
    let (p, exporter) = pipeline();
    let addr = serve(TraceLayer::new(p.tracer("server"))).await;
    let client = ServiceBuilder::new()
        .layer(ClientTraceLayer::new(p.tracer("client")))
        .service(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());
    let resp = client
        .oneshot(
            Request::get(format!("http://{addr}/user"))
                .header("user-agent", "test/1")
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"/user", "the handler ran with http-path=/user");
    let spans = spans(&exporter, 2).await;
    let server = spans.iter().find(|s| s.kind == SpanKind::Server).unwrap();
    let client = spans.iter().find(|s| s.kind == SpanKind::Client).unwrap();
    assert_eq!(server.name, "GET /user");
    assert_eq!(client.name, "GET");
    assert_eq!(
        server.span_context.trace_id(),
        client.span_context.trace_id()
    );
    assert_eq!(server.parent_span_id, client.span_context.span_id());
    assert!(server.parent_is_remote);
    assert_eq!(server.attribute("http.route"), Some(&Value::from("/user")));
    assert_eq!(
        server.attribute("http.response.status_code"),
        Some(&Value::I64(200))
    );
    assert_eq!(
        server.attribute("user_agent.original"),
        Some(&Value::from("test/1"))
    );
    assert_eq!(
        server.attribute("network.peer.address"),
        Some(&Value::from("127.0.0.1"))
    );
    assert_eq!(
        client.attribute("server.port"),
        Some(&Value::I64(i64::from(addr.port())))
    );
    assert_eq!(server.status, Status::Unset);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_5xx_only_and_client_errors_4xx_too() {
    let (p, exporter) = pipeline();
    let addr = serve(TraceLayer::new(p.tracer("server"))).await;
    assert_eq!(
        get(addr, "/fail", &[]).await.0,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(get(addr, "/missing", &[]).await.0, StatusCode::NOT_FOUND);
    let spans = spans(&exporter, 2).await;
    let fail = spans.iter().find(|s| s.name == "GET /fail").unwrap();
    let missing = spans.iter().find(|s| s.name == "GET /missing").unwrap();
    assert!(fail.status.is_error());
    assert_eq!(missing.status, Status::Unset);
    assert_eq!(
        missing.attribute("http.response.status_code"),
        Some(&Value::I64(404))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_span_ends_when_the_body_has_been_sent() {
    let (p, exporter) = pipeline();
    let addr = serve(TraceLayer::new(p.tracer("server"))).await;
    let before = SystemTime::now();
    let (_, body) = get(addr, "/stream", &[]).await;
    assert_eq!(body, "xxx");
    let spans = spans(&exporter, 1).await;
    let s = &spans[0];
    assert!(
        s.end_time.duration_since(before).unwrap() >= Duration::from_millis(150),
        "ended after the 3 streamed frames, not with the headers: {:?}",
        s.duration()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_or_hostile_traceparent_starts_a_new_trace_and_is_served() {
    let (p, exporter) = pipeline();
    let addr = serve(TraceLayer::new(p.tracer("server"))).await;
    let long = "a".repeat(10_000);
    for bad in [
        "00-0AF7651916CD43DD8448EB211C80319C-00f067aa0ba902b7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "garbage",
        long.as_str(),
    ] {
        let (status, _) = get(
            addr,
            "/user",
            &[("traceparent", bad), ("tracestate", "x=1")],
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    let spans = spans(&exporter, 5).await;
    assert_eq!(spans.len(), 5);
    assert!(
        spans.iter().all(|s| s.is_root()),
        "every bad header started a new trace"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b3_and_cloud_trace_headers_continue_the_trace() {
    let (p, exporter) = pipeline();
    let layer = TraceLayer::new(p.tracer("server")).with_propagator(
        CompositePropagator::new()
            .with(TraceContextPropagator::new())
            .with(B3Propagator::new(B3Encoding::SingleAndMulti))
            .with(CloudTraceContextPropagator::new()),
    );
    let addr = serve(layer).await;
    get(
        addr,
        "/b3",
        &[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1")],
    )
    .await;
    get(
        addr,
        "/gcp",
        &[(
            "x-cloud-trace-context",
            "105445aa7843bc8bf206b12000100000/1;o=1",
        )],
    )
    .await;
    let spans = spans(&exporter, 2).await;
    let b3 = spans.iter().find(|s| s.name == "GET /b3").unwrap();
    assert_eq!(
        b3.span_context.trace_id().to_string(),
        "80f198ee56343ba864fe8b2a57d3eff7"
    );
    assert_eq!(b3.parent_span_id.to_string(), "e457b5a2e4d86bd1");
    let gcp = spans.iter().find(|s| s.name == "GET /gcp").unwrap();
    assert_eq!(
        gcp.span_context.trace_id().to_string(),
        "105445aa7843bc8bf206b12000100000"
    );
    assert_eq!(gcp.parent_span_id.to_u64(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_endpoint_starts_a_new_trace_linked_to_the_caller() {
    let (p, exporter) = pipeline();
    let addr = serve(TraceLayer::new(p.tracer("server")).with_trust(TrustPolicy::LinkOnly)).await;
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    get(addr, "/public", &[("traceparent", tp)]).await;
    let spans = spans(&exporter, 1).await;
    let s = &spans[0];
    assert!(s.is_root());
    assert_ne!(
        s.span_context.trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(
        s.links[0].span_context.span_id().to_string(),
        "00f067aa0ba902b7"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_paths_are_capped_so_labels_stay_bounded() {
    let (p, exporter) = pipeline();
    let addr = serve(TraceLayer::new(p.tracer("server")).with_max_routes(3)).await;
    for i in 0..6 {
        let (_, label) = get(addr, &format!("/item/{i}"), &[]).await;
        assert_eq!(
            label,
            if i < 3 {
                format!("/item/{i}")
            } else {
                "other".into()
            }
        );
    }
    let spans = spans(&exporter, 6).await;
    assert_eq!(spans.iter().filter(|s| s.name == "GET other").count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_function_names_spans_and_labels() {
    let (p, exporter) = pipeline();
    let layer = TraceLayer::new(p.tracer("server")).with_route(|parts| {
        parts
            .uri
            .path()
            .starts_with("/users/")
            .then(|| "/users/{id}".to_owned())
    });
    let addr = serve(layer).await;
    let (_, label) = get(addr, "/users/42", &[]).await;
    assert_eq!(label, "/users/{id}");
    let spans = spans(&exporter, 1).await;
    assert_eq!(spans[0].name, "GET /users/{id}");
}

/// Waits up to `limit` for `n` exported spans.
async fn spans_within(exporter: &InMemoryExporter, n: usize, limit: Duration) -> Vec<SpanData> {
    let deadline = Instant::now() + limit;
    while exporter.len() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    exporter.spans()
}

/// Waits (up to 5 s) for the span named `name` to be exported.
async fn exported(exporter: &InMemoryExporter, name: &str) -> SpanData {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(s) = exporter.spans().into_iter().find(|s| s.name == name) {
            return s;
        }
        assert!(Instant::now() < deadline, "no span {name} within 5 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_span_ends_with_the_response_not_with_the_tasks_the_handler_spawned() {
    let (p, exporter) = pipeline();
    let background_done = Arc::new(AtomicBool::new(false));
    let done = background_done.clone();
    let handler = move |_req| {
        let done = done.clone();
        async move {
            // Carries the request's context (and so its span) into the task.
            tracewire::spawn(async move {
                tokio::time::sleep(Duration::from_secs(2)).await;
                done.store(true, Ordering::SeqCst);
            });
            Ok(Response::new(Full::<Bytes>::from("fired")))
        }
    };
    let addr = serve_handler(TraceLayer::new(p.tracer("server")), handler).await;
    let (status, body) = get(addr, "/fire", &[]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "fired"));
    let server = exported(&exporter, "GET /fire").await;
    let done_at_export = background_done.load(Ordering::SeqCst);
    assert!(
        server.duration() < Duration::from_millis(500),
        "the server span lasted {:?}: the request's time, not its background task's",
        server.duration()
    );
    assert!(
        !done_at_export,
        "the server span was exported only after the background task ended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_span_ends_at_the_last_frame_without_waiting_for_the_body_to_drop() {
    let (p, exporter) = pipeline();
    let svc = ServiceBuilder::new()
        .layer(TraceLayer::new(p.tracer("server")))
        .service(service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(Response::new(Full::<Bytes>::from("hello")))
        }));
    let response = svc
        .oneshot(Request::get("/hello").body(()).unwrap())
        .await
        .unwrap();
    let mut body = response.into_body();
    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "hello");
    assert!(body.is_end_stream(), "a Full body ends after its one frame");
    // hyper stops here: it never polls for the `None` after an ended body.
    let spans = spans_within(&exporter, 1, Duration::from_secs(2)).await;
    assert_eq!(
        spans.len(),
        1,
        "the span ended with the body's last frame, while the body is still alive"
    );
    drop(body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_client_abandons_ends_its_span_as_cancelled() {
    let (p, exporter) = pipeline();
    let started = Arc::new(tokio::sync::Notify::new());
    let notify = started.clone();
    let handler = move |_req| {
        let notify = notify.clone();
        async move {
            notify.notify_one();
            std::future::pending::<()>().await;
            Ok(Response::new(Full::<Bytes>::default()))
        }
    };
    let addr = serve_handler(TraceLayer::new(p.tracer("server")), handler).await;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /slow HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), started.notified())
        .await
        .expect("the handler started");
    drop(stream);
    let s = exported(&exporter, "GET /slow").await;
    assert_eq!(s.status, Status::error("cancelled"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_records_an_error_and_the_outer_layer_still_answers_500() {
    let (p, exporter) = pipeline();
    let layer = TraceLayer::new(p.tracer("server"));
    let addr = serve_app(move |_| {
        ServiceBuilder::new()
            .map_future(catch_panic)
            .layer(layer.clone())
            .service(service_fn(|req: Request<Incoming>| async move {
                if req.uri().path() == "/panic" {
                    panic!("handler bug");
                }
                Ok::<_, Infallible>(Response::new(Full::<Bytes>::from("fine")))
            }))
    })
    .await;
    let (status, body) = get(addr, "/panic", &[]).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::INTERNAL_SERVER_ERROR, "panicked")
    );
    let s = exported(&exporter, "GET /panic").await;
    assert_eq!(s.status, Status::error("panic: handler bug"));
    assert_eq!(s.attribute("error.type"), Some(&Value::from("panic")));
}

/// A route function the axum way: the route template axum matched, if any.
fn matched_path(parts: &http::request::Parts) -> Option<String> {
    parts
        .extensions
        .get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmatched_requests_take_no_route_slot_and_are_named_by_method_alone() {
    let (p, exporter) = pipeline();
    let layer = TraceLayer::new(p.tracer("server"))
        .with_route(matched_path)
        .with_max_routes(200);
    let label = || labels::current().get("http-path").unwrap_or("-").to_owned();
    let app = axum::Router::new()
        .route(
            "/users/{id}",
            axum::routing::get(move || async move { label() }),
        )
        .fallback(move || async move { (StatusCode::NOT_FOUND, label()) })
        .layer(layer);
    let addr = serve_app(move |_| app.clone()).await;
    let mut scan_labels = Vec::new();
    for i in 0..250 {
        let (status, label) = get(addr, &format!("/scan/{i}"), &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        scan_labels.push(label);
    }
    let (status, label) = get(addr, "/users/7", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let spans = spans_within(&exporter, 251, Duration::from_secs(5)).await;
    let (users, scans): (Vec<_>, Vec<_>) = spans
        .iter()
        .partition(|s| s.attribute("url.path") == Some(&Value::from("/users/7")));
    let user = users.first().expect("the /users/7 span");
    assert_eq!(user.name, "GET /users/{id}", "a real route after a scan");
    assert_eq!(
        user.attribute("http.route"),
        Some(&Value::from("/users/{id}"))
    );
    assert_eq!(label, "/users/{id}");
    assert_eq!(scans.len(), 250);
    for s in scans {
        assert_eq!(s.name, "GET", "an unmatched request is named by its method");
        assert_eq!(s.attribute("http.route"), None, "and has no http.route");
    }
    assert!(
        scan_labels.iter().all(|l| l == "unmatched"),
        "http-path of unmatched requests: {:?}",
        &scan_labels[..3]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builder_calls_after_with_max_routes_keep_its_limit() {
    let (p, _exporter) = pipeline();
    let layer = TraceLayer::new(p.tracer("server"))
        .with_max_routes(2)
        .with_trust(TrustPolicy::LinkOnly);
    let addr = serve(layer).await;
    let mut labels = Vec::new();
    for path in ["/a", "/b", "/c"] {
        labels.push(get(addr, path, &[]).await.1);
    }
    assert_eq!(labels, ["/a", "/b", "other"]);
}

/// Answers with the values of the headers `names` it received, joined with `|`
/// (`-` for a missing one).
async fn serve_echo(names: &'static [&'static str]) -> SocketAddr {
    serve_app(move |_| {
        service_fn(move |req: Request<Incoming>| async move {
            let values: Vec<String> = names.iter().map(|n| header(&req, n)).collect();
            Ok::<_, Infallible>(Response::new(Full::<Bytes>::from(values.join("|"))))
        })
    })
    .await
}

fn header<B>(req: &Request<B>, name: &str) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned()
}

/// A server behind `layer` whose handler answers `{baggage k}|{what downstream
/// received}`, calling `downstream` through a [`ClientTraceLayer`].
async fn serve_baggage_relay(layer: TraceLayer, p: &TracerProvider) -> SocketAddr {
    let downstream = serve_echo(&["baggage"]).await;
    let client = ServiceBuilder::new()
        .layer(ClientTraceLayer::new(p.tracer("relay")))
        .service(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());
    let handler = move |_req| {
        let client = client.clone();
        async move {
            let seen = baggage::current().get("k").unwrap_or("-").to_owned();
            let request = Request::get(format!("http://{downstream}/"));
            let resp = client
                .oneshot(request.body(Full::default()).unwrap())
                .await
                .unwrap();
            let sent = resp.into_body().collect().await.unwrap().to_bytes();
            let sent = String::from_utf8_lossy(&sent);
            Ok(Response::new(Full::<Bytes>::from(format!("{seen}|{sent}"))))
        }
    };
    serve_handler(layer, handler).await
}

const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_only_server_drops_the_untrusted_callers_baggage() {
    let (p, _exporter) = pipeline();
    let layer = TraceLayer::new(p.tracer("server")).with_trust(TrustPolicy::LinkOnly);
    let addr = serve_baggage_relay(layer, &p).await;
    let headers = [("traceparent", CALLER), ("baggage", "k=v")];
    let (_, body) = get(addr, "/relay", &headers).await;
    assert_eq!(
        body, "-|-",
        "no baggage in the handler, none sent downstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_only_server_told_to_keep_untrusted_baggage_keeps_it() {
    let (p, _exporter) = pipeline();
    let layer = TraceLayer::new(p.tracer("server"))
        .with_trust(TrustPolicy::LinkOnly)
        .with_untrusted_baggage(true);
    let addr = serve_baggage_relay(layer, &p).await;
    let headers = [("traceparent", CALLER), ("baggage", "k=v")];
    let (_, body) = get(addr, "/relay", &headers).await;
    assert_eq!(body, "v|k=v");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusting_server_keeps_the_callers_baggage() {
    let (p, _exporter) = pipeline();
    let addr = serve_baggage_relay(TraceLayer::new(p.tracer("server")), &p).await;
    let headers = [("traceparent", CALLER), ("baggage", "k=v")];
    let (_, body) = get(addr, "/relay", &headers).await;
    assert_eq!(body, "v|k=v");
}

// The ids of one caller per format.
const W3C_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const W3C_SPAN: &str = "00f067aa0ba902b7";
const B3_SINGLE: &str = "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1";
const B3_TRACE: &str = "80f198ee56343ba864fe8b2a57d3eff7";
const B3_SPAN: &str = "e457b5a2e4d86bd1";
// What OpenCensus Go's ochttp sends by default.
const B3_MULTI: [(&str, &str); 3] = [
    ("X-B3-TraceId", "463ac35c9f6413ad48485a3953bb6124"),
    ("X-B3-SpanId", "a2fb4a1d1a96d312"),
    ("X-B3-Sampled", "1"),
];
const MULTI_TRACE: &str = "463ac35c9f6413ad48485a3953bb6124";
const MULTI_SPAN: &str = "a2fb4a1d1a96d312";
const CLOUD: &str = "105445aa7843bc8bf206b12000100000/1;o=1";
const CLOUD_TRACE: &str = "105445aa7843bc8bf206b12000100000";
const CLOUD_SPAN: &str = "0000000000000001";

/// Requests to `/{name}` with `headers`, one after the other; the server spans,
/// by name.
async fn server_spans(
    addr: SocketAddr,
    exporter: &InMemoryExporter,
    requests: &[(&str, Vec<(&str, &str)>)],
) -> Vec<SpanData> {
    for (name, headers) in requests {
        let (status, _) = get(addr, &format!("/{name}"), headers).await;
        assert_eq!(status, StatusCode::OK);
    }
    let spans = spans(exporter, requests.len()).await;
    requests
        .iter()
        .map(|(name, _)| {
            let name = format!("GET /{name}");
            spans
                .iter()
                .find(|s| s.name == name)
                .unwrap_or_else(|| panic!("no span {name:?} in {spans:?}"))
                .clone()
        })
        .collect()
}

fn ids(span: &SpanData) -> (String, String) {
    (
        span.span_context.trace_id().to_string(),
        span.parent_span_id.to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_server_continues_callers_of_every_common_format() {
    let (p, exporter) = pipeline();
    let addr = serve(TraceLayer::new(p.tracer("server"))).await;
    let requests = [
        ("w3c", vec![("traceparent", CALLER)]),
        ("b3", vec![("b3", B3_SINGLE)]),
        ("b3-multi", B3_MULTI.to_vec()),
        ("cloud", vec![("x-cloud-trace-context", CLOUD)]),
    ];
    let expected = [
        (W3C_TRACE, W3C_SPAN),
        (B3_TRACE, B3_SPAN),
        (MULTI_TRACE, MULTI_SPAN),
        (CLOUD_TRACE, CLOUD_SPAN),
    ];
    let spans = server_spans(addr, &exporter, &requests).await;
    for ((span, (name, _)), (trace, parent)) in spans.iter().zip(&requests).zip(expected) {
        assert_eq!(ids(span), (trace.into(), parent.into()), "{name}");
        assert!(
            span.parent_is_remote && span.span_context.is_sampled(),
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_extraction_takes_w3c_then_b3_single_then_b3_multi_then_cloud_trace() {
    let (p, exporter) = pipeline();
    let addr = serve(TraceLayer::new(p.tracer("server"))).await;
    let mut everything = vec![
        ("traceparent", CALLER),
        ("b3", B3_SINGLE),
        ("x-cloud-trace-context", CLOUD),
    ];
    everything.extend(B3_MULTI);
    let without = |names: &[&str]| -> Vec<(&'static str, &'static str)> {
        everything
            .iter()
            .map(|&(k, v)| {
                if names.contains(&k) {
                    (k, "garbage")
                } else {
                    (k, v)
                }
            })
            .collect()
    };
    let requests = [
        ("all", without(&[])),
        ("no-w3c", without(&["traceparent"])),
        ("no-b3", without(&["traceparent", "b3"])),
        ("cloud", without(&["traceparent", "b3", "X-B3-TraceId"])),
    ];
    let spans = server_spans(addr, &exporter, &requests).await;
    let traces: Vec<String> = spans.iter().map(|s| ids(s).0).collect();
    assert_eq!(traces, [W3C_TRACE, B3_TRACE, MULTI_TRACE, CLOUD_TRACE]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_only_server_links_callers_of_every_format_and_ignores_their_decisions() {
    let (p, exporter) = pipeline();
    let layer = TraceLayer::new(p.tracer("server")).with_trust(TrustPolicy::LinkOnly);
    let addr = serve(layer.clone()).await;
    let requests = [
        ("w3c", vec![("traceparent", CALLER)]),
        ("b3", vec![("b3", B3_SINGLE)]),
        ("b3-multi", B3_MULTI.to_vec()),
        ("cloud", vec![("x-cloud-trace-context", CLOUD)]),
        (
            "b3-deny",
            vec![("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0")],
        ),
        ("deny-only", vec![("b3", "0")]),
    ];
    let linked = [W3C_SPAN, B3_SPAN, MULTI_SPAN, CLOUD_SPAN, B3_SPAN];
    let spans = server_spans(addr, &exporter, &requests).await;
    for (span, (name, _)) in spans.iter().zip(&requests) {
        assert!(span.is_root(), "{name}: a new trace");
        assert!(span.span_context.is_sampled(), "{name}: our own decision");
        let links: Vec<String> = span
            .links
            .iter()
            .map(|l| l.span_context.span_id().to_string())
            .collect();
        let expected: Vec<String> = linked
            .iter()
            .zip(&requests)
            .filter(|(_, (n, _))| n == name)
            .map(|(s, _)| s.to_string())
            .collect();
        assert_eq!(links, expected, "{name}");
    }
    // An untrusted B3 caller's baggage is dropped too.
    let addr = serve_baggage_relay(layer, &p).await;
    let (_, body) = get(addr, "/relay", &[("b3", B3_SINGLE), ("baggage", "k=v")]).await;
    assert_eq!(body, "-|-");
}

/// A server behind `layer` whose handler calls an echo server through a default
/// [`ClientTraceLayer`] and through one injecting B3, and answers with the
/// `{traceparent}|{b3}` the echo server saw for each call.
async fn serve_injection_relay(layer: TraceLayer, p: &TracerProvider) -> SocketAddr {
    let downstream = serve_echo(&["traceparent", "b3"]).await;
    let http = || Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let default = ServiceBuilder::new()
        .layer(ClientTraceLayer::new(p.tracer("relay")))
        .service(http());
    let b3 = ServiceBuilder::new()
        .layer(
            ClientTraceLayer::new(p.tracer("relay"))
                .with_propagator(B3Propagator::new(B3Encoding::Single)),
        )
        .service(http());
    let handler = move |_req| {
        let (default, b3) = (default.clone(), b3.clone());
        async move {
            let mut seen = String::new();
            for client in [default, b3] {
                let request = Request::get(format!("http://{downstream}/"));
                let resp = client
                    .oneshot(request.body(Full::default()).unwrap())
                    .await
                    .unwrap();
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                seen.push_str(&String::from_utf8_lossy(&body));
                seen.push(' ');
            }
            Ok(Response::new(Full::<Bytes>::from(seen)))
        }
    };
    serve_handler(layer, handler).await
}

/// One request to the injection relay with `headers`: what the echo server saw,
/// as `[traceparent, b3]` from the default client then from the B3 client, and the
/// spans exported for it once `n` are (`n = 0`: after a short wait).
async fn relay(
    addr: SocketAddr,
    exporter: &InMemoryExporter,
    headers: &[(&str, &str)],
    n: usize,
) -> (Vec<String>, Vec<SpanData>) {
    exporter.take();
    let (status, body) = get(addr, "/relay", headers).await;
    assert_eq!(status, StatusCode::OK);
    let seen = body.split_whitespace().flat_map(|s| s.split('|'));
    let seen: Vec<String> = seen.map(str::to_owned).collect();
    assert_eq!(seen.len(), 4, "{body:?}");
    if n == 0 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (seen, spans(exporter, n).await)
}

/// Whether a `traceparent` has the sampled flag.
fn w3c_sampled(traceparent: &str) -> bool {
    let flags = traceparent.rsplit('-').next().unwrap_or_default();
    u8::from_str_radix(flags, 16).is_ok_and(|f| f & 1 == 1)
}

/// B3 sampling states through a default server: what its span records and what
/// its handler's calls carry downstream (W3C by default, B3 if configured).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b3_decisions_reach_the_server_span_and_the_calls_it_makes() {
    let (p, exporter) = pipeline();
    let addr = serve_injection_relay(TraceLayer::new(p.tracer("server")), &p).await;
    // A deny without ids: nothing recorded, "not sampled" passed on.
    for deny in [&[("b3", "0")][..], &[("X-B3-Sampled", "0")]] {
        let (seen, spans) = relay(addr, &exporter, deny, 0).await;
        assert!(!w3c_sampled(&seen[0]), "{deny:?}: {seen:?}");
        assert_ne!(&seen[0][3..35], B3_TRACE);
        assert_eq!(seen[1], "-", "default injection is W3C only");
        assert_eq!(seen[2], "-", "a B3 client injects B3 only");
        assert!(seen[3].ends_with("-0"), "{deny:?}: {seen:?}");
        assert!(spans.is_empty(), "{deny:?}: {spans:?}");
    }

    // Ids without a decision: the local sampler (always on) samples, in the
    // caller's trace.
    let deferred: &[(&str, &str)] = &[("X-B3-TraceId", B3_TRACE), ("X-B3-SpanId", B3_SPAN)];
    let (seen, spans) = relay(addr, &exporter, deferred, 3).await;
    assert!(seen[0].starts_with(&format!("00-{B3_TRACE}-")), "{seen:?}");
    assert!(w3c_sampled(&seen[0]), "{seen:?}");
    assert!(
        seen[3].starts_with(B3_TRACE) && seen[3].ends_with("-1"),
        "{seen:?}"
    );
    let server = spans.iter().find(|s| s.kind == SpanKind::Server).unwrap();
    assert_eq!(ids(server), (B3_TRACE.into(), B3_SPAN.into()));

    // Debug: kept through the server span and its client spans, re-injected by B3.
    let debug: &[(&str, &str)] = &[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d")];
    let (seen, spans) = relay(addr, &exporter, debug, 3).await;
    assert!(w3c_sampled(&seen[0]), "{seen:?}");
    assert!(
        seen[3].starts_with(B3_TRACE) && seen[3].ends_with("-d"),
        "{seen:?}"
    );
    assert_eq!(spans.len(), 3);
    assert!(spans.iter().all(|s| s.span_context.is_sampled()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_given_a_propagator_extracts_only_its_formats() {
    let (p, exporter) = pipeline();
    let layer = TraceLayer::new(p.tracer("server")).with_propagator(TraceContextPropagator::new());
    let addr = serve(layer).await;
    let requests = [
        ("b3", vec![("b3", B3_SINGLE)]),
        ("w3c", vec![("traceparent", CALLER), ("b3", B3_SINGLE)]),
    ];
    let spans = server_spans(addr, &exporter, &requests).await;
    assert!(spans[0].is_root(), "B3 is not read");
    assert_eq!(ids(&spans[1]), (W3C_TRACE.into(), W3C_SPAN.into()));
}

/// One request through a traced client to a traced server; the server span and the
/// client span (in that order).
async fn traced_call(method: &str, path: &str) -> (SpanData, SpanData) {
    let (p, exporter) = pipeline();
    let addr = serve(TraceLayer::new(p.tracer("server"))).await;
    let client = ServiceBuilder::new()
        .layer(ClientTraceLayer::new(p.tracer("client")))
        .service(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());
    let req = Request::builder()
        .method(http::Method::from_bytes(method.as_bytes()).unwrap())
        .uri(format!("http://{addr}{path}"))
        .body(Full::default())
        .unwrap();
    let resp = client.oneshot(req).await.unwrap();
    let _ = resp.into_body().collect().await;
    let spans = spans(&exporter, 2).await;
    let server = spans.iter().find(|s| s.kind == SpanKind::Server).unwrap();
    let client = spans.iter().find(|s| s.kind == SpanKind::Client).unwrap();
    (server.clone(), client.clone())
}

/// The OpenTelemetry HTTP semantic conventions, one attribute per row: (method,
/// path, which span, attribute, expected value; `None`: absent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_carry_the_current_http_semantic_conventions() {
    type Row = (
        &'static str,
        &'static str,
        SpanKind,
        &'static str,
        Option<Value>,
    );
    let rows: Vec<Row> = vec![
        (
            "GET",
            "/q?x=1&y=2",
            SpanKind::Server,
            "url.query",
            Some("x=1&y=2".into()),
        ),
        ("GET", "/q", SpanKind::Server, "url.query", None),
        (
            "GET",
            "/q?x=1",
            SpanKind::Server,
            "url.path",
            Some("/q".into()),
        ),
        (
            "GET",
            "/q",
            SpanKind::Server,
            "network.protocol.version",
            Some("1.1".into()),
        ),
        (
            "GET",
            "/q",
            SpanKind::Server,
            "client.address",
            Some("127.0.0.1".into()),
        ),
        (
            "GET",
            "/q",
            SpanKind::Server,
            "http.request.method",
            Some("GET".into()),
        ),
        (
            "BREW",
            "/q",
            SpanKind::Server,
            "http.request.method",
            Some("_OTHER".into()),
        ),
        (
            "BREW",
            "/q",
            SpanKind::Server,
            "http.request.method_original",
            Some("BREW".into()),
        ),
        (
            "GET",
            "/q",
            SpanKind::Server,
            "http.request.method_original",
            None,
        ),
        (
            "BREW",
            "/q",
            SpanKind::Client,
            "http.request.method",
            Some("_OTHER".into()),
        ),
        (
            "BREW",
            "/q",
            SpanKind::Client,
            "http.request.method_original",
            Some("BREW".into()),
        ),
        (
            "GET",
            "/fail",
            SpanKind::Server,
            "error.type",
            Some("500".into()),
        ),
        ("GET", "/missing", SpanKind::Server, "error.type", None),
        (
            "GET",
            "/missing",
            SpanKind::Client,
            "error.type",
            Some("404".into()),
        ),
        ("GET", "/q", SpanKind::Client, "error.type", None),
    ];
    for (method, path, kind, key, want) in rows {
        let (server, client) = traced_call(method, path).await;
        let span = if kind == SpanKind::Server {
            &server
        } else {
            &client
        };
        assert_eq!(
            span.attribute(key),
            want.as_ref(),
            "{method} {path}, {kind:?} span, {key}"
        );
    }
    // The span name of an unknown method is `HTTP {route}`, or `HTTP` alone.
    let (server, client) = traced_call("BREW", "/q").await;
    assert_eq!(server.name, "HTTP /q");
    assert_eq!(client.name, "HTTP");
}
