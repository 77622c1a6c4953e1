//! # tracewire-otlp
//!
//! Sends tracewire spans to an OpenTelemetry collector (or any OTLP receiver:
//! Jaeger, Tempo, vendors' endpoints) with the OpenTelemetry protocol, OTLP
//! 1.x, from the official `.proto` files. It plugs into tracewire's batch
//! processor, so the application never waits for the collector:
//!
//! - both transports of the specification:
//!   [OTLP/HTTP](Protocol::HttpProtobuf) (binary protobuf, `POST /v1/traces`,
//!   the default, as the specification recommends) and [OTLP/gRPC](Protocol::Grpc)
//!   (`opentelemetry.proto.collector.trace.v1.TraceService/Export`, with tonic);
//!   `http://` or `https://` (TLS with the webpki roots) for either;
//! - [gzip](Compression::Gzip): `grpc-encoding: gzip` on gRPC (tonic's
//!   compression), `Content-Encoding: gzip` on HTTP;
//! - retries as the [OTLP specification] says: gRPC retries `CANCELLED`,
//!   `DEADLINE_EXCEEDED`, `ABORTED`, `OUT_OF_RANGE`, `UNAVAILABLE`, `DATA_LOSS`
//!   (and connection errors), and `RESOURCE_EXHAUSTED` only when the server sends
//!   a `google.rpc.RetryInfo` (in `grpc-status-details-bin`), whose delay is then
//!   waited; HTTP retries 429, 502, 503 and 504 (and connection errors) and waits
//!   what `Retry-After` (seconds) says, or else the `RetryInfo` of the
//!   `google.rpc.Status` body. Otherwise exponential backoff with full jitter
//!   ([`Backoff`]). Everything else (`INVALID_ARGUMENT`, 400, ...) is not
//!   retried: the request's spans are dropped and counted;
//! - one deadline per export, [`with_timeout`](OtlpExporterBuilder::with_timeout) (default
//!   10 s), that every attempt and every wait between attempts fits in: an export
//!   never takes longer, whatever the collector does (down, hanging, asking for
//!   a delay longer than what is left);
//! - partial success: the spans a collector reports as `rejected_spans` are
//!   counted as dropped and its `error_message` is reported on standard error
//!   (see [Counting](#counting));
//! - memory bounded by bytes as well as spans: a batch is cut into requests of at
//!   most [`with_max_request_bytes`](OtlpExporterBuilder::with_max_request_bytes)
//!   (default 4 MiB, a collector's default limit), a span larger than that on
//!   its own is dropped and counted;
//! - configuration by the OpenTelemetry variables `OTEL_EXPORTER_OTLP_*` and
//!   `OTEL_EXPORTER_OTLP_TRACES_*` ([`OtlpExporterBuilder::from_env`]);
//! - no dependency on the `opentelemetry` crates: it works with any version of
//!   them, or none.
//!
//! ```
//! use std::time::Duration;
//! use tracewire::TracerProvider;
//! use tracewire_otlp::{Compression, OtlpExporter, Protocol};
//!
//! // Nothing listens on port 1: the export fails (and is counted) within the
//! // timeout, and nothing else happens.
//! let exporter = OtlpExporter::builder()
//!     .with_protocol(Protocol::Grpc)
//!     .with_endpoint("http://127.0.0.1:1")
//!     .with_compression(Compression::Gzip)
//!     .with_header("x-tenant", "checkout")
//!     .with_timeout(Duration::from_millis(300))
//!     .build()
//!     .expect("a valid endpoint");
//! let counters = exporter.counters();
//! let provider = TracerProvider::builder()
//!     .with_service_name("frontend")
//!     .with_batch_exporter(exporter)
//!     .build();
//! provider.tracer("app").start("GET /user").end();
//! assert!(provider.shutdown(Duration::from_secs(5)).is_err());
//! assert_eq!(counters.snapshot().dropped, 1);
//! ```
//!
//! The exporter needs a tokio runtime with timers: the one the
//! [`BatchProcessor`](tracewire::export::BatchProcessor) runs it on. (The simple
//! processor has none, so exports through it fail with an error.)
//!
//! ## Mapping
//!
//! Each request holds one `ResourceSpans`: the resource given by the provider
//! (`service.name` first, then the resource's attributes), with a `ScopeSpans`
//! per tracer name (the instrumentation scope) in the order first seen. Every
//! span field has its OTLP place: trace and span ids (16 and 8 bytes), parent
//! span id (empty for roots), `trace_state` (the W3C header), `flags` (the W3C
//! trace flags in bits 0-7, and whether the *parent* is remote in bits 8 and 9),
//! name, kind, start and end in Unix nanoseconds, attributes (strings, bools,
//! integers, floats and their arrays as `AnyValue`), events, links (with the
//! linked context's flags, trace state and remoteness), status (absent when
//! unset; `OK`, or `ERROR` with its message) and the three dropped counts.
//! B3's debug flag ([`SamplingState::Debug`](tracewire::SamplingState::Debug))
//! has no OTLP field and is not sent.
//!
//! ## Counting
//!
//! [`OtlpExporter::counters`] counts spans the collector accepted (`exported`),
//! spans lost (`dropped`: retries exhausted, a permanent error, the deadline
//! passed, over the size limit, or rejected in a partial success), failed
//! requests (`failed`) and retries (`retried`). The provider's
//! [`Stats`](tracewire::export::Stats) see only whole-batch errors: a batch the
//! collector took with some spans rejected is an export that succeeded, so the
//! rejected spans show up in these counters' `dropped` and
//! [`rejected`](OtlpExporter::rejected), not in the provider's stats. Every span
//! handed to the exporter ends up exported or dropped, including those still in
//! flight when the batch processor's export timeout or shutdown deadline cuts an
//! export off.
//!
//! ## Generated code
//!
//! The [`proto`] module holds the OTLP trace messages, the `TraceService` client
//! and server, and `google.rpc.Status` / `RetryInfo`, generated at build time
//! from the `.proto` files vendored in `proto/` (OTLP `v1.10.0`; see the crate's
//! README), with `protox` (a protobuf compiler written in Rust) feeding
//! `tonic-prost-build`: no `protoc` is needed. The server is there for tests that
//! stand in for a collector.
//!
//! ## Features
//!
//! The crate has no optional features: OTLP/HTTP (hyper), OTLP/gRPC (tonic),
//! TLS (rustls with the `ring` provider and the webpki roots) and gzip are
//! always built.
//!
//! MSRV: 1.88.
//!
//! [OTLP specification]: https://opentelemetry.io/docs/specs/otlp/

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]

