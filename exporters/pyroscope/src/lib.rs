//! # tracewire-pyroscope
//!
//! Continuous profiling into [Grafana Pyroscope]: every period (default 15 s) a
//! labelled CPU profile from [`tracewire::profile`], and a heap profile from
//! [`tracewire::alloc`] when its allocator wrapper is installed, pushed with
//! `push.v1.PusherService/Push` (Connect unary over HTTP, binary protobuf,
//! `Content-Type: application/proto`), the API Grafana Alloy and the current
//! Pyroscope SDKs use.
//!
//! ```no_run
//! use std::time::Duration;
//! use tracewire_pyroscope::PyroscopeUploader;
//!
//! // In main(), once: threads that should be sampled with full stacks register
//! // (for tokio, in `on_thread_start`), see tracewire::profile.
//! tracewire::profile::register_current_thread().ok();
//! let uploader = PyroscopeUploader::builder("http://localhost:4040")
//!     .with_service_name("checkout")
//!     .with_label("env", "staging")
//!     .start()
//!     .expect("a valid configuration");
//! // ... the application runs ...
//! println!("{:?}", uploader.stats());
//! // Uploads what it still holds, for at most 5 s.
//! uploader.shutdown(Duration::from_secs(5)).ok();
//! ```
//!
//! What it provides:
//! - **Off the application's path**: the uploader runs on a thread of its own
//!   with its own single-threaded tokio runtime; nothing it does blocks or fails
//!   the application, and no user runtime is needed. Errors are counted
//!   ([`PyroscopeUploader::stats`]) and logged on standard error (at most a line
//!   a minute).
//! - **Series** (Pyroscope's rules, `../shared/specs/pyroscope/INGEST.md`): the
//!   CPU profile has `__name__="process_cpu"`, the heap profile
//!   `__name__="memory"`; both carry `service_name` and the static
//!   [`with_label`](PyroscopeBuilder::with_label)s (Prometheus label names: letters,
//!   digits, `_`, not starting with a digit or `__`).
//! - **No per-request series**: each sample's `trace_id` label (one value per
//!   request: it would make a series per request) is removed before the
//!   profile is pushed, with its strings; `span_id` and `span_name` stay, for
//!   Grafana's traces-to-profiles. Other per-request label keys can be added with
//!   [`without_label`](PyroscopeBuilder::without_label).
//! - **One CPU profile at a time per process**: a period in which the profiler is
//!   busy (someone is at `/debug/pprof/profile`, or the program runs a profile of
//!   its own) is skipped and counted ([`Stats::busy_periods`]). Conversely, while
//!   the uploader profiles, `/debug/pprof/profile` is busy.
//! - **Bounded memory**: at most [`with_queue_capacity`](PyroscopeBuilder::with_queue_capacity)
//!   profiles (default 8) wait for the server; when a new one does not fit, the
//!   oldest is dropped and counted.
//! - **Retries** with exponential backoff and jitter
//!   ([`tracewire::export::Backoff`]) on connection errors, timeouts, 5xx, 429 and
//!   408; other answers (400, 401, ...) drop the profiles and count them.
//! - **Clean shutdown**: [`shutdown`](PyroscopeUploader::shutdown) stops the
//!   period in progress, collects it, and uploads what the uploader holds within
//!   the deadline; what it cannot is counted as dropped. Dropping the uploader
//!   shuts it down with a 5 s deadline.
//! - Optional HTTP basic auth (Grafana Cloud), `X-Scope-OrgID` (multi-tenant
//!   Pyroscope) and [`with_header`](PyroscopeBuilder::with_header)s of your own (a proxy's
//!   token).
//! - **HTTPS** with rustls (the `ring` provider, TLS 1.2 and 1.3): the server's
//!   certificate must chain to the [`TlsRoots`] chosen with
//!   [`with_tls_roots`](PyroscopeBuilder::with_tls_roots), Mozilla's roots compiled in
//!   (the default) or the operating system's store (read once at
//!   [`start`](PyroscopeBuilder::start): where a company installs its own CA),
//!   or to a private CA given with
//!   [`with_ca_certificate`](PyroscopeBuilder::with_ca_certificate). A certificate the
//!   client refuses fails the push at once (a retry would be refused too): the
//!   profiles are dropped and counted, and the failure logged.
//!
//! ```no_run
//! use tracewire_pyroscope::{PyroscopeUploader, TlsRoots};
//!
//! let company_ca = std::fs::read("/etc/company/ca.pem").expect("the CA");
//! let uploader = PyroscopeUploader::builder("https://pyroscope.internal.example")
//!     .with_service_name("checkout")
//!     .with_tls_roots(TlsRoots::Native)
//!     .with_ca_certificate(company_ca)
//!     .with_header("x-proxy-token", "s3cr3t")
//!     .start()
//!     .expect("a valid configuration");
//! # drop(uploader);
//! ```
//!
//! The heap series is a snapshot of the [`tracewire::alloc::HeapProfile`] as Go's
//! `/debug/pprof/heap` is (`inuse_*` now, `alloc_*` since the start, `inuse_space`
//! shown first), which Pyroscope ingests as it does Go's heap profiles.
//!
//! Build settings for readable stacks (frame pointers, `debug = "limited"`) are
//! those of [`tracewire::profile`].
//!
//! ## Generated code
//!
//! [`proto`] holds the `push.v1` and `types.v1` messages, generated at build time
//! from the protos vendored in `proto/` (see the crate's README for their origin)
//! with `protox` and `prost-build`: no `protoc` is needed.
//!
//! [Grafana Pyroscope]: https://grafana.com/oss/pyroscope/
//!
//! MSRV: 1.88.

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]

