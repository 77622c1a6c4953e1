//! # tracewire-transport
//!
//! How tracewire's exporters reach their backends.
//!
//! What tracewire's exporters (`tracewire-zipkin`, `tracewire-otlp`,
//! `tracewire-stackdriver`) and profile uploaders (`tracewire-pyroscope`,
//! `tracewire-cloud-profiler`) share, so that each of them trusts certificates,
//! checks URLs, authenticates to Google Cloud and holds what it has not sent yet
//! the same way. Applications do not need it: they configure the exporters, which
//! re-export the types they take ([`TlsRoots`]).
//!
//! - [`TlsConfig`]: the rustls client configuration (the `ring` provider, TLS 1.2
//!   and 1.3) trusting [`TlsRoots::WebPki`] (Mozilla's roots, compiled in),
//!   [`TlsRoots::Native`] (the operating system's store) or
//!   [`TlsRoots::None`], plus private CA certificates given as PEM; and
//!   [`https_connector`], the hyper connector over it. [`is_refused_handshake`]
//!   tells a certificate the client refused (not worth a retry) from a connection
//!   that may work on a second try.
//! - [`http::parse_uri`] and [`http::header_map`]: an endpoint that is an
//!   `http://` or `https://` URL with a host, and custom headers checked once and
//!   marked sensitive.
//! - [`InFlight`]: counts what an export still holds as dropped if it is cut off.
//! - [`Error`]: why an exporter or an uploader could not be built, started or shut
//!   down.
//!
//! ```
//! use std::time::Duration;
//!
//! use http_body_util::Full;
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//! use tracewire_transport::{http, https_connector, TlsConfig, TlsRoots};
//!
//! # let company_ca = rcgen::generate_simple_self_signed(vec!["ca.internal".into()]).unwrap();
//! // A company CA, say read from a file, on top of the system's trust store.
//! let ca_pem: String = company_ca.cert.pem();
//! let tls = TlsConfig::new().with_roots(TlsRoots::Native).with_ca_certificate(&ca_pem);
//! let uri = http::parse_uri("Collector endpoint", "https://collector.internal/v1/traces")
//!     .expect("an https:// URL with a host");
//! let headers = http::header_map(&[("authorization".into(), "Bearer s3cr3t".into())])
//!     .expect("valid headers");
//! assert!(headers["authorization"].is_sensitive());
//!
//! // The client makes its connections on the tokio runtime that sends the requests.
//! let connector = https_connector(tls.client_config().unwrap(), Duration::from_secs(5));
//! let client: Client<_, Full<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
//! # drop((client, uri));
//! ```
//!
//! ## Features
//!
//! None is on by default; the TLS, URL and header pieces above are always built.
//!
//! - `grpc`: [`grpc::GrpcEndpoint`], a tonic channel whose `https://`
//!   connections use the same [`TlsConfig`] (so the gRPC exporters trust what the
//!   HTTP ones do, and read the system store through `rustls-native-certs` rather
//!   than a tonic feature).
//! - `google`: [`google::GoogleAuth`], Application Default Credentials (or a
//!   given token provider) as `authorization: Bearer` metadata with the quota
//!   project of the ADC file, and [`google::project_id`]. Implies `grpc`.
//! - `upload`: [`upload::PendingQueue`], the bounded queue of an uploader (the
//!   oldest item dropped and counted when full, a shutdown deadline after which
//!   what is left is counted as dropped), and [`upload::Worker`], its thread with
//!   a tokio runtime of its own.
//!
//! MSRV: 1.88.

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod http;
mod tls;

#[cfg(feature = "google")]
#[cfg_attr(docsrs, doc(cfg(feature = "google")))]
pub mod google;
#[cfg(feature = "grpc")]
#[cfg_attr(docsrs, doc(cfg(feature = "grpc")))]
pub mod grpc;
#[cfg(feature = "upload")]
#[cfg_attr(docsrs, doc(cfg(feature = "upload")))]
pub mod upload;

use std::fmt;

use tracewire::export::ExportCounters;

pub use tls::{https_connector, is_refused_handshake, TlsConfig, TlsRoots};

/// Why an exporter or an uploader could not be built, started or shut down
/// cleanly: a message, and the error that caused it where there is one.
pub struct Error {
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    /// An error saying `message`.
    pub fn new(message: impl Into<String>) -> Self {
        Error {
            message: message.into(),
            source: None,
        }
    }

    /// An error saying `message`, caused by `source`.
    pub fn with_source(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("message", &self.message);
        if let Some(s) = &self.source {
            d.field("source", s);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// `err` and each of its sources, joined by `": "`, leaving out a source whose
/// text is already there (many errors repeat their source's): the whole story
/// of a failed request for a log line (hyper's own message is only "client
/// error (Connect)").
///
/// ```
/// use tracewire_transport::{error_chain, Error};
///
/// let io = std::io::Error::other("connection refused");
/// let err = Error::with_source("cannot reach the collector", io);
/// assert_eq!(error_chain(&err), "cannot reach the collector: connection refused");
/// let io = std::io::Error::other("connection refused");
/// let err = Error::with_source("connection refused", io);
/// assert_eq!(error_chain(&err), "connection refused");
/// ```
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut message = err.to_string();
    push_sources(&mut message, err.source());
    message
}

/// Appends `source` and its own sources to `message`, as [`error_chain`] does.
pub(crate) fn push_sources(
    message: &mut String,
    mut source: Option<&(dyn std::error::Error + 'static)>,
) {
    while let Some(s) = source {
        let text = s.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = s.source();
    }
}

/// Counts the items an export or an upload still holds as dropped, and the
/// export as failed, when it is dropped before they are accounted for: the
/// batch processor's deadline or an uploader's shutdown cut it off.
///
/// ```
/// use tracewire::export::ExportCounters;
/// use tracewire_transport::InFlight;
///
/// let counters = ExportCounters::new();
/// {
///     let mut in_flight = InFlight::new(&counters, 10);
///     // Four were sent and counted as exported; then the export is cut off.
///     counters.add_exported(4);
///     in_flight.settle(4);
/// }
/// let c = counters.snapshot();
/// assert_eq!((c.exported, c.dropped, c.failed), (4, 6, 1));
/// ```
#[derive(Debug)]
pub struct InFlight<'a> {
    counters: &'a ExportCounters,
    items: u64,
}

impl<'a> InFlight<'a> {
    /// `items` not yet accounted for in `counters`.
    pub fn new(counters: &'a ExportCounters, items: u64) -> Self {
        InFlight { counters, items }
    }

    /// `n` of the items are accounted for (counted as exported or dropped by
    /// the caller).
    pub fn settle(&mut self, n: u64) {
        self.items = self.items.saturating_sub(n);
    }

    /// The items not yet accounted for.
    pub fn items(&self) -> u64 {
        self.items
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.items > 0 {
            self.counters.add_dropped(self.items);
            self.counters.add_failed();
        }
    }
}
