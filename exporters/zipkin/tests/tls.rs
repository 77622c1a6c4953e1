//! The Zipkin exporter against a real HTTPS collector on loopback (hyper behind
//! tokio-rustls, with a self-signed certificate made for each test by `rcgen`): a
//! trusted certificate carries the spans and the custom headers; a certificate the
//! client does not trust is refused, counted, and not retried.

mod support;

use std::time::Duration;

use tracewire::export::{Backoff, InMemoryExporter, SpanExporter};
use tracewire::trace::SpanData;
use tracewire::TracerProvider;
use tracewire_zipkin::{Encoding, TlsRoots, ZipkinExporter, ZipkinExporterBuilder};

use support::{Collector, SelfSigned};

fn https_exporter(addr: std::net::SocketAddr) -> ZipkinExporterBuilder {
    ZipkinExporter::builder()
        .with_endpoint(format!("https://{addr}/api/v2/spans"))
        .with_timeout(Duration::from_millis(500))
        .with_backoff(Backoff {
            initial: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            max_elapsed: Duration::from_secs(2),
        })
}

fn two_spans() -> Vec<SpanData> {
    let memory = InMemoryExporter::new();
    let provider = TracerProvider::builder()
        .with_simple_exporter(memory.clone())
        .build();
    let t = provider.tracer("tls");
    t.start("first").end();
    t.start("second").end();
    memory.spans()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_https_collector_receives_the_spans_and_the_custom_headers() {
    let cert = SelfSigned::loopback();
    let collector = Collector::default();
    let addr = collector.clone().start_tls(&cert).await;
    let mut exp = https_exporter(addr)
        .with_ca_certificate(&cert.pem)
        .with_header("Authorization", "Bearer t0ken")
        .with_header("x-tenant", "first")
        .with_header("X-Tenant", "checkout")
        .build()
        .unwrap();
    let counters = exp.counters();
    exp.export(&two_spans()).await.unwrap();

    let names: Vec<String> = collector
        .json_spans()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["first", "second"]);
    let headers = &collector.bodies()[0].headers;
    assert_eq!(headers["authorization"], "Bearer t0ken");
    let tenants: Vec<_> = headers.get_all("x-tenant").iter().collect();
    assert_eq!(
        tenants,
        ["checkout"],
        "a later header replaces an earlier one"
    );
    assert_eq!(headers["content-type"], "application/json");
    let c = counters.snapshot();
    assert_eq!((c.exported, c.dropped, c.failed, c.retried), (2, 0, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_headers_cannot_replace_the_content_type_or_encoding() {
    let cert = SelfSigned::loopback();
    let collector = Collector::default();
    let addr = collector.clone().start_tls(&cert).await;
    let mut exp = https_exporter(addr)
        .with_tls_roots(TlsRoots::None)
        .with_ca_certificate(&cert.pem)
        .with_encoding(Encoding::Proto)
        .with_header("content-type", "text/plain")
        .with_header("content-encoding", "br")
        .build()
        .unwrap();
    exp.export(&two_spans()).await.unwrap();
    let r = &collector.bodies()[0];
    assert_eq!(r.content_type, "application/x-protobuf");
    assert_eq!(r.content_encoding, None);
}

/// A certificate chaining to no trusted root, and one for another name: the
/// handshake fails, the export returns an error at once (a refused certificate
/// is refused on every retry), the spans are dropped and counted, and the
/// collector receives nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_the_client_does_not_trust_is_refused_counted_and_not_retried() {
    let trusted_elsewhere = SelfSigned::loopback();
    let cases = [
        (
            "not trusted",
            SelfSigned::loopback(),
            Some(trusted_elsewhere.pem.clone()),
        ),
        (
            "trusted, for another name",
            SelfSigned::new(&["zipkin.example"]),
            None,
        ),
    ];
    for (case, cert, trust) in cases {
        let collector = Collector::default();
        let addr = collector.clone().start_tls(&cert).await;
        let exp = https_exporter(addr).with_ca_certificate(trust.unwrap_or(cert.pem.clone()));
        let mut exp = exp.build().unwrap();
        let counters = exp.counters();
        let started = std::time::Instant::now();
        let err = exp.export(&two_spans()).await.unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{case}: not retried for the whole backoff: {:?}",
            exp.counters().snapshot()
        );
        assert!(
            err.to_string().contains("certificate"),
            "{case}: the error says why: {err}"
        );
        let c = counters.snapshot();
        assert_eq!(
            (c.exported, c.dropped, c.failed, c.retried),
            (0, 2, 1, 0),
            "{case}"
        );
        assert!(collector.bodies().is_empty(), "{case}");
    }
}

#[test]
fn invalid_headers_and_certificates_fail_the_build() {
    let https = || ZipkinExporter::builder().with_endpoint("https://127.0.0.1:1/api/v2/spans");
    let cases = [
        (
            "header name with a space",
            https().with_header("x tenant", "a"),
        ),
        (
            "header value with a newline",
            https().with_header("x-tenant", "a\nb"),
        ),
        (
            "CA that is not PEM",
            https().with_ca_certificate("not a certificate"),
        ),
        (
            "CA PEM that is not a certificate",
            https().with_ca_certificate(
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            ),
        ),
        ("trusting nothing", https().with_tls_roots(TlsRoots::None)),
    ];
    for (case, builder) in cases {
        assert!(builder.build().is_err(), "{case}");
    }
    assert!(https().build().is_ok(), "webpki roots by default");
}