mod client;
mod strip;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prost::Message as _;
use tracewire::alloc::{HeapProfile, SampleType};
use tracewire::export::Backoff;
use tracewire::profile::{Profiler, SpanIds};
use tracewire_transport::upload::{Names, PendingQueue, Worker};
use tracewire_transport::TlsConfig;

pub use tracewire_transport::{Error, TlsRoots};

pub mod proto {
    //! Grafana Pyroscope's `push.v1` and `types.v1` messages, generated from the
    //! vendored `push/v1/push.proto` and `types/v1/types.proto`. Tests use them to
    //! decode what the uploader pushed.

    #[allow(
        missing_docs,
        missing_debug_implementations,
        unreachable_pub,
        clippy::all,
        clippy::pedantic,
        rustdoc::all
    )]
    mod generated {
        include!(concat!(env!("OUT_DIR"), "/pyroscope.rs"));
    }

    pub use generated::push::v1 as push;
    pub use generated::types::v1 as types;
}

/// The path of the push call, appended to the server's URL.
pub const PUSH_PATH: &str = "/push.v1.PusherService/Push";
/// `__name__` of the CPU series.
pub const CPU_PROFILE_NAME: &str = "process_cpu";
/// `__name__` of the heap series.
pub const HEAP_PROFILE_NAME: &str = "memory";
/// The sample label removed by default: one value per request.
pub const TRACE_ID_LABEL: &str = "trace_id";

const NAMES: Names = Names {
    thread: "tracewire-pyroscope",
    role: "uploader",
    items: "profiles",
};

/// Configures a [`PyroscopeUploader`]; made by [`PyroscopeUploader::builder`].
#[derive(Clone)]
pub struct PyroscopeBuilder {
    url: String,
    service_name: Option<String>,
    labels: Vec<(String, String)>,
    basic_auth: Option<(String, String)>,
    tenant_id: Option<String>,
    headers: Vec<(String, String)>,
    tls: TlsConfig,
    upload_every: Duration,
    frequency: u32,
    span_ids: SpanIds,
    heap: bool,
    removed_labels: Vec<String>,
    queue_capacity: usize,
    timeout: Duration,
    backoff: Backoff,
}

impl fmt::Debug for PyroscopeBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PyroscopeBuilder")
            .field("url", &self.url)
            .field("service_name", &self.service_name)
            .field("labels", &self.labels)
            .field("basic_auth", &self.basic_auth.as_ref().map(|(u, _)| u))
            .field("tenant_id", &self.tenant_id)
            // Header values often hold credentials: names only.
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("tls", &self.tls)
            .field("upload_every", &self.upload_every)
            .field("frequency", &self.frequency)
            .field("span_ids", &self.span_ids)
            .field("heap", &self.heap)
            .field("removed_labels", &self.removed_labels)
            .field("queue_capacity", &self.queue_capacity)
            .field("timeout", &self.timeout)
            .field("backoff", &self.backoff)
            .finish()
    }
}

