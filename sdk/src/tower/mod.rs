//! Tracing for HTTP and gRPC servers and clients as tower layers: the machinery
//! `tracewire-http` and `tracewire-grpc` share (feature `tower`).
//!
//! Applications use it through those crates (`tracewire_http::trace` re-exports
//! these types; `tracewire_grpc` wraps them for tonic); it lives here so that
//! neither interceptor crate depends on the other.
//!
//! - [`TraceLayer`] (server): extracts the caller's context in any common format
//!   (W3C `traceparent`/`tracestate`, B3 single and multiple headers,
//!   `X-Cloud-Trace-Context`, and `baggage`; see [Extraction](#extraction)),
//!   starts a server span named `METHOD route`, and polls the handler
//!   — and the response body — inside a context holding that span and the profiler
//!   label `http-path=route`, on whichever thread polls them. It records the
//!   OpenTelemetry HTTP attributes, marks 5xx as errors, and ends the span when
//!   the response body has been sent (or dropped), however long the tasks the
//!   handler spawned live on. A request the client abandons before the response
//!   ends with the error status `cancelled`; a handler that panics leaves an error
//!   status and `error.type=panic`, and the panic goes on to the layers outside.
//! - [`ClientTraceLayer`]: a client span per request, the configured formats
//!   injected into the request headers (W3C `traceparent`/`tracestate` and
//!   `baggage` unless configured), the response status recorded.
//!
//! # Extraction
//!
//! A server layer with default settings continues the trace of callers that
//! speak any of these formats, tried in this order; the first that holds a valid
//! span context wins (W3C first whenever its `traceparent` is valid):
//!
//! 1. W3C `traceparent` (with `tracestate`);
//! 2. gRPC only ([`Protocol::Grpc`]): OpenCensus `grpc-trace-bin`;
//! 3. B3 single header `b3`;
//! 4. B3 multiple headers `X-B3-TraceId`, `X-B3-SpanId`, `X-B3-Sampled`,
//!    `X-B3-Flags` (what OpenCensus Go's `ochttp` sends by default);
//! 5. `X-Cloud-Trace-Context`.
//!
//! If none holds ids, a B3 sampling decision sent alone (`b3: 0`,
//! `X-B3-Sampled: 0`) is followed: the server span starts a new trace and is not
//! sampled, nor is what it calls. W3C `baggage` is read beside any of them. The
//! [trust policy](TraceLayer::with_trust) applies to whichever format the context
//! came in. [`TraceLayer::with_propagator`] replaces the list.
//!
//! Injection is separate: server layers inject nothing, and a
//! [`ClientTraceLayer`] writes W3C (`traceparent`, `tracestate`) and `baggage`
//! (gRPC: also `grpc-trace-bin`) unless given another propagator with
//! [`ClientTraceLayer::with_propagator`] (for example
//! `B3Propagator::new(B3Encoding::Multi)` for B3-only peers).
//!
//! Bad input never fails a request: an invalid or hostile header starts a new trace
//! (or is ignored), as the W3C processing model says.
//!
//! # Hooks
//!
//! Both layers take tower-http's hooks, so a service adds what it knows to
//! the spans without forking the layer: [`make_span_with`](TraceLayer::make_span_with)
//! ([`MakeSpan`]: the name and the attributes the sampler sees),
//! [`on_request`](TraceLayer::on_request) ([`OnRequest`]),
//! [`on_response`](TraceLayer::on_response) ([`OnResponse`]) and
//! [`on_failure`](TraceLayer::on_failure) ([`OnFailure`], with a [`Failure`]).
//! Each is a closure (or any type implementing the trait); unset, it is `()`,
//! which does nothing and costs nothing. A hook that panics is stopped there:
//! the request is served as if it had returned, its span ends as usual (not as
//! an error) with an event `hook panicked` (`tracewire.hook`,
//! `exception.message`), and what the hook did before the panic stays.
//!
//! ```
//! use http::request::Parts;
//! use tracewire::tower::{Failure, NewSpan, TraceLayer};
//! use tracewire::{KeyValue, Span, TracerProvider};
//!
//! let provider = TracerProvider::builder().build();
//! let layer = TraceLayer::new(provider.tracer("frontend"))
//!     .make_span_with(|req: &Parts, span: &mut NewSpan| {
//!         if let Some(tenant) = req.headers.get("x-tenant").and_then(|v| v.to_str().ok()) {
//!             span.set_attribute("tenant", tenant.to_owned());
//!         }
//!     })
//!     .on_response(|res: &http::response::Parts, span: &Span| {
//!         let hit = res.headers.get("x-cache").is_some_and(|v| v == "hit");
//!         span.set_attribute("cache.hit", hit);
//!     })
//!     .on_failure(|failure: Failure<'_>, _span: &Span| {
//!         eprintln!("request failed: {failure}");
//!     });
//! # let _ = layer;
//! ```
//!
//! A client layer writes the current context into each request it sends:
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response, StatusCode};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tracewire::tower::ClientTraceLayer;
//! use tracewire::TracerProvider;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let provider = TracerProvider::builder().build();
//! let client = ServiceBuilder::new()
//!     .layer(ClientTraceLayer::new(provider.tracer("frontend")))
//!     .service(service_fn(|req: Request<()>| async move {
//!         // What the server receives: the client span's context.
//!         let status = match req.headers().contains_key("traceparent") {
//!             true => StatusCode::OK,
//!             false => StatusCode::BAD_REQUEST,
//!         };
//!         let mut response = Response::new(http_body_util::Empty::<bytes::Bytes>::new());
//!         *response.status_mut() = status;
//!         Ok::<_, Infallible>(response)
//!     }));
//! let response = client
//!     .oneshot(Request::get("http://backend/user").body(()).unwrap())
//!     .await
//!     .unwrap();
//! assert_eq!(response.status(), StatusCode::OK);
//! # }
//! ```

