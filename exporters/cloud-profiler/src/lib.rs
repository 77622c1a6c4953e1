//! # tracewire-cloud-profiler
//!
//! Continuous profiling into [Google Cloud Profiler], speaking its agent protocol
//! as every official agent (Go, Java, Node.js, Python) does:
//!
//! 1. `CreateProfile` (`parent = projects/P`, the deployment: project, target =
//!    the service name, labels `language`, `version`, `zone`; the profile types
//!    this process can make: `CPU`, and `HEAP` when
//!    [`tracewire::alloc::Profiled`] is the global allocator). The call hangs
//!    (a long poll) until the server wants a profile.
//! 2. An `ABORTED` answer carrying `google.rpc.RetryInfo` in the trailing
//!    metadata item `google.rpc.retryinfo-bin` is honoured: the next
//!    `CreateProfile` waits that long. Other errors back off exponentially with
//!    jitter ([`with_backoff`](CloudProfilerBuilder::with_backoff); like the Go agent, 1 min
//!    doubling to 1 h by default).
//! 3. What the server asked for is collected: a CPU profile from
//!    [`tracewire::profile`] for the `duration` it gave (10 s when it gave none),
//!    or a heap snapshot ([`tracewire::alloc::HeapProfile`], `inuse_space`
//!    first).
//! 4. `UpdateProfile` with the gzip'd pprof in `profile_bytes`.
//!
//! ```no_run
//! use std::time::Duration;
//! use tracewire_cloud_profiler::CloudProfilerAgent;
//!
//! // Application Default Credentials; the project could also come from
//! // GOOGLE_CLOUD_PROJECT.
//! let agent = CloudProfilerAgent::builder()
//!     .with_project_id("my-project")
//!     .with_service("checkout")
//!     .with_service_version("1.4.2")
//!     .with_zone("europe-west1-b")
//!     .start()
//!     .expect("a valid configuration");
//! // ... the application runs ...
//! println!("{:?}", agent.stats());
//! agent.shutdown(Duration::from_secs(5)).ok();
//! ```
//!
//! What it provides:
//! - **Off the application's path**: the agent runs on a thread of its own with
//!   its own single-threaded tokio runtime; no user runtime is needed and
//!   nothing it does blocks or fails the application. Errors are counted
//!   ([`CloudProfilerAgent::stats`]) and logged on standard error (at most a line
//!   a minute).
//! - By default `https://cloudprofiler.googleapis.com:443` over TLS (rustls,
//!   webpki roots) with [Application Default Credentials] (scope
//!   `https://www.googleapis.com/auth/monitoring.write`), as
//!   `tracewire-stackdriver` does; [`with_endpoint`](CloudProfilerBuilder::with_endpoint)
//!   points it at an emulator, a proxy or a test server without credentials
//!   (`http://` is plain-text HTTP/2). An `https://` endpoint behind a private
//!   CA is trusted with [`with_ca_certificate`](CloudProfilerBuilder::with_ca_certificate),
//!   or through the system's store with
//!   [`with_tls_roots`](CloudProfilerBuilder::with_tls_roots)`(`[`TlsRoots::Native`]`)`.
//!   A certificate the agent refuses is counted
//!   ([`Stats::create_errors`]) and logged, and the next `CreateProfile` waits
//!   the backoff's longest delay, not the short first ones: asking again soon
//!   would be refused too.
//! - **One CPU profile at a time per process**: when the server asks for CPU while
//!   another profile runs (`/debug/pprof/profile`, the program's own), that
//!   profile is skipped and counted ([`Stats::busy`]).
//! - **Bounded memory**: collected profiles wait for `UpdateProfile` in a queue
//!   of at most [`with_queue_capacity`](CloudProfilerBuilder::with_queue_capacity) (default
//!   4); when one more does not fit, the oldest is dropped and counted. The next
//!   `CreateProfile` does not wait for the upload.
//! - **Retries** of `UpdateProfile` on `UNAVAILABLE` (connection errors),
//!   `DEADLINE_EXCEEDED`, `RESOURCE_EXHAUSTED`, `INTERNAL` and timeouts, with
//!   backoff ([`with_upload_backoff`](CloudProfilerBuilder::with_upload_backoff)); other
//!   errors drop the profile and count it.
//! - **Clean shutdown**: [`shutdown`](CloudProfilerAgent::shutdown) cancels the
//!   long poll, ends a CPU profile in progress early and uploads it with what is
//!   queued, within the deadline; what it cannot is counted as dropped. Dropping
//!   the agent shuts it down with a 5 s deadline.
//!
//! CPU samples carry the [`with_labels`](tracewire::labels::with_labels) labels
//! (`http-path`, `grpc-method`, ...) but no span ids
//! ([`SpanIds::None`](tracewire::profile::SpanIds::None)): Cloud Profiler has no
//! traces-to-profiles view, and a label with a value per request would only keep
//! samples from being merged. Build settings for readable stacks are those of
//! [`tracewire::profile`].
//!
//! ## Generated code
//!
//! [`proto`] holds the Cloud Profiler v2 messages, client and server and
//! `google.rpc.RetryInfo`, generated at build time from the protos vendored in
//! `proto/` (see the crate's README) with `protox` and `tonic-prost-build`: no
//! `protoc` is needed. The server is there for tests that stand in for Cloud
//! Profiler.
//!
//! [Google Cloud Profiler]: https://cloud.google.com/profiler/docs
//! [Application Default Credentials]: https://cloud.google.com/docs/authentication/application-default-credentials
//!
//! MSRV: 1.88.

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]