impl PyroscopeBuilder {
    fn new(url: String) -> Self {
        PyroscopeBuilder {
            url,
            service_name: None,
            labels: Vec::new(),
            basic_auth: None,
            tenant_id: None,
            headers: Vec::new(),
            tls: TlsConfig::default(),
            upload_every: Duration::from_secs(15),
            frequency: 100,
            span_ids: SpanIds::LocalRoot,
            heap: true,
            removed_labels: vec![TRACE_ID_LABEL.to_owned()],
            queue_capacity: 8,
            timeout: Duration::from_secs(10),
            backoff: Backoff {
                initial: Duration::from_millis(500),
                max_delay: Duration::from_secs(15),
                max_elapsed: Duration::from_secs(60),
            },
        }
    }

    /// The `service_name` label (default: the executable's file name).
    pub fn with_service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = Some(name.into());
        self
    }
    /// Adds a static label to every series (`env`, `region`, `version`, ...). The
    /// name must be a Prometheus label name not starting with `__`, and neither
    /// `service_name` nor a name given before; the value must not be empty.
    pub fn with_label(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.push((name.into(), value.into()));
        self
    }
    /// HTTP basic auth (Grafana Cloud: the stack's user id and an access token).
    pub fn with_basic_auth(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.basic_auth = Some((user.into(), password.into()));
        self
    }
    /// The tenant, sent as `X-Scope-OrgID` (multi-tenant Pyroscope).
    pub fn with_tenant_id(mut self, tenant: impl Into<String>) -> Self {
        self.tenant_id = Some(tenant.into());
        self
    }
    /// A header sent with every push, e.g. the token of an authenticating proxy;
    /// it replaces one of the same name given before. The push's own headers
    /// (`content-type`, `connect-protocol-version`, `connect-timeout-ms`,
    /// `user-agent`) cannot be replaced, nor those of
    /// [`with_basic_auth`](Self::with_basic_auth) and [`with_tenant_id`](Self::with_tenant_id) when
    /// they are set. Values are marked sensitive and never printed.
    ///
    /// ```
    /// use tracewire_pyroscope::PyroscopeUploader;
    ///
    /// let builder = PyroscopeUploader::builder("https://pyroscope.example")
    ///     .with_header("x-proxy-token", "s3cr3t");
    /// assert!(!format!("{builder:?}").contains("s3cr3t"));
    /// ```
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let name = name.into();
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(&name));
        self.headers.push((name, value.into()));
        self
    }
    /// The certificate authorities trusted for an `https://` URL (default
    /// [`TlsRoots::WebPki`]), on top of any [`with_ca_certificate`](Self::with_ca_certificate).
    /// [`TlsRoots::Native`] reads the system's store once, at
    /// [`start`](Self::start).
    pub fn with_tls_roots(mut self, roots: TlsRoots) -> Self {
        self.tls = self.tls.with_roots(roots);
        self
    }
    /// Also trusts the CA certificate(s) in `pem` (one or more `BEGIN
    /// CERTIFICATE` blocks): a private CA, or the server's self-signed
    /// certificate. [`start`](Self::start) fails if it holds none.
    pub fn with_ca_certificate(mut self, pem: impl AsRef<[u8]>) -> Self {
        self.tls = self.tls.with_ca_certificate(pem);
        self
    }
    /// The period: each CPU profile covers this long, and a heap snapshot is
    /// taken at its end (default 15 s; at least 10 ms).
    pub fn with_upload_every(mut self, period: Duration) -> Self {
        self.upload_every = period.max(Duration::from_millis(10));
        self
    }
    /// CPU samples per second per thread (default 100).
    pub fn with_frequency(mut self, hz: u32) -> Self {
        self.frequency = hz;
        self
    }
    /// Which span ids CPU samples carry (default [`SpanIds::LocalRoot`]: the
    /// request's root span, which Grafana's traces-to-profiles looks up).
    pub fn with_span_ids(mut self, span_ids: SpanIds) -> Self {
        self.span_ids = span_ids;
        self
    }
    /// Whether to push heap profiles when [`tracewire::alloc::Profiled`] is the
    /// global allocator (default true).
    pub fn with_heap(mut self, heap: bool) -> Self {
        self.heap = heap;
        self
    }
    /// Also removes sample label `key` before pushing (besides `trace_id`): for a
    /// label of your own that takes a new value per request.
    pub fn without_label(mut self, key: impl Into<String>) -> Self {
        self.removed_labels.push(key.into());
        self
    }
    /// Most profiles waiting for the server (default 8, at least 1); the oldest
    /// is dropped when a new one does not fit.
    pub fn with_queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n.max(1);
        self
    }
    /// Timeout of one push, connecting included (default 10 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
    /// Retry policy of a push (default 500 ms doubling to 15 s, given up after
    /// 60 s, when the profiles are dropped and counted).
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Checks the configuration and starts the uploader's thread. Connects to
    /// nothing yet: a server that is down at start is not an error. Fails on an
    /// invalid URL, label, header or CA certificate, and (for `https://`) when
    /// no trusted certificate is left (say [`TlsRoots::Native`] on a system
    /// without a CA bundle).
    pub fn start(self) -> Result<PyroscopeUploader, Error> {
        let series = self.series_labels()?;
        let shared = Arc::new(Shared {
            queue: PendingQueue::new(NAMES.thread, self.queue_capacity),
            busy_periods: AtomicU64::new(0),
            collect_errors: AtomicU64::new(0),
        });
        let url = client::push_uri(&self.url)?.to_string();
        let thread_shared = Arc::clone(&shared);
        let worker = Worker::spawn(NAMES, move || {
            // On the uploader's runtime, which runs the client's connections.
            let client = client::Client::new(&client::Target {
                url: &self.url,
                basic_auth: self.basic_auth.as_ref(),
                tenant_id: self.tenant_id.as_deref(),
                headers: &self.headers,
                tls: &self.tls,
                timeout: self.timeout,
            })?;
            Ok(run(thread_shared, self, series, client))
        })?;
        Ok(PyroscopeUploader {
            shared,
            url,
            worker,
        })
    }

    /// The labels every series carries, sorted, `__name__` left out (each
    /// profile adds its own); checks names and values.
    fn series_labels(&self) -> Result<Vec<(String, String)>, Error> {
        let service = match &self.service_name {
            Some(s) => s.trim().to_owned(),
            None => default_service_name(),
        };
        if service.is_empty() {
            return Err(Error::new("the service name is empty"));
        }
        let mut labels = vec![("service_name".to_owned(), service)];
        for (name, value) in &self.labels {
            if !is_label_name(name) || name.starts_with("__") {
                return Err(Error::new(format!(
                    "invalid label name {name:?}: letters, digits and _, not starting with a digit or __"
                )));
            }
            if labels.iter().any(|(n, _)| n == name) {
                return Err(Error::new(format!("label {name:?} is given twice")));
            }
            if value.is_empty() {
                return Err(Error::new(format!("label {name:?} has an empty value")));
            }
            labels.push((name.clone(), value.clone()));
        }
        // Pyroscope's default limit is 30 label names per series.
        if labels.len() + 1 > 30 {
            return Err(Error::new(format!(
                "{} static labels: Pyroscope accepts at most 30 labels per series with __name__ and service_name",
                self.labels.len()
            )));
        }
        labels.sort();
        Ok(labels)
    }
}