mod body;
mod future;
mod hooks;
mod route;

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::task::{Context as TaskContext, Poll};

use crate::propagation::{
    B3Propagator, Baggage, BaggageExt, BaggagePropagator, CloudTraceContextPropagator,
    CompositePropagator, GrpcTraceBinPropagator, Propagator, RemoteParent, TraceContextPropagator,
    TrustPolicy,
};
use crate::trace::Str;
use crate::{Context, ContextExt, KeyValue, Span, SpanKind, Tracer};
use http::{HeaderMap, Request, Response};
use tower_layer::Layer;
use tower_service::Service;

pub use body::ResponseBody;
pub use future::ResponseFuture;
pub use hooks::{Failure, MakeSpan, NewSpan, OnFailure, OnRequest, OnResponse};

use hooks::Hooks;

/// The protocol a layer speaks: how spans are named, which label they set and
/// where the outcome is read. `tracewire-grpc` builds on the gRPC variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Protocol {
    /// Plain HTTP: span `METHOD route`, label `http-path`, outcome from the status.
    #[default]
    Http,
    /// gRPC over HTTP/2: span `package.Service/Method`, label
    /// `grpc-method=/package.Service/Method` (the request path), outcome from
    /// `grpc-status` in the headers or trailers.
    Grpc,
}

/// Which side of a call a layer instruments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Server,
    Client,
}

/// gRPC codes that make a server span an error (OpenTelemetry RPC conventions);
/// for a client span every code but OK does.
const GRPC_SERVER_ERRORS: [i64; 6] = [2, 4, 12, 13, 14, 15];

impl Protocol {
    fn label_key(self) -> &'static str {
        match self {
            Protocol::Http => "http-path",
            Protocol::Grpc => "grpc-method",
        }
    }

    fn record_grpc_status(
        self,
        span: &Span,
        side: Side,
        headers: &HeaderMap,
    ) -> Option<StatusError> {
        let code = headers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<i64>().ok())?;
        let error = record_grpc_code(span, side, code);
        // `grpc-message` is percent-encoded UTF-8 (gRPC over HTTP/2 spec).
        error.then(|| {
            let message = headers
                .get("grpc-message")
                .map(|v| percent_encoding::percent_decode(v.as_bytes()).decode_utf8_lossy())
                .unwrap_or_default();
            StatusError::Grpc(code, message.into_owned())
        })
    }

    /// Records the response's status on `span`; the error it is for `side`, if
    /// any, for the caller to report.
    pub(crate) fn record_response(
        self,
        span: &Span,
        side: Side,
        response: &http::response::Parts,
    ) -> Option<StatusError> {
        let status = response.status.as_u16();
        match self {
            Protocol::Http => {
                span.set_attribute("http.response.status_code", i64::from(status));
                let error = match side {
                    Side::Server => status >= 500,
                    Side::Client => status >= 400,
                };
                error.then(|| {
                    span.set_attribute("error.type", status.to_string());
                    StatusError::Http(response.status)
                })
            }
            Protocol::Grpc if status != 200 && !response.headers.contains_key("grpc-status") => {
                // Not a gRPC response (a proxy's 502, say): the code is the one
                // the gRPC spec maps the HTTP status to, as clients report it.
                span.set_attribute("http.response.status_code", i64::from(status));
                let code = match status {
                    400 => 13,             // INTERNAL
                    401 => 16,             // UNAUTHENTICATED
                    403 => 7,              // PERMISSION_DENIED
                    404 => 12,             // UNIMPLEMENTED
                    429 | 502..=504 => 14, // UNAVAILABLE
                    _ => 2,                // UNKNOWN
                };
                record_grpc_code(span, side, code)
                    .then(|| StatusError::Grpc(code, format!("HTTP {status}")))
            }
            Protocol::Grpc => {
                // Trailers-only responses carry grpc-status in the headers.
                self.record_grpc_status(span, side, &response.headers)
            }
        }
    }

    /// Records the status in gRPC trailers; the error, if any, as
    /// [`record_response`](Self::record_response).
    pub(crate) fn record_trailers(
        self,
        span: &Span,
        side: Side,
        trailers: &HeaderMap,
    ) -> Option<StatusError> {
        match self {
            Protocol::Grpc => self.record_grpc_status(span, side, trailers),
            Protocol::Http => None,
        }
    }
}

