//! The rustls configuration against a real HTTPS server on loopback (a
//! certificate made by `rcgen` for each test): a private CA given as PEM is
//! trusted; a certificate chaining to no trusted root, or for another name, is a
//! refused handshake; a server that is not there is not.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tracewire_transport::{error_chain, https_connector, is_refused_handshake};
use tracewire_transport::{TlsConfig, TlsRoots};

use support::{free_addr, SelfSigned, Server};

/// One GET of `url` with a client trusting what `tls` says.
async fn get(
    tls: &TlsConfig,
    url: &str,
) -> Result<http::StatusCode, hyper_util::client::legacy::Error> {
    let connector = https_connector(tls.client_config().unwrap(), Duration::from_secs(2));
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    client.get(url.parse().unwrap()).await.map(|r| r.status())
}

#[tokio::test]
async fn a_private_ca_given_as_pem_is_trusted_with_or_without_other_roots() {
    let cert = SelfSigned::loopback();
    let server = Server::start(&cert).await;
    for roots in [TlsRoots::WebPki, TlsRoots::None] {
        let tls = TlsConfig::new()
            .with_roots(roots)
            .with_ca_certificate(&cert.pem);
        let status = get(&tls, &server.url("/v1/traces")).await.unwrap();
        assert_eq!(status, 200, "{roots:?}");
    }
    let received = server.received();
    assert_eq!(received.len(), 2);
    assert!(received.iter().all(|r| r.path == "/v1/traces"));
    assert!(received.iter().all(|r| r.version == http::Version::HTTP_11));
}

#[tokio::test]
async fn a_certificate_chaining_to_no_trusted_root_is_a_refused_handshake() {
    let server = Server::start(&SelfSigned::loopback()).await;
    let trusted_elsewhere = SelfSigned::loopback();
    let cases = [
        ("the webpki roots", TlsConfig::new()),
        (
            "another CA",
            TlsConfig::new()
                .with_roots(TlsRoots::None)
                .with_ca_certificate(&trusted_elsewhere.pem),
        ),
    ];
    for (case, tls) in cases {
        let err = get(&tls, &server.url("/")).await.unwrap_err();
        assert!(is_refused_handshake(&err), "{case}: {}", error_chain(&err));
        assert!(
            error_chain(&err).contains("certificate"),
            "{case}: the chain says why: {}",
            error_chain(&err)
        );
    }
    assert!(server.received().is_empty());
}

#[tokio::test]
async fn a_trusted_certificate_for_another_name_is_a_refused_handshake() {
    let cert = SelfSigned::new(&["collector.example"]);
    let server = Server::start(&cert).await;
    let tls = TlsConfig::new().with_ca_certificate(&cert.pem);
    let err = get(&tls, &server.url("/")).await.unwrap_err();
    assert!(is_refused_handshake(&err), "{}", error_chain(&err));
    assert!(server.received().is_empty());
}

#[tokio::test]
async fn a_server_that_is_not_listening_is_not_a_refused_handshake() {
    let url = format!("https://{}/", free_addr());
    let err = get(&TlsConfig::new(), &url).await.unwrap_err();
    assert!(!is_refused_handshake(&err), "{}", error_chain(&err));
}

#[test]
fn pem_that_holds_no_usable_certificate_and_trusting_nothing_are_errors() {
    let cert = SelfSigned::loopback();
    let cases = [
        (
            "not PEM",
            TlsConfig::new().with_ca_certificate("not a certificate"),
        ),
        (
            "PEM that is not a certificate",
            TlsConfig::new().with_ca_certificate(
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            ),
        ),
        (
            "a good PEM, then a bad one",
            TlsConfig::new()
                .with_ca_certificate(&cert.pem)
                .with_ca_certificate("junk"),
        ),
        (
            "trusting nothing",
            TlsConfig::new().with_roots(TlsRoots::None),
        ),
    ];
    for (case, tls) in cases {
        assert!(tls.client_config().is_err(), "{case}");
    }
    assert!(TlsConfig::new()
        .with_ca_certificate("junk")
        .check()
        .is_err());
    assert!(
        TlsConfig::new().with_roots(TlsRoots::None).check().is_ok(),
        "check parses the PEM only"
    );
    let two = format!("{}{}", cert.pem, SelfSigned::loopback().pem);
    let tls = TlsConfig::new()
        .with_roots(TlsRoots::None)
        .with_ca_certificate(two);
    assert!(tls.client_config().is_ok(), "two certificates in one PEM");
}
