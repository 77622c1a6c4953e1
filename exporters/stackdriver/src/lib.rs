//! # tracewire-stackdriver
//!
//! Sends tracewire spans to Google Cloud Trace (the v2 API, formerly Stackdriver
//! Trace) with `google.devtools.cloudtrace.v2.TraceService/BatchWriteSpans` over
//! gRPC. It plugs into tracewire's batch processor, so the application never waits
//! for the collector:
//!
//! - by default it talks to `https://cloudtrace.googleapis.com:443` over TLS
//!   (webpki roots, no system certificates needed) and authenticates with
//!   [Application Default Credentials] (scope
//!   `https://www.googleapis.com/auth/trace.append`), sending a cached OAuth token as
//!   `authorization: Bearer` metadata on each request;
//! - [`with_endpoint`](StackdriverExporterBuilder::with_endpoint) points it elsewhere: an
//!   `https://` endpoint (a regional or Private Service Connect endpoint, a
//!   proxy) is authenticated the same way; an `http://` one (an emulator, a test
//!   server) is plain-text HTTP/2 without credentials. A private CA is trusted
//!   with [`with_ca_certificate`](StackdriverExporterBuilder::with_ca_certificate), the
//!   system's store with
//!   [`with_tls_roots`](StackdriverExporterBuilder::with_tls_roots)`(`[`TlsRoots::Native`]`)`;
//!   a certificate the exporter refuses fails the export at once (a retry would
//!   be refused too);
//!   [`with_token_provider`](StackdriverExporterBuilder::with_token_provider) replaces ADC
//!   (on any endpoint) and
//!   [`without_credentials`](StackdriverExporterBuilder::without_credentials)
//!   sends none;
//! - the quota project (billed for the API calls, header `x-goog-user-project`)
//!   comes from [`with_quota_project`](StackdriverExporterBuilder::with_quota_project), else
//!   `GOOGLE_CLOUD_QUOTA_PROJECT`, else the `quota_project_id` of the ADC
//!   credentials file (as Google's client libraries read it); none is sent on
//!   unauthenticated requests unless set in code;
//! - connections are made lazily: a collector that is down at start is not an error;
//! - retries with exponential backoff and jitter, bounded in time, only on
//!   `UNAVAILABLE` (which is what connection errors become), `DEADLINE_EXCEEDED`,
//!   `RESOURCE_EXHAUSTED` and timeouts; a timeout per request; everything else is
//!   dropped and counted;
//! - memory bounded by bytes as well as spans: a batch is cut into requests of at
//!   most [`with_max_request_bytes`](StackdriverExporterBuilder::with_max_request_bytes); a
//!   span larger than that on its own is dropped and counted;
//! - counters of exported, dropped, failed and retried spans through
//!   [`StackdriverExporter::counters`]; every span handed to the exporter ends up
//!   exported or dropped, including those still in flight when the batch
//!   processor's export timeout or shutdown deadline cuts an export off.
//!
//! ```no_run
//! use std::time::Duration;
//! use tracewire::TracerProvider;
//! use tracewire_stackdriver::StackdriverExporter;
//!
//! // The project comes from GOOGLE_CLOUD_PROJECT when not given here.
//! let exporter = StackdriverExporter::builder()
//!     .with_project_id("my-project")
//!     .build()
//!     .expect("a project id");
//! let counters = exporter.counters();
//! let provider = TracerProvider::builder()
//!     .with_service_name("frontend")
//!     .with_batch_exporter(exporter)
//!     .build();
//! provider.tracer("app").start("GET /user").end();
//! provider.shutdown(Duration::from_secs(5)).unwrap();
//! println!("{:?}", counters.snapshot());
//! ```
//!
//! The exporter needs a tokio runtime with timers: the one the
//! [`BatchProcessor`](tracewire::export::BatchProcessor) runs it on. (The simple
//! processor has none, so exports through it fail with an error.)
//!
//! ## Mapping
//!
//! Per the limits documented in `trace.proto`:
//!
//! | tracewire | Cloud Trace |
//! |---|---|
//! | trace id, span id | `name` = `projects/{project}/traces/{32 hex}/spans/{16 hex}`, `span_id` |
//! | parent span id | `parent_span_id`, empty for roots |
//! | parent is local | `same_process_as_parent_span` (= not remote), absent for roots |
//! | name | `display_name`, at most 128 bytes |
//! | kind | `span_kind` (`INTERNAL`, `SERVER`, `CLIENT`, `PRODUCER`, `CONSUMER`) |
//! | status | `status`: code 0 when unset or ok; on error the message and the real `google.rpc.Code`: the span's `rpc.grpc.status_code`, else its HTTP status as `google/rpc/code.proto` maps it (404 → 5 `NOT_FOUND`, 503 → 14 `UNAVAILABLE`, ...), else 2 `UNKNOWN` |
//! | attributes | `attributes`: at most 32 (with the two labels below), keys of at most 128 bytes, string values cut to 256 bytes on a UTF-8 boundary (`truncated_byte_count` says how much); bool and i64 as themselves, f64 and arrays as strings (arrays as JSON) |
//! | events | annotations: at most 32, description at most 256 bytes, at most 4 attributes each |
//! | links | `links`: at most 128, type `TYPE_UNSPECIFIED`, at most 32 attributes each |
//!
//! Everything dropped is added to the `dropped_*_count` next to it, on top of what
//! the span's own limits dropped. A key that is a second alias of a well-known key
//! already set (say `http.method` after `http.request.method`) is dropped too.
//!
//! Well-known attributes get Cloud Trace's label names: `http.method` and
//! `http.request.method` → `/http/method`; `http.status_code` and
//! `http.response.status_code` → `/http/status_code` (an integer, also when given
//! as a string of digits); `http.url` and `url.full` → `/http/url`; `http.route` →
//! `/http/route`; `http.host` and `server.address` → `/http/host`; `url.path` →
//! `/http/path`; `http.user_agent` and
//! `user_agent.original` → `/http/user_agent`; the request and response body sizes
//! → `/http/request/size` and `/http/response/size`.
//!
//! Each span also carries the agent label `g.co/agent` = `tracewire <version>`, and
//! the resource's service name as the label `service.name` (the OpenTelemetry name,
//! which reads plainly in the console; the `g.co/gae/app/module` label is App
//! Engine's and would misdescribe services running elsewhere). Either is left out
//! when the span sets that key itself. They count toward the 32 attributes: a span
//! keeps at most 30 of its own.
//!
//! ## Generated code
//!
//! The [`proto`] module holds the Cloud Trace v2 messages, client and server,
//! generated at build time from the `.proto` files vendored in `proto/`, with
//! `protox` (a protobuf compiler written in Rust) feeding `tonic-prost-build`: no
//! `protoc` is needed. The server is there for tests that stand in for Cloud Trace.
//!
//! [Application Default Credentials]: https://cloud.google.com/docs/authentication/application-default-credentials
//!
//! MSRV: 1.88.

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]