mod env;
mod grpc;
mod http;
mod map;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracewire::export::{Backoff, ExportCounters, ExportError, SpanExporter};
use tracewire::trace::{Resource, SpanData};
use tracewire_transport::InFlight;

pub use map::Request;

use proto::collector::trace::v1::ExportTraceServiceResponse;

pub mod proto {
    //! OTLP trace types, the `TraceService` client and server, and the
    //! `google.rpc` status and error details, generated from the vendored
    //! protos (see the crate's README for their origin).
    //!
    //! [`collector::trace::v1::trace_service_server::TraceServiceServer`] lets
    //! tests run a stand-in for a collector; the exporter itself sends
    //! pre-encoded [`collector::trace::v1::ExportTraceServiceRequest`]s.

    #[allow(
        missing_docs,
        missing_debug_implementations,
        unreachable_pub,
        clippy::all,
        clippy::pedantic,
        rustdoc::all
    )]
    mod generated {
        include!(concat!(env!("OUT_DIR"), "/otlp.rs"));
    }

    pub use generated::opentelemetry::proto::{collector, common, resource, trace};

    /// `google.rpc`: [`Status`](rpc::Status) (an error's details) and
    /// [`RetryInfo`](rpc::RetryInfo) (how long to wait before retrying).
    pub use generated::google::rpc;

    /// The `type_url` of a `google.rpc.RetryInfo` in a status' details.
    pub const RETRY_INFO_TYPE_URL: &str = "type.googleapis.com/google.rpc.RetryInfo";

    /// The retry delay of the first `RetryInfo` in `status`' details, if any.
    pub fn retry_delay(status: &rpc::Status) -> Option<std::time::Duration> {
        use prost::Message as _;
        let info = status
            .details
            .iter()
            .find(|any| any.type_url == RETRY_INFO_TYPE_URL)?;
        let delay = rpc::RetryInfo::decode(info.value.as_slice())
            .ok()?
            .retry_delay?;
        let secs = u64::try_from(delay.seconds).ok()?;
        let nanos = u32::try_from(delay.nanos).ok()?;
        Some(std::time::Duration::new(secs, nanos.min(999_999_999)))
    }
}

