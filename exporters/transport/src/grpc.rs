//! gRPC channels (tonic) whose `https://` connections use the crate's rustls
//! configuration ([`TlsConfig`]), and plain-text HTTP/2 for `http://`.

use std::fmt;
use std::marker::PhantomData;
use std::task::{Context, Poll};
use std::time::Duration;

use ::http::uri::{Scheme, Uri};
use bytes::{BufMut as _, Bytes};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::Service;
use tonic::transport::{Channel, Endpoint};

use crate::{http, tls, Error, TlsConfig};

/// Where a gRPC client connects, and how: the URL checked, TLS set up (the roots
/// read, the CA certificates parsed) when it is made, the connection itself made
/// lazily by [`connect_lazy`](Self::connect_lazy).
///
/// ```
/// use std::time::Duration;
/// use tracewire_transport::grpc::GrpcEndpoint;
/// use tracewire_transport::TlsConfig;
///
/// let endpoint = GrpcEndpoint::new("Cloud Trace endpoint", "https://cloudtrace.googleapis.com", &TlsConfig::new())
///     .unwrap()
///     .with_connect_timeout(Duration::from_secs(5))
///     .with_user_agent("my-exporter/1.0")
///     .unwrap();
/// assert!(endpoint.is_https());
/// assert!(GrpcEndpoint::new("Cloud Trace endpoint", "ftp://h", &TlsConfig::new()).is_err());
///
/// // On the runtime that runs the calls (the channel's task is spawned there).
/// let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
/// let channel = runtime.block_on(async { endpoint.connect_lazy() });
/// # drop(channel);
/// ```
#[derive(Clone, Debug)]
pub struct GrpcEndpoint {
    url: String,
    https: bool,
    endpoint: Endpoint,
    connector: Connector,
}

impl GrpcEndpoint {
    /// An endpoint for `url` (`http://host:port` or `https://host[:port]`; a
    /// path is ignored: gRPC names the method in its own), trusting what `tls`
    /// says for `https://`. `what` names the endpoint in errors. Fails on a URL
    /// that is not `http://` or `https://` with a host, and (for `https://`)
    /// when `tls` cannot be used (see [`TlsConfig::client_config`]).
    pub fn new(what: &str, url: &str, tls: &TlsConfig) -> Result<Self, Error> {
        let uri = http::parse_uri(what, url)?;
        let https = http::is_https(&uri);
        let config = tls.client_config_for(&uri)?;
        let inner = HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_or_http()
            .enable_http2()
            // tonic bounds TCP and TLS together by the endpoint's connect timeout.
            .wrap_connector(tls::tcp_connector(None));
        // tonic is told `http://` (and the requests' `:scheme` comes from the
        // origin): when one of its own TLS features is on somewhere in the build,
        // it refuses an `https://` endpoint it has no TLS configuration of its own
        // for. The connector makes the TLS connection itself.
        let (endpoint, tls_target) = if https {
            let mut parts = uri.clone().into_parts();
            parts.scheme = Some(Scheme::HTTP);
            let plain = Uri::from_parts(parts)
                .map_err(|e| Error::with_source(format!("invalid {what} {url:?}"), e))?;
            (Endpoint::from(plain).origin(uri.clone()), Some(uri))
        } else {
            (Endpoint::from(uri), None)
        };
        Ok(GrpcEndpoint {
            url: url.to_owned(),
            https,
            endpoint: endpoint
                .tcp_nodelay(true)
                .connect_timeout(Duration::from_secs(10)),
            connector: Connector { inner, tls_target },
        })
    }

    /// The URL, as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether the endpoint is `https://`.
    pub fn is_https(&self) -> bool {
        self.https
    }

