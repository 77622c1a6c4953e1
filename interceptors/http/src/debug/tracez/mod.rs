//! `/debug/tracez`: the spans of this process and the CPU they burned, in a
//! browser, with nothing else installed (OpenCensus zPages' tracez, with the CPU
//! profiler's samples beside each span).
//!
//! A [`Tracez`] store is fed by the existing pipeline of each provider:
//!
//! - its [`observer`](Tracez::observer) ([`SpanObserver`]) counts running spans
//!   and, per span name and minute, ended spans by latency bucket and in error. It
//!   sees spans by reference on the instrumented thread: no copy is made there.
//! - its exporter wrapper [`wrap`](Tracez::wrap) sits between a batch processor
//!   and the exporter it already has (or stands alone:
//!   [`exporter`](Tracez::exporter)): on the export thread it keeps the spans of
//!   recent traces and, per name and latency bucket, the latest few as samples,
//!   then passes the batch on unchanged.
//!
//! [`TracezService`] renders the store as server-made HTML with inline SVG (no
//! JavaScript, nothing fetched from elsewhere; every name, attribute and event is
//! escaped, and the pages forbid scripts with a `Content-Security-Policy`):
//!
//! | path | page |
//! |---|---|
//! | `/debug/tracez` | one row per span name (server, client, internal): running, ended per latency bucket (<10 µs … ≥100 s) and in error over the last minutes; the slowest kept traces |
//! | `/debug/tracez/spans?name=N&bucket=B` (or `&errors`) | the sample spans kept for a name and bucket |
//! | `/debug/tracez/trace?id=T[&span=S]` | the trace `T` (span `S` highlighted) as a waterfall drawn to scale, then every span's attributes, events, status and links, and the CPU sampled under it |
//! | `/debug/tracez/flamegraph?tagfocus=span_id:S` | a flame graph of the CPU sampled while span `S` (or, with `trace_id:T`, trace `T`) was current, from the last profile |
//! | `/debug/tracez/profile?seconds=N` | takes a CPU profile of the next `N` seconds (default 10) for the page, then shows the summary |
//!
//! The CPU beside each span comes from the last CPU profile given to
//! [`Tracez::set_profile`] or taken through `/profile`. Samples name the span that
//! was current when they were taken; profile with
//! [`SpanIds::Every`] (as `/profile` does) to
//! see each span's own CPU, not only the request's.
//!
//! Memory is bounded by [`TracezConfig`]: span names kept, running spans tracked,
//! samples per name and bucket, traces and spans per trace kept;
//! [`Tracez::stats`] shows what it holds. Never on by default: mount it like
//! [`PprofService`](super::PprofService), on loopback or behind your own access
//! check, since it shows what the requests carried.
//!
//! ```
//! use tracewire::export::InMemoryExporter;
//! use tracewire::TracerProvider;
//! use tracewire_http::debug::{Tracez, TracezService};
//!
//! let tracez = Tracez::default();
//! let exporter = InMemoryExporter::new();
//! let provider = TracerProvider::builder()
//!     .with_observer(tracez.observer())
//!     .with_batch_exporter(tracez.wrap(exporter))
//!     .build();
//! provider.tracer("app").in_span("GET /user", |_| {});
//! provider.force_flush(std::time::Duration::from_secs(5)).unwrap();
//! assert_eq!(tracez.stats().spans, 1);
//! // Route `/debug/tracez` and what is under it to this tower service.
//! let service = TracezService::new(tracez);
//! # let _ = service;
//! ```

