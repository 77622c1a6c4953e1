//! The layers' hooks (`make_span_with`, `on_request`, `on_response`,
//! `on_failure`) on a real hyper server and client on loopback: one table row
//! per behaviour, a hook that panics included.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{service_fn, ServiceBuilder, ServiceExt};
use tracewire::export::InMemoryExporter;
use tracewire::trace::SpanData;
use tracewire::{labels, KeyValue, Span, SpanKind, Status, TracerProvider, Value};
use tracewire_http::trace::{
    ClientTraceLayer, Failure, MakeSpan, NewSpan, OnFailure, OnRequest, OnResponse, TraceLayer,
};

use support::{catch_panic, pipeline, serve_app};

/// `/ok` answers 200 with `x-cache: hit`, `/missing` 404, `/fail` 500, and
/// `/panic` panics.
async fn handler(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let status = match req.uri().path() {
        "/ok" => StatusCode::OK,
        "/missing" => StatusCode::NOT_FOUND,
        "/fail" => StatusCode::INTERNAL_SERVER_ERROR,
        "/panic" => panic!("handler bug"),
        _ => StatusCode::BAD_REQUEST,
    };
    Ok(Response::builder()
        .status(status)
        .header("x-cache", "hit")
        .body(Full::from("body"))
        .unwrap())
}

/// `handler` behind `layer`, behind a catch-panic layer.
async fn serve<M, Req, Res, Fail>(layer: TraceLayer<M, Req, Res, Fail>) -> SocketAddr
where
    M: MakeSpan + Clone + Send + Sync + 'static,
    Req: OnRequest + Clone + Send + Sync + 'static,
    Res: OnResponse + Clone + Send + Sync + 'static,
    Fail: OnFailure + Clone + Send + Sync + 'static,
{
    serve_app(move |_| {
        ServiceBuilder::new()
            .map_future(catch_panic)
            .layer(layer.clone())
            .service(service_fn(handler))
    })
    .await
}

async fn get(addr: SocketAddr, path: &str) -> StatusCode {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = Request::get(format!("http://{addr}{path}"))
        .header("x-tenant", "acme")
        .body(Full::default())
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let status = resp.status();
    resp.into_body().collect().await.unwrap();
    status
}

/// The one span of `kind` exported within 2 s.
async fn span_of(exporter: &InMemoryExporter, kind: SpanKind) -> SpanData {
    for _ in 0..200 {
        if let Some(s) = exporter.spans().into_iter().find(|s| s.kind == kind) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no {kind:?} span exported")
}

fn header<'a>(req: &'a Parts, name: &str) -> &'a str {
    req.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
}

/// Adds an `on_failure` event naming the failure: one per call.
fn record_failure(failure: Failure<'_>, span: &Span) {
    span.add_event(
        "on_failure",
        vec![KeyValue::new("failure", failure.to_string())],
    );
}

/// The hooks a row gives the server layer.
#[derive(Clone, Copy, Debug)]
enum Hooks {
    None,
    MakeSpan,
    OnRequest,
    OnResponse,
    OnFailure,
    /// This hook sets `before-panic` to its name, then panics.
    Panics(&'static str),
}

async fn serve_with(p: &TracerProvider, hooks: Hooks) -> SocketAddr {
    let layer = TraceLayer::new(p.tracer("server"));
    let before = |span: &Span, name: &'static str| {
        span.set_attribute("before-panic", name);
    };
    match hooks {
        Hooks::None => serve(layer).await,
        Hooks::MakeSpan => {
            serve(layer.make_span_with(|req: &Parts, span: &mut NewSpan| {
                span.set_attribute("tenant", header(req, "x-tenant").to_owned());
                let name = format!("{} [api]", span.name());
                span.set_name(name);
            }))
            .await
        }
        Hooks::OnRequest => {
            serve(layer.on_request(|req: &Parts, span: &Span| {
                span.set_attribute("tenant", header(req, "x-tenant").to_owned());
                // The request's context is current: its labels too.
                let label = labels::current().get("http-path").unwrap_or("-").to_owned();
                span.set_attribute("label", label);
            }))
            .await
        }
        Hooks::OnResponse => {
            serve(
                layer.on_response(|res: &http::response::Parts, span: &Span| {
                    let cache = res.headers.get("x-cache").and_then(|v| v.to_str().ok());
                    span.set_attribute("cache", cache.unwrap_or("-").to_owned());
                }),
            )
            .await
        }
        Hooks::OnFailure => serve(layer.on_failure(record_failure)).await,
        Hooks::Panics("make_span") => {
            serve(layer.make_span_with(|_: &Parts, span: &mut NewSpan| {
                span.set_attribute("before-panic", "make_span");
                panic!("make_span hook failed");
            }))
            .await
        }
        Hooks::Panics("on_request") => {
            serve(layer.on_request(move |_: &Parts, span: &Span| {
                before(span, "on_request");
                panic!("on_request hook failed");
            }))
            .await
        }
        Hooks::Panics("on_response") => {
            serve(
                layer.on_response(move |_: &http::response::Parts, span: &Span| {
                    before(span, "on_response");
                    panic!("on_response hook failed");
                }),
            )
            .await
        }
        Hooks::Panics("on_failure") => {
            serve(layer.on_failure(move |_: Failure<'_>, span: &Span| {
                before(span, "on_failure");
                panic!("on_failure hook failed");
            }))
            .await
        }
        Hooks::Panics(other) => unreachable!("no hook {other}"),
    }
}

