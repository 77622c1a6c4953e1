//! axum: server spans named by the route axum matched, with the caller's address
//! (feature `axum`).
//!
//! [`TraceLayer`] is the [server layer](crate::trace::TraceLayer) with axum's
//! route names: a request to `/users/7` that `.route("/users/{id}", ..)` answers
//! gets a span named `GET /users/{id}`, with `http.route=/users/{id}`, and the
//! handler runs under the profiler label `http-path=/users/{id}`, all read from
//! [`MatchedPath`]. When the app is served with
//! `into_make_service_with_connect_info::<SocketAddr>()`, the span also records
//! the caller's address from [`ConnectInfo`]: `client.address`, `client.port`
//! (and `network.peer.address`, `network.peer.port`).
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use axum::{routing::get, Router};
//! use tracewire::TracerProvider;
//!
//! # async fn run() -> std::io::Result<()> {
//! let provider = TracerProvider::builder().build();
//! let app = Router::new()
//!     .route("/users/{id}", get(|| async { "a user" }))
//!     .route("/health", get(|| async { "ok" }))
//!     // After the routes: axum runs `Router::layer` layers after routing.
//!     .layer(tracewire_http::axum::TraceLayer::new(provider.tracer("users")));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! // With ConnectInfo, spans carry client.address and client.port.
//! axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await
//! # }
//! ```
//!
//! # Where the layer goes
//!
//! Add it with [`Router::layer`](::axum::Router::layer), after the routes it
//! should trace. axum calls those layers once it has routed the request, so the
//! route is known:
//!
//! - A request no route matches (the fallback, axum's 404) gets a span named by
//!   its method alone (`GET`, as the OpenTelemetry HTTP conventions say), no
//!   `http.route`, and `http-path=unmatched`; such requests never become span
//!   names or label values of their own, so a scanner cannot grow them.
//! - A request a route matches with the wrong method (axum's 405) keeps the
//!   route's name.
//! - Nested routers: `Router::new().nest("/api", users)` names spans by the
//!   whole template (`GET /api/users/{id}`) and records the whole path as
//!   `url.path`, whether the layer was added to the outer router or to `users`
//!   before nesting (whose handlers still see the path without `/api`).
//! - A service mounted with `nest_service` (such as
//!   [`PprofService`](crate::debug::PprofService)) has no `MatchedPath` (axum sets
//!   none behind its wildcard), so its requests are named like unmatched ones.
//!   Routes added after `.layer(..)` are not traced at all, the place for
//!   `/debug/pprof`.
//! - [`Router::route_layer`](::axum::Router::route_layer) works too, but leaves
//!   the fallback untraced.
//!
//! Wrapping the whole router instead (`ServiceBuilder::new().layer(..).service(router)`,
//! or `TraceLayer::layer(&layer, router)`) runs the layer *before* routing: no
//! request has a `MatchedPath` yet, so every span is named by its method alone,
//! as unmatched requests are. Nothing grows without bound, but no route is
//! recorded either: use `Router::layer`.
//!
//! # Configuration
//!
//! Every setting of the [server layer](crate::trace::TraceLayer) applies; set
//! them there and convert, which replaces only the route function:
//!
//! ```
//! use tracewire::propagation::TrustPolicy;
//! use tracewire::TracerProvider;
//! use tracewire_http::{axum, trace};
//!
//! let provider = TracerProvider::builder().build();
//! let layer = axum::TraceLayer::from(
//!     trace::TraceLayer::new(provider.tracer("public-api")).with_trust(TrustPolicy::LinkOnly),
//! );
//! # let _ = layer;
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::task::{Context as TaskContext, Poll};

use ::axum::extract::{ConnectInfo, MatchedPath, OriginalUri};
use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;
use tracewire::Tracer;

use crate::trace;

/// The route template axum matched (`/users/{id}`), read from [`MatchedPath`];
/// `None` before routing or when no route matched. It is the route function
/// [`TraceLayer`] gives [`trace::TraceLayer::with_route`], for stacks that
/// build the server layer themselves.
pub fn route(parts: &http::request::Parts) -> Option<String> {
    parts
        .extensions
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
}

/// The server layer for axum routers. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct TraceLayer {
    inner: trace::TraceLayer,
}

impl TraceLayer {
    /// Server spans with `tracer`, named by axum's route, with the
    /// [server layer](trace::TraceLayer::new)'s defaults otherwise.
    pub fn new(tracer: Tracer) -> Self {
        trace::TraceLayer::new(tracer).into()
    }
}

/// Keeps every setting of `layer` but its route function, which becomes
/// [`route`].
impl From<trace::TraceLayer> for TraceLayer {
    fn from(layer: trace::TraceLayer) -> Self {
        TraceLayer {
            inner: layer.with_route(route),
        }
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;
    fn layer(&self, inner: S) -> Trace<S> {
        Trace {
            inner: self.inner.layer(Unnest { inner }),
        }
    }
}

/// The service made by [`TraceLayer`]: the [server service](trace::Trace),
/// given the peer address from [`ConnectInfo`] and, inside a nested router, the
/// request's whole URI (from [`OriginalUri`]) for `url.path` and `url.query`;
/// the wrapped service still gets the URI axum gave it.
#[derive(Clone, Debug)]
pub struct Trace<S> {
    inner: trace::Trace<Unnest<S>>,
}

impl<S> Trace<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner.get_ref().inner
    }
    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner.get_mut().inner
    }
    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner.into_inner().inner
    }
}

/// The URI a nested router gave the request (its prefix stripped), kept for
/// [`Unnest`] while the server layer sees the whole one.
#[derive(Clone)]
struct NestedUri(http::Uri);

impl<S, B, RB> Service<Request<B>> for Trace<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: fmt::Display,
{
    type Response = Response<trace::ResponseBody<RB>>;
    type Error = S::Error;
    type Future = trace::ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // The server layer reads the peer from a `SocketAddr` extension (what a
        // hyper accept loop inserts); axum's connect-info service puts it in
        // `ConnectInfo`. One set by an outer layer wins.
        let extensions = req.extensions_mut();
        if extensions.get::<SocketAddr>().is_none() {
            if let Some(&ConnectInfo(peer)) = extensions.get::<ConnectInfo<SocketAddr>>() {
                extensions.insert(peer);
            }
        }
        // A layer added to a router before it was nested sees the path without
        // the nesting prefix; the span records the one the client sent.
        let whole = match req.extensions().get::<OriginalUri>() {
            Some(OriginalUri(whole)) if whole != req.uri() => Some(whole.clone()),
            _ => None,
        };
        if let Some(whole) = whole {
            let nested = std::mem::replace(req.uri_mut(), whole);
            req.extensions_mut().insert(NestedUri(nested));
        }
        self.inner.call(req)
    }
}

/// Between the server layer and the wrapped service: gives the request back the
/// URI its router gave it.
#[derive(Clone, Debug)]
struct Unnest<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for Unnest<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        if let Some(NestedUri(nested)) = req.extensions_mut().remove() {
            *req.uri_mut() = nested;
        }
        self.inner.call(req)
    }
}