mod agent;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tracewire::export::Backoff;
use tracewire_transport::upload::Worker;
use tracewire_transport::{google, TlsConfig};

pub use tracewire_transport::{Error, TlsRoots};

pub mod proto {
    //! Cloud Profiler v2 types, client and server, and `google.rpc.RetryInfo`,
    //! generated from the vendored `google/devtools/cloudprofiler/v2/profiler.proto`
    //! and `google/rpc/error_details.proto` (see the crate's README for their
    //! origin).
    //!
    //! [`v2::profiler_service_server::ProfilerServiceServer`] lets tests run a
    //! stand-in for Cloud Profiler.

    #[allow(
        missing_docs,
        missing_debug_implementations,
        unreachable_pub,
        clippy::all,
        clippy::pedantic,
        rustdoc::all
    )]
    mod generated {
        include!(concat!(env!("OUT_DIR"), "/cloudprofiler.rs"));
    }

    pub use generated::google::devtools::cloudprofiler::v2;
    pub use generated::google::rpc;
}

/// The public Cloud Profiler endpoint.
pub const DEFAULT_ENDPOINT: &str = "https://cloudprofiler.googleapis.com:443";
/// The OAuth scope the agent asks for.
pub const MONITORING_WRITE_SCOPE: &str = "https://www.googleapis.com/auth/monitoring.write";
/// The environment variable read when no project id is given.
pub const PROJECT_ENV: &str = google::PROJECT_ENV;
/// The trailing metadata item of an `ABORTED` answer that says how long to wait.
pub const RETRY_INFO_KEY: &str = "google.rpc.retryinfo-bin";

/// Configures a [`CloudProfilerAgent`]; made by [`CloudProfilerAgent::builder`].
#[derive(Debug, Clone)]
pub struct CloudProfilerBuilder {
    pub(crate) project_id: Option<String>,
    pub(crate) service: Option<String>,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) endpoint: Option<String>,
    pub(crate) tls: TlsConfig,
    pub(crate) frequency: u32,
    pub(crate) heap: bool,
    pub(crate) queue_capacity: usize,
    pub(crate) timeout: Duration,
    pub(crate) create_timeout: Duration,
    pub(crate) backoff: Backoff,
    pub(crate) upload_backoff: Backoff,
}

