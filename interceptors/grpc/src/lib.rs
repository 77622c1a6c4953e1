//! # tracewire-grpc
//!
//! [tracewire] for [tonic] gRPC services and clients:
//!
//! - [`GrpcTraceLayer`] (server): extracts the caller's context in any common
//!   format, tried in this order: `traceparent`/`tracestate`, `grpc-trace-bin`
//!   (what OpenCensus `ocgrpc` sends), B3 `b3` then `x-b3-*`, and
//!   `x-cloud-trace-context` (the first valid one wins; see [`tracewire::tower`'s
//!   extraction rules](tracewire::tower#extraction)), and `baggage`; starts a
//!   server span named `package.Service/Method` (the OpenTelemetry RPC
//!   conventions' name) with the `rpc.*` attributes, polls the handler — and, for
//!   streaming RPCs, the whole response stream — inside a context with that span
//!   and the profiler label `grpc-method=/package.Service/Method` (the request
//!   path), reads the outcome from `grpc-status` in the headers or the trailers,
//!   and ends the span when the stream is done. A layer rather than a tonic
//!   interceptor, because an interceptor cannot see the response.
//!   Server spans record the caller's address (`client.address`,
//!   `client.port`, `network.peer.address`, `network.peer.port`) from the
//!   `TcpConnectInfo` tonic's server attaches to each request (feature
//!   `connect-info`), or from a `SocketAddr` request extension an outer layer
//!   set. Over TLS tonic attaches `TlsConnectInfo` instead, which is not read:
//!   insert the `SocketAddr` in a layer of your own.
//! - [`GrpcClientLayer`]: a client span per call, the context injected
//!   (`traceparent` and `grpc-trace-bin`), the status recorded.
//! - Both layers take the core layers' hooks (`make_span_with`, `on_request`,
//!   `on_response`, `on_failure`; see [Hooks](tracewire::tower#hooks)), to add
//!   attributes without forking them.
//! - [`TraceInterceptor`]: for clients built with an interceptor: injects the
//!   current context (no span of its own; use the layer to record client spans).
//!
//! ```no_run
//! use tonic::transport::{Channel, Server};
//! use tower::ServiceBuilder;
//! use tracewire::TracerProvider;
//! use tracewire_grpc::{GrpcClientLayer, GrpcTraceLayer};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let provider = TracerProvider::builder().build();
//! let (_, health) = tonic_health::server::health_reporter();
//! // Server: every RPC traced and labelled.
//! let server = Server::builder()
//!     .layer(GrpcTraceLayer::new(provider.tracer("backend")))
//!     .add_service(health)
//!     .serve("127.0.0.1:50051".parse()?);
//! // Client: spans and propagation around a channel.
//! let channel = Channel::from_static("http://127.0.0.1:50051").connect_lazy();
//! let channel = ServiceBuilder::new()
//!     .layer(GrpcClientLayer::new(provider.tracer("frontend")))
//!     .service(channel);
//! let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
//! # drop(server); Ok(()) }
//! ```
//!
//! ## Feature flags
//!
//! | feature | default | adds |
//! |---|---|---|
//! | `connect-info` | on | the caller's address on server spans, from tonic's `TcpConnectInfo` (enables tonic's `server` feature, which any tonic server has; a client-only build can turn it off) |
//!
//! The crate depends on `tracewire` (its `tower` feature), `tonic`, `http` and
//! the tower traits only: not on `tracewire-http` or its `/debug` pages.
//!
//! MSRV: 1.88.
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]

use std::task::{Context as TaskContext, Poll};

use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tower_layer::Layer;
use tower_service::Service;
use tracewire::propagation::{
    CompositePropagator, GrpcTraceBinPropagator, Injector, Propagator, TraceContextPropagator,
    TrustPolicy,
};
use tracewire::tower::{ClientTrace, ClientTraceLayer, Protocol, Trace, TraceLayer};
use tracewire::{Context, Tracer};

pub use tracewire::tower::{
    Failure, MakeSpan, NewSpan, OnFailure, OnRequest, OnResponse, ResponseBody, ResponseFuture,
};