/// A Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn default_service_name() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "unknown_service".to_owned())
}

/// What a [`PyroscopeUploader`] did so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Profiles made (CPU and heap).
    pub collected: u64,
    /// Profiles the server accepted.
    pub uploaded: u64,
    /// Profiles given up on: the oldest when the queue was full, those of a push
    /// that failed for good (an answer not worth a retry, or retries spent), and
    /// those the shutdown deadline cut off.
    pub dropped: u64,
    /// Pushes that failed for good.
    pub failed_pushes: u64,
    /// Push attempts retried.
    pub retries: u64,
    /// Periods without a CPU profile because another one was running.
    pub busy_periods: u64,
    /// Profiles that could not be made for another reason (e.g. an unsupported
    /// platform); logged.
    pub collect_errors: u64,
    /// Profiles waiting for the server now.
    pub queued: u64,
}

/// Pushes CPU and heap profiles to Pyroscope from its own thread. See the
/// [crate docs](crate).
pub struct PyroscopeUploader {
    shared: Arc<Shared>,
    url: String,
    worker: Worker,
}

impl fmt::Debug for PyroscopeUploader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PyroscopeUploader")
            .field("url", &self.url)
            .field("stats", &self.stats())
            .finish()
    }
}

impl PyroscopeUploader {
    /// A builder for an uploader pushing to the Pyroscope server at `url` (its
    /// base URL, e.g. `http://localhost:4040`; the push path is appended).
    pub fn builder(url: impl Into<String>) -> PyroscopeBuilder {
        PyroscopeBuilder::new(url.into())
    }

