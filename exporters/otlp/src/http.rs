//! OTLP/HTTP: binary protobuf `POST`s with hyper.

use std::io::Write as _;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use prost::Message as _;
use tracewire::export::ExportError;
use tracewire_transport::{https_connector, TlsConfig};

use crate::proto::collector::trace::v1::ExportTraceServiceResponse;
use crate::{Compression, Config, Error, Failure};

const PROTOBUF: &str = "application/x-protobuf";
/// The most of a response body read (a `Status` or a partial success).
const MAX_RESPONSE_BYTES: usize = 64 << 10;

pub(crate) struct Http {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    uri: ::http::Uri,
    headers: ::http::HeaderMap,
    gzip: bool,
}

impl Http {
    pub(crate) fn new(config: &Config) -> Result<Http, Error> {
        let url = &config.url;
        let uri: ::http::Uri = url
            .parse()
            .map_err(|e| Error(format!("invalid OTLP endpoint {url:?}: {e}")))?;
        let tls = TlsConfig::new()
            .client_config()
            .map_err(|e| Error(format!("TLS setup for {url:?}: {e}")))?;
        let connector = https_connector(tls, config.timeout);
        let gzip = config.compression == Compression::Gzip;
        let mut headers = config.header_map()?;
        let fixed = [
            (::http::header::CONTENT_TYPE, PROTOBUF),
            (::http::header::USER_AGENT, crate::USER_AGENT),
        ];
        for (name, value) in fixed {
            headers.insert(name, ::http::HeaderValue::from_static(value));
        }
        if gzip {
            headers.insert(
                ::http::header::CONTENT_ENCODING,
                ::http::HeaderValue::from_static("gzip"),
            );
        }
        Ok(Http {
            client: Client::builder(TokioExecutor::new()).build(connector),
            uri,
            headers,
            gzip,
        })
    }

    /// The body as sent: gzip'd if asked for.
    pub(crate) fn wire_body(&self, body: Bytes) -> Result<Bytes, ExportError> {
        if !self.gzip {
            return Ok(body);
        }
        let mut gz = flate2::write::GzEncoder::new(
            Vec::with_capacity(body.len() / 4),
            flate2::Compression::fast(),
        );
        gz.write_all(&body).map_err(ExportError::new)?;
        gz.finish().map(Bytes::from).map_err(ExportError::new)
    }

    /// One attempt.
    pub(crate) async fn send(&self, body: Bytes) -> Result<ExportTraceServiceResponse, Failure> {
        let mut request = ::http::Request::post(self.uri.clone())
            .body(Full::new(body))
            .map_err(|e| Failure::Fail(ExportError::new(e)))?;
        *request.headers_mut() = self.headers.clone();
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| Failure::Retry {
                error: ExportError::new(format!("OTLP endpoint {}: {e}", self.uri)),
                after: None,
            })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(::http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let protobuf = response
            .headers()
            .get(::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with(PROTOBUF) || v.starts_with("application/protobuf"));
        // Read (bounded) also when it is not used, so the connection can be reused.
        let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .ok()
            .filter(|_| protobuf);
        if status.is_success() {
            // The collector took the request; a body that does not decode says
            // nothing about a partial success.
            return Ok(body
                .and_then(|b| ExportTraceServiceResponse::decode(b).ok())
                .unwrap_or_default());
        }
        let details = body.and_then(|b| crate::proto::rpc::Status::decode(b).ok());
        let after = retry_after.or_else(|| details.as_ref().and_then(crate::proto::retry_delay));
        let message = match details.map(|d| d.message) {
            Some(m) if !m.is_empty() => format!(": {m}"),
            _ => String::new(),
        };
        let error = ExportError::new(format!(
            "OTLP endpoint {} answered {status}{message}",
            self.uri
        ));
        match status.as_u16() {
            429 | 502 | 503 | 504 => Err(Failure::Retry { error, after }),
            _ => Err(Failure::Fail(error)),
        }
    }
}