mod map;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut as _, Bytes};
use prost::Message as _;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use tonic::{Code, GrpcMethod};
use tracewire::export::{Attempt, Backoff, ExportCounters, ExportError, SpanExporter};
use tracewire::trace::{Resource, SpanData};
use tracewire_transport::google::{self, GoogleAuth};
use tracewire_transport::grpc::{describe, GrpcEndpoint, PreEncoded};
use tracewire_transport::{is_refused_handshake, InFlight, TlsConfig};

pub use tracewire_transport::{Error, TlsRoots};

pub mod proto {
    //! Cloud Trace v2 types, client and server, generated from the vendored
    //! `google/devtools/cloudtrace/v2/{trace,tracing}.proto` and
    //! `google/rpc/status.proto` (see the crate's README for their origin).
    //!
    //! [`v2::trace_service_server::TraceServiceServer`] lets tests run a stand-in
    //! for Cloud Trace; the exporter itself sends pre-encoded
    //! [`v2::BatchWriteSpansRequest`]s.

    #[allow(
        missing_docs,
        missing_debug_implementations,
        unreachable_pub,
        clippy::all,
        clippy::pedantic,
        rustdoc::all
    )]
    mod generated {
        include!(concat!(env!("OUT_DIR"), "/cloudtrace.rs"));
    }

    pub use generated::google::devtools::cloudtrace::v2;
    pub use generated::google::rpc;
}

