//! # tracewire-zipkin
//!
//! Sends tracewire spans to a Zipkin v2 collector (`POST /api/v2/spans`), as JSON
//! (default) or proto3, optionally gzip'd, over HTTP or HTTPS through hyper's
//! client. It plugs into
//! tracewire's batch processor, so the application never waits for the collector:
//!
//! - retries with exponential backoff and jitter, bounded in time, only on
//!   connection errors, 429 and 5xx; a timeout per request; everything else is
//!   dropped and counted;
//! - memory bounded by bytes as well as spans: a batch is cut into requests of at
//!   most [`ZipkinExporterBuilder::with_max_request_bytes`]; a span larger than that on
//!   its own is dropped and counted;
//! - counters of exported, dropped, failed and retried spans through
//!   [`ZipkinExporter::counters`].
//!
//! ```no_run
//! use std::time::Duration;
//! use tracewire::TracerProvider;
//! use tracewire_zipkin::ZipkinExporter;
//!
//! # #[tokio::main] async fn main() {
//! let exporter = ZipkinExporter::builder()
//!     .with_endpoint("http://127.0.0.1:9411/api/v2/spans")
//!     .build()
//!     .expect("valid endpoint");
//! let counters = exporter.counters();
//! let provider = TracerProvider::builder()
//!     .with_service_name("frontend")
//!     .with_batch_exporter(exporter)
//!     .build();
//! provider.tracer("app").start("GET /user").end();
//! provider.shutdown(Duration::from_secs(5)).unwrap();
//! println!("{:?}", counters.snapshot());
//! # }
//! ```
//!
//! ## HTTPS and authentication
//!
//! An `https://` endpoint is reached over TLS with rustls (the `ring` provider, TLS
//! 1.2 and 1.3). The server's certificate must chain to one of the
//! [`TlsRoots`] chosen with [`with_tls_roots`](ZipkinExporterBuilder::with_tls_roots):
//! Mozilla's roots compiled in (`webpki-roots`, the default: the same on every
//! machine), or the operating system's store (`rustls-native-certs`, read once at
//! [`build`](ZipkinExporterBuilder::build): where a company installs its own CA),
//! plus any private CA given with
//! [`with_ca_certificate`](ZipkinExporterBuilder::with_ca_certificate). A certificate the
//! client refuses fails the export at once (a retry would be refused too), and is
//! counted like any failed export. Headers for a collector behind an
//! authenticating proxy are set with [`with_header`](ZipkinExporterBuilder::with_header):
//!
//! ```no_run
//! use tracewire_zipkin::{TlsRoots, ZipkinExporter};
//!
//! let exporter = ZipkinExporter::builder()
//!     .with_endpoint("https://zipkin.internal.example/api/v2/spans")
//!     .with_tls_roots(TlsRoots::Native)
//!     .with_header("authorization", "Bearer s3cr3t")
//!     .build()
//!     .expect("valid endpoint and headers");
//! ```
//!
//! [`ZipkinExporter::from_env`] reads `OTEL_EXPORTER_ZIPKIN_ENDPOINT` (default
//! `http://localhost:9411/api/v2/spans`) and `OTEL_EXPORTER_ZIPKIN_TIMEOUT`
//! (milliseconds, default 10000), as the OpenTelemetry specification names them;
//! [`ZipkinExporterBuilder::from_env`] does the same on a builder, where values
//! set in code win.
//!
//! Mapping (Zipkin model): 32-hex trace ids (16-hex when the upper 64 bits are
//! zero, as B3's 64-bit ids), 16-hex span ids, `parentId` absent on roots, `kind`
//! absent for internal spans, microsecond timestamps and durations (at least 1),
//! `localEndpoint` from the service name (and the address given to the builder),
//! `remoteEndpoint` from `peer.service` and the peer address/port attributes,
//! attributes as `tags`, events as `annotations`, an error status as the `error`
//! tag, `debug: true` for the spans of a B3 debug trace
//! ([`SamplingState::Debug`](tracewire::SamplingState::Debug)); empty fields are
//! left out.

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]

mod env;
mod json;
mod model;
pub mod proto;