mod page;
mod store;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use http::{header, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;
use tracewire::export::{ExportError, SpanExporter, SpanObserver, SpanStart};
use tracewire::profile::{Profile, Profiler, SpanIds};
use tracewire::trace::{Resource, SpanData, SpanId, SpanKind, TraceId};

use super::future::{Render, ResponseFuture};
use super::{query, render};

pub use store::TracezStats;

use bytes::Bytes;
use std::collections::HashMap;

/// The bounds of a [`Tracez`] store. Every `with_*` value is at least 1.
#[derive(Clone, Debug)]
pub struct TracezConfig {
    max_names: usize,
    max_running: usize,
    samples_per_bucket: usize,
    max_traces: usize,
    max_spans_per_trace: usize,
    window: Duration,
}

impl Default for TracezConfig {
    fn default() -> Self {
        TracezConfig {
            max_names: 256,
            max_running: 10_000,
            samples_per_bucket: 4,
            max_traces: 256,
            max_spans_per_trace: 512,
            window: Duration::from_secs(10 * 60),
        }
    }
}

impl TracezConfig {
    /// Span names summarized (default 256); spans of further names are counted,
    /// not shown.
    pub fn with_max_names(mut self, n: usize) -> Self {
        self.max_names = n.max(1);
        self
    }
    /// Running spans tracked (default 10,000); further ones are counted, not
    /// shown as running.
    pub fn with_max_running(mut self, n: usize) -> Self {
        self.max_running = n.max(1);
        self
    }
    /// Sample spans kept per name and latency bucket, and per name in error
    /// (default 4; zPages keeps a few too).
    pub fn with_samples_per_bucket(mut self, n: usize) -> Self {
        self.samples_per_bucket = n.max(1);
        self
    }
    /// Traces kept (default 256). The oldest one no sample points into goes first.
    pub fn with_max_traces(mut self, n: usize) -> Self {
        self.max_traces = n.max(1);
        self
    }
    /// Spans kept per trace (default 512); further ones are counted.
    pub fn with_max_spans_per_trace(mut self, n: usize) -> Self {
        self.max_spans_per_trace = n.max(1);
        self
    }
    /// How far back the summary counts go, in whole minutes (default 10 minutes,
    /// at least 1).
    pub fn with_window(mut self, window: Duration) -> Self {
        self.window = window.max(Duration::from_secs(60));
        self
    }
    fn window_minutes(&self) -> u64 {
        (self.window.as_secs() / 60).max(1)
    }
}

/// The CPU profile the page shows, with each span's and trace's CPU summed.
#[derive(Debug)]
struct ProfileView {
    profile: Arc<Profile>,
    taken_at: SystemTime,
    by_span: HashMap<SpanId, Duration>,
    by_trace: HashMap<TraceId, Duration>,
}

#[derive(Debug)]
struct Inner {
    store: Mutex<store::Store>,
    profile: Mutex<Option<Arc<ProfileView>>>,
}

/// The store behind `/debug/tracez`: feed it with [`observer`](Self::observer)
/// and [`wrap`](Self::wrap) (or [`exporter`](Self::exporter)) on each provider,
/// show it with [`TracezService`]. See the [module docs](self).
///
/// Cloning is cheap (one reference count); clones share the store.
#[derive(Clone, Debug)]
pub struct Tracez {
    inner: Arc<Inner>,
}

impl Default for Tracez {
    fn default() -> Self {
        Tracez::new(TracezConfig::default())
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The store stays consistent between statements: keep using it after a panic.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Tracez {
    /// An empty store with these bounds.
    pub fn new(config: TracezConfig) -> Self {
        Tracez {
            inner: Arc::new(Inner {
                store: Mutex::new(store::Store::new(config)),
                profile: Mutex::new(None),
            }),
        }
    }

    /// The observer to add to a provider
    /// ([`with_observer`](tracewire::TracerProviderBuilder::with_observer)): it
    /// counts running and ended spans by name, latency and error.
    pub fn observer(&self) -> TracezObserver {
        TracezObserver {
            tracez: self.clone(),
        }
    }

    /// Wraps the exporter of a batch processor: each batch is kept for the page
    /// (on the export thread), then exported by `exporter` unchanged.
    pub fn wrap<E: SpanExporter>(&self, exporter: E) -> TracezExporter<E> {
        TracezExporter {
            tracez: self.clone(),
            service: Arc::from(""),
            inner: exporter,
        }
    }

    /// An exporter that only keeps spans for the page, for a provider with no
    /// other exporter. (Beside another batch exporter, prefer [`wrap`](Self::wrap):
    /// every further processor costs the instrumented thread a copy of the span.)
    pub fn exporter(&self) -> TracezExporter<NoExporter> {
        self.wrap(NoExporter)
    }

    /// Shows `profile` beside the spans: each span's CPU is that of the samples
    /// taken while it was current.
    pub fn set_profile(&self, profile: &Profile) {
        let mut by_span: HashMap<SpanId, Duration> = HashMap::new();
        let mut by_trace: HashMap<TraceId, Duration> = HashMap::new();
        for s in profile.samples() {
            if let Some(id) = s.span_id {
                *by_span.entry(id).or_default() += s.cpu;
            }
            if let Some(id) = s.trace_id {
                *by_trace.entry(id).or_default() += s.cpu;
            }
        }
        *lock(&self.inner.profile) = Some(Arc::new(ProfileView {
            profile: Arc::new(profile.clone()),
            taken_at: SystemTime::now(),
            by_span,
            by_trace,
        }));
    }

    /// The `n` slowest traces kept, by the duration of their local root (a span
    /// with no parent in this process), slowest first.
    pub fn slowest_traces(&self, n: usize) -> Vec<KeptTrace> {
        let view = self.profile();
        self.store()
            .slowest_roots(n)
            .into_iter()
            .map(|k| KeptTrace {
                cpu: view
                    .as_ref()
                    .and_then(|v| v.by_trace.get(&k.span.span_context.trace_id()).copied())
                    .unwrap_or_default(),
                trace_id: k.span.span_context.trace_id(),
                root_span_id: k.span.span_context.span_id(),
                root_name: k.span.name.to_string(),
                duration: store::duration(&k.span),
            })
            .collect()
    }

    /// What the store holds now, against its bounds.
    pub fn stats(&self) -> TracezStats {
        lock(&self.inner.store).stats()
    }

    fn store(&self) -> MutexGuard<'_, store::Store> {
        lock(&self.inner.store)
    }

    fn profile(&self) -> Option<Arc<ProfileView>> {
        lock(&self.inner.profile).clone()
    }
}

/// A trace the store keeps, as [`Tracez::slowest_traces`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeptTrace {
    /// The trace (its page is `trace?id=` this, under the service's prefix).
    pub trace_id: TraceId,
    /// Its local root span.
    pub root_span_id: SpanId,
    /// The local root's name.
    pub root_name: String,
    /// How long the local root lasted.
    pub duration: Duration,
    /// The CPU sampled under the trace in the last profile (zero without one).
    pub cpu: Duration,
}

/// Counts spans for a [`Tracez`] store as they start and end. Made by
/// [`Tracez::observer`].
#[derive(Clone, Debug)]
pub struct TracezObserver {
    tracez: Tracez,
}

impl SpanObserver for TracezObserver {
    fn on_start(&self, span: &SpanStart<'_>) {
        self.tracez.store().on_start(span);
    }
    fn on_end(&self, span: &SpanData) {
        self.tracez.store().on_end(span);
    }
}

/// Keeps each exported batch in a [`Tracez`] store, then hands it to the wrapped
/// exporter. Made by [`Tracez::wrap`] and [`Tracez::exporter`].
#[derive(Debug)]
pub struct TracezExporter<E> {
    tracez: Tracez,
    service: Arc<str>,
    inner: E,
}

/// The exporter of [`Tracez::exporter`]: accepts every batch and sends it nowhere.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoExporter;

impl SpanExporter for NoExporter {
    async fn export(&mut self, _batch: &[SpanData]) -> Result<(), ExportError> {
        Ok(())
    }
}

impl<E: SpanExporter> SpanExporter for TracezExporter<E> {
    fn export(
        &mut self,
        batch: &[SpanData],
    ) -> impl std::future::Future<Output = Result<(), ExportError>> {
        self.tracez.store().keep(&self.service, batch);
        self.inner.export(batch)
    }
    fn shutdown(&mut self) -> impl std::future::Future<Output = Result<(), ExportError>> {
        self.inner.shutdown()
    }
    fn set_resource(&mut self, resource: &Resource) {
        self.service = Arc::from(&*resource.service_name);
        self.inner.set_resource(resource);
    }
}

const KINDS: [SpanKind; 5] = [
    SpanKind::Server,
    SpanKind::Client,
    SpanKind::Internal,
    SpanKind::Producer,
    SpanKind::Consumer,
];

/// The default and largest `seconds` of a `/profile` request.
const PROFILE_SECONDS: (u64, u64) = (10, 60);
/// The sampling frequency of a `/profile` request.
const PROFILE_HZ: u32 = 100;

/// A tower service rendering a [`Tracez`] store as HTML pages under a prefix
/// (default `/debug/tracez`). See the [module docs](self) for the pages.
///
/// A method other than `GET` gets `405`, a bad query `400`, an unknown page or
/// trace `404`, `/profile` while a CPU profile runs `409`.
#[derive(Clone, Debug)]
pub struct TracezService {
    tracez: Tracez,
    prefix: Arc<str>,
}

impl TracezService {
    /// The pages of `tracez` under `/debug/tracez`.
    pub fn new(tracez: Tracez) -> Self {
        TracezService {
            tracez,
            prefix: Arc::from("/debug/tracez"),
        }
    }