/// The default OTLP/HTTP endpoint.
pub const DEFAULT_HTTP_ENDPOINT: &str = "http://localhost:4318/v1/traces";
/// The default OTLP/gRPC endpoint.
pub const DEFAULT_GRPC_ENDPOINT: &str = "http://localhost:4317";

const USER_AGENT: &str = concat!("tracewire-otlp/", env!("CARGO_PKG_VERSION"));

/// The OTLP transport.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/gRPC (`grpc` in `OTEL_EXPORTER_OTLP_PROTOCOL`).
    Grpc,
    /// OTLP/HTTP with binary protobuf bodies (`http/protobuf`); the default.
    #[default]
    HttpProtobuf,
}

impl Protocol {
    /// The name `OTEL_EXPORTER_OTLP_PROTOCOL` gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http/protobuf",
        }
    }

    fn default_endpoint(self) -> &'static str {
        match self {
            Protocol::Grpc => DEFAULT_GRPC_ENDPOINT,
            Protocol::HttpProtobuf => DEFAULT_HTTP_ENDPOINT,
        }
    }
}

/// Compression of request bodies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    /// None (the default).
    #[default]
    None,
    /// gzip.
    Gzip,
}

/// Why an exporter could not be built.
#[derive(Debug)]
pub struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// Checks that `url` is an `http://` or `https://` URL with a host.
pub(crate) fn check_url(url: &str) -> Result<(), String> {
    let uri: ::http::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err("not an http:// or https:// URL".to_owned());
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("the URL has no host".to_owned());
    }
    Ok(())
}

/// Checks that `name: value` can be sent as an HTTP header (and so as gRPC
/// metadata, which also wants a lowercase name: names are lowercased).
pub(crate) fn check_header(name: &str, value: &str) -> Result<(), String> {
    ::http::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("{name:?} is not a valid header name"))?;
    ::http::HeaderValue::from_str(value)
        .map_err(|_| format!("the value of header {name:?} is not valid"))?;
    Ok(())
}

/// Configures an [`OtlpExporter`]. Values set here win over the environment
/// ([`from_env`](Self::from_env)), in whichever order the calls come.
#[derive(Clone)]
pub struct OtlpExporterBuilder {
    protocol: Option<Protocol>,
    endpoint: Option<String>,
    headers: Vec<(String, String)>,
    compression: Option<Compression>,
    timeout: Option<Duration>,
    backoff: Backoff,
    max_request_bytes: usize,
    env: env::EnvConfig,
}

impl Default for OtlpExporterBuilder {
    fn default() -> Self {
        OtlpExporterBuilder {
            protocol: None,
            endpoint: None,
            headers: Vec::new(),
            compression: None,
            timeout: None,
            backoff: Backoff::default(),
            max_request_bytes: 4 << 20,
            env: env::EnvConfig::default(),
        }
    }
}

impl fmt::Debug for OtlpExporterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header values often hold credentials: names only.
        let names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("OtlpExporterBuilder")
            .field("protocol", &self.protocol)
            .field("endpoint", &self.endpoint)
            .field("headers", &names)
            .field("compression", &self.compression)
            .field("timeout", &self.timeout)
            .field("backoff", &self.backoff)
            .field("max_request_bytes", &self.max_request_bytes)
            .finish_non_exhaustive()
    }
}