/// The hook setters of a layer (see [`tracewire::tower`'s
/// hooks](tracewire::tower#hooks)), forwarded to the core layer it wraps.
macro_rules! hook_setters {
    ($layer:ident) => {
        /// Shapes each span before it starts (name, attributes the sampler
        /// sees): [`MakeSpan`].
        pub fn make_span_with<M2: MakeSpan>(self, make_span: M2) -> $layer<M2, Req, Res, Fail> {
            $layer {
                inner: self.inner.make_span_with(make_span),
            }
        }
        /// Called with each call's request head and span, before the service:
        /// [`OnRequest`].
        pub fn on_request<Req2: OnRequest>(self, on_request: Req2) -> $layer<M, Req2, Res, Fail> {
            $layer {
                inner: self.inner.on_request(on_request),
            }
        }
        /// Called with each response head (the status may still come in the
        /// trailers): [`OnResponse`].
        pub fn on_response<Res2: OnResponse + Clone>(
            self,
            on_response: Res2,
        ) -> $layer<M, Req, Res2, Fail> {
            $layer {
                inner: self.inner.on_response(on_response),
            }
        }
        /// Called each time the span becomes an error (an error `grpc-status`,
        /// a panic, a cancelled call): [`OnFailure`].
        pub fn on_failure<Fail2: OnFailure + Clone>(
            self,
            on_failure: Fail2,
        ) -> $layer<M, Req, Res, Fail2> {
            $layer {
                inner: self.inner.on_failure(on_failure),
            }
        }
    };
}

/// A service made by one of the layers: the core's service under this crate's
/// name, with the accessors and the `Service` impl forwarded (`call` goes
/// through the type's own `before_call`).
macro_rules! forward_service {
    ($service:ident) => {
        impl<S, M, Req, Res, Fail> $service<S, M, Req, Res, Fail> {
            /// The wrapped service.
            pub fn get_ref(&self) -> &S {
                self.inner.get_ref()
            }
            /// The wrapped service, mutably.
            pub fn get_mut(&mut self) -> &mut S {
                self.inner.get_mut()
            }
            /// Unwraps the service.
            pub fn into_inner(self) -> S {
                self.inner.into_inner()
            }
        }

        impl<S: std::fmt::Debug, M, Req, Res, Fail> std::fmt::Debug
            for $service<S, M, Req, Res, Fail>
        {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($service))
                    .field("inner", &self.inner)
                    .finish()
            }
        }

        impl<S, B, RB, M, Req, Res, Fail> Service<http::Request<B>>
            for $service<S, M, Req, Res, Fail>
        where
            S: Service<http::Request<B>, Response = http::Response<RB>>,
            S::Error: std::fmt::Display,
            M: MakeSpan,
            Req: OnRequest,
            Res: OnResponse + Clone,
            Fail: OnFailure + Clone,
        {
            type Response = http::Response<ResponseBody<RB, Fail>>;
            type Error = S::Error;
            type Future = ResponseFuture<S::Future, Res, Fail>;

            fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
                self.inner.poll_ready(cx)
            }
            fn call(&mut self, req: http::Request<B>) -> Self::Future {
                let req = Self::before_call(req);
                self.inner.call(req)
            }
        }
    };
}

/// The server layer. See the [crate docs](crate); `M`, `Req`, `Res` and
/// `Fail` are its hooks (all `()` unless set).
#[derive(Clone)]
pub struct GrpcTraceLayer<M = (), Req = (), Res = (), Fail = ()> {
    inner: TraceLayer<M, Req, Res, Fail>,
}

impl<M, Req, Res, Fail> std::fmt::Debug for GrpcTraceLayer<M, Req, Res, Fail> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcTraceLayer")
            .field("inner", &self.inner)
            .finish()
    }
}

impl GrpcTraceLayer {
    /// Server spans with `tracer`, trusting the caller's context.
    pub fn new(tracer: Tracer) -> Self {
        GrpcTraceLayer {
            inner: TraceLayer::for_protocol(tracer, Protocol::Grpc),
        }
    }
}