struct Case {
    name: &'static str,
    hooks: Hooks,
    path: &'static str,
    status: StatusCode,
    span_name: &'static str,
    attributes: &'static [(&'static str, &'static str)],
    /// The `on_failure` calls, in order.
    failures: &'static [&'static str],
    /// The hook whose panic the span records.
    panicked: Option<&'static str>,
    /// The span's error status, if any.
    error: Option<&'static str>,
}

const CASES: &[Case] = &[
    Case {
        name: "no hooks: the layer's span alone",
        hooks: Hooks::None,
        path: "/ok",
        status: StatusCode::OK,
        span_name: "GET /ok",
        attributes: &[("http.route", "/ok")],
        failures: &[],
        panicked: None,
        error: None,
    },
    Case {
        name: "make_span renames the span and adds an attribute",
        hooks: Hooks::MakeSpan,
        path: "/ok",
        status: StatusCode::OK,
        span_name: "GET /ok [api]",
        attributes: &[("tenant", "acme"), ("http.route", "/ok")],
        failures: &[],
        panicked: None,
        error: None,
    },
    Case {
        name: "on_request reads the request, inside its context",
        hooks: Hooks::OnRequest,
        path: "/ok",
        status: StatusCode::OK,
        span_name: "GET /ok",
        attributes: &[("tenant", "acme"), ("label", "/ok")],
        failures: &[],
        panicked: None,
        error: None,
    },
    Case {
        name: "on_response reads the response head",
        hooks: Hooks::OnResponse,
        path: "/ok",
        status: StatusCode::OK,
        span_name: "GET /ok",
        attributes: &[("cache", "hit"), ("http.response.status_code", "200")],
        failures: &[],
        panicked: None,
        error: None,
    },
    Case {
        name: "on_failure hears a 500",
        hooks: Hooks::OnFailure,
        path: "/fail",
        status: StatusCode::INTERNAL_SERVER_ERROR,
        span_name: "GET /fail",
        attributes: &[("error.type", "500")],
        failures: &["HTTP 500"],
        panicked: None,
        error: Some("HTTP 500"),
    },
    Case {
        name: "on_failure is not called for a 404 on a server",
        hooks: Hooks::OnFailure,
        path: "/missing",
        status: StatusCode::NOT_FOUND,
        span_name: "GET /missing",
        attributes: &[],
        failures: &[],
        panicked: None,
        error: None,
    },
    Case {
        name: "on_failure hears a handler's panic",
        hooks: Hooks::OnFailure,
        path: "/panic",
        status: StatusCode::INTERNAL_SERVER_ERROR,
        span_name: "GET /panic",
        attributes: &[("error.type", "panic")],
        failures: &["panic: handler bug"],
        panicked: None,
        error: Some("panic: handler bug"),
    },
    Case {
        name: "a panicking make_span: served, span started as edited so far",
        hooks: Hooks::Panics("make_span"),
        path: "/ok",
        status: StatusCode::OK,
        span_name: "GET /ok",
        attributes: &[("before-panic", "make_span"), ("http.route", "/ok")],
        failures: &[],
        panicked: Some("make_span"),
        error: None,
    },
    Case {
        name: "a panicking on_request: served, not an error",
        hooks: Hooks::Panics("on_request"),
        path: "/ok",
        status: StatusCode::OK,
        span_name: "GET /ok",
        attributes: &[("before-panic", "on_request")],
        failures: &[],
        panicked: Some("on_request"),
        error: None,
    },
    Case {
        name: "a panicking on_response: served, status recorded",
        hooks: Hooks::Panics("on_response"),
        path: "/ok",
        status: StatusCode::OK,
        span_name: "GET /ok",
        attributes: &[
            ("before-panic", "on_response"),
            ("http.response.status_code", "200"),
        ],
        failures: &[],
        panicked: Some("on_response"),
        error: None,
    },
    Case {
        name: "a panicking on_failure: the 500 is still served and recorded",
        hooks: Hooks::Panics("on_failure"),
        path: "/fail",
        status: StatusCode::INTERNAL_SERVER_ERROR,
        span_name: "GET /fail",
        attributes: &[("before-panic", "on_failure")],
        failures: &[],
        panicked: Some("on_failure"),
        error: Some("HTTP 500"),
    },
];