use std::fmt;
use std::io::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use prost::Message;
use tracewire::export::{Attempt, Backoff, ExportCounters, ExportError, SpanExporter};
use tracewire::trace::{Resource, SpanData};
use tracewire_transport::{self as transport, TlsConfig};

pub use model::Endpoint;
pub use tracewire_transport::TlsRoots;

/// The wire encoding of request bodies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Encoding {
    /// `application/json` (Zipkin's default).
    #[default]
    Json,
    /// `application/x-protobuf` (`zipkin.proto3.ListOfSpans`).
    Proto,
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

impl From<transport::Error> for Error {
    fn from(e: transport::Error) -> Self {
        Error(e.to_string())
    }
}

/// Configures a [`ZipkinExporter`].
#[derive(Clone)]
pub struct ZipkinExporterBuilder {
    endpoint: String,
    encoding: Encoding,
    gzip: bool,
    local: Endpoint,
    timeout: Duration,
    backoff: Backoff,
    max_request_bytes: usize,
    headers: Vec<(String, String)>,
    /// The roots and the CA PEM, as given (parsed by `build`).
    tls: TlsConfig,
    /// Whether the code set the endpoint or the timeout (they then win over
    /// `OTEL_EXPORTER_ZIPKIN_*`).
    endpoint_set: bool,
    timeout_set: bool,
}

impl Default for ZipkinExporterBuilder {
    fn default() -> Self {
        ZipkinExporterBuilder {
            endpoint: "http://localhost:9411/api/v2/spans".into(),
            encoding: Encoding::Json,
            gzip: false,
            local: Endpoint::default(),
            timeout: Duration::from_secs(10),
            backoff: Backoff::default(),
            max_request_bytes: 4 << 20,
            headers: Vec::new(),
            tls: TlsConfig::default(),
            endpoint_set: false,
            timeout_set: false,
        }
    }
}

impl fmt::Debug for ZipkinExporterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header values often hold credentials: names only.
        let headers: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("ZipkinExporterBuilder")
            .field("endpoint", &self.endpoint)
            .field("encoding", &self.encoding)
            .field("gzip", &self.gzip)
            .field("local", &self.local)
            .field("timeout", &self.timeout)
            .field("backoff", &self.backoff)
            .field("max_request_bytes", &self.max_request_bytes)
            .field("headers", &headers)
            .field("tls_roots", &self.tls.trusted_roots())
            .field("ca_certificates", &self.tls.ca_certificate_count())
            .finish_non_exhaustive()
    }
}