impl Default for CloudProfilerBuilder {
    fn default() -> Self {
        CloudProfilerBuilder {
            project_id: None,
            service: None,
            labels: BTreeMap::from([("language".to_owned(), "rust".to_owned())]),
            endpoint: None,
            tls: TlsConfig::default(),
            frequency: 100,
            heap: true,
            queue_capacity: 4,
            timeout: Duration::from_secs(30),
            create_timeout: Duration::from_secs(70 * 60),
            backoff: Backoff {
                initial: Duration::from_secs(60),
                max_delay: Duration::from_secs(3600),
                max_elapsed: Duration::MAX,
            },
            upload_backoff: Backoff {
                initial: Duration::from_secs(1),
                max_delay: Duration::from_secs(30),
                max_elapsed: Duration::from_secs(120),
            },
        }
    }
}

impl CloudProfilerBuilder {
    /// The Google Cloud project (default: the `GOOGLE_CLOUD_PROJECT` environment
    /// variable, read by [`start`](Self::start)).
    pub fn with_project_id(mut self, project_id: impl Into<String>) -> Self {
        self.project_id = Some(project_id.into());
        self
    }
    /// The service name: the deployment's `target` (required; lowercase letters,
    /// digits, `-`, `_` and `.`, starting with a letter).
    pub fn with_service(mut self, name: impl Into<String>) -> Self {
        self.service = Some(name.into());
        self
    }
    /// The deployment label `version`.
    pub fn with_service_version(self, version: impl Into<String>) -> Self {
        self.with_label("version", version)
    }
    /// The deployment label `zone` (e.g. `us-central1-a`).
    pub fn with_zone(self, zone: impl Into<String>) -> Self {
        self.with_label("zone", zone)
    }
    /// Any deployment label (names: lowercase letters, digits and `-`, at most 63;
    /// values at most 512 bytes, all labels together at most 1024). `language`
    /// is `rust` unless set here.
    pub fn with_label(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(name.into(), value.into());
        self
    }
    /// Talks to `url` (`http://host:port` or `https://host:port`) instead of Cloud
    /// Profiler, **without credentials**: for emulators and tests.
    pub fn with_endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }
    /// The certificate authorities trusted for an `https://` endpoint (default
    /// [`TlsRoots::WebPki`]), on top of any [`with_ca_certificate`](Self::with_ca_certificate).
    /// [`TlsRoots::Native`] reads the system's store once, at [`start`](Self::start).
    pub fn with_tls_roots(mut self, roots: TlsRoots) -> Self {
        self.tls = self.tls.with_roots(roots);
        self
    }
    /// Also trusts the CA certificate(s) in `pem` (one or more `BEGIN
    /// CERTIFICATE` blocks) for an `https://` endpoint: a proxy or an emulator
    /// behind a private CA, or a test server's self-signed certificate.
    /// [`start`](Self::start) fails if it holds none.
    ///
    /// ```no_run
    /// use tracewire_cloud_profiler::CloudProfilerAgent;
    ///
    /// let company_ca = std::fs::read("/etc/company/ca.pem").expect("the CA");
    /// let agent = CloudProfilerAgent::builder()
    ///     .with_project_id("my-project")
    ///     .with_service("checkout")
    ///     .with_endpoint("https://profiler-proxy.internal.example:8443")
    ///     .with_ca_certificate(company_ca)
    ///     .start()
    ///     .expect("a valid configuration");
    /// # drop(agent);
    /// ```
    pub fn with_ca_certificate(mut self, pem: impl AsRef<[u8]>) -> Self {
        self.tls = self.tls.with_ca_certificate(pem);
        self
    }
    /// CPU samples per second per thread (default 100).
    pub fn with_frequency(mut self, hz: u32) -> Self {
        self.frequency = hz;
        self
    }
    /// Whether to offer `HEAP` profiles when [`tracewire::alloc::Profiled`] is
    /// the global allocator (default true).
    pub fn with_heap(mut self, heap: bool) -> Self {
        self.heap = heap;
        self
    }
    /// Most profiles waiting for `UpdateProfile` (default 4, at least 1).
    pub fn with_queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n.max(1);
        self
    }
    /// Timeout of one `UpdateProfile` call (default 30 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
    /// Timeout of one `CreateProfile` long poll (default 70 min: the server
    /// answers within about an hour).
    pub fn with_create_timeout(mut self, timeout: Duration) -> Self {
        self.create_timeout = timeout;
        self
    }
    /// Waits between `CreateProfile` calls that failed other than with an
    /// `ABORTED` carrying `RetryInfo`: `initial` doubling to `max_delay`, with
    /// full jitter (default 1 min to 1 h, as the Go agent); `max_elapsed` is not
    /// used (creation is tried for ever).
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }
    /// Retry policy of `UpdateProfile` (default 1 s doubling to 30 s, given up
    /// after 2 min, when the profile is dropped and counted).
    pub fn with_upload_backoff(mut self, backoff: Backoff) -> Self {
        self.upload_backoff = backoff;
        self
    }

    /// Checks the configuration and starts the agent's thread. Connects to
    /// nothing and reads no credentials yet: that happens on its thread, and a
    /// server that is down is retried. Fails on an invalid project, service,
    /// label, endpoint or CA certificate, and (for `https://`) when no trusted
    /// certificate is left (say [`TlsRoots::Native`] on a system without a CA
    /// bundle).
    pub fn start(self) -> Result<CloudProfilerAgent, Error> {
        let deployment = self.deployment()?;
        agent::start(self, deployment)
    }

    /// The deployment every call names; checks the names against Cloud
    /// Profiler's rules.
    fn deployment(&self) -> Result<proto::v2::Deployment, Error> {
        let project_id = google::project_id(self.project_id.as_deref())?;
        let target = self
            .service
            .clone()
            .ok_or_else(|| Error::new("no service name: call service()"))?;
        if !is_target(&target) {
            return Err(Error::new(format!(
                "invalid service name {target:?}: lowercase letters, digits, '-', '_' and '.', starting with a letter, at most 255"
            )));
        }
        let mut total = 0;
        for (name, value) in &self.labels {
            if !is_label_name(name) {
                return Err(Error::new(format!(
                    "invalid deployment label name {name:?}: lowercase letters, digits and '-', at most 63"
                )));
            }
            if value.len() > 512 {
                return Err(Error::new(format!(
                    "deployment label {name:?}: its value is longer than 512 bytes"
                )));
            }
            total += name.len() + value.len();
        }
        if total > 1024 {
            return Err(Error::new(
                "the deployment labels are longer than 1024 bytes in all",
            ));
        }
        Ok(proto::v2::Deployment {
            project_id,
            target,
            labels: self.labels.clone(),
        })
    }
}

