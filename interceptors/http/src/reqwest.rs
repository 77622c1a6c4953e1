//! reqwest: client spans and context propagation as a
//! [`reqwest-middleware`](reqwest_middleware) middleware (feature `reqwest`).
//!
//! [`TraceMiddleware`] is the [client layer](crate::trace::ClientTraceLayer)
//! for a [`reqwest_middleware::ClientWithMiddleware`]: each request gets a client
//! span, a child of the current context's span (or the root of a new trace
//! outside any), and that context is injected into the request headers (W3C
//! `traceparent`/`tracestate` and `baggage` unless configured). The span follows
//! the OpenTelemetry HTTP client conventions: named by the method (`GET`), with
//! `http.request.method`, `server.address`, `server.port`, `url.full`,
//! `http.response.status_code`, `network.peer.address`/`port` and
//! `network.protocol.version` of the response; a status of 400 or more, or a
//! transport error, is an error with `error.type` (the status code, or one of
//! `timeout`, `connect`, `redirect`, `body`, `request`, `decode`, `middleware`,
//! `_OTHER`). The span ends when the response body has been read to its end, or
//! dropped.
//!
//! `url.full` carries no secrets: user name and password are `REDACTED`, and so
//! are the values of the query parameters the conventions name as signatures
//! (`AWSAccessKeyId`, `Signature`, `sig`, `X-Goog-Signature`).
//!
//! ```
//! use reqwest_middleware::ClientBuilder;
//! use tracewire::TracerProvider;
//! use tracewire_http::reqwest::TraceMiddleware;
//!
//! let provider = TracerProvider::builder().build();
//! let client = ClientBuilder::new(reqwest::Client::new())
//!     .with(TraceMiddleware::new(provider.tracer("frontend")))
//!     .build();
//! // client.get("http://users.internal/users/7").send().await ...
//! # let _ = client;
//! ```
//!
//! Other formats: [`TraceMiddleware::with_propagator`], e.g. with
//! [`tracewire::env::propagators`] for `OTEL_PROPAGATORS`, or
//! `B3Propagator::new(B3Encoding::Multi)` for peers that read only B3.
//!
//! Add it after middlewares that retry, so that each attempt is a span of its
//! own with its own `traceparent`.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use http::Extensions;
use reqwest::{ResponseBuilderExt, Url};
use reqwest_middleware::{Middleware, Next};
use tower_layer::Layer;
use tower_service::Service;
use tracewire::propagation::Propagator;
use tracewire::{Span, Tracer};

use crate::trace::{ClientTraceLayer, ResponseBody};

/// Client spans for `reqwest`, as a `reqwest-middleware` middleware. See the
/// [module docs](self).
#[derive(Clone, Debug)]
pub struct TraceMiddleware {
    layer: ClientTraceLayer,
}

impl TraceMiddleware {
    /// Client spans with `tracer`, injecting W3C `traceparent`/`tracestate` and
    /// `baggage`.
    pub fn new(tracer: Tracer) -> Self {
        ClientTraceLayer::new(tracer).into()
    }

    /// Injects with `propagator` instead (every format it holds is written).
    pub fn with_propagator(self, propagator: impl Propagator + 'static) -> Self {
        self.layer.with_propagator(propagator).into()
    }
}

/// The middleware of `layer`, with its settings.
impl From<ClientTraceLayer> for TraceMiddleware {
    fn from(layer: ClientTraceLayer) -> Self {
        TraceMiddleware { layer }
    }
}

#[async_trait::async_trait]
impl Middleware for TraceMiddleware {
    async fn handle(
        &self,
        mut req: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        // The client layer does the work: it sees the request's head (the headers
        // lent to it, for the context to be injected), and the rest of the chain
        // runs as its inner service.
        let head = head(&mut req);
        let mut traced = self.layer.layer(Rest {
            call: Some((req, next, extensions)),
        });
        std::future::poll_fn(|cx| traced.poll_ready(cx)).await?;
        let response = traced.call(head).await?;
        Ok(into_reqwest(response))
    }
}