/// The public Cloud Trace endpoint.
pub const DEFAULT_ENDPOINT: &str = "https://cloudtrace.googleapis.com:443";
/// The OAuth scope the exporter asks for.
pub const TRACE_APPEND_SCOPE: &str = "https://www.googleapis.com/auth/trace.append";
/// The environment variable read when no project id is given.
pub const PROJECT_ENV: &str = google::PROJECT_ENV;
/// The environment variable read when no quota project is given.
pub const QUOTA_PROJECT_ENV: &str = "GOOGLE_CLOUD_QUOTA_PROJECT";
/// The metadata (header) naming the quota project.
pub const QUOTA_PROJECT_HEADER: &str = "x-goog-user-project";

const SERVICE: &str = "google.devtools.cloudtrace.v2.TraceService";
const METHOD: &str = "BatchWriteSpans";
const PATH: &str = "/google.devtools.cloudtrace.v2.TraceService/BatchWriteSpans";
/// `BatchWriteSpansRequest.spans` is field 2, length-delimited.
const SPANS_KEY: u8 = (2 << 3) | 2;
/// `BatchWriteSpansRequest.name` is field 1, length-delimited.
const NAME_KEY: u8 = (1 << 3) | 2;

/// Where the OAuth tokens of an authenticated endpoint come from.
#[derive(Clone, Default)]
enum Credentials {
    /// ADC on `https://`, none on `http://`.
    #[default]
    ByScheme,
    Provider(Arc<dyn gcp_auth::TokenProvider>),
    None,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Credentials::ByScheme => "ByScheme",
            Credentials::Provider(_) => "Provider",
            Credentials::None => "None",
        })
    }
}

/// Configures a [`StackdriverExporter`].
#[derive(Debug, Clone)]
pub struct StackdriverExporterBuilder {
    project_id: Option<String>,
    endpoint: Option<String>,
    credentials: Credentials,
    quota_project: Option<String>,
    tls: TlsConfig,
    timeout: Duration,
    backoff: Backoff,
    max_request_bytes: usize,
}

impl Default for StackdriverExporterBuilder {
    fn default() -> Self {
        StackdriverExporterBuilder {
            project_id: None,
            endpoint: None,
            credentials: Credentials::default(),
            quota_project: None,
            tls: TlsConfig::default(),
            timeout: Duration::from_secs(10),
            backoff: Backoff::default(),
            max_request_bytes: 4 << 20,
        }
    }
}