impl<M, Req, Res, Fail> GrpcTraceLayer<M, Req, Res, Fail> {
    hook_setters!(GrpcTraceLayer);

    /// Extracts with `propagator` instead of the default formats (W3C,
    /// `grpc-trace-bin`, B3, `x-cloud-trace-context` and baggage). A server
    /// layer injects nothing.
    pub fn with_propagator(self, propagator: impl Propagator + 'static) -> Self {
        GrpcTraceLayer {
            inner: self.inner.with_propagator(propagator),
        }
    }
    /// How far to trust incoming context, in whichever format it came
    /// ([`TrustPolicy::LinkOnly`] for public endpoints). An untrusted caller's
    /// baggage is dropped unless
    /// [`with_untrusted_baggage`](Self::with_untrusted_baggage) says otherwise.
    pub fn with_trust(self, trust: TrustPolicy) -> Self {
        GrpcTraceLayer {
            inner: self.inner.with_trust(trust),
        }
    }
    /// Whether a caller the trust policy does not trust may still set the call's
    /// baggage (off by default: its `baggage` metadata is ignored, so the service
    /// sees none and none is passed on downstream). See
    /// [`TraceLayer::with_untrusted_baggage`].
    pub fn with_untrusted_baggage(self, keep: bool) -> Self {
        GrpcTraceLayer {
            inner: self.inner.with_untrusted_baggage(keep),
        }
    }
}

impl<S, M: Clone, Req: Clone, Res: Clone, Fail: Clone> Layer<S>
    for GrpcTraceLayer<M, Req, Res, Fail>
{
    type Service = GrpcTrace<S, M, Req, Res, Fail>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcTrace {
            inner: self.inner.layer(inner),
        }
    }
}

/// The server service made by [`GrpcTraceLayer`]; forwards tonic's `NamedService`.
#[derive(Clone)]
pub struct GrpcTrace<S, M = (), Req = (), Res = (), Fail = ()> {
    inner: Trace<S, M, Req, Res, Fail>,
}

forward_service!(GrpcTrace);

impl<S, M, Req, Res, Fail> GrpcTrace<S, M, Req, Res, Fail> {
    /// The request as the core layer gets it: with the caller's address.
    fn before_call<B>(req: http::Request<B>) -> http::Request<B> {
        #[cfg(feature = "connect-info")]
        let req = {
            let mut req = req;
            peer_from_connect_info(req.extensions_mut());
            req
        };
        req
    }
}

/// Gives the server layer, which reads the caller's address from a
/// `SocketAddr` extension, the one tonic's server put in `TcpConnectInfo`. One
/// set by an outer layer wins.
#[cfg(feature = "connect-info")]
fn peer_from_connect_info(extensions: &mut http::Extensions) {
    use tonic::transport::server::TcpConnectInfo;
    if extensions.get::<std::net::SocketAddr>().is_some() {
        return;
    }
    let peer = extensions
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr);
    if let Some(peer) = peer {
        extensions.insert(peer);
    }
}

impl<S: tonic::server::NamedService, M, Req, Res, Fail> tonic::server::NamedService
    for GrpcTrace<S, M, Req, Res, Fail>
{
    const NAME: &'static str = S::NAME;
}

/// The client layer: a client span per call and the context injected. Wrap a
/// `tonic::transport::Channel` with it and build the generated client on top.
/// Takes the same hooks as [`GrpcTraceLayer`].
#[derive(Clone)]
pub struct GrpcClientLayer<M = (), Req = (), Res = (), Fail = ()> {
    inner: ClientTraceLayer<M, Req, Res, Fail>,
}

impl<M, Req, Res, Fail> std::fmt::Debug for GrpcClientLayer<M, Req, Res, Fail> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcClientLayer")
            .field("inner", &self.inner)
            .finish()
    }
}

impl GrpcClientLayer {
    /// Client spans with `tracer`; injects `traceparent`, `grpc-trace-bin` and
    /// `baggage`.
    pub fn new(tracer: Tracer) -> Self {
        GrpcClientLayer {
            inner: ClientTraceLayer::for_protocol(tracer, Protocol::Grpc),
        }
    }
}

