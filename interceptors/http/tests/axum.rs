//! `tracewire_http::axum` on real axum servers (`axum::serve` on loopback) and a
//! real hyper client.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tracewire::export::InMemoryExporter;
use tracewire::propagation::TrustPolicy;
use tracewire::trace::SpanData;
use tracewire::{labels, SpanKind, TracerProvider, Value};
use tracewire_http::axum::TraceLayer;
use tracewire_http::trace;

use support::pipeline;

/// The `http-path` label the handler ran under.
async fn label() -> String {
    labels::current().get("http-path").unwrap_or("-").to_owned()
}

/// Routes `/users/{id}` and `/health`, and a fallback that answers 404 with its
/// label.
fn routes() -> Router {
    Router::new()
        .route("/users/{id}", get(label).post(label))
        .route("/health", get(|| async { "ok" }))
        .route(
            "/where",
            get(|uri: http::Uri| async move { uri.path().to_owned() }),
        )
        .fallback(|| async { (StatusCode::NOT_FOUND, label().await) })
}

/// How `serve` runs the app.
#[derive(Clone, Copy)]
enum Serve {
    /// `into_make_service_with_connect_info::<SocketAddr>()`.
    WithConnectInfo,
    /// `into_make_service()`: no peer address for the handlers.
    Plain,
}

/// Serves `app` with `axum::serve` on `127.0.0.1:0` until the runtime shuts down.
async fn serve(app: Router, how: Serve) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        match how {
            Serve::WithConnectInfo => {
                let make = app.into_make_service_with_connect_info::<SocketAddr>();
                axum::serve(listener, make).await
            }
            Serve::Plain => axum::serve(listener, app.into_make_service()).await,
        }
    });
    addr
}

/// [`routes`] behind the layer, served `how`; the provider must outlive the
/// requests (dropping it shuts its pipeline down).
async fn serve_routes(how: Serve) -> (TracerProvider, InMemoryExporter, SocketAddr) {
    let (p, exporter) = pipeline();
    let app = routes().layer(TraceLayer::new(p.tracer("users")));
    let addr = serve(app, how).await;
    (p, exporter, addr)
}

/// What a request got, and the client's own address.
struct Answer {
    status: StatusCode,
    body: String,
    local: SocketAddr,
}

/// A request on a connection of its own, so its local address is known.
async fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let local = stream.local_addr().unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender
        .send_request(req.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
        local,
    }
}

async fn get_path(addr: SocketAddr, path: &str) -> Answer {
    request(addr, "GET", path, &[]).await
}