impl StackdriverExporterBuilder {
    /// The Google Cloud project the spans belong to (default: the
    /// `GOOGLE_CLOUD_PROJECT` environment variable, read by [`build`](Self::build)).
    pub fn with_project_id(mut self, project_id: impl Into<String>) -> Self {
        self.project_id = Some(project_id.into());
        self
    }
    /// Sends to `url` (`https://host[:port]` or `http://host:port`) instead of
    /// [`DEFAULT_ENDPOINT`]. `https://` uses TLS with the webpki roots (or the
    /// [`with_tls_roots`](Self::with_tls_roots) chosen, and any
    /// [`with_ca_certificate`](Self::with_ca_certificate)) and is authenticated like the
    /// default endpoint: a regional or private (Private Service Connect) Cloud
    /// Trace endpoint, or a proxy in front of it. `http://` is plain-text HTTP/2
    /// without credentials, for emulators and tests (unless a
    /// [`with_token_provider`](Self::with_token_provider) is given).
    ///
    /// ```
    /// use tracewire_stackdriver::StackdriverExporter;
    ///
    /// let exporter = StackdriverExporter::builder()
    ///     .with_project_id("my-project")
    ///     .with_endpoint("https://cloudtrace-my-psc.p.googleapis.com")
    ///     .with_quota_project("billing-project")
    ///     .build()
    ///     .unwrap();
    /// assert!(format!("{exporter:?}").contains("authenticated: true"));
    /// ```
    pub fn with_endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }
    /// Authenticates every request, on any endpoint, with tokens from `provider`
    /// (scope [`TRACE_APPEND_SCOPE`]) instead of Application Default Credentials:
    /// say a `gcp_auth::CustomServiceAccount` read from a key file the
    /// application chooses.
    pub fn with_token_provider(mut self, provider: Arc<dyn gcp_auth::TokenProvider>) -> Self {
        self.credentials = Credentials::Provider(provider);
        self
    }
    /// Sends no credentials, also to an `https://` endpoint (an emulator behind
    /// TLS, a proxy that adds them).
    pub fn without_credentials(mut self) -> Self {
        self.credentials = Credentials::None;
        self
    }
    /// The project billed for the API calls, sent as `x-goog-user-project`
    /// (default: `GOOGLE_CLOUD_QUOTA_PROJECT`, else the ADC credentials file's
    /// `quota_project_id`, else none, when requests are authenticated). Set here,
    /// it is sent on every request.
    pub fn with_quota_project(mut self, project: impl Into<String>) -> Self {
        self.quota_project = Some(project.into());
        self
    }
    /// Also trusts the CA certificate(s) in `pem` for an `https://` endpoint: a
    /// private endpoint behind a private CA, or a test server.
    pub fn with_ca_certificate(mut self, pem: impl AsRef<[u8]>) -> Self {
        self.tls = self.tls.with_ca_certificate(pem);
        self
    }
    /// The certificate authorities trusted for an `https://` endpoint (default
    /// [`TlsRoots::WebPki`]), on top of any [`with_ca_certificate`](Self::with_ca_certificate).
    /// [`TlsRoots::Native`] reads the system's store once, at [`build`](Self::build).
    pub fn with_tls_roots(mut self, roots: TlsRoots) -> Self {
        self.tls = self.tls.with_roots(roots);
        self
    }
    /// Timeout of one request, including connecting and fetching a token (default
    /// 10 s). A request that times out is retried.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
    /// Retry policy (default [`Backoff::default`]: 100 ms doubling to 5 s, 30 s in
    /// all). Keep `max_elapsed` under the batch processor's export timeout.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }
    /// Largest encoded `BatchWriteSpansRequest` (default 4 MiB, which is also the
    /// largest message a gRPC server accepts by default). Larger batches are split
    /// into several requests.
    pub fn with_max_request_bytes(mut self, n: usize) -> Self {
        self.max_request_bytes = n.max(1);
        self
    }

    /// Builds the exporter. Fails without a project id (given or from
    /// `GOOGLE_CLOUD_PROJECT`), on an endpoint that is not an `http://` or
    /// `https://` URL, on a CA certificate that is not PEM, on a quota project
    /// that cannot be sent as a header, or (for `https://`) when no trusted
    /// certificate is left (say [`TlsRoots::Native`] on a system without a CA
    /// bundle). Neither connects nor reads credentials:
    /// that happens on the first export.
    pub fn build(self) -> Result<StackdriverExporter, Error> {
        let project_id = google::project_id(self.project_id.as_deref())?;
        let url = self
            .endpoint
            .clone()
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned());
        let endpoint = GrpcEndpoint::new("Cloud Trace endpoint", &url, &self.tls)?
            .with_connect_timeout(self.timeout)
            .with_user_agent(concat!("tracewire-stackdriver/", env!("CARGO_PKG_VERSION")))?;
        let tls = endpoint.is_https();
        let auth = match &self.credentials {
            Credentials::ByScheme if tls => Some(GoogleAuth::adc(TRACE_APPEND_SCOPE)),
            Credentials::ByScheme | Credentials::None => None,
            Credentials::Provider(p) => {
                Some(GoogleAuth::with_provider(TRACE_APPEND_SCOPE, p.clone()))
            }
        };
        // Set in code: always sent. From the environment: with credentials only.
        let quota = match (&self.quota_project, &auth) {
            (Some(q), _) => Some(q.clone()),
            (None, Some(_)) => std::env::var(QUOTA_PROJECT_ENV).ok(),
            (None, None) => None,
        };
        let quota_project = match quota.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(q) => Some(
                google::quota_project_header(q)
                    .ok_or_else(|| Error::new(format!("invalid quota project {q:?}")))?,
            ),
        };
        Ok(StackdriverExporter {
            mapper: map::Mapper::new(&project_id),
            resource_name: format!("projects/{project_id}"),
            project_id,
            url,
            endpoint,
            grpc: None,
            auth,
            quota_project,
            timeout: self.timeout,
            backoff: self.backoff,
            max_request_bytes: self.max_request_bytes,
            counters: ExportCounters::new(),
        })
    }
}

