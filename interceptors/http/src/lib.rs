//! # tracewire-http
//!
//! [tracewire] for HTTP servers and clients built on [`http`] types (hyper 1, axum,
//! anything speaking [`http::Request`]).
//!
//! - [`trace`]: [`TraceLayer`](trace::TraceLayer) for servers and
//!   [`ClientTraceLayer`](trace::ClientTraceLayer) for clients: context propagated
//!   in and out (W3C, B3, `X-Cloud-Trace-Context`), server and client spans, and
//!   the `http-path` profiler label on every CPU sample taken in a handler.
//! - [`debug`] (feature `debug`): [`PprofService`](debug::PprofService), a tower service that answers
//!   like Go's `net/http/pprof`, so `go tool pprof http://HOST/debug/pprof/profile`
//!   profiles a running Rust server, with the labels of every sample
//!   (`-tagfocus http-path:/user`). It also serves the process's
//!   [custom profiles](tracewire::profile::CustomProfile) and a CPU flame graph
//!   filtered by label. And [`TracezService`](debug::TracezService), the
//!   `/debug/tracez` pages: spans by name and latency, a trace's waterfall with
//!   the CPU sampled under each span, and that span's flame graph, fed by a
//!   [`Tracez`](debug::Tracez) store on the span pipeline.
//! - `axum` (feature `axum`): [`axum::TraceLayer`], the server layer naming
//!   spans by the route axum matched (`GET /users/{id}`) and recording the
//!   caller's address from `ConnectInfo`.
//! - `reqwest` (feature `reqwest`): [`reqwest::TraceMiddleware`], client spans
//!   and context injection for `reqwest-middleware` clients.
//!
//! ## Example (feature `debug`)
//!
//! The service is a plain [`tower_service::Service`]; mount it in any server (see
//! [`debug`] for hyper), or call it directly:
//!
//! ```
//! use http::{Request, StatusCode};
//! use http_body_util::BodyExt;
//! use tower::ServiceExt;
//! use tracewire::profile::CustomProfile;
//! use tracewire_http::debug::PprofService;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let conns = CustomProfile::new("example.Conns").unwrap();
//! conns.add(&7u32, 0);
//!
//! let pprof = PprofService::new(); // serves /debug/pprof/...
//! let index = Request::get("/debug/pprof/").body(()).unwrap();
//! let response = pprof.clone().oneshot(index).await.unwrap();
//! assert_eq!(response.status(), StatusCode::OK);
//! let html = response.into_body().collect().await.unwrap().to_bytes();
//! assert!(String::from_utf8_lossy(&html).contains("example.Conns"));
//!
//! let unknown = Request::get("/debug/pprof/nope").body(()).unwrap();
//! let response = pprof.oneshot(unknown).await.unwrap();
//! assert_eq!(response.status(), StatusCode::NOT_FOUND);
//! # }
//! ```
//!
//! ## Feature flags
//!
//! None is on by default.
//!
//! | feature | adds |
//! |---|---|
//! | `debug` | [`debug`]: `/debug/pprof` ([`PprofService`](debug::PprofService)) and `/debug/tracez` ([`TracezService`](debug::TracezService)), and the `inferno`, `tokio` and `percent-encoding` dependencies they need. Off because the pages show the program's internals (profiles, span attributes, custom profiles): mount them on a loopback or authenticated port |
//! | `axum` | [`axum`]: route names from axum's `MatchedPath`, the peer from `ConnectInfo<SocketAddr>` (axum 0.8) |
//! | `reqwest` | [`reqwest`]: a `reqwest-middleware` middleware (reqwest 0.13, reqwest-middleware 0.5; no TLS or other reqwest defaults enabled) |
//!
//! ## Platform
//!
//! CPU profiles need Linux (the tracewire profiler's platform); elsewhere the
//! `/profile` and `/flamegraph` endpoints answer `500` with the reason.
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
// Links into feature-gated modules resolve when the feature is on (docs.rs
// builds with all features).
#![cfg_attr(not(feature = "debug"), allow(rustdoc::broken_intra_doc_links))]

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod axum;
#[cfg(feature = "debug")]
#[cfg_attr(docsrs, doc(cfg(feature = "debug")))]
pub mod debug;
#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
pub mod reqwest;
pub mod trace;