impl OtlpExporterBuilder {
    /// The transport (default [`Protocol::HttpProtobuf`]).
    pub fn with_protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = Some(protocol);
        self
    }
    /// Where to send, used as it is: for OTLP/HTTP the whole URL, path included
    /// (default [`DEFAULT_HTTP_ENDPOINT`]); for OTLP/gRPC `http://host:port` or
    /// `https://host:port` (default [`DEFAULT_GRPC_ENDPOINT`]; a path is
    /// ignored: gRPC names the method in its own path). `https://` uses TLS with
    /// the webpki roots.
    pub fn with_endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }
    /// A header (gRPC: metadata) sent with every request, e.g. an API key. It
    /// replaces one of the same name from `OTEL_EXPORTER_OTLP_HEADERS`.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
    /// Compression of request bodies (default none).
    pub fn with_compression(mut self, compression: Compression) -> Self {
        self.compression = Some(compression);
        self
    }
    /// The most one export may take, every attempt and every wait between
    /// attempts included (default 10 s). Keep it under the batch processor's
    /// export timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
    /// The waits between attempts when the server names none (default
    /// [`Backoff::default`]: 100 ms doubling to 5 s, with full jitter). Its
    /// `max_elapsed` shortens the export's deadline if it is less than
    /// [`with_timeout`](Self::with_timeout).
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }
    /// Largest encoded `ExportTraceServiceRequest`, before compression (default
    /// 4 MiB). Larger batches are split into several requests.
    pub fn with_max_request_bytes(mut self, n: usize) -> Self {
        self.max_request_bytes = n.max(1);
        self
    }

    /// Builds the exporter. Fails on an endpoint set in code that is not an
    /// `http://` or `https://` URL with a host, or on a header set in code that
    /// HTTP does not allow. Connections are made lazily: a collector that is down
    /// now is not an error.
    pub fn build(self) -> Result<OtlpExporter, Error> {
        let protocol = self.protocol.or(self.env.protocol).unwrap_or_default();
        let url = match (&self.endpoint, &self.env.endpoint) {
            (Some(url), _) => url.clone(),
            (None, Some(env)) => env.url(protocol),
            (None, None) => protocol.default_endpoint().to_owned(),
        };
        check_url(&url).map_err(|e| Error(format!("invalid OTLP endpoint {url:?}: {e}")))?;
        let mut headers: Vec<(String, String)> = Vec::new();
        for (name, value) in self.env.headers.iter().flatten().chain(&self.headers) {
            check_header(name, value).map_err(|e| Error(format!("OTLP header: {e}")))?;
            let name = name.to_ascii_lowercase();
            match headers.iter_mut().find(|(n, _)| *n == name) {
                Some(h) => h.1 = value.clone(),
                None => headers.push((name, value.clone())),
            }
        }
        let compression = self
            .compression
            .or(self.env.compression)
            .unwrap_or_default();
        let timeout = self
            .timeout
            .or(self.env.timeout)
            .unwrap_or(Duration::from_secs(10));
        let config = Config {
            url,
            headers,
            compression,
            timeout,
        };
        let transport = match protocol {
            Protocol::Grpc => Transport::Grpc(grpc::Grpc::new(&config)?),
            Protocol::HttpProtobuf => Transport::Http(http::Http::new(&config)?),
        };
        Ok(OtlpExporter {
            transport,
            config,
            protocol,
            backoff: self.backoff,
            max_request_bytes: self.max_request_bytes,
            resource: map::resource(&Resource::default()),
            counters: ExportCounters::new(),
            rejected: Rejected::default(),
            warnings: Warnings::default(),
        })
    }
}

/// What both transports need to know.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) url: String,
    /// Lowercase names, validated.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) compression: Compression,
    pub(crate) timeout: Duration,
}

impl Config {
    /// The headers as a map (both transports start from it).
    pub(crate) fn header_map(&self) -> Result<::http::HeaderMap, Error> {
        let mut map = ::http::HeaderMap::new();
        for (name, value) in &self.headers {
            let (Ok(name), Ok(value)) = (
                ::http::HeaderName::from_bytes(name.as_bytes()),
                ::http::HeaderValue::from_str(value),
            ) else {
                return Err(Error(format!("invalid OTLP header {name:?}")));
            };
            map.append(name, value);
        }
        Ok(map)
    }
}

/// Why one attempt failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Worth another attempt, after `after` if the server said how long.
    Retry {
        error: ExportError,
        after: Option<Duration>,
    },
    /// Permanent: the request's spans are dropped.
    Fail(ExportError),
}

// One per exporter, never moved on a hot path: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
enum Transport {
    Grpc(grpc::Grpc),
    Http(http::Http),
}

