//! `tracewire_http::reqwest::TraceMiddleware` in a real reqwest client against a
//! traced hyper server on loopback.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use tower::{service_fn, ServiceBuilder};
use tracewire::export::InMemoryExporter;
use tracewire::propagation::{B3Encoding, B3Propagator};
use tracewire::trace::SpanData;
use tracewire::{SpanId, SpanKind, Status, TracerProvider, Value};
use tracewire_http::reqwest::TraceMiddleware;
use tracewire_http::trace::TraceLayer;

use support::pipeline;

/// The headers a peer may have been sent a context in.
const CONTEXT_HEADERS: [&str; 3] = ["traceparent", "x-b3-traceid", "x-b3-spanid"];

/// A traced server (its spans in `provider`) that answers with the context
/// headers it received, one `name=value` a line; `/fail` answers 500 and
/// `/slow` after 2 s.
async fn serve(provider: &TracerProvider) -> SocketAddr {
    let layer = TraceLayer::new(provider.tracer("server"));
    support::serve_app(move |peer| {
        ServiceBuilder::new()
            .map_request(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(peer);
                req
            })
            .layer(layer.clone())
            .service(service_fn(|req: Request<Incoming>| async move {
                let mut received = String::new();
                for name in CONTEXT_HEADERS {
                    if let Some(v) = req.headers().get(name).and_then(|v| v.to_str().ok()) {
                        received.push_str(&format!("{name}={v}\n"));
                    }
                }
                let status = match req.uri().path() {
                    "/fail" => StatusCode::INTERNAL_SERVER_ERROR,
                    "/slow" => {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        StatusCode::OK
                    }
                    _ => StatusCode::OK,
                };
                let mut response = Response::new(Full::<Bytes>::from(received));
                *response.status_mut() = status;
                Ok::<_, Infallible>(response)
            }))
    })
    .await
}

fn client(middleware: TraceMiddleware) -> ClientWithMiddleware {
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    ClientBuilder::new(http).with(middleware).build()
}

/// A traced server and a client with the default middleware, their spans in
/// one exporter; the provider must outlive the requests (dropping it shuts its
/// pipeline down).
async fn traced() -> (
    TracerProvider,
    InMemoryExporter,
    SocketAddr,
    ClientWithMiddleware,
) {
    let (p, exporter) = pipeline();
    let addr = serve(&p).await;
    let client = client(TraceMiddleware::new(p.tracer("client")));
    (p, exporter, addr, client)
}

