//! `TlsRoots::Native` reads the system trust store, which honours
//! `SSL_CERT_FILE`. In its own test binary because it changes the process
//! environment.

mod support;

use tracewire_transport::{https_connector, TlsConfig, TlsRoots};

use support::{SelfSigned, Server};

#[tokio::test]
async fn native_roots_trust_what_the_system_store_holds_and_webpki_does_not() {
    let cert = SelfSigned::loopback();
    let server = Server::start(&cert).await;
    let bundle =
        std::env::temp_dir().join(format!("tracewire-transport-ca-{}.pem", server.addr.port()));
    std::fs::write(&bundle, &cert.pem).unwrap();
    std::env::set_var("SSL_CERT_FILE", &bundle);
    std::env::remove_var("SSL_CERT_DIR");
    let native = TlsConfig::new()
        .with_roots(TlsRoots::Native)
        .client_config();
    std::env::remove_var("SSL_CERT_FILE");
    std::fs::remove_file(&bundle).unwrap();
    let webpki = TlsConfig::new().client_config().unwrap();

    let get = |config| {
        let connector = https_connector(config, std::time::Duration::from_secs(2));
        let client: hyper_util::client::legacy::Client<_, http_body_util::Full<bytes::Bytes>> =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(connector);
        let url = server.url("/").parse().unwrap();
        async move { client.get(url).await }
    };
    assert_eq!(get(native.unwrap()).await.unwrap().status(), 200);
    assert!(get(webpki).await.is_err());
    assert_eq!(server.received().len(), 1);
}