/// What the `on_failure` hook heard, in order (see `record_failure`).
fn failures(span: &SpanData) -> Vec<String> {
    span.events
        .iter()
        .filter(|e| e.name == "on_failure")
        .map(|e| value_str(&e.attributes[0].value))
        .collect()
}

fn value_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.to_string(),
        other => other.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_hooks_add_to_the_span_and_a_panicking_hook_never_fails_the_request() {
    for case in CASES {
        let (p, exporter) = pipeline();
        let addr = serve_with(&p, case.hooks).await;
        let name = case.name;
        assert_eq!(get(addr, case.path).await, case.status, "{name}");
        let span = span_of(&exporter, SpanKind::Server).await;
        assert_eq!(span.name, case.span_name, "{name}");
        for (key, want) in case.attributes {
            let got = span.attribute(key).map(value_str);
            assert_eq!(got.as_deref(), Some(*want), "{name}: {key}");
        }
        assert_eq!(failures(&span), case.failures, "{name}");
        let panicked: Vec<(String, String)> = span
            .events
            .iter()
            .filter(|e| e.name == "hook panicked")
            .map(|e| {
                let attr = |k: &str| {
                    e.attributes
                        .iter()
                        .find(|kv| kv.key == k)
                        .map(|kv| value_str(&kv.value))
                        .unwrap_or_default()
                };
                (attr("tracewire.hook"), attr("exception.message"))
            })
            .collect();
        let want: Vec<(String, String)> = case
            .panicked
            .map(|h| (h.to_owned(), format!("{h} hook failed")))
            .into_iter()
            .collect();
        assert_eq!(panicked, want, "{name}");
        let want_status = match case.error {
            Some(message) => Status::error(message),
            None => Status::Unset,
        };
        assert_eq!(span.status, want_status, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_hooks_see_the_injected_headers_the_response_and_4xx_failures() {
    let (p, exporter) = pipeline();
    let addr = serve_app(|_| service_fn(handler)).await;
    let client = ServiceBuilder::new()
        .layer(
            ClientTraceLayer::new(p.tracer("client"))
                .make_span_with(|_: &Parts, span: &mut NewSpan| {
                    span.set_attribute("peer.service", "backend");
                })
                .on_request(|req: &Parts, span: &Span| {
                    let sent = req.headers.contains_key("traceparent");
                    span.set_attribute("sent-traceparent", sent);
                })
                .on_response(|res: &http::response::Parts, span: &Span| {
                    let cache = res.headers.contains_key("x-cache");
                    span.set_attribute("saw-x-cache", cache);
                })
                .on_failure(record_failure),
        )
        .service(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());
    for (path, want) in [("/ok", &[][..]), ("/missing", &["HTTP 404"][..])] {
        exporter.take();
        let req = Request::get(format!("http://{addr}{path}"))
            .body(Full::default())
            .unwrap();
        let resp = client.clone().oneshot(req).await.unwrap();
        resp.into_body().collect().await.unwrap();
        let span = span_of(&exporter, SpanKind::Client).await;
        for key in ["sent-traceparent", "saw-x-cache"] {
            assert_eq!(
                span.attribute(key),
                Some(&Value::Bool(true)),
                "{path}: {key}"
            );
        }
        assert_eq!(
            span.attribute("peer.service"),
            Some(&Value::from("backend")),
            "{path}"
        );
        assert_eq!(failures(&span), want, "{path}");
    }
}