impl ZipkinExporterBuilder {
    /// The collector's URL (default `http://localhost:9411/api/v2/spans`):
    /// `http://`, or `https://` for TLS (rustls; see [`with_tls_roots`](Self::with_tls_roots)).
    pub fn with_endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = url.into();
        self.endpoint_set = true;
        self
    }
    /// The body encoding (default JSON).
    pub fn with_encoding(mut self, encoding: Encoding) -> Self {
        self.encoding = encoding;
        self
    }
    /// Gzip request bodies (`Content-Encoding: gzip`; default off).
    pub fn with_gzip(mut self, on: bool) -> Self {
        self.gzip = on;
        self
    }
    /// The address and port recorded in `localEndpoint` (default none).
    pub fn with_local_address(mut self, ip: IpAddr, port: Option<u16>) -> Self {
        self.local.ip = Some(ip);
        self.local.port = port.filter(|p| *p != 0);
        self
    }
    /// Timeout of one HTTP request (default 10 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self.timeout_set = true;
        self
    }
    /// Retry policy (default [`Backoff::default`]: 100 ms doubling to 5 s, 30 s in
    /// all). Keep `max_elapsed` under the batch processor's export timeout.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }
    /// Largest request body before compression (default 4 MiB).
    pub fn with_max_request_bytes(mut self, n: usize) -> Self {
        self.max_request_bytes = n.max(1);
        self
    }
    /// A header sent with every request, e.g. `authorization` for a collector
    /// behind an authenticating proxy; it replaces one of the same name given
    /// before. `content-type` and `content-encoding` are the exporter's own and
    /// cannot be replaced. Values are marked sensitive and never printed.
    /// (OpenTelemetry defines no environment variable for Zipkin headers.)
    ///
    /// ```
    /// use tracewire_zipkin::ZipkinExporter;
    ///
    /// let exporter = ZipkinExporter::builder()
    ///     .with_endpoint("https://zipkin.example.com/api/v2/spans")
    ///     .with_header("authorization", "Bearer s3cr3t")
    ///     .build()
    ///     .unwrap();
    /// assert!(!format!("{exporter:?}").contains("s3cr3t"));
    /// ```
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let name = name.into();
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(&name));
        self.headers.push((name, value.into()));
        self
    }
    /// The certificate authorities trusted for an `https://` endpoint (default
    /// [`TlsRoots::WebPki`]), on top of any [`with_ca_certificate`](Self::with_ca_certificate).
    pub fn with_tls_roots(mut self, roots: TlsRoots) -> Self {
        self.tls = self.tls.with_roots(roots);
        self
    }
    /// Also trusts the CA certificate(s) in `pem` (one or more `BEGIN
    /// CERTIFICATE` blocks), e.g. a private CA or a collector's self-signed
    /// certificate. [`build`](Self::build) fails if it holds none.
    pub fn with_ca_certificate(mut self, pem: impl AsRef<[u8]>) -> Self {
        self.tls = self.tls.with_ca_certificate(pem);
        self
    }
    /// Builds the exporter. Fails on an endpoint that is not an `http://` or
    /// `https://` URL, on a header HTTP does not allow, on a CA certificate that is
    /// not PEM, and (for `https://`) when no trusted certificate is left (say
    /// [`TlsRoots::Native`] on a system without a CA bundle). Connections are made
    /// lazily: a collector that is down now is not an error.
    pub fn build(self) -> Result<ZipkinExporter, Error> {
        let uri = transport::http::parse_uri("Zipkin endpoint", &self.endpoint)?;
        let headers = self.header_map()?;
        let tls = self.tls.client_config_for(&uri)?;
        let connector = transport::https_connector(tls, self.timeout);
        Ok(ZipkinExporter {
            client: Client::builder(TokioExecutor::new()).build(connector),
            uri,
            headers,
            config: self,
            counters: ExportCounters::new(),
        })
    }

    /// The headers every request carries: the caller's, then the exporter's own.
    fn header_map(&self) -> Result<http::HeaderMap, Error> {
        let mut map = transport::http::header_map(&self.headers)?;
        let content_type = match self.encoding {
            Encoding::Json => "application/json",
            Encoding::Proto => "application/x-protobuf",
        };
        map.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(content_type),
        );
        if self.gzip {
            map.insert(
                http::header::CONTENT_ENCODING,
                http::HeaderValue::from_static("gzip"),
            );
        } else {
            map.remove(http::header::CONTENT_ENCODING);
        }
        Ok(map)
    }
}

/// Exports spans to a Zipkin v2 collector. See the [crate docs](crate).
pub struct ZipkinExporter {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    uri: http::Uri,
    /// Sent with every request.
    headers: http::HeaderMap,
    config: ZipkinExporterBuilder,
    counters: ExportCounters,
}

impl fmt::Debug for ZipkinExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZipkinExporter")
            .field("endpoint", &self.uri)
            .field("encoding", &self.config.encoding)
            .field("counters", &self.counters)
            .finish()
    }
}

/// One request body: how many spans it carries and its bytes (uncompressed).
#[derive(Debug)]
pub struct Request {
    /// Spans in the body.
    pub spans: usize,
    /// The body.
    pub body: Vec<u8>,
}

impl ZipkinExporter {
    /// A builder with the defaults.
    pub fn builder() -> ZipkinExporterBuilder {
        ZipkinExporterBuilder::default()
    }

    /// The exporter's counters (exported, dropped, failed, retried). Take a clone
    /// before handing the exporter to the pipeline.
    pub fn counters(&self) -> ExportCounters {
        self.counters.clone()
    }