/// Waits (up to 5 s) for a span of `kind` named `name`.
async fn exported(exporter: &InMemoryExporter, kind: SpanKind, name: &str) -> SpanData {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let found = exporter
            .spans()
            .into_iter()
            .find(|s| s.kind == kind && s.name == name);
        if let Some(s) = found {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "no {kind:?} span {name} within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn text(s: &str) -> Option<Value> {
    Some(Value::from(s.to_owned()))
}

fn int(n: u16) -> Option<Value> {
    Some(Value::from(i64::from(n)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_span_is_the_parent_of_the_servers_span() {
    let (_p, exporter, addr, client) = traced().await;
    // The application's span, from a pipeline of its own.
    let caller = TracerProvider::builder()
        .build()
        .tracer("app")
        .start("caller");
    let caller_id = caller.span_context().span_id();
    let ctx = tracewire::Context::current_with_span(caller);
    let body = tracewire::ContextExt::in_context(
        async {
            let response = client
                .get(format!("http://{addr}/users/7"))
                .send()
                .await
                .unwrap();
            response.text().await.unwrap()
        },
        ctx.clone(),
    )
    .await;
    ctx.span().end();

    let client_span = exported(&exporter, SpanKind::Client, "GET").await;
    let server_span = exported(&exporter, SpanKind::Server, "GET /users/7").await;
    let sc = &client_span.span_context;
    assert_eq!(
        client_span.parent_span_id, caller_id,
        "a child of the caller"
    );
    let sent = format!("traceparent=00-{}-{}-", sc.trace_id(), sc.span_id());
    assert!(
        body.starts_with(&sent) && body.lines().count() == 1,
        "the client span's context went out (W3C only by default): {body:?}"
    );
    assert_eq!(server_span.span_context.trace_id(), sc.trace_id());
    assert_eq!(server_span.parent_span_id, sc.span_id());
    assert!(server_span.parent_is_remote);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_spans_carry_the_http_client_conventions() {
    let (_p, exporter, addr, client) = traced().await;
    let response = client
        .get(format!("http://{addr}/users/7?full=1"))
        .send()
        .await
        .unwrap();
    let peer = response.remote_addr();
    assert_eq!(
        response.url().as_str(),
        format!("http://{addr}/users/7?full=1"),
        "reqwest's URL survives the middleware"
    );
    assert_eq!(peer, Some(addr), "and so does the peer address");
    response.bytes().await.unwrap();

    let s = exported(&exporter, SpanKind::Client, "GET").await;
    let cases = [
        ("http.request.method", text("GET")),
        ("server.address", text("127.0.0.1")),
        ("server.port", int(addr.port())),
        ("url.full", text(&format!("http://{addr}/users/7?full=1"))),
        ("http.response.status_code", int(200)),
        ("network.peer.address", text("127.0.0.1")),
        ("network.peer.port", int(addr.port())),
        ("network.protocol.version", text("1.1")),
        ("error.type", None),
    ];
    for (key, want) in cases {
        assert_eq!(s.attribute(key).cloned(), want, "{key}");
    }
    assert_eq!(s.status, Status::Unset);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_outside_any_context_starts_a_root_client_span() {
    let (_p, exporter, addr, client) = traced().await;
    let response = client.get(format!("http://{addr}/")).send().await.unwrap();
    response.text().await.unwrap();
    let client_span = exported(&exporter, SpanKind::Client, "GET").await;
    let server_span = exported(&exporter, SpanKind::Server, "GET /").await;
    assert_eq!(client_span.parent_span_id, SpanId::INVALID, "a root span");
    assert_eq!(
        server_span.parent_span_id,
        client_span.span_context.span_id(),
        "the server continues the client's new trace"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_response_is_an_error_of_its_status_code() {
    let (_p, exporter, addr, client) = traced().await;
    let response = client
        .get(format!("http://{addr}/fail"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    drop(response);
    let s = exported(&exporter, SpanKind::Client, "GET").await;
    assert_eq!(s.attribute("http.response.status_code").cloned(), int(500));
    assert_eq!(s.attribute("error.type").cloned(), text("500"));
    assert_eq!(s.status, Status::error("HTTP 500"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_an_error_of_type_connect() {
    let (p, exporter) = pipeline();
    // A port nothing listens on any more.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let client = client(TraceMiddleware::new(p.tracer("client")));
    let err = client
        .get(format!("http://{addr}/"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    let s = exported(&exporter, SpanKind::Client, "GET").await;
    assert_eq!(s.attribute("error.type").cloned(), text("connect"));
    assert_eq!(s.attribute("http.response.status_code"), None);
    assert_eq!(s.attribute("server.port").cloned(), int(addr.port()));
    assert!(matches!(s.status, Status::Error { .. }), "{:?}", s.status);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_request_is_an_error_of_type_timeout() {
    let (_p, exporter, addr, client) = traced().await;
    let err = client
        .get(format!("http://{addr}/slow"))
        .timeout(Duration::from_millis(100))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    let s = exported(&exporter, SpanKind::Client, "GET").await;
    assert_eq!(s.attribute("error.type").cloned(), text("timeout"));
    assert!(matches!(s.status, Status::Error { .. }), "{:?}", s.status);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_propagator_is_what_is_injected() {
    let (p, exporter) = pipeline();
    let addr = serve(&p).await;
    let b3 = TraceMiddleware::new(p.tracer("client"))
        .with_propagator(B3Propagator::new(B3Encoding::Multi));
    let body = client(b3)
        .get(format!("http://{addr}/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let s = exported(&exporter, SpanKind::Client, "GET").await;
    let sc = &s.span_context;
    assert_eq!(
        body,
        format!(
            "x-b3-traceid={}\nx-b3-spanid={}\n",
            sc.trace_id(),
            sc.span_id()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_and_signatures_never_reach_url_full() {
    let (_p, exporter, addr, client) = traced().await;
    // Built by hand, so reqwest leaves the credentials in the URL.
    let url = format!("http://alice:s3cret@{addr}/o?X-Goog-Signature=abc&n=1");
    let req = reqwest::Request::new(http::Method::GET, url.parse().unwrap());
    let response = client.execute(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    drop(response);
    let s = exported(&exporter, SpanKind::Client, "GET").await;
    assert_eq!(
        s.attribute("url.full").cloned(),
        text(&format!(
            "http://REDACTED:REDACTED@{addr}/o?X-Goog-Signature=REDACTED&n=1"
        ))
    );
    assert_eq!(s.attribute("server.address").cloned(), text("127.0.0.1"));
}
