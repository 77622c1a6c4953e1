//! Tracing for HTTP servers and clients as tower layers.
//!
//! - [`TraceLayer`] (server): extracts the caller's context in any common format
//!   (W3C, B3 single and multiple headers, `X-Cloud-Trace-Context`, and
//!   `baggage`, in the order [`tracewire::tower`'s extraction
//!   rules](tracewire::tower#extraction) give), starts a server span named
//!   `METHOD route` with the OpenTelemetry HTTP attributes, and polls the
//!   handler and the response body inside a context holding that span and the
//!   profiler label `http-path=route`. The span ends when the response body has
//!   been sent (or dropped).
//! - [`ClientTraceLayer`]: a client span per request, the context injected into
//!   the request headers (W3C and `baggage` unless configured), the response
//!   status recorded.
//!
//! Both take tower-http's hooks (`make_span_with`, `on_request`,
//! `on_response`, `on_failure`; see [Hooks](tracewire::tower#hooks)) to add
//! attributes without forking the layer.
//!
//! These are the layers of [`tracewire::tower`] (the core crate's `tower`
//! feature, shared with `tracewire-grpc`), re-exported; their docs say the rest.
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tracewire::{labels, TracerProvider};
//! use tracewire_http::trace::TraceLayer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let provider = TracerProvider::builder().build();
//! let svc = ServiceBuilder::new()
//!     .layer(TraceLayer::new(provider.tracer("frontend")))
//!     .service(service_fn(|_req: Request<()>| async {
//!         // CPU samples taken here carry http-path=/user.
//!         let path = labels::current().get("http-path").map(str::to_owned);
//!         Ok::<_, Infallible>(Response::new(http_body_util::Full::<bytes::Bytes>::from(
//!             path.unwrap_or_default(),
//!         )))
//!     }));
//! let req = Request::get("/user")
//!     .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
//!     .body(())
//!     .unwrap();
//! let response = svc.oneshot(req).await.unwrap();
//! # }
//! ```

pub use tracewire::tower::{
    ClientTrace, ClientTraceLayer, Failure, MakeSpan, NewSpan, OnFailure, OnRequest, OnResponse,
    Protocol, ResponseBody, ResponseFuture, Trace, TraceLayer,
};