impl Transport {
    /// Gets ready to send (the gRPC channel is made on the exporter's runtime).
    fn prepare(&mut self) -> Result<(), ExportError> {
        match self {
            Transport::Grpc(g) => g.prepare(),
            Transport::Http(_) => Ok(()),
        }
    }

    /// The body as it goes out (gzip'd once for every attempt on HTTP; tonic
    /// compresses gRPC messages itself).
    fn wire_body(&self, body: Bytes) -> Result<Bytes, ExportError> {
        match self {
            Transport::Grpc(_) => Ok(body),
            Transport::Http(h) => h.wire_body(body),
        }
    }

    async fn send(
        &self,
        body: Bytes,
        remaining: Duration,
    ) -> Result<ExportTraceServiceResponse, Failure> {
        match self {
            Transport::Grpc(g) => g.send(body, remaining).await,
            Transport::Http(h) => h.send(body).await,
        }
    }

    fn shutdown(&mut self) {
        if let Transport::Grpc(g) = self {
            g.shutdown();
        }
    }
}

/// Spans rejected by collectors in partial successes; clones share the count.
#[derive(Clone, Debug, Default)]
pub struct Rejected(Arc<AtomicU64>);

impl Rejected {
    /// The spans rejected so far (also counted in the exporter's `dropped`).
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
    fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
}

/// Reports partial successes (spans rejected, or a warning in `error_message`)
/// on standard error at most once a minute, with what came since the last
/// report.
#[derive(Debug, Default)]
struct Warnings {
    last: Option<Instant>,
    rejected: u64,
    reports: u64,
}

impl Warnings {
    const INTERVAL: Duration = Duration::from_secs(60);

    fn partial_success(&mut self, url: &str, rejected: u64, of: u64, message: &str) {
        self.rejected += rejected;
        self.reports += 1;
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Self::INTERVAL)
        {
            return;
        }
        let earlier = if self.reports > 1 {
            format!(
                " ({} spans rejected in {} partial successes since the last report)",
                self.rejected, self.reports
            )
        } else {
            String::new()
        };
        if rejected == 0 {
            eprintln!(
                "tracewire: OTLP endpoint {url} accepted {of} spans with a warning: \
                 {message}{earlier}"
            );
        } else {
            let message = if message.is_empty() {
                String::new()
            } else {
                format!(": {message}")
            };
            eprintln!(
                "tracewire: OTLP endpoint {url} rejected {rejected} of {of} spans{message}{earlier}"
            );
        }
        self.last = Some(now);
        self.rejected = 0;
        self.reports = 0;
    }
}

/// Exports spans over OTLP. See the [crate docs](crate).
pub struct OtlpExporter {
    transport: Transport,
    config: Config,
    protocol: Protocol,
    backoff: Backoff,
    max_request_bytes: usize,
    resource: proto::resource::v1::Resource,
    counters: ExportCounters,
    rejected: Rejected,
    warnings: Warnings,
}

impl fmt::Debug for OtlpExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header values often hold credentials: names only.
        let names: Vec<&str> = self
            .config
            .headers
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
        f.debug_struct("OtlpExporter")
            .field("protocol", &self.protocol)
            .field("endpoint", &self.config.url)
            .field("headers", &names)
            .field("compression", &self.config.compression)
            .field("timeout", &self.config.timeout)
            .field("max_request_bytes", &self.max_request_bytes)
            .field("counters", &self.counters)
            .finish()
    }
}

impl OtlpExporter {
    /// A builder with the defaults.
    pub fn builder() -> OtlpExporterBuilder {
        OtlpExporterBuilder::default()
    }

