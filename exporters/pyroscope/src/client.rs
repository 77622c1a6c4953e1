//! One `push.v1.PusherService/Push` call: Connect unary over HTTP/1.1, binary
//! protobuf, with the optional basic auth and tenant headers; which failures are
//! worth a retry.

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client as HyperClient};
use hyper_util::rt::TokioExecutor;
use tracewire::export::{Attempt, ExportError};
use tracewire_transport::{self as transport, TlsConfig};

use crate::{Error, PUSH_PATH};

/// How much of an error answer is read into the log line.
const ERROR_BODY_LIMIT: usize = 512;

pub(crate) struct Client {
    http: HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
    uri: http::Uri,
    headers: http::HeaderMap,
    timeout: Duration,
}

/// What [`Client::new`] needs.
pub(crate) struct Target<'a> {
    pub(crate) url: &'a str,
    pub(crate) basic_auth: Option<&'a (String, String)>,
    pub(crate) tenant_id: Option<&'a str>,
    /// The caller's, replaced by the push's own of the same name.
    pub(crate) headers: &'a [(String, String)],
    pub(crate) tls: &'a TlsConfig,
    pub(crate) timeout: Duration,
}

impl Client {
    /// Must be called on the runtime that will run the requests (the client
    /// spawns its connection tasks there).
    pub(crate) fn new(target: &Target<'_>) -> Result<Client, Error> {
        let uri = push_uri(target.url)?;
        let mut headers = transport::http::header_map(target.headers)?;
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/proto"),
        );
        headers.insert(
            "connect-protocol-version",
            http::HeaderValue::from_static("1"),
        );
        headers.insert(
            "connect-timeout-ms",
            http::HeaderValue::from(target.timeout.as_millis().min(u128::from(u64::MAX)) as u64),
        );
        headers.insert(
            http::header::USER_AGENT,
            http::HeaderValue::from_static(concat!(
                "tracewire-pyroscope/",
                env!("CARGO_PKG_VERSION")
            )),
        );
        if let Some((user, password)) = target.basic_auth {
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            let mut value = http::HeaderValue::try_from(format!("Basic {token}"))
                .map_err(|_| Error::new("the basic auth credentials make an invalid header"))?;
            value.set_sensitive(true);
            headers.insert(http::header::AUTHORIZATION, value);
        }
        if let Some(tenant) = target.tenant_id {
            let value = http::HeaderValue::try_from(tenant)
                .map_err(|_| Error::new(format!("invalid tenant id {tenant:?}")))?;
            headers.insert("x-scope-orgid", value);
        }
        let tls = target.tls.client_config_for(&uri)?;
        let connector = transport::https_connector(tls, target.timeout);
        Ok(Client {
            http: HyperClient::builder(TokioExecutor::new()).build(connector),
            uri,
            headers,
            timeout: target.timeout,
        })
    }

    /// One attempt at pushing an encoded `PushRequest`.
    pub(crate) async fn push(&self, body: Bytes) -> Result<(), Attempt> {
        let mut request = http::Request::new(Full::new(body));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers.clone();
        let exchange = async {
            let response = self.http.request(request).await.map_err(|e| {
                let err = ExportError::new(format!(
                    "Pyroscope at {}: {}",
                    self.uri,
                    transport::error_chain(&e)
                ));
                // A certificate refused now is refused on every retry.
                if transport::is_refused_handshake(&e) {
                    Attempt::Fail(err)
                } else {
                    Attempt::Retry(err)
                }
            })?;
            let status = response.status();
            // Read the answer: the connection is then reused, and an error's
            // Connect JSON (`{"code": ..., "message": ...}`) goes into the log.
            let body = Limited::new(response.into_body(), ERROR_BODY_LIMIT)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            Ok::<_, Attempt>((status, body))
        };
        let (status, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| {
                Attempt::Retry(ExportError::new(format!(
                    "Pyroscope at {} did not answer within {:?}",
                    self.uri, self.timeout
                )))
            })??;
        if status.is_success() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&body);
        let err = ExportError::new(format!(
            "Pyroscope at {} answered {status}: {}",
            self.uri,
            text.trim()
        ));
        // Connect maps `unavailable`, `resource_exhausted`, `internal` and
        // `unknown` to 503, 429, 500; proxies answer 502 and 504.
        if status.is_server_error()
            || status == http::StatusCode::TOO_MANY_REQUESTS
            || status == http::StatusCode::REQUEST_TIMEOUT
        {
            Err(Attempt::Retry(err))
        } else {
            Err(Attempt::Fail(err))
        }
    }
}

/// `url` with the push path appended (unless it already ends with it).
pub(crate) fn push_uri(url: &str) -> Result<http::Uri, Error> {
    let base = url.trim_end_matches('/');
    let full = if base.ends_with(PUSH_PATH) {
        base.to_owned()
    } else {
        format!("{base}{PUSH_PATH}")
    };
    transport::http::parse_uri("Pyroscope URL", url)?;
    let uri: http::Uri = full
        .parse()
        .map_err(|e| Error::with_source(format!("invalid Pyroscope URL {url:?}: {e}"), e))?;
    if uri.query().is_some() {
        return Err(Error::new(format!(
            "the Pyroscope URL {url:?} has a query; give the server's base URL"
        )));
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_push_path_is_appended_to_the_base_url_once() {
        for (url, want) in [
            (
                "http://localhost:4040",
                "http://localhost:4040/push.v1.PusherService/Push",
            ),
            (
                "https://profiles.example/pyroscope/",
                "https://profiles.example/pyroscope/push.v1.PusherService/Push",
            ),
            (
                "http://127.0.0.1:1/push.v1.PusherService/Push",
                "http://127.0.0.1:1/push.v1.PusherService/Push",
            ),
        ] {
            assert_eq!(push_uri(url).unwrap().to_string(), want, "{url}");
        }
    }

    #[test]
    fn urls_without_a_scheme_or_host_are_rejected() {
        for url in ["localhost:4040", "ftp://h", "http://", "http://h/?x=1", ""] {
            assert!(push_uri(url).is_err(), "{url}");
        }
    }
}
