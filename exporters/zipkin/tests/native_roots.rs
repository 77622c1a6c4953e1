//! `TlsRoots::Native` reads the system trust store, which honours `SSL_CERT_FILE`.
//! In its own test binary because it changes the process environment.

mod support;

use std::time::Duration;

use tracewire::export::{Backoff, InMemoryExporter, SpanExporter};
use tracewire::TracerProvider;
use tracewire_zipkin::{TlsRoots, ZipkinExporter};

use support::{Collector, SelfSigned};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_roots_trust_what_the_system_store_holds_and_webpki_does_not() {
    let cert = SelfSigned::loopback();
    let collector = Collector::default();
    let addr = collector.clone().start_tls(&cert).await;
    let bundle = std::env::temp_dir().join(format!("tracewire-zipkin-ca-{}.pem", addr.port()));
    std::fs::write(&bundle, &cert.pem).unwrap();
    std::env::set_var("SSL_CERT_FILE", &bundle);
    std::env::remove_var("SSL_CERT_DIR");

    let memory = InMemoryExporter::new();
    let provider = TracerProvider::builder()
        .with_simple_exporter(memory.clone())
        .build();
    provider
        .tracer("native")
        .start("via the system store")
        .end();
    let spans = memory.spans();

    let builder = |roots| {
        ZipkinExporter::builder()
            .with_endpoint(format!("https://{addr}/api/v2/spans"))
            .with_timeout(Duration::from_millis(500))
            .with_backoff(Backoff {
                initial: Duration::from_millis(10),
                max_delay: Duration::from_millis(50),
                max_elapsed: Duration::from_secs(1),
            })
            .with_tls_roots(roots)
    };
    let mut native = builder(TlsRoots::Native).build().unwrap();
    let mut webpki = builder(TlsRoots::WebPki).build().unwrap();
    std::env::remove_var("SSL_CERT_FILE");
    std::fs::remove_file(&bundle).unwrap();

    native.export(&spans).await.unwrap();
    assert!(webpki.export(&spans).await.is_err());
    assert_eq!(collector.json_spans().len(), 1);
    assert_eq!(native.counters().snapshot().exported, 1);
    assert_eq!(webpki.counters().snapshot().failed, 1);
}
