//! `GrpcEndpoint` against a real HTTP/2 server on loopback behind TLS (a
//! certificate made by `rcgen` for each test): the channel negotiates `h2` over
//! the crate's rustls configuration and trusts a private CA; a certificate it
//! does not trust is a refused handshake.
#![cfg(feature = "grpc")]

mod support;

use std::time::Duration;

use tonic::body::Body;
use tonic::client::GrpcService as _;
use tonic::transport::Channel;
use tracewire_transport::grpc::GrpcEndpoint;
use tracewire_transport::{error_chain, is_refused_handshake, TlsConfig, TlsRoots};

use support::{SelfSigned, Server};

/// One POST of an empty gRPC call to `path` on `channel`.
async fn call(
    mut channel: Channel,
    url: &str,
    path: &str,
) -> Result<http::StatusCode, tonic::transport::Error> {
    std::future::poll_fn(|cx| channel.poll_ready(cx)).await?;
    let request = http::Request::post(format!("{url}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Body::empty())
        .unwrap();
    channel.call(request).await.map(|r| r.status())
}

#[tokio::test]
async fn a_channel_to_an_https_endpoint_speaks_http2_and_trusts_a_private_ca() {
    let cert = SelfSigned::loopback();
    let server = Server::start(&cert).await;
    let url = server.url("");
    let endpoint = GrpcEndpoint::new(
        "Test endpoint",
        &url,
        &TlsConfig::new()
            .with_roots(TlsRoots::None)
            .with_ca_certificate(&cert.pem),
    )
    .unwrap()
    .with_connect_timeout(Duration::from_secs(2))
    .with_keep_alive(Duration::from_secs(30), Duration::from_secs(10))
    .with_user_agent("transport-test/1")
    .unwrap();
    assert!(endpoint.is_https());
    assert_eq!(endpoint.url(), url);
    let status = call(endpoint.connect_lazy(), &url, "/test.Service/Method")
        .await
        .unwrap();
    assert_eq!(status, 200);
    let received = server.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].version, http::Version::HTTP_2);
    assert_eq!(received[0].path, "/test.Service/Method");
    let ua = received[0].headers["user-agent"].to_str().unwrap();
    assert!(ua.starts_with("transport-test/1"), "{ua}");
}

#[tokio::test]
async fn a_certificate_the_channel_does_not_trust_is_a_refused_handshake() {
    let server = Server::start(&SelfSigned::loopback()).await;
    let url = server.url("");
    let endpoint = GrpcEndpoint::new("Test endpoint", &url, &TlsConfig::new()).unwrap();
    let err = call(endpoint.connect_lazy(), &url, "/test.Service/Method")
        .await
        .unwrap_err();
    assert!(is_refused_handshake(&err), "{}", error_chain(&err));
    assert!(server.received().is_empty());
}

#[test]
fn urls_and_tls_that_cannot_be_used_fail_at_once() {
    let tls = TlsConfig::new();
    for url in ["ftp://h:1", "h:1", "http://", "not a url"] {
        assert!(
            GrpcEndpoint::new("Test endpoint", url, &tls).is_err(),
            "{url}"
        );
    }
    let bad_pem = TlsConfig::new().with_ca_certificate("junk");
    assert!(GrpcEndpoint::new("Test endpoint", "http://h:1", &bad_pem).is_err());
    let nothing = TlsConfig::new().with_roots(TlsRoots::None);
    assert!(GrpcEndpoint::new("Test endpoint", "https://h:1", &nothing).is_err());
    assert!(
        GrpcEndpoint::new("Test endpoint", "http://h:1", &nothing).is_ok(),
        "plain text needs no roots"
    );
    let err = GrpcEndpoint::new("Test endpoint", "ftp://h:1", &tls).unwrap_err();
    assert!(err.to_string().contains("Test endpoint"), "{err}");
}