/// What the client layer sees of `req`: method, version, the URL as
/// [`span_uri`] shows it, and the headers, taken from `req` until [`Rest`]
/// puts them back.
fn head(req: &mut reqwest::Request) -> http::Request<()> {
    let mut head = http::Request::new(());
    *head.method_mut() = req.method().clone();
    *head.version_mut() = req.version();
    *head.uri_mut() = span_uri(req.url());
    *head.headers_mut() = std::mem::take(req.headers_mut());
    head
}

/// The query parameters whose values `url.full` redacts (OpenTelemetry HTTP
/// conventions).
const SECRET_QUERY_KEYS: [&str; 4] = ["AWSAccessKeyId", "Signature", "sig", "X-Goog-Signature"];

/// The URL the span records as `url.full` (and reads `server.address` from):
/// user name and password `REDACTED`, as are the values of
/// [`SECRET_QUERY_KEYS`]; no fragment (it is never sent). A URL `http::Uri`
/// cannot hold (over 64 KiB) is recorded as its origin.
fn span_uri(url: &Url) -> http::Uri {
    let mut url = Cow::Borrowed(url);
    if !url.username().is_empty() {
        let _ = url.to_mut().set_username("REDACTED");
    }
    if url.password().is_some() {
        let _ = url.to_mut().set_password(Some("REDACTED"));
    }
    if let Some(query) = url.query().and_then(redact_query) {
        url.to_mut().set_query(Some(&query));
    }
    if url.fragment().is_some() {
        url.to_mut().set_fragment(None);
    }
    url.as_str()
        .parse()
        .or_else(|_| url.origin().ascii_serialization().parse())
        .unwrap_or_default()
}

/// `query` with the values of [`SECRET_QUERY_KEYS`] replaced by `REDACTED`;
/// `None` if it has none of them.
fn redact_query(query: &str) -> Option<String> {
    fn secret(pair: &str) -> Option<&str> {
        let key = pair.split_once('=').map_or(pair, |(k, _)| k);
        SECRET_QUERY_KEYS.contains(&key).then_some(key)
    }
    if !query.split('&').any(|pair| secret(pair).is_some()) {
        return None;
    }
    let pairs: Vec<Cow<'_, str>> = query
        .split('&')
        .map(|pair| match secret(pair) {
            Some(key) => Cow::Owned(format!("{key}=REDACTED")),
            None => Cow::Borrowed(pair),
        })
        .collect();
    Some(pairs.join("&"))
}

/// The rest of the middleware chain, as the client layer's inner service: it
/// takes the head back (with the injected headers), sends the request, and
/// records on the client span what only the response or the error tells.
struct Rest<'a> {
    // Taken by the one call the client layer makes.
    call: Option<(reqwest::Request, Next<'a>, &'a mut Extensions)>,
}

impl<'a> Service<http::Request<()>> for Rest<'a> {
    type Response = http::Response<reqwest::Body>;
    type Error = reqwest_middleware::Error;
    type Future =
        Pin<Box<dyn Future<Output = reqwest_middleware::Result<Self::Response>> + Send + 'a>>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, head: http::Request<()>) -> Self::Future {
        let (mut req, next, extensions) = self
            .call
            .take()
            .expect("the client layer calls its inner service once per request");
        *req.headers_mut() = head.into_parts().0.headers;
        // The conventions want the port even when the URL leaves it implicit.
        let implicit_port = match req.url().port() {
            Some(_) => None,
            None => req.url().port_or_known_default(),
        };
        let sent = next.run(req, extensions);
        Box::pin(async move {
            // Polled inside the client span's context.
            let span = Span::current();
            if let Some(port) = implicit_port {
                span.set_attribute("server.port", i64::from(port));
            }
            match sent.await {
                Ok(response) => {
                    record_response(&span, &response);
                    Ok(into_http(response))
                }
                Err(e) => {
                    span.set_attribute("error.type", error_type(&e));
                    Err(e)
                }
            }
        })
    }
}