    /// Serves under `prefix` instead (a leading `/` is added and trailing ones
    /// dropped). The pages' links are relative to the prefix.
    pub fn with_prefix(mut self, prefix: impl AsRef<str>) -> Self {
        let trimmed = prefix.as_ref().trim_matches('/');
        self.prefix = Arc::from(format!("/{trimmed}"));
        self
    }

    fn handle(&self, method: &Method, path: &str, query: Option<&str>) -> ResponseFuture {
        let Some(rest) = path.strip_prefix(&*self.prefix) else {
            return not_found(format!("404 page not found: {path}\n"));
        };
        if method != Method::GET {
            let mut r = render::text(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("method {method} not allowed: use GET\n"),
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET"));
            return ResponseFuture::ready(r);
        }
        let params = match query::parse(query) {
            Ok(p) => p,
            Err(e) => return bad_request(e),
        };
        let first = |key: &str| {
            params
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        let page = |html: String| ResponseFuture::ready(page::html(html));
        let base = format!("{}/", self.prefix);
        match rest.trim_end_matches('/') {
            "" => page(page::summary(&base, &self.tracez)),
            "/spans" => {
                let Some(name) = first("name") else {
                    return bad_request("want ?name=NAME&kind=K&bucket=B or &errors\n".into());
                };
                let kind = first("kind").unwrap_or("internal");
                let Some(kind) = KINDS.into_iter().find(|k| page::kind(*k) == kind) else {
                    return bad_request(format!(
                        "bad kind {kind:?}: want server, client, internal, producer or consumer\n"
                    ));
                };
                let bucket = match (first("bucket"), first("errors")) {
                    (_, Some(_)) => None,
                    (Some(b), None) => match b.parse::<usize>() {
                        Ok(b) if b < store::BUCKETS => Some(b),
                        _ => return bad_request(format!("bad bucket {b:?}: want 0 to 8\n")),
                    },
                    (None, None) => {
                        return bad_request("want &bucket=B (0 to 8) or &errors\n".into())
                    }
                };
                match page::samples(&base, &self.tracez, name, kind, bucket) {
                    Some(html) => page(html),
                    None => not_found(format!(
                        "no span name {name:?} of kind {} is summarized\n",
                        page::kind(kind)
                    )),
                }
            }
            "/trace" => {
                let Some(id) = first("id").and_then(TraceId::from_hex) else {
                    return bad_request("want ?id= and a 32-digit hex trace id\n".into());
                };
                let span = match first("span") {
                    None => None,
                    Some(s) => match SpanId::from_hex(s) {
                        Some(s) => Some(s),
                        None => {
                            return bad_request(format!("bad span {s:?}: want 16 hex digits\n"))
                        }
                    },
                };
                match page::trace(&base, &self.tracez, id, span) {
                    Some(html) => page(html),
                    None => not_found(format!(
                        "trace {id} is not kept (any more): see {base} for the kept ones\n"
                    )),
                }
            }
            "/flamegraph" => {
                let request = match query::CpuRequest::new(&params, self.limits()) {
                    Ok(r) => r,
                    Err(e) => return bad_request(e),
                };
                match self.tracez.profile() {
                    Some(view) => {
                        ResponseFuture::render(Render::FlamegraphOf(view.profile.clone(), request))
                    }
                    None => not_found(format!(
                        "no CPU profile yet: take one at {base}profile?seconds=10\n"
                    )),
                }
            }
            "/profile" => {
                let request = match query::CpuRequest::new(&params, self.limits()) {
                    Ok(r) => r,
                    Err(e) => return bad_request(e),
                };
                self.profile(request.seconds, base)
            }
            _ => not_found(format!("404 page not found: {path}\n")),
        }
    }

    fn limits(&self) -> query::Limits {
        query::Limits {
            default_seconds: PROFILE_SECONDS.0,
            max_seconds: PROFILE_SECONDS.1,
            default_hz: PROFILE_HZ,
        }
    }

    fn profile(&self, seconds: u64, then: String) -> ResponseFuture {
        let profiler = match super::start_profiler(
            Profiler::builder()
                .with_frequency(PROFILE_HZ)
                .with_span_ids(SpanIds::Every),
        ) {
            Ok(p) => p,
            Err(answer) => return ResponseFuture::ready(*answer),
        };
        let tracez = self.tracez.clone();
        ResponseFuture::after(
            Duration::from_secs(seconds),
            Render::Then(
                profiler,
                Box::new(move |profile| {
                    tracez.set_profile(profile);
                    see_other(&then)
                }),
            ),
        )
    }
}

fn not_found(message: String) -> ResponseFuture {
    ResponseFuture::ready(render::text(StatusCode::NOT_FOUND, message))
}

fn bad_request(message: String) -> ResponseFuture {
    ResponseFuture::ready(render::text(StatusCode::BAD_REQUEST, message))
}

fn see_other(location: &str) -> Response<Full<Bytes>> {
    let mut r = render::text(StatusCode::SEE_OTHER, format!("see {location}\n"));
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

super::page_service!(TracezService);
