//! The service contract of the official W3C Trace Context test suite (`test/` in
//! the w3c/trace-context repository), built with tracewire's HTTP layers:
//!
//! ```text
//! cargo run -p examples --bin trace-context-service -- --addr 127.0.0.1:8090
//! # in a checkout of w3c/trace-context/test:
//! SPEC_LEVEL=2 STRICT_LEVEL=2 python3 test.py http://127.0.0.1:8090/test
//! ```
//!
//! `POST /test` takes a JSON array of `{"url": ..., "arguments": [...]}`. The request
//! goes through `TraceLayer` (W3C trace context only), so its `traceparent` and
//! `tracestate` are extracted by the processing model; then, inside the request's
//! context, each `arguments` is POSTed as JSON to its `url` through a client wrapped
//! in `ClientTraceLayer`, which injects the context with a new parent id per call.
//! The answer comes once every call has finished.

use std::convert::Infallible;
use std::io::Write;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tower::{Service, ServiceBuilder, ServiceExt};
use tracewire::propagation::TraceContextPropagator;
use tracewire::trace::{AlwaysOn, ParentBased};
use tracewire::{Tracer, TracerProvider};
use tracewire_http::trace::{ClientTrace, ClientTraceLayer, TraceLayer};

type HttpClient = ClientTrace<Client<HttpConnector, Full<Bytes>>>;

/// Runs the calls of one `/test` request, one after the other.
async fn test(
    request: Request<Incoming>,
    client: HttpClient,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, text: String| {
        let mut r = Response::new(Full::from(text));
        *r.status_mut() = status;
        Ok(r)
    };
    if request.method() != http::Method::POST || request.uri().path() != "/test" {
        return reply(StatusCode::NOT_FOUND, "POST /test only\n".into());
    }
    let body = match request.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return reply(StatusCode::BAD_REQUEST, format!("body: {e}\n")),
    };
    let calls: Vec<serde_json::Value> = match serde_json::from_slice(&body) {
        Ok(serde_json::Value::Array(calls)) => calls,
        _ => return reply(StatusCode::BAD_REQUEST, "expected a JSON array\n".into()),
    };
    for call in calls {
        let Some(url) = call.get("url").and_then(|u| u.as_str()) else {
            return reply(StatusCode::BAD_REQUEST, "a call without url\n".into());
        };
        let arguments = call
            .get("arguments")
            .cloned()
            .unwrap_or(serde_json::json!([]));
        let outgoing = match Request::post(url)
            .header("content-type", "application/json")
            .body(Full::from(arguments.to_string()))
        {
            Ok(r) => r,
            Err(e) => return reply(StatusCode::BAD_REQUEST, format!("bad url {url:?}: {e}\n")),
        };
        // The request's context is current here (the server layer polls this
        // handler inside it): the client span is its child.
        match client.clone().oneshot(outgoing).await {
            Ok(response) => {
                let _ = response.into_body().collect().await;
            }
            Err(e) => eprintln!("trace-context-service: POST {url}: {e}"),
        }
    }
    reply(StatusCode::OK, "ok\n".into())
}

fn tracer() -> (TracerProvider, Tracer) {
    let provider = TracerProvider::builder()
        .with_service_name("trace-context-service")
        .with_sampler(ParentBased::new(AlwaysOn))
        .build();
    let tracer = provider.tracer("trace-context-service");
    (provider, tracer)
}

fn main() {
    let flags = match examples::Flags::parse(std::env::args().skip(1), "127.0.0.1:8090")
        .and_then(|f| f.socket_addr())
    {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("{e}\nusage: trace-context-service [--addr HOST:PORT]");
            std::process::exit(2);
        }
    };
    let runtime = examples::runtime_or_exit("trace-context-service");
    if let Err(e) = runtime.block_on(serve(flags)) {
        eprintln!("trace-context-service: {e}");
        std::process::exit(1);
    }
}

async fn serve(addr: std::net::SocketAddr) -> std::io::Result<()> {
    let (_provider, tracer) = tracer();
    let client = ServiceBuilder::new()
        .layer(ClientTraceLayer::new(tracer.clone()).with_propagator(TraceContextPropagator::new()))
        .service(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());
    let app = ServiceBuilder::new()
        .layer(TraceLayer::new(tracer).with_propagator(TraceContextPropagator::new()))
        .service(tower::service_fn(move |r| test(r, client.clone())));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    std::io::stdout().flush()?;
    loop {
        let (stream, _) = listener.accept().await?;
        let app = app.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let mut app = app.clone();
                async move { app.call(req).await }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