/// A response status that makes the span an error: the layer sets the error
/// status and calls the [`OnFailure`] hook with it.
#[derive(Debug)]
pub(crate) enum StatusError {
    Http(http::StatusCode),
    /// A gRPC code and its decoded message.
    Grpc(i64, String),
}

impl StatusError {
    pub(crate) fn as_failure(&self) -> Failure<'_> {
        match self {
            StatusError::Http(status) => Failure::Status(*status),
            StatusError::Grpc(code, message) => Failure::GrpcStatus {
                code: *code,
                message,
            },
        }
    }
}

/// Records gRPC status `code` on `span`; whether it is an error for `side`.
fn record_grpc_code(span: &Span, side: Side, code: i64) -> bool {
    span.set_attribute("rpc.grpc.status_code", code);
    match side {
        Side::Server => GRPC_SERVER_ERRORS.contains(&code),
        Side::Client => code != 0,
    }
}

/// The span name of the gRPC call to `path` (`/package.Service/Method`):
/// `package.Service/Method`, as the OpenTelemetry RPC conventions name RPC spans
/// (`{rpc.service}/{rpc.method}`, and in their newer form the fully-qualified
/// `{rpc.method}`: the same string).
fn grpc_span_name(path: &str) -> &str {
    path.strip_prefix('/').unwrap_or(path)
}

/// A `Host` header (`host[:port]`, IPv6 literals in brackets) as host and port,
/// by `http`'s authority parser; `None` if it is not an authority. A plain
/// `name[:port]` (letters, digits, `.`, `-`), what nearly every request has, is
/// split without it (the parser copies the header to parse it).
fn split_host_port(host: &str) -> Option<(String, Option<u16>)> {
    let plain = |h: &str| {
        !h.is_empty()
            && h.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'-')
    };
    let (name, port) = match host.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (host, None),
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|c| c.is_ascii_digit()));
    if plain(name) && port_ok {
        return Some((name.to_owned(), port.and_then(|p| p.parse().ok())));
    }
    parse_host_port(host)
}

/// [`split_host_port`] by `http`'s authority parser alone.
fn parse_host_port(host: &str) -> Option<(String, Option<u16>)> {
    let authority: http::uri::Authority = host.parse().ok()?;
    Some((
        unbracketed(authority.host()).to_owned(),
        authority.port_u16(),
    ))
}

/// An IPv6 literal without its URI brackets, as `server.address` wants it.
fn unbracketed(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

type RouteFn = dyn Fn(&http::request::Parts) -> Option<String> + Send + Sync;

/// The default of [`TraceLayer::with_max_routes`].
const MAX_ROUTES: usize = 200;

struct Config {
    tracer: Tracer,
    // What a server layer extracts, or what a client layer injects.
    propagator: Arc<dyn Propagator>,
    trust: TrustPolicy,
    untrusted_baggage: bool,
    route: Option<Arc<RouteFn>>,
    max_routes: usize,
    // Made on the first request, so builder calls make (and leak) none.
    guard: OnceLock<route::RouteGuard>,
    protocol: Protocol,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("tracer", &self.tracer)
            .field("propagator", &self.propagator)
            .field("trust", &self.trust)
            .field("untrusted_baggage", &self.untrusted_baggage)
            .field("max_routes", &self.max_routes)
            .field("protocol", &self.protocol)
            .finish()
    }
}

/// What a server layer extracts by default: every common format, in the order
/// the [module docs](self#extraction) give, and baggage.
fn default_extractor(protocol: Protocol) -> Arc<dyn Propagator> {
    let mut formats = CompositePropagator::new().with(TraceContextPropagator::new());
    if protocol == Protocol::Grpc {
        formats = formats.with(GrpcTraceBinPropagator::new());
    }
    Arc::new(
        formats
            // Reads the single header, then the multiple headers.
            .with(B3Propagator::default())
            .with(CloudTraceContextPropagator::new())
            .with(BaggagePropagator::new()),
    )
}

/// What a client layer injects by default: W3C trace context (gRPC: and
/// `grpc-trace-bin`) and baggage.
fn default_injector(protocol: Protocol) -> Arc<dyn Propagator> {
    let mut formats = CompositePropagator::new().with(TraceContextPropagator::new());
    if protocol == Protocol::Grpc {
        formats = formats.with(GrpcTraceBinPropagator::new());
    }
    Arc::new(formats.with(BaggagePropagator::new()))
}