/// Exports spans to Google Cloud Trace. See the [crate docs](crate).
pub struct StackdriverExporter {
    project_id: String,
    /// `projects/{project_id}`.
    resource_name: String,
    mapper: map::Mapper,
    url: String,
    endpoint: GrpcEndpoint,
    /// Made on the first export, on the runtime that runs the exporter.
    grpc: Option<tonic::client::Grpc<Channel>>,
    /// `None` for an unauthenticated endpoint.
    auth: Option<GoogleAuth>,
    /// `x-goog-user-project` from the builder or the environment (the ADC file's
    /// comes from `auth`).
    quota_project: Option<MetadataValue<Ascii>>,
    timeout: Duration,
    backoff: Backoff,
    max_request_bytes: usize,
    counters: ExportCounters,
}

impl fmt::Debug for StackdriverExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StackdriverExporter")
            .field("project_id", &self.project_id)
            .field("endpoint", &self.url)
            .field("authenticated", &self.auth.is_some())
            .field("quota_project", &self.quota_project)
            .field("timeout", &self.timeout)
            .field("max_request_bytes", &self.max_request_bytes)
            .field("counters", &self.counters)
            .finish()
    }
}

/// One encoded `BatchWriteSpansRequest`: how many spans it carries and its bytes.
#[derive(Debug, Clone)]
pub struct Request {
    /// Spans in the request.
    pub spans: usize,
    /// The encoded `google.devtools.cloudtrace.v2.BatchWriteSpansRequest`.
    pub body: Bytes,
}

impl StackdriverExporter {
    /// A builder with the defaults.
    pub fn builder() -> StackdriverExporterBuilder {
        StackdriverExporterBuilder::default()
    }

    /// The project the spans are written to.
    pub fn project_id(&self) -> &str {
        &self.project_id
    }

    /// The exporter's counters (exported, dropped, failed, retried). Take a clone
    /// before handing the exporter to the pipeline.
    pub fn counters(&self) -> ExportCounters {
        self.counters.clone()
    }

    /// Maps and encodes `batch` into `BatchWriteSpansRequest`s of at most
    /// `max_request_bytes` each, in order. Spans too large for any request are
    /// dropped and counted.
    pub fn encode(&self, batch: &[SpanData]) -> Vec<Request> {
        let max = self.max_request_bytes;
        let mut header = Vec::with_capacity(self.resource_name.len() + 4);
        header.put_u8(NAME_KEY);
        prost::encoding::encode_varint(self.resource_name.len() as u64, &mut header);
        header.extend_from_slice(self.resource_name.as_bytes());

        let mut out = Vec::new();
        let mut body = Vec::new();
        let mut spans = 0;
        let mut scratch = Vec::with_capacity(1024);
        for sd in batch {
            scratch.clear();
            let span = self.mapper.span(sd);
            // Encoding into a Vec cannot run out of space.
            if span.encode(&mut scratch).is_err() {
                self.counters.add_dropped(1);
                continue;
            }
            let len = scratch.len();
            let framed = 1 + prost::encoding::encoded_len_varint(len as u64) + len;
            if header.len() + framed > max {
                self.counters.add_dropped(1);
                continue;
            }
            if spans > 0 && body.len() + framed > max {
                out.push(Request {
                    spans,
                    body: Bytes::from(std::mem::take(&mut body)),
                });
                spans = 0;
            }
            if spans == 0 {
                body.reserve(max.min(header.len() + framed * batch.len()));
                body.extend_from_slice(&header);
            }
            body.put_u8(SPANS_KEY);
            prost::encoding::encode_varint(len as u64, &mut body);
            body.extend_from_slice(&scratch);
            spans += 1;
        }
        if spans > 0 {
            out.push(Request {
                spans,
                body: Bytes::from(body),
            });
        }
        out
    }