    /// The transport.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }
    /// The URL requests go to.
    pub fn endpoint(&self) -> &str {
        &self.config.url
    }
    /// The compression of request bodies.
    pub fn compression(&self) -> Compression {
        self.config.compression
    }
    /// The deadline of one export.
    pub fn timeout(&self) -> Duration {
        self.config.timeout
    }
    /// The names of the headers sent with every request (not their values,
    /// which often hold credentials).
    pub fn header_names(&self) -> impl Iterator<Item = &str> {
        self.config.headers.iter().map(|(k, _)| k.as_str())
    }
    #[cfg(test)]
    pub(crate) fn headers(&self) -> Vec<(&str, &str)> {
        self.config
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    /// The exporter's counters (exported, dropped, failed, retried); see
    /// [Counting](crate#counting). Take a clone before handing the exporter to
    /// the pipeline.
    pub fn counters(&self) -> ExportCounters {
        self.counters.clone()
    }

    /// The spans collectors rejected in partial successes (part of the
    /// counters' `dropped`). Take a clone before handing the exporter to the
    /// pipeline.
    pub fn rejected(&self) -> Rejected {
        self.rejected.clone()
    }

    /// Maps and encodes `batch` into `ExportTraceServiceRequest`s of at most
    /// `max_request_bytes` each, for the resource last given with
    /// [`set_resource`](SpanExporter::set_resource). Spans too large for any
    /// request are dropped and counted.
    pub fn encode(&self, batch: &[SpanData]) -> Vec<Request> {
        map::encode(
            &self.resource,
            batch,
            self.max_request_bytes,
            &self.counters,
        )
    }

    fn timed_out(&self) -> ExportError {
        ExportError::new(format!(
            "OTLP endpoint {} did not answer within the export timeout ({:?})",
            self.config.url, self.config.timeout
        ))
    }

    /// Sends `body` until it is accepted, fails for good, or `deadline` passes.
    async fn send(
        &self,
        body: Bytes,
        deadline: Instant,
    ) -> Result<ExportTraceServiceResponse, ExportError> {
        let mut retries = 0;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(self.timed_out());
            }
            let attempt =
                tokio::time::timeout(remaining, self.transport.send(body.clone(), remaining)).await;
            let (error, after) = match attempt {
                Err(_) => return Err(self.timed_out()),
                Ok(Ok(response)) => return Ok(response),
                Ok(Err(Failure::Fail(error))) => return Err(error),
                Ok(Err(Failure::Retry { error, after })) => (error, after),
            };
            let delay = after.unwrap_or_else(|| self.backoff.delay(retries));
            if Instant::now() + delay >= deadline {
                return Err(ExportError::new(format!(
                    "{error} (no retry: waiting {delay:?} would pass the export timeout)"
                )));
            }
            self.counters.add_retried();
            tokio::time::sleep(delay).await;
            retries += 1;
        }
    }

    /// Counts what the collector said of a request of `n` spans it accepted.
    fn accepted(&mut self, n: u64, response: ExportTraceServiceResponse) {
        let Some(partial) = response.partial_success else {
            self.counters.add_exported(n);
            return;
        };
        let rejected = u64::try_from(partial.rejected_spans).unwrap_or(0).min(n);
        self.counters.add_exported(n - rejected);
        self.counters.add_dropped(rejected);
        self.rejected.add(rejected);
        if rejected > 0 || !partial.error_message.is_empty() {
            self.warnings
                .partial_success(&self.config.url, rejected, n, &partial.error_message);
        }
    }
}

impl SpanExporter for OtlpExporter {
    async fn export(&mut self, batch: &[SpanData]) -> Result<(), ExportError> {
        let start = Instant::now();
        let deadline = start + self.config.timeout.min(self.backoff.max_elapsed);
        let requests = self.encode(batch);
        if requests.is_empty() {
            return Ok(());
        }
        let total = requests.iter().map(|r| r.spans as u64).sum();
        if let Err(e) = self.transport.prepare() {
            self.counters.add_dropped(total);
            self.counters.add_failed();
            return Err(e);
        }
        // Spans not yet accounted for are counted as dropped if this future is
        // dropped (the batch processor's deadline passed first).
        let counters = self.counters.clone();
        let mut pending = InFlight::new(&counters, total);
        let mut result = Ok(());
        for request in requests {
            let n = request.spans as u64;
            let sent = match self.transport.wire_body(request.body) {
                Ok(body) => self.send(body, deadline).await,
                Err(e) => Err(e),
            };
            pending.settle(n);
            match sent {
                Ok(response) => self.accepted(n, response),
                Err(e) => {
                    self.counters.add_dropped(n);
                    self.counters.add_failed();
                    result = Err(e);
                }
            }
        }
        result
    }

    async fn shutdown(&mut self) -> Result<(), ExportError> {
        self.transport.shutdown();
        Ok(())
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = map::resource(resource);
    }
}
