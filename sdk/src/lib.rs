//! # tracewire
//!
//! Context-propagated tracing and profiler labels. One immutable [`Context`] carries
//! a request's current span and its profiler labels through function calls,
//! `.await`s, `tokio::spawn` and threads; whatever makes a context current also
//! makes its labels current for the CPU profiler, so every CPU sample can say which
//! request, handler and span it was taken in.
//!
//! - [`context`]: [`Context`], [`Context::attach`], [`ContextExt::in_context`],
//!   [`spawn`] / [`spawn_blocking`] that carry the caller's context.
//! - [`trace`]: ids, [`SpanContext`], [`Tracer`], [`Span`], samplers, limits
//!   and observers.
//! - [`provider`]: [`TracerProvider`], which joins a sampler, limits and
//!   observers to processors and exporters; configured in code or by `OTEL_*`
//!   variables.
//! - [`labels`]: [`LabelSet`](labels::LabelSet) and
//!   [`with_labels`](labels::with_labels), Go's `pprof.Labels` / `pprof.Do`.
//! - [`export`]: the non-blocking batch pipeline, the in-memory and JSON-lines
//!   exporters, and the [`SpanExporter`](export::SpanExporter) trait the Zipkin and
//!   Cloud Trace crates implement.
//! - [`alloc`]: the labelled heap profiler, a wrapper a binary installs as its
//!   `#[global_allocator]`.
//! - [`env`](mod@env): configuration from the OpenTelemetry `OTEL_*` variables
//!   ([`TracerProviderBuilder::from_env`](TracerProviderBuilder::from_env));
//!   values set in code win.
//! - `tower` (feature `tower`): the server and client layers for HTTP and gRPC
//!   that `tracewire-http` and `tracewire-grpc` are made of.
//!
//! ## Features
//!
//! On by default:
//!
//! - `profile`: the CPU profiler ([`profile`]) and the heap profiler
//!   ([`alloc`]); pulls `prost`, `flate2`, `backtrace`, `addr2line`, `object`,
//!   `rustc-demangle` and `libc`. A library that only needs `Context`, labels
//!   and spans can turn default features off: labels still travel with the
//!   context, and a binary with the feature on profiles them.
//! - `json`: [`export::JsonLinesExporter`]; pulls `serde_json`.
//!
//! Off by default:
//!
//! - `tower`: the `tower` module (pulls `http-body`, `tower-service`,
//!   `tower-layer`, `percent-encoding`).
//! - `tracing`: a `tracing-subscriber` layer that turns `tracing` spans into
//!   tracewire spans ([`bridge`]).
//! - `opentelemetry`: span context conversions and an adapter to
//!   `opentelemetry_sdk` span exporters ([`bridge`]).
//!
//! ## Example
//!
//! ```
//! use std::time::Duration;
//! use tracewire::export::InMemoryExporter;
//! use tracewire::labels::LabelSet;
//! use tracewire::{Context, ContextExt, KeyValue, TracerProvider};
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() {
//! let exporter = InMemoryExporter::new();
//! let provider = TracerProvider::builder()
//!     .with_service_name("frontend")
//!     .with_batch_exporter(exporter.clone())
//!     .build();
//! let tracer = provider.tracer("example");
//!
//! let request = tracer.start("GET /user");
//! request.set_attribute("http.route", "/user");
//! let ctx = Context::new()
//!     .with_span(request)
//!     .with_labels(LabelSet::new([("http-path", "/user")]));
//!
//! async {
//!     // The context (span and labels) is current on every poll, on any thread,
//!     // and follows the work into spawned tasks.
//!     let child = tracewire::spawn(async {
//!         tracewire::labels::current().get("http-path").map(str::to_owned)
//!     });
//!     assert_eq!(child.await.unwrap().as_deref(), Some("/user"));
//!     let db = tracer.start("db.query"); // child of "GET /user"
//!     db.end();
//! }
//! .in_context(ctx)
//! .await;
//!
//! provider.shutdown(Duration::from_secs(5)).unwrap();
//! let spans = exporter.spans();
//! assert_eq!(spans.len(), 2);
//! assert_eq!(spans[0].parent_span_id, spans[1].span_context.span_id());
//! # }
//! ```
//!
//! ## Design
//!
//! - Span start/end never block and never run an exporter: ended spans go into a
//!   bounded per-thread ring drained by a dedicated export thread with its own
//!   runtime. A full ring drops and counts; [`TracerProvider::stats`] shows it.
//! - An unsampled span allocates nothing. Collection can be stopped and resumed at
//!   runtime ([`TracerProvider::set_enabled`]).
//! - Library crates never install global state; binaries call
//!   [`global::set_tracer_provider`] if they want a process-wide provider.
//!
//! MSRV: 1.88.

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(unsafe_code)]

#[allow(unsafe_code)]
#[cfg(feature = "profile")]
#[cfg_attr(docsrs, doc(cfg(feature = "profile")))]
pub mod alloc;
pub mod bridge;
pub mod context;
mod counter;
pub mod env;
mod error;
pub mod export;
pub mod global;
pub mod labels;
#[allow(unsafe_code)]
#[cfg(feature = "profile")]
#[cfg_attr(docsrs, doc(cfg(feature = "profile")))]
pub mod profile;
pub mod propagation;
pub mod provider;
#[allow(unsafe_code)]
// Without the profilers nothing copies the slot: its signal-path half is unused.
#[cfg_attr(not(feature = "profile"), allow(dead_code))]
mod slot;
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub mod tower;
pub mod trace;

#[allow(deprecated)]
pub use context::compat::FutureExt;
pub use context::{spawn, spawn_blocking, spawn_thread, Context, ContextExt, ContextGuard};
pub use provider::{TracerProvider, TracerProviderBuilder};
pub use trace::{
    KeyValue, SamplingState, Span, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId,
    TraceState, Tracer, Value,
};