    /// The gRPC client, made on first use so that its background task runs on the
    /// runtime that runs the exporter.
    fn client(&mut self) -> Result<tonic::client::Grpc<Channel>, ExportError> {
        if let Some(grpc) = &self.grpc {
            return Ok(grpc.clone());
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ExportError::new(
                "the Cloud Trace exporter needs a tokio runtime: use it behind the batch processor",
            ));
        }
        let grpc = tonic::client::Grpc::new(self.endpoint.connect_lazy());
        self.grpc = Some(grpc.clone());
        Ok(grpc)
    }

    /// One attempt at sending `body`.
    async fn send(
        &self,
        mut grpc: tonic::client::Grpc<Channel>,
        body: Bytes,
    ) -> Result<(), Attempt> {
        let call = async {
            let mut request = tonic::Request::new(body);
            let mut quota = self.quota_project.clone();
            if let Some(auth) = &self.auth {
                let found = auth.authorization().await.map_err(|e| {
                    let err = ExportError::new(e.to_string());
                    if e.is_transient() {
                        Attempt::Retry(err)
                    } else {
                        Attempt::Fail(err)
                    }
                })?;
                request.metadata_mut().insert("authorization", found.header);
                quota = quota.or(found.quota_project);
            }
            if let Some(quota) = quota {
                request.metadata_mut().insert(QUOTA_PROJECT_HEADER, quota);
            }
            request
                .extensions_mut()
                .insert(GrpcMethod::new(SERVICE, METHOD));
            grpc.ready().await.map_err(|e| {
                Attempt::Retry(ExportError::new(format!(
                    "Cloud Trace endpoint {}: {e}",
                    self.url
                )))
            })?;
            // Sends the bytes encoded by `encode` (so retries resend them, and
            // what was measured against `max_request_bytes` goes out); reads
            // the `Empty` reply.
            let codec = PreEncoded::<()>::new();
            grpc.unary::<Bytes, (), _>(request, PathAndQuery::from_static(PATH), codec)
                .await
                .map(drop)
                .map_err(|status| self.classify(status))
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(Attempt::Retry(ExportError::new(format!(
                "Cloud Trace endpoint {} did not answer within {:?}",
                self.url, self.timeout
            )))),
        }
    }

    /// Retries the transient codes (and connection errors, which tonic reports as
    /// `UNAVAILABLE`, or as `UNKNOWN` carrying the transport error), except a
    /// certificate the exporter refused: it is refused on every retry.
    fn classify(&self, status: tonic::Status) -> Attempt {
        let retry = match status.code() {
            Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted => true,
            Code::Unknown => std::error::Error::source(&status).is_some(),
            _ => false,
        } && !is_refused_handshake(&status);
        let err = ExportError::new(format!(
            "Cloud Trace endpoint {} answered {}",
            self.url,
            describe(&status)
        ));
        if retry {
            Attempt::Retry(err)
        } else {
            Attempt::Fail(err)
        }
    }
}

impl SpanExporter for StackdriverExporter {
    async fn export(&mut self, batch: &[SpanData]) -> Result<(), ExportError> {
        let requests = self.encode(batch);
        if requests.is_empty() {
            return Ok(());
        }
        let total = requests.iter().map(|r| r.spans as u64).sum();
        let grpc = match self.client() {
            Ok(g) => g,
            Err(e) => {
                self.counters.add_dropped(total);
                self.counters.add_failed();
                return Err(e);
            }
        };
        // Spans not yet accounted for are counted as dropped if this future is
        // dropped (the batch processor's deadline passed first).
        let mut pending = InFlight::new(&self.counters, total);
        let mut result = Ok(());
        for request in requests {
            let n = request.spans as u64;
            let sent = self
                .backoff
                .run(&self.counters, || {
                    self.send(grpc.clone(), request.body.clone())
                })
                .await;
            pending.settle(n);
            match sent {
                Ok(()) => self.counters.add_exported(n),
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
        self.grpc = None;
        Ok(())
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.mapper.service_name = Some(resource.service_name.to_string());
    }
}