    /// The push URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// What the uploader did so far.
    pub fn stats(&self) -> Stats {
        let sh = &*self.shared;
        let c = sh.queue.counters().snapshot();
        Stats {
            collected: sh.queue.collected(),
            uploaded: c.exported,
            dropped: c.dropped,
            failed_pushes: c.failed,
            retries: c.retried,
            busy_periods: sh.busy_periods.load(Ordering::Relaxed),
            collect_errors: sh.collect_errors.load(Ordering::Relaxed),
            queued: sh.queue.len() as u64,
        }
    }

    /// Stops profiling, collects the period in progress and uploads everything
    /// held, for at most `timeout`. Fails if a profile was not uploaded in that
    /// time (the server refused it, retries ran out, or the deadline passed: it is
    /// counted as dropped) or the uploader was already shut down.
    pub fn shutdown(&self, timeout: Duration) -> Result<(), Error> {
        self.worker.shutdown(&self.shared.queue, timeout)
    }
}

impl Drop for PyroscopeUploader {
    fn drop(&mut self) {
        if self.worker.is_running() {
            let _ = self.shutdown(Duration::from_secs(5));
        }
    }
}

/// One profile waiting for the server.
struct Item {
    name: &'static str,
    sample: proto::push::RawSample,
}

struct Shared {
    /// exported = uploaded, dropped, failed = failed pushes, retried.
    queue: PendingQueue<Item>,
    busy_periods: AtomicU64,
    collect_errors: AtomicU64,
}

impl Shared {
    fn report(&self, what: &str, err: &dyn fmt::Display) {
        self.queue.report(what, err);
    }
}

/// The uploader's thread: collects and uploads until shut down, then uploads
/// what is left until the deadline.
async fn run(
    shared: Arc<Shared>,
    config: PyroscopeBuilder,
    series: Vec<(String, String)>,
    client: client::Client,
) {
    let config = Arc::new(config);
    let queue = &shared.queue;
    let work = async {
        tokio::join!(
            async {
                collect(&shared, &config).await;
                queue.close();
            },
            upload(queue, &config, &series, &client),
        )
    };
    queue.until_deadline(work).await;
}