/// The server layer. See the [module docs](self), and [Hooks](self#hooks) for
/// `M`, `Req`, `Res` and `Fail` (all `()` unless set).
#[derive(Clone)]
pub struct TraceLayer<M = (), Req = (), Res = (), Fail = ()> {
    config: Arc<Config>,
    hooks: Hooks<M, Req, Res, Fail>,
}

impl<M, Req, Res, Fail> fmt::Debug for TraceLayer<M, Req, Res, Fail> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TraceLayer")
            .field("config", &self.config)
            .field("hooks", &self.hooks)
            .finish()
    }
}

impl TraceLayer {
    /// A layer recording server spans with `tracer`, extracting every common
    /// format (W3C trace context, B3 single and multiple headers,
    /// `X-Cloud-Trace-Context`, in that order, and baggage: see
    /// [Extraction](self#extraction)), trusting the caller's context
    /// ([`TrustPolicy::Parent`]), and naming routes by raw path (at most 200
    /// distinct paths, then `other`; see [`with_route`](Self::with_route) for
    /// servers open to untrusted clients).
    pub fn new(tracer: Tracer) -> Self {
        Self::for_protocol(tracer, Protocol::Http)
    }

    /// The same for `protocol` (used by `tracewire-grpc`; gRPC also extracts
    /// `grpc-trace-bin`, right after W3C).
    pub fn for_protocol(tracer: Tracer, protocol: Protocol) -> Self {
        Self::build(tracer, protocol, default_extractor(protocol))
    }

    fn build(tracer: Tracer, protocol: Protocol, propagator: Arc<dyn Propagator>) -> Self {
        TraceLayer {
            hooks: Hooks::default(),
            config: Arc::new(Config {
                tracer,
                propagator,
                trust: TrustPolicy::Parent,
                untrusted_baggage: false,
                route: None,
                max_routes: MAX_ROUTES,
                guard: OnceLock::new(),
                protocol,
            }),
        }
    }
}

impl<M, Req, Res, Fail> TraceLayer<M, Req, Res, Fail> {
    /// A copy of the configuration edited by `f`, with a guard of its own (made
    /// on its first request, with the edited `max_routes`).
    fn edit(self, f: impl FnOnce(&mut Config)) -> Self {
        let c = &self.config;
        let mut config = Config {
            tracer: c.tracer.clone(),
            propagator: c.propagator.clone(),
            trust: c.trust,
            untrusted_baggage: c.untrusted_baggage,
            route: c.route.clone(),
            max_routes: c.max_routes,
            guard: OnceLock::new(),
            protocol: c.protocol,
        };
        f(&mut config);
        TraceLayer {
            config: Arc::new(config),
            hooks: self.hooks,
        }
    }

    /// The same layer with other hooks.
    fn with_hooks<M2, Req2, Res2, Fail2>(
        self,
        hooks: impl FnOnce(Hooks<M, Req, Res, Fail>) -> Hooks<M2, Req2, Res2, Fail2>,
    ) -> TraceLayer<M2, Req2, Res2, Fail2> {
        TraceLayer {
            config: self.config,
            hooks: hooks(self.hooks),
        }
    }

    /// Shapes each span before it starts (its name, attributes the sampler
    /// sees), e.g. `|req: &http::request::Parts, span: &mut NewSpan| ..`. See
    /// [Hooks](self#hooks).
    pub fn make_span_with<M2: MakeSpan>(self, make_span: M2) -> TraceLayer<M2, Req, Res, Fail> {
        self.with_hooks(|h| Hooks {
            make_span,
            on_request: h.on_request,
            on_response: h.on_response,
            on_failure: h.on_failure,
        })
    }

    /// Called with each request and its started span, before the inner
    /// service, e.g. `|req: &http::request::Parts, span: &Span| ..`. See
    /// [Hooks](self#hooks).
    pub fn on_request<Req2: OnRequest>(self, on_request: Req2) -> TraceLayer<M, Req2, Res, Fail> {
        self.with_hooks(|h| Hooks {
            make_span: h.make_span,
            on_request,
            on_response: h.on_response,
            on_failure: h.on_failure,
        })
    }

    /// Called with each response head, e.g.
    /// `|res: &http::response::Parts, span: &Span| ..`. See [Hooks](self#hooks).
    pub fn on_response<Res2: OnResponse + Clone>(
        self,
        on_response: Res2,
    ) -> TraceLayer<M, Req, Res2, Fail> {
        self.with_hooks(|h| Hooks {
            make_span: h.make_span,
            on_request: h.on_request,
            on_response,
            on_failure: h.on_failure,
        })
    }

    /// Called each time the span becomes an error, e.g.
    /// `|failure: Failure<'_>, span: &Span| ..`. See [Hooks](self#hooks).
    pub fn on_failure<Fail2: OnFailure + Clone>(
        self,
        on_failure: Fail2,
    ) -> TraceLayer<M, Req, Res, Fail2> {
        self.with_hooks(|h| Hooks {
            make_span: h.make_span,
            on_request: h.on_request,
            on_response: h.on_response,
            on_failure,
        })
    }