impl<M, Req, Res, Fail> GrpcClientLayer<M, Req, Res, Fail> {
    hook_setters!(GrpcClientLayer);

    /// Injects with `propagator` instead (every format it holds is written), e.g.
    /// the one `OTEL_PROPAGATORS` names ([`tracewire::env::propagators`]).
    pub fn with_propagator(self, propagator: impl Propagator + 'static) -> Self {
        GrpcClientLayer {
            inner: self.inner.with_propagator(propagator),
        }
    }
}

impl<S, M: Clone, Req: Clone, Res: Clone, Fail: Clone> Layer<S>
    for GrpcClientLayer<M, Req, Res, Fail>
{
    type Service = GrpcClient<S, M, Req, Res, Fail>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcClient {
            inner: self.inner.layer(inner),
        }
    }
}

/// The client service made by [`GrpcClientLayer`]: what a generated client is
/// built on (`GreeterClient<GrpcClient<Channel>>`).
#[derive(Clone)]
pub struct GrpcClient<S, M = (), Req = (), Res = (), Fail = ()> {
    inner: ClientTrace<S, M, Req, Res, Fail>,
}

forward_service!(GrpcClient);

impl<S, M, Req, Res, Fail> GrpcClient<S, M, Req, Res, Fail> {
    /// The request as the core layer gets it: as it is.
    fn before_call<B>(req: http::Request<B>) -> http::Request<B> {
        req
    }
}

/// Writes headers into tonic metadata: `-bin` keys get the decoded bytes (tonic
/// base64-encodes binary metadata itself).
struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, name: &str, value: String) {
        if name.ends_with("-bin") {
            let Some(bytes) = decode_base64(value.as_bytes()) else {
                return;
            };
            if let Ok(key) = MetadataKey::from_bytes(name.as_bytes()) {
                self.0.insert_bin(key, MetadataValue::from_bytes(&bytes));
            }
        } else if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(name.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// The bytes of a `-bin` header value as the propagators write it: base64,
/// padded or not (the standard alphabet, else the URL-safe one).
fn decode_base64(text: &[u8]) -> Option<Vec<u8>> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    use base64::{alphabet, Engine as _};
    const CONFIG: GeneralPurposeConfig =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, CONFIG);
    const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, CONFIG);
    STANDARD
        .decode(text)
        .or_else(|_| URL_SAFE.decode(text))
        .ok()
}

/// A tonic interceptor that injects the current context (`traceparent`,
/// `grpc-trace-bin`, `baggage`) into every outgoing request. It records no span:
/// combine with [`GrpcClientLayer`] for client spans with the call's status.
#[derive(Clone, Debug)]
pub struct TraceInterceptor {
    propagator: std::sync::Arc<dyn Propagator>,
}

impl Default for TraceInterceptor {
    fn default() -> Self {
        TraceInterceptor {
            propagator: std::sync::Arc::new(
                CompositePropagator::new()
                    .with(TraceContextPropagator::new())
                    .with(GrpcTraceBinPropagator::new())
                    .with(tracewire::propagation::BaggagePropagator::new()),
            ),
        }
    }
}

impl TraceInterceptor {
    /// Injects W3C, `grpc-trace-bin` and baggage.
    pub fn new() -> Self {
        Self::default()
    }
    /// Injects with `propagator` instead.
    pub fn with_propagator(propagator: impl Propagator + 'static) -> Self {
        TraceInterceptor {
            propagator: std::sync::Arc::new(propagator),
        }
    }
}

impl tonic::service::Interceptor for TraceInterceptor {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        let ctx = Context::current();
        self.propagator
            .inject(&ctx, &mut MetadataInjector(request.metadata_mut()));
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_padded_and_unpadded() {
        assert_eq!(decode_base64(b"AAEC").unwrap(), vec![0, 1, 2]);
        assert_eq!(decode_base64(b"AAE").unwrap(), vec![0, 1]);
        assert_eq!(decode_base64(b"AAE=").unwrap(), vec![0, 1]);
        assert!(decode_base64(b"A*E").is_none());
    }
}