/// `^[a-z]([-a-z0-9_.]{0,253}[a-z0-9])?$`
fn is_target(s: &str) -> bool {
    let b = s.as_bytes();
    let inner = |c: &u8| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.');
    !b.is_empty()
        && b.len() <= 255
        && b[0].is_ascii_lowercase()
        && b.iter().all(inner)
        && (b.len() == 1 || b[b.len() - 1].is_ascii_lowercase() || b[b.len() - 1].is_ascii_digit())
}

/// `^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`
fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    let end = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.len() <= 63
        && end(b[0])
        && end(b[b.len() - 1])
        && b.iter().all(|&c| end(c) || c == b'-')
}

/// What a [`CloudProfilerAgent`] did so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Profiles the server asked for (`CreateProfile` answers).
    pub asked: u64,
    /// Profiles collected.
    pub collected: u64,
    /// Profiles uploaded (`UpdateProfile` accepted).
    pub uploaded: u64,
    /// Profiles given up on: the oldest when the queue was full, those whose
    /// upload failed for good (an error not worth a retry, or retries spent),
    /// and those the shutdown deadline cut off.
    pub dropped: u64,
    /// `UpdateProfile` calls that failed for good.
    pub failed_uploads: u64,
    /// `UpdateProfile` attempts retried.
    pub retries: u64,
    /// `ABORTED` answers with `RetryInfo`, whose delay was honoured.
    pub aborted: u64,
    /// Other `CreateProfile` errors, each followed by a backoff.
    pub create_errors: u64,
    /// CPU profiles the server asked for while another CPU profile was running
    /// in the process (not collected).
    pub busy: u64,
    /// Profiles that could not be collected for another reason (e.g. an
    /// unsupported platform or profile type); logged.
    pub collect_errors: u64,
    /// Profiles waiting for `UpdateProfile` now.
    pub queued: u64,
}