    /// Extracts with `propagator` instead of the default formats, e.g. only
    /// [`TraceContextPropagator`], or a [`CompositePropagator`] in another order
    /// (its members are tried in order). A server layer injects nothing; what
    /// its handler's calls carry is the [`ClientTraceLayer`]'s choice.
    pub fn with_propagator(self, propagator: impl Propagator + 'static) -> Self {
        self.edit(|c| c.propagator = Arc::new(propagator))
    }

    /// How far to trust incoming context; [`TrustPolicy::LinkOnly`] for public
    /// endpoints (a new trace, linked to the caller's span). An untrusted caller's
    /// baggage is dropped unless [`with_untrusted_baggage`](Self::with_untrusted_baggage)
    /// says otherwise.
    pub fn with_trust(self, trust: TrustPolicy) -> Self {
        self.edit(|c| c.trust = trust)
    }

    /// Whether a caller the [trust policy](Self::with_trust) does not trust
    /// ([`TrustPolicy::LinkOnly`]) may still set the request's baggage. Off by
    /// default: its `baggage` header is ignored, so the handler sees no baggage
    /// and none of it is injected into the requests the handler makes. A trusted
    /// caller's baggage is always kept.
    pub fn with_untrusted_baggage(self, keep: bool) -> Self {
        self.edit(|c| c.untrusted_baggage = keep)
    }

    /// Names the route of a request (e.g. `/users/{id}`); with axum, read
    /// `axum::extract::MatchedPath` from `parts.extensions` (add this layer with
    /// `Router::layer`, which runs after routing).
    ///
    /// `None` means the request matched no route (an axum 404 has no
    /// `MatchedPath`): its span is named by the method alone (`GET`, as the
    /// OpenTelemetry HTTP conventions say), has no `http.route`, and its label is
    /// `http-path=unmatched`; it takes no slot of
    /// [`with_max_routes`](Self::with_max_routes), so a scanner cannot use them up.
    ///
    /// Without a route function every distinct raw path takes a slot, 404s
    /// included: fine for internal services, but give one for any server that
    /// untrusted clients can reach.
    pub fn with_route(
        self,
        route: impl Fn(&http::request::Parts) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.edit(|c| c.route = Some(Arc::new(route)))
    }

    /// At most `n` distinct routes (the route function's names, or raw paths
    /// without one) become span names and label values; later ones are `other`
    /// (default 200). Route names are interned for the life of the process.
    pub fn with_max_routes(self, n: usize) -> Self {
        self.edit(|c| c.max_routes = n)
    }
}

impl<S, M: Clone, Req: Clone, Res: Clone, Fail: Clone> Layer<S> for TraceLayer<M, Req, Res, Fail> {
    type Service = Trace<S, M, Req, Res, Fail>;
    fn layer(&self, inner: S) -> Self::Service {
        Trace {
            inner,
            config: self.config.clone(),
            hooks: self.hooks.clone(),
        }
    }
}

/// The server service made by [`TraceLayer`].
#[derive(Clone)]
pub struct Trace<S, M = (), Req = (), Res = (), Fail = ()> {
    inner: S,
    config: Arc<Config>,
    hooks: Hooks<M, Req, Res, Fail>,
}

impl<S: fmt::Debug, M, Req, Res, Fail> fmt::Debug for Trace<S, M, Req, Res, Fail> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trace")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .field("hooks", &self.hooks)
            .finish()
    }
}

impl<S, M, Req, Res, Fail> Trace<S, M, Req, Res, Fail> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// Lets `make_span` edit the span the layer would start (`name`, `attributes`),
/// then starts it with `start`. A panic in the hook is recorded on the span.
fn start_span<M: MakeSpan>(
    make_span: &M,
    parts: &http::request::Parts,
    name: Str,
    attributes: Vec<KeyValue>,
    start: impl FnOnce(NewSpan) -> Span,
) -> Span {
    let mut new = NewSpan { name, attributes };
    let panicked = hooks::catch(|| make_span.make_span(parts, &mut new)).err();
    let span = start(new);
    if let Some(message) = panicked {
        hooks::record_panic(&span, "make_span", message);
    }
    span
}

impl Config {
    fn guard(&self) -> &route::RouteGuard {
        self.guard
            .get_or_init(|| route::RouteGuard::new(self.max_routes, self.protocol.label_key()))
    }