    /// The most connecting (TCP and TLS) may take (default 10 s).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.endpoint = self.endpoint.connect_timeout(timeout);
        self
    }

    /// The `user-agent` of every call. Fails on a value HTTP does not allow.
    pub fn with_user_agent(mut self, user_agent: &'static str) -> Result<Self, Error> {
        self.endpoint = self
            .endpoint
            .user_agent(user_agent)
            .map_err(|e| Error::with_source(format!("invalid user agent {user_agent:?}"), e))?;
        Ok(self)
    }

    /// HTTP/2 pings every `interval`, also while no call is in flight, and a
    /// connection given up when one is not answered within `timeout`: for a long
    /// poll that may be idle for an hour, to find a dead connection sooner.
    pub fn with_keep_alive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.endpoint = self
            .endpoint
            .http2_keep_alive_interval(interval)
            .keep_alive_timeout(timeout)
            .keep_alive_while_idle(true);
        self
    }

    /// The channel, connecting on its first call. Must be called within a tokio
    /// runtime: the channel's background task is spawned on it, and it is that
    /// runtime that then makes the calls.
    pub fn connect_lazy(&self) -> Channel {
        self.endpoint
            .connect_with_connector_lazy(self.connector.clone())
    }
}

/// A codec for unary calls whose request is already encoded: the exporter
/// measures what it sends against its size limit once, and a retry resends
/// the same bytes without encoding them again. The reply is decoded as `M`
/// (`()` for `google.protobuf.Empty`).
///
/// ```
/// use tracewire_transport::grpc::PreEncoded;
///
/// // `tonic::client::Grpc::unary(request, path, PreEncoded::<()>::new())`,
/// // with a `tonic::Request<bytes::Bytes>`.
/// let codec = PreEncoded::<()>::new();
/// # drop(codec);
/// ```
pub struct PreEncoded<M>(PhantomData<fn() -> M>);

impl<M> PreEncoded<M> {
    /// The codec.
    pub fn new() -> Self {
        PreEncoded(PhantomData)
    }
}

impl<M> Default for PreEncoded<M> {
    fn default() -> Self {
        PreEncoded::new()
    }
}

impl<M> Clone for PreEncoded<M> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<M> Copy for PreEncoded<M> {}

impl<M> fmt::Debug for PreEncoded<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PreEncoded")
    }
}

impl<M: prost::Message + Default + 'static> Codec for PreEncoded<M> {
    type Encode = Bytes;
    type Decode = M;
    type Encoder = PreEncoded<M>;
    type Decoder = PreEncoded<M>;
    fn encoder(&mut self) -> Self::Encoder {
        *self
    }
    fn decoder(&mut self) -> Self::Decoder {
        *self
    }
}

impl<M> Encoder for PreEncoded<M> {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl<M: prost::Message + Default> Decoder for PreEncoded<M> {
    type Item = M;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<M>, tonic::Status> {
        // Unknown fields are skipped.
        M::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(format!("undecodable response: {e}")))
    }
}

/// `status`' code and message, and the errors under it (why a certificate was
/// refused, say), for a log line: tonic's own `Display` prints the source's
/// `Debug`.
///
/// ```
/// use tracewire_transport::grpc::describe;
///
/// let status = tonic::Status::unavailable("try later");
/// assert_eq!(describe(&status), "Unavailable: try later");
/// ```
pub fn describe(status: &tonic::Status) -> String {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    crate::push_sources(&mut text, std::error::Error::source(status));
    text
}

/// The rustls connector, connecting with TLS to `tls_target` whatever URI tonic
/// asks for (see [`GrpcEndpoint::new`]).
#[derive(Clone, Debug)]
struct Connector {
    inner: HttpsConnector<HttpConnector>,
    tls_target: Option<Uri>,
}

impl Service<Uri> for Connector {
    type Response = <HttpsConnector<HttpConnector> as Service<Uri>>::Response;
    type Error = <HttpsConnector<HttpConnector> as Service<Uri>>::Error;
    type Future = <HttpsConnector<HttpConnector> as Service<Uri>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let uri = self.tls_target.clone().unwrap_or(uri);
        self.inner.call(uri)
    }
}