    /// Encodes `batch` into request bodies of at most `max_request_bytes` each.
    /// Spans too large for any request are dropped and counted.
    pub fn encode(&self, batch: &[SpanData]) -> Vec<Request> {
        let max = self.config.max_request_bytes;
        let local = &self.config.local;
        let mut out = Vec::new();
        match self.config.encoding {
            Encoding::Json => {
                let mut body = String::with_capacity(batch.len().min(512) * 400);
                let mut one = String::with_capacity(512);
                let mut n = 0;
                for span in batch {
                    one.clear();
                    json::span(&mut one, &model::ZSpan::new(span), local);
                    if one.len() + 2 > max {
                        self.counters.add_dropped(1);
                        continue;
                    }
                    if n > 0 && body.len() + one.len() + 2 > max {
                        body.push(']');
                        out.push(Request {
                            spans: n,
                            body: std::mem::take(&mut body).into_bytes(),
                        });
                        n = 0;
                    }
                    body.push(if n == 0 { '[' } else { ',' });
                    body.push_str(&one);
                    n += 1;
                }
                if n > 0 {
                    body.push(']');
                    out.push(Request {
                        spans: n,
                        body: body.into_bytes(),
                    });
                }
            }
            Encoding::Proto => {
                let mut list = proto::ListOfSpans::default();
                let mut len = 0;
                for span in batch {
                    let p = proto::span(&model::ZSpan::new(span), local);
                    let l = proto::encoded_len(&p);
                    if l > max {
                        self.counters.add_dropped(1);
                        continue;
                    }
                    if !list.spans.is_empty() && len + l > max {
                        let spans = list.spans.len();
                        out.push(Request {
                            spans,
                            body: std::mem::take(&mut list).encode_to_vec(),
                        });
                        len = 0;
                    }
                    len += l;
                    list.spans.push(p);
                }
                if !list.spans.is_empty() {
                    out.push(Request {
                        spans: list.spans.len(),
                        body: list.encode_to_vec(),
                    });
                }
            }
        }
        out
    }

    fn http_request(&self, body: Bytes) -> http::Request<Full<Bytes>> {
        let mut req = http::Request::new(Full::new(body));
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        req
    }

    async fn post(&self, body: Bytes) -> Result<(), Attempt> {
        let req = self.http_request(body);
        let response = tokio::time::timeout(self.config.timeout, self.client.request(req)).await;
        let response = match response {
            Err(_) => {
                return Err(Attempt::Retry(ExportError::new(format!(
                    "Zipkin collector {} did not answer within {:?}",
                    self.uri, self.config.timeout
                ))))
            }
            Ok(Err(e)) => {
                let refused = transport::is_refused_handshake(&e);
                let err = ExportError::new(format!(
                    "Zipkin collector {}: {}",
                    self.uri,
                    transport::error_chain(&e)
                ));
                // A certificate refused now is refused on every retry.
                return Err(if refused {
                    Attempt::Fail(err)
                } else {
                    Attempt::Retry(err)
                });
            }
            Ok(Ok(r)) => r,
        };
        let status = response.status();
        // Read (and discard) the body so the connection can be reused.
        let _ = tokio::time::timeout(self.config.timeout, response.into_body().collect()).await;
        if status.is_success() {
            return Ok(());
        }
        let err = ExportError::new(format!("Zipkin collector {} answered {status}", self.uri));
        if status == http::StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            Err(Attempt::Retry(err))
        } else {
            Err(Attempt::Fail(err))
        }
    }
}

fn gzip(body: &[u8]) -> Result<Vec<u8>, ExportError> {
    let mut gz = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    gz.write_all(body).map_err(ExportError::new)?;
    gz.finish().map_err(ExportError::new)
}

impl SpanExporter for ZipkinExporter {
    async fn export(&mut self, batch: &[SpanData]) -> Result<(), ExportError> {
        let mut result = Ok(());
        for request in self.encode(batch) {
            let body = if self.config.gzip {
                match gzip(&request.body) {
                    Ok(b) => b,
                    Err(e) => {
                        self.counters.add_dropped(request.spans as u64);
                        self.counters.add_failed();
                        result = Err(e);
                        continue;
                    }
                }
            } else {
                request.body
            };
            let body = Bytes::from(body);
            let sent = self
                .config
                .backoff
                .run(&self.counters, || self.post(body.clone()))
                .await;
            match sent {
                Ok(()) => self.counters.add_exported(request.spans as u64),
                Err(e) => {
                    self.counters.add_dropped(request.spans as u64);
                    self.counters.add_failed();
                    result = Err(e);
                }
            }
        }
        result
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.config.local.service_name = Some(resource.service_name.to_string());
    }
}