    /// The server context for `parts`: extracted parent, server span (shaped
    /// by `make_span`), labels.
    fn server_context<M: MakeSpan>(&self, parts: &http::request::Parts, make_span: &M) -> Context {
        let mut extracted = self.propagator.extract(&Context::new(), &parts.headers);
        if self.trust != TrustPolicy::Parent
            && !self.untrusted_baggage
            && !extracted.baggage().is_empty()
        {
            extracted = extracted.with_baggage(Baggage::new());
        }
        let remote = if extracted.has_span() {
            extracted.span().span_context().clone()
        } else {
            crate::SpanContext::INVALID
        };
        let route = match (self.protocol, self.route.as_ref()) {
            (Protocol::Http, Some(f)) => match f(parts) {
                Some(r) => self.guard().admit(&r),
                None => route::unmatched(),
            },
            _ => self.guard().admit(parts.uri.path()),
        };
        let name: Str = match self.protocol {
            Protocol::Http => Str::Borrowed(route.span_name(&parts.method)),
            // `package.Service/Method`: the interned path without its `/`.
            Protocol::Grpc => Str::Borrowed(grpc_span_name(route.name)),
        };
        let mut b = self.tracer.span_builder("").with_kind(SpanKind::Server);
        let mut attributes = b.take_attribute_vec();
        // The route's interned name is the path itself unless a route function
        // named it (or the guard was full): then `url.path` needs no copy.
        let path = Some(route.name).filter(|name| *name == parts.uri.path());
        self.request_attributes(
            &mut attributes,
            parts,
            route.http_route(),
            path,
            Side::Server,
        );
        let span = start_span(make_span, parts, name, attributes, |new| {
            b.set_name(new.name);
            b.set_attribute_vec(new.attributes);
            match self.trust.apply(&remote) {
                RemoteParent::NewRoot => b.root(),
                RemoteParent::Parent(sc) => b.with_parent_span_context(sc),
                RemoteParent::NewRootWithLink(link) => b.root().with_link(link),
            }
            .start()
        });
        extracted.with_span_and_labels(span, route.labels.clone())
    }

    /// Adds the request's attributes (by the semantic conventions) to `attrs`;
    /// `path` is the request's path, interned, if it is.
    fn request_attributes(
        &self,
        attrs: &mut Vec<KeyValue>,
        parts: &http::request::Parts,
        route: Option<&'static str>,
        path: Option<&'static str>,
        side: Side,
    ) {
        // Both headers' first values in one pass: a request has few, and a
        // lookup by name hashes it.
        let (mut host_header, mut user_agent) = (None, None);
        for (name, value) in &parts.headers {
            if *name == http::header::HOST {
                host_header.get_or_insert(value);
            } else if *name == http::header::USER_AGENT {
                user_agent.get_or_insert(value);
            }
        }
        let host_header = host_header.and_then(|v| v.to_str().ok());
        let user_agent = user_agent.and_then(|v| v.to_str().ok());
        match self.protocol {
            Protocol::Http => {
                // Known methods as themselves; others as `_OTHER`, the original
                // beside it (OpenTelemetry HTTP conventions).
                let method = route::method_str(&parts.method);
                attrs.push(KeyValue::new("http.request.method", method));
                if method == "_OTHER" {
                    attrs.push(KeyValue::new(
                        "http.request.method_original",
                        parts.method.as_str().to_owned(),
                    ));
                }
                let version = match parts.version {
                    http::Version::HTTP_09 => Some("0.9"),
                    http::Version::HTTP_10 => Some("1.0"),
                    http::Version::HTTP_11 => Some("1.1"),
                    http::Version::HTTP_2 => Some("2"),
                    http::Version::HTTP_3 => Some("3"),
                    _ => None,
                };
                if let Some(v) = version {
                    attrs.push(KeyValue::new("network.protocol.version", v));
                }
                match side {
                    Side::Server => {
                        let path = match path {
                            Some(p) => Str::Borrowed(p),
                            None => Str::Owned(parts.uri.path().to_owned()),
                        };
                        attrs.push(KeyValue::new("url.path", path));
                        if let Some(q) = parts.uri.query().filter(|q| !q.is_empty()) {
                            attrs.push(KeyValue::new("url.query", q.to_owned()));
                        }
                        if let Some(route) = route {
                            attrs.push(KeyValue::new("http.route", route));
                        }
                        match parts.uri.scheme_str() {
                            Some("http") => attrs.push(KeyValue::new("url.scheme", "http")),
                            Some("https") => attrs.push(KeyValue::new("url.scheme", "https")),
                            _ => {}
                        }
                    }
                    Side::Client => {
                        attrs.push(KeyValue::new("url.full", parts.uri.to_string()));
                    }
                }
                if let Some(ua) = user_agent {
                    attrs.push(KeyValue::new("user_agent.original", ua.to_owned()));
                }
            }
            Protocol::Grpc => {
                attrs.push(KeyValue::new("rpc.system", "grpc"));
                let mut it = parts.uri.path().trim_start_matches('/').splitn(2, '/');
                if let (Some(service), Some(method)) = (it.next(), it.next()) {
                    attrs.push(KeyValue::new("rpc.service", service.to_owned()));
                    attrs.push(KeyValue::new("rpc.method", method.to_owned()));
                }
            }
        }
        let (host, port) = match parts.uri.host() {
            Some(h) => (Some(unbracketed(h).to_owned()), parts.uri.port_u16()),
            None => match host_header.and_then(split_host_port) {
                Some((h, p)) => (Some(h), p),
                None => (None, None),
            },
        };
        if let Some(host) = host {
            attrs.push(KeyValue::new("server.address", host));
        }
        if let Some(p) = port {
            attrs.push(KeyValue::new("server.port", i64::from(p)));
        }
        if let Some(peer) = parts.extensions.get::<std::net::SocketAddr>() {
            attrs.push(KeyValue::new("network.peer.address", peer.ip().to_string()));
            attrs.push(KeyValue::new("network.peer.port", i64::from(peer.port())));
            if side == Side::Server {
                // The caller as the connection shows it (no Forwarded header is
                // trusted: any client can write one).
                attrs.push(KeyValue::new("client.address", peer.ip().to_string()));
                attrs.push(KeyValue::new("client.port", i64::from(peer.port())));
            }
        }
    }
}