/// Answers Cloud Profiler from its own thread. See the [crate docs](crate).
pub struct CloudProfilerAgent {
    pub(crate) shared: Arc<agent::Shared>,
    pub(crate) deployment: proto::v2::Deployment,
    pub(crate) endpoint: String,
    pub(crate) worker: Worker,
}

impl fmt::Debug for CloudProfilerAgent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloudProfilerAgent")
            .field("project_id", &self.deployment.project_id)
            .field("target", &self.deployment.target)
            .field("endpoint", &self.endpoint)
            .field("stats", &self.stats())
            .finish()
    }
}

impl CloudProfilerAgent {
    /// A builder with the defaults.
    pub fn builder() -> CloudProfilerBuilder {
        CloudProfilerBuilder::default()
    }

    /// The deployment the agent names in its calls.
    pub fn deployment(&self) -> &proto::v2::Deployment {
        &self.deployment
    }

    /// What the agent did so far.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Cancels the long poll, ends a CPU profile in progress and uploads what the
    /// agent holds, for at most `timeout`. Fails if a profile was not uploaded in
    /// that time (refused, retries spent, or past the deadline: it is counted as
    /// dropped) or the agent was already shut down.
    pub fn shutdown(&self, timeout: Duration) -> Result<(), Error> {
        self.worker.shutdown(&self.shared.queue, timeout)
    }
}

impl Drop for CloudProfilerAgent {
    fn drop(&mut self) {
        if self.worker.is_running() {
            let _ = self.shutdown(Duration::from_secs(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_label_names_follow_cloud_profilers_rules() {
        for ok in ["a", "checkout", "my-svc_2.v1", "a0"] {
            assert!(is_target(ok), "{ok}");
        }
        for bad in [
            "",
            "Checkout",
            "1svc",
            "svc-",
            "svc.",
            "a b",
            &"a".repeat(256),
        ] {
            assert!(!is_target(bad), "{bad}");
        }
        for ok in ["zone", "version", "language", "a-1", "0"] {
            assert!(is_label_name(ok), "{ok}");
        }
        for bad in ["", "Zone", "-a", "a-", "a_b", "a.b", &"a".repeat(64)] {
            assert!(!is_label_name(bad), "{bad}");
        }
    }

    #[test]
    fn the_deployment_names_project_target_and_labels() {
        let d = CloudProfilerAgent::builder()
            .with_project_id("my-project")
            .with_service("checkout")
            .with_service_version("1.2.3")
            .with_zone("us-central1-a")
            .deployment()
            .unwrap();
        assert_eq!(d.project_id, "my-project");
        assert_eq!(d.target, "checkout");
        let labels: Vec<(&str, &str)> = d
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            labels,
            [
                ("language", "rust"),
                ("version", "1.2.3"),
                ("zone", "us-central1-a")
            ]
        );
    }

    #[test]
    fn a_missing_service_or_bad_label_is_an_error() {
        let b = || CloudProfilerAgent::builder().with_project_id("p-1234");
        assert!(b().deployment().is_err());
        assert!(b().with_service("Bad").deployment().is_err());
        assert!(b()
            .with_service("s")
            .with_label("Bad", "v")
            .deployment()
            .is_err());
        assert!(b()
            .with_service("s")
            .with_label("v", "x".repeat(513))
            .deployment()
            .is_err());
        assert!(b().with_service("s").deployment().is_ok());
    }
}