/// Makes a CPU profile (and a heap snapshot) each period until shut down, then
/// the last, shortened one.
async fn collect(shared: &Shared, config: &Arc<PyroscopeBuilder>) {
    let mut reported_error = false;
    loop {
        let profiler = match Profiler::builder()
            .with_frequency(config.frequency)
            .with_span_ids(config.span_ids)
            .start()
        {
            Ok(p) => Some(p),
            Err(e) if e.is_busy() => {
                shared.busy_periods.fetch_add(1, Ordering::Relaxed);
                None
            }
            Err(e) => {
                shared.collect_errors.fetch_add(1, Ordering::Relaxed);
                if !std::mem::replace(&mut reported_error, true) {
                    shared.report("cannot profile CPU", &e);
                }
                None
            }
        };
        let stopping = tokio::select! {
            () = tokio::time::sleep(config.upload_every) => false,
            () = shared.queue.stopping() => true,
        };
        let config = Arc::clone(config);
        // Stopping the profiler, symbolizing and encoding take a while: off the
        // runtime, which keeps uploading.
        let made = tokio::task::spawn_blocking(move || {
            let mut made = Vec::new();
            if let Some(p) = profiler {
                made.push(p.stop().map(|p| {
                    let mut pprof = p.to_pprof();
                    strip::remove_labels(&mut pprof, &config.removed_labels);
                    (CPU_PROFILE_NAME, pprof)
                }));
            }
            if config.heap && tracewire::alloc::is_installed() {
                let mut pprof = HeapProfile::take().to_pprof(SampleType::InuseSpace);
                strip::remove_labels(&mut pprof, &config.removed_labels);
                made.push(Ok((HEAP_PROFILE_NAME, pprof)));
            }
            made.into_iter()
                .map(|r| {
                    let (name, pprof) = r.map_err(|e| e.to_string())?;
                    let mut raw = Vec::new();
                    pprof.write_gzip(&mut raw).map_err(|e| e.to_string())?;
                    Ok(Item {
                        name,
                        sample: proto::push::RawSample {
                            raw_profile: raw,
                            id: uuid(),
                        },
                    })
                })
                .collect::<Vec<Result<Item, String>>>()
        })
        .await;
        match made {
            Ok(items) => {
                for item in items {
                    match item {
                        Ok(item) => shared.queue.push(item),
                        Err(e) => {
                            shared.collect_errors.fetch_add(1, Ordering::Relaxed);
                            shared.report("cannot make a profile", &e);
                        }
                    }
                }
            }
            Err(e) => {
                shared.collect_errors.fetch_add(1, Ordering::Relaxed);
                shared.report("the profile encoder panicked", &e);
            }
        }
        if stopping || shared.queue.is_stopping() {
            return;
        }
    }
}

/// Pushes what is queued, all of it in one request, until collecting has
/// stopped and nothing is left.
async fn upload(
    queue: &PendingQueue<Item>,
    config: &PyroscopeBuilder,
    series: &[(String, String)],
    client: &client::Client,
) {
    while let Some(batch) = queue.pop_all().await {
        let n = batch.len() as u64;
        let body = Bytes::from(push_request(series, batch).encode_to_vec());
        let what = format!("{n} profiles dropped");
        queue
            .send(n, &config.backoff, &what, || client.push(body.clone()))
            .await;
    }
}

/// One series per profile: `__name__`, then the shared labels.
fn push_request(series: &[(String, String)], batch: Vec<Item>) -> proto::push::PushRequest {
    use proto::types::LabelPair;
    let series = batch
        .into_iter()
        .map(|item| {
            let mut labels = Vec::with_capacity(series.len() + 1);
            labels.push(LabelPair {
                name: "__name__".to_owned(),
                value: item.name.to_owned(),
            });
            labels.extend(series.iter().map(|(name, value)| LabelPair {
                name: name.clone(),
                value: value.clone(),
            }));
            proto::push::RawProfileSeries {
                labels,
                samples: vec![item.sample],
                annotations: Vec::new(),
            }
        })
        .collect();
    proto::push::PushRequest { series }
}

/// A random (version 4) UUID for `RawSample.ID`.
fn uuid() -> String {
    let random = tracewire::trace::TraceId::random().to_u128();
    // The version nibble (bits 76..80) is 4, the variant bits (62, 63) are 10.
    let v = (random & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let h = format!("{v:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_labels_follow_prometheus_naming() {
        let ok = PyroscopeUploader::builder("http://h")
            .with_service_name("svc")
            .with_label("env", "prod")
            .with_label("_region2", "eu")
            .series_labels()
            .unwrap();
        assert_eq!(
            ok,
            [
                ("_region2".to_owned(), "eu".to_owned()),
                ("env".to_owned(), "prod".to_owned()),
                ("service_name".to_owned(), "svc".to_owned()),
            ]
        );
        for (name, value) in [
            ("2x", "v"),
            ("a-b", "v"),
            ("__name__", "v"),
            ("service_name", "v"),
            ("", "v"),
            ("env", ""),
        ] {
            let b = PyroscopeUploader::builder("http://h").with_label(name, value);
            assert!(b.series_labels().is_err(), "{name:?}={value:?}");
        }
        assert!(PyroscopeUploader::builder("http://h")
            .with_service_name(" ")
            .series_labels()
            .is_err());
    }

    #[test]
    fn uuids_are_version_4() {
        let u = uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"), "{u}");
        assert_ne!(u, uuid());
    }
}