/// What the client layer cannot see in an `http::Response`: the peer, and the
/// protocol version negotiated (the request's was a wish).
fn record_response(span: &Span, response: &reqwest::Response) {
    if let Some(peer) = response.remote_addr() {
        span.set_attribute("network.peer.address", peer.ip().to_string());
        span.set_attribute("network.peer.port", i64::from(peer.port()));
    }
    let version = match response.version() {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_11 => "1.1",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => return,
    };
    span.set_attribute("network.protocol.version", version);
}

/// The low-cardinality `error.type` of a request that got no response.
fn error_type(e: &reqwest_middleware::Error) -> &'static str {
    match e {
        reqwest_middleware::Error::Middleware(_) => "middleware",
        reqwest_middleware::Error::Reqwest(e) if e.is_timeout() => "timeout",
        reqwest_middleware::Error::Reqwest(e) if e.is_connect() => "connect",
        reqwest_middleware::Error::Reqwest(e) if e.is_redirect() => "redirect",
        reqwest_middleware::Error::Reqwest(e) if e.is_body() => "body",
        reqwest_middleware::Error::Reqwest(e) if e.is_decode() => "decode",
        reqwest_middleware::Error::Reqwest(e) if e.is_request() => "request",
        reqwest_middleware::Error::Reqwest(_) => "_OTHER",
    }
}

/// reqwest's URL of the response (the last one, after redirects), kept beside
/// the `http::Response` it is not part of.
#[derive(Clone)]
struct ResponseUrl(Url);

fn into_http(response: reqwest::Response) -> http::Response<reqwest::Body> {
    let url = ResponseUrl(response.url().clone());
    let mut response = http::Response::from(response);
    response.extensions_mut().insert(url);
    response
}

/// The response the caller gets: the client layer's body (which ends the span)
/// inside reqwest's, and the URL back in place.
fn into_reqwest(response: http::Response<ResponseBody<reqwest::Body>>) -> reqwest::Response {
    let (mut parts, body) = response.into_parts();
    if let Some(ResponseUrl(url)) = parts.extensions.remove() {
        // reqwest reads it from an extension only its builder can write.
        if let Ok(marker) = http::Response::builder().url(url).body(()) {
            parts.extensions.extend(marker.into_parts().0.extensions);
        }
    }
    http::Response::from_parts(parts, reqwest::Body::wrap(body)).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_urls_redact_credentials_and_signatures() {
        let cases = [
            ("http://example.com/a?b=1", "http://example.com/a?b=1"),
            (
                "https://user:pass@example.com:8443/x",
                "https://REDACTED:REDACTED@example.com:8443/x",
            ),
            ("http://user@example.com/", "http://REDACTED@example.com/"),
            (
                "https://s3.example.com/o?AWSAccessKeyId=AK&Expires=1&Signature=abc",
                "https://s3.example.com/o?AWSAccessKeyId=REDACTED&Expires=1&Signature=REDACTED",
            ),
            (
                "http://example.com/?sig=x&X-Goog-Signature=y&signature=z",
                "http://example.com/?sig=REDACTED&X-Goog-Signature=REDACTED&signature=z",
            ),
            ("http://example.com/p#frag", "http://example.com/p"),
        ];
        for (url, want) in cases {
            let uri = span_uri(&Url::parse(url).unwrap());
            assert_eq!(uri.to_string(), want, "{url}");
        }
    }

    #[test]
    fn a_url_too_long_for_http_uri_is_recorded_as_its_origin() {
        let long = format!("http://example.com:81/{}", "a".repeat(70_000));
        let uri = span_uri(&Url::parse(&long).unwrap());
        assert_eq!(uri.to_string(), "http://example.com:81/");
    }
}