impl<S, B, RB, M, Req, Res, Fail> Service<Request<B>> for Trace<S, M, Req, Res, Fail>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: fmt::Display,
    M: MakeSpan,
    Req: OnRequest,
    Res: OnResponse + Clone,
    Fail: OnFailure + Clone,
{
    type Response = Response<ResponseBody<RB, Fail>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, Res, Fail>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (parts, body) = req.into_parts();
        let hooks = &self.hooks;
        let ctx = self.config.server_context(&parts, &hooks.make_span);
        // Work done in `call` itself belongs to the request too.
        let fut = {
            let _guard = ctx.clone().attach();
            let span = ctx.span();
            hooks::run(span, "on_request", || {
                hooks.on_request.on_request(&parts, span)
            });
            let req = Request::from_parts(parts, body);
            self.inner.call(req)
        };
        ResponseFuture::new(
            fut.in_context(ctx.clone()),
            ctx,
            (
                self.hooks.on_response.clone(),
                self.hooks.on_failure.clone(),
            ),
            self.config.protocol,
            Side::Server,
        )
    }
}

/// The client layer: a client span per request and the trace context injected into
/// its headers. See the [module docs](self); it takes the same
/// [hooks](self#hooks) as [`TraceLayer`].
#[derive(Clone)]
pub struct ClientTraceLayer<M = (), Req = (), Res = (), Fail = ()> {
    // The configuration and hooks; the server-only settings are not exposed.
    layer: TraceLayer<M, Req, Res, Fail>,
}

impl<M, Req, Res, Fail> fmt::Debug for ClientTraceLayer<M, Req, Res, Fail> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTraceLayer")
            .field("config", &self.layer.config)
            .field("hooks", &self.layer.hooks)
            .finish()
    }
}

impl ClientTraceLayer {
    /// Client spans with `tracer`, injecting W3C `traceparent`/`tracestate` and
    /// `baggage`.
    pub fn new(tracer: Tracer) -> Self {
        Self::for_protocol(tracer, Protocol::Http)
    }

    /// The same for `protocol` (gRPC also injects `grpc-trace-bin`).
    pub fn for_protocol(tracer: Tracer, protocol: Protocol) -> Self {
        ClientTraceLayer {
            layer: TraceLayer::build(tracer, protocol, default_injector(protocol)),
        }
    }
}

impl<M, Req, Res, Fail> ClientTraceLayer<M, Req, Res, Fail> {
    /// Injects with `propagator` instead (every format it holds is written), e.g.
    /// `B3Propagator::new(B3Encoding::Multi)` for peers that read only B3.
    pub fn with_propagator(self, propagator: impl Propagator + 'static) -> Self {
        ClientTraceLayer {
            layer: self.layer.with_propagator(propagator),
        }
    }

    /// As [`TraceLayer::make_span_with`], for client spans.
    pub fn make_span_with<M2: MakeSpan>(
        self,
        make_span: M2,
    ) -> ClientTraceLayer<M2, Req, Res, Fail> {
        ClientTraceLayer {
            layer: self.layer.make_span_with(make_span),
        }
    }

    /// As [`TraceLayer::on_request`], after the context has been injected
    /// (the head holds the headers sent).
    pub fn on_request<Req2: OnRequest>(
        self,
        on_request: Req2,
    ) -> ClientTraceLayer<M, Req2, Res, Fail> {
        ClientTraceLayer {
            layer: self.layer.on_request(on_request),
        }
    }

    /// As [`TraceLayer::on_response`].
    pub fn on_response<Res2: OnResponse + Clone>(
        self,
        on_response: Res2,
    ) -> ClientTraceLayer<M, Req, Res2, Fail> {
        ClientTraceLayer {
            layer: self.layer.on_response(on_response),
        }
    }