/// Waits (up to 5 s) for the server span whose `url.path` is `path`.
async fn span_for(exporter: &InMemoryExporter, path: &str) -> SpanData {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let found = exporter
            .spans()
            .into_iter()
            .find(|s| s.kind == SpanKind::Server && s.attribute("url.path") == text(path).as_ref());
        if let Some(s) = found {
            return s;
        }
        assert!(Instant::now() < deadline, "no span for {path} within 5 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn text(s: &str) -> Option<Value> {
    Some(Value::from(s.to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_templates_name_spans_and_become_http_route_and_the_label() {
    let (_p, exporter, addr) = serve_routes(Serve::WithConnectInfo).await;
    let answer = get_path(addr, "/users/7").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, "/users/{id}", "the handler's http-path label");
    let s = span_for(&exporter, "/users/7").await;
    assert_eq!(s.name, "GET /users/{id}");
    assert_eq!(s.attribute("http.route").cloned(), text("/users/{id}"));
    assert_eq!(
        s.attribute("http.response.status_code"),
        Some(&Value::from(200i64))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_no_route_matches_are_named_by_method_alone() {
    let (_p, exporter, addr) = serve_routes(Serve::WithConnectInfo).await;
    let answer = get_path(addr, "/scan/wp-login.php").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.body, "unmatched", "the fallback's http-path label");
    let s = span_for(&exporter, "/scan/wp-login.php").await;
    assert_eq!(s.name, "GET");
    assert_eq!(s.attribute("http.route"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axums_default_404_is_traced_and_named_by_method_alone() {
    let (p, exporter) = pipeline();
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .layer(TraceLayer::new(p.tracer("users")));
    let addr = serve(app, Serve::WithConnectInfo).await;
    assert_eq!(get_path(addr, "/nope").await.status, StatusCode::NOT_FOUND);
    let s = span_for(&exporter, "/nope").await;
    assert_eq!(s.name, "GET");
    assert_eq!(s.attribute("http.route"), None);
    assert_eq!(
        s.attribute("http.response.status_code"),
        Some(&Value::from(404i64))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_matched_route_with_another_method_keeps_the_route_name() {
    let (_p, exporter, addr) = serve_routes(Serve::WithConnectInfo).await;
    let answer = request(addr, "DELETE", "/users/7", &[]).await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    let s = span_for(&exporter, "/users/7").await;
    assert_eq!(s.name, "DELETE /users/{id}");
    assert_eq!(s.attribute("http.route").cloned(), text("/users/{id}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_routers_give_the_whole_template_wherever_the_layer_was_added() {
    let (p, exporter) = pipeline();
    let layer = TraceLayer::new(p.tracer("users"));
    let outer = Router::new().nest("/api", routes()).layer(layer.clone());
    let inner = Router::new().nest("/v2", routes().layer(layer));
    let app = outer.merge(inner);
    let addr = serve(app, Serve::WithConnectInfo).await;
    assert_eq!(get_path(addr, "/api/users/7").await.body, "/api/users/{id}");
    assert_eq!(get_path(addr, "/v2/users/8").await.body, "/v2/users/{id}");
    assert_eq!(
        get_path(addr, "/v2/where").await.body,
        "/where",
        "a nested handler still sees the path axum gives it"
    );
    let s = span_for(&exporter, "/api/users/7").await;
    assert_eq!(s.name, "GET /api/users/{id}", "layer on the outer router");
    assert_eq!(s.attribute("http.route").cloned(), text("/api/users/{id}"));
    let s = span_for(&exporter, "/v2/users/8").await;
    assert_eq!(s.name, "GET /v2/users/{id}", "layer on the nested router");
    assert_eq!(s.attribute("http.route").cloned(), text("/v2/users/{id}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_address_comes_from_connect_info() {
    let (_p, exporter, addr) = serve_routes(Serve::WithConnectInfo).await;
    let answer = get_path(addr, "/health").await;
    let s = span_for(&exporter, "/health").await;
    assert_eq!(s.attribute("client.address").cloned(), text("127.0.0.1"));
    assert_eq!(
        s.attribute("client.port"),
        Some(&Value::from(i64::from(answer.local.port())))
    );
    assert_eq!(
        s.attribute("network.peer.port"),
        Some(&Value::from(i64::from(answer.local.port())))
    );
    assert_eq!(s.attribute("server.address").cloned(), text("127.0.0.1"));
    assert_eq!(
        s.attribute("server.port"),
        Some(&Value::from(i64::from(addr.port())))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_connect_info_spans_have_no_client_address() {
    let (_p, exporter, addr) = serve_routes(Serve::Plain).await;
    assert_eq!(get_path(addr, "/health").await.status, StatusCode::OK);
    let s = span_for(&exporter, "/health").await;
    assert_eq!(s.name, "GET /health");
    assert_eq!(s.attribute("client.address"), None);
    assert_eq!(s.attribute("client.port"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrapping_the_whole_router_names_every_span_by_method_alone() {
    let (p, exporter) = pipeline();
    // Outside the router: the layer runs before routing, with no MatchedPath.
    let traced = tower::ServiceBuilder::new()
        .map_response(|r: http::Response<_>| r.map(axum::body::Body::new))
        .layer(TraceLayer::new(p.tracer("users")))
        .service(routes());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let make = axum::ServiceExt::<axum::extract::Request>::into_make_service_with_connect_info::<
        SocketAddr,
    >(traced);
    tokio::spawn(async move { axum::serve(listener, make).await });
    let answer = get_path(addr, "/users/7").await;
    assert_eq!(answer.status, StatusCode::OK, "the request is still routed");
    assert_eq!(answer.body, "unmatched");
    let s = span_for(&exporter, "/users/7").await;
    assert_eq!(s.name, "GET", "no route is known before routing");
    assert_eq!(s.attribute("http.route"), None);
    assert_eq!(
        s.attribute("client.address").cloned(),
        text("127.0.0.1"),
        "the peer is known either way"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_server_layer_keeps_its_settings() {
    let (p, exporter) = pipeline();
    let layer = TraceLayer::from(
        trace::TraceLayer::new(p.tracer("public")).with_trust(TrustPolicy::LinkOnly),
    );
    let app = routes().layer(layer);
    let addr = serve(app, Serve::WithConnectInfo).await;
    let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    request(addr, "GET", "/users/1", &[("traceparent", caller)]).await;
    let s = span_for(&exporter, "/users/1").await;
    assert_eq!(s.name, "GET /users/{id}", "axum's route names");
    assert_ne!(
        s.span_context.trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "LinkOnly: a new trace"
    );
    assert_eq!(
        s.links
            .first()
            .map(|l| l.span_context.span_id().to_string()),
        Some("00f067aa0ba902b7".to_owned()),
        "linked to the caller"
    );
}