    /// As [`TraceLayer::on_failure`] (a client counts 4xx as failures too).
    pub fn on_failure<Fail2: OnFailure + Clone>(
        self,
        on_failure: Fail2,
    ) -> ClientTraceLayer<M, Req, Res, Fail2> {
        ClientTraceLayer {
            layer: self.layer.on_failure(on_failure),
        }
    }
}

impl<S, M: Clone, Req: Clone, Res: Clone, Fail: Clone> Layer<S>
    for ClientTraceLayer<M, Req, Res, Fail>
{
    type Service = ClientTrace<S, M, Req, Res, Fail>;
    fn layer(&self, inner: S) -> Self::Service {
        ClientTrace {
            inner,
            config: self.layer.config.clone(),
            hooks: self.layer.hooks.clone(),
        }
    }
}

/// The client service made by [`ClientTraceLayer`].
#[derive(Clone)]
pub struct ClientTrace<S, M = (), Req = (), Res = (), Fail = ()> {
    inner: S,
    config: Arc<Config>,
    hooks: Hooks<M, Req, Res, Fail>,
}

impl<S: fmt::Debug, M, Req, Res, Fail> fmt::Debug for ClientTrace<S, M, Req, Res, Fail> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTrace")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .field("hooks", &self.hooks)
            .finish()
    }
}

impl<S, M, Req, Res, Fail> ClientTrace<S, M, Req, Res, Fail> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B, RB, M, Req, Res, Fail> Service<Request<B>> for ClientTrace<S, M, Req, Res, Fail>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: fmt::Display,
    M: MakeSpan,
    Req: OnRequest,
    Res: OnResponse + Clone,
    Fail: OnFailure + Clone,
{
    type Response = Response<ResponseBody<RB, Fail>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, Res, Fail>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let c = &self.config;
        let (mut parts, body) = req.into_parts();
        let name: Str = match c.protocol {
            Protocol::Http => Str::Borrowed(match route::method_str(&parts.method) {
                "_OTHER" => "HTTP",
                known => known,
            }),
            Protocol::Grpc => grpc_span_name(parts.uri.path()).to_owned().into(),
        };
        let mut b = c.tracer.span_builder("").with_kind(SpanKind::Client);
        let mut attributes = b.take_attribute_vec();
        c.request_attributes(&mut attributes, &parts, None, None, Side::Client);
        let span = start_span(&self.hooks.make_span, &parts, name, attributes, |new| {
            b.set_name(new.name);
            b.set_attribute_vec(new.attributes);
            b.start()
        });
        let ctx = Context::current_with_span(span);
        c.propagator.inject(&ctx, &mut parts.headers);
        let span = ctx.span();
        let on_request = &self.hooks.on_request;
        hooks::run(span, "on_request", || on_request.on_request(&parts, span));
        let req = Request::from_parts(parts, body);
        let fut = self.inner.call(req);
        let hooks = (
            self.hooks.on_response.clone(),
            self.hooks.on_failure.clone(),
        );
        ResponseFuture::new(
            fut.in_context(ctx.clone()),
            ctx,
            hooks,
            c.protocol,
            Side::Client,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_headers_split_by_the_authority_parser() {
        type Split<'a> = Option<(&'a str, Option<u16>)>;
        let cases: [(&str, Split<'_>); 9] = [
            ("example.com", Some(("example.com", None))),
            ("example.com:8080", Some(("example.com", Some(8080)))),
            ("127.0.0.1:443", Some(("127.0.0.1", Some(443)))),
            ("[::1]:8443", Some(("::1", Some(8443)))),
            ("[2001:db8::1]", Some(("2001:db8::1", None))),
            ("bad host", None),
            // A port that is not a number is left out, the host kept.
            ("example.com:port", Some(("example.com", None))),
            ("example.com:99999", Some(("example.com", None))),
            ("example.com:", Some(("example.com", None))),
        ];
        for (header, want) in cases {
            let got = split_host_port(header);
            assert_eq!(
                got.as_ref().map(|(h, p)| (h.as_str(), *p)),
                want,
                "{header}"
            );
        }
    }

    proptest::proptest! {
        /// The split of plain `name[:port]` headers, made without the authority
        /// parser, is the parser's.
        #[test]
        fn plain_hosts_split_as_the_parser_splits_them(
            host in "[a-zA-Z0-9.-]{0,12}(:[0-9]{0,6})?",
        ) {
            proptest::prop_assert_eq!(split_host_port(&host), parse_host_port(&host));
        }
    }

    #[test]
    fn builder_calls_intern_no_routes() {
        let before = route::interned_on_this_thread();
        let mut layer = TraceLayer::new(crate::TracerProvider::builder().build().tracer("t"));
        for _ in 0..100 {
            layer = layer.with_max_routes(10).with_trust(TrustPolicy::LinkOnly);
        }
        assert_eq!(
            route::interned_on_this_thread() - before,
            0,
            "routes leaked by building one layer with 200 builder calls"
        );
        drop(layer);
    }
}
