//! The uploader against a Pyroscope stand-in over HTTPS on loopback (hyper
//! behind tokio-rustls, a self-signed certificate made by `rcgen` for each
//! test): trusted as a private CA, or through the system store, it gets the
//! profiles and the custom headers; not trusted, the push fails at once, the
//! profiles are dropped and counted, the failure is logged on standard error,
//! and nothing panics.
#![cfg(target_os = "linux")]

mod support;

use std::time::{Duration, Instant};

use tracewire_pyroscope::{PyroscopeUploader, TlsRoots, PUSH_PATH};

use support::{in_child, is_child, name, ok, quick_backoff, serial, SelfSigned, Server};

#[test]
fn a_server_behind_a_private_ca_gets_the_profiles_and_the_custom_headers() {
    let _s = serial();
    let cert = SelfSigned::loopback();
    let server = Server::start_tls(&cert, ok);
    let uploader = PyroscopeUploader::builder(server.url())
        .with_ca_certificate(&cert.pem)
        .with_header("X-Proxy-Token", "first")
        .with_header("x-proxy-token", "t0ken")
        .with_header("content-type", "text/plain")
        .with_upload_every(Duration::from_millis(200))
        .with_heap(false)
        .with_backoff(quick_backoff())
        .start()
        .unwrap();
    assert!(uploader.url().starts_with("https://"));
    let cpu = server.wait_for(Duration::from_secs(10), |s| name(s) == "process_cpu");
    uploader.shutdown(Duration::from_secs(5)).unwrap();
    assert!(cpu.is_some(), "{:?}", uploader.stats());
    let r = &server.received()[0];
    assert_eq!(r.path, PUSH_PATH);
    let tokens: Vec<_> = r.headers.get_all("x-proxy-token").iter().collect();
    assert_eq!(tokens, ["t0ken"], "a later header replaces an earlier one");
    assert_eq!(
        r.headers["content-type"], "application/proto",
        "the push's own"
    );
    let stats = uploader.stats();
    assert_eq!(
        (stats.dropped, stats.failed_pushes, stats.retries),
        (0, 0, 0),
        "{stats:?}"
    );
    assert_eq!(stats.uploaded, stats.collected, "{stats:?}");
}

/// In a child process, so that what the uploader logs can be read; the child
/// runs the same test.
#[test]
fn a_certificate_the_uploader_does_not_trust_fails_the_push_at_once_counted_and_logged() {
    if !is_child() {
        let stderr = in_child(
            "a_certificate_the_uploader_does_not_trust_fails_the_push_at_once_counted_and_logged",
            &[],
        );
        let line = stderr
            .lines()
            .find(|l| l.starts_with("tracewire-pyroscope: 1 profiles dropped: "))
            .unwrap_or_else(|| panic!("no log line about the dropped profile:\n{stderr}"));
        assert!(line.contains("certificate"), "the line says why: {line}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        return;
    }
    let _s = serial();
    // Trusted nowhere: the webpki roots do not know it.
    let server = Server::start_tls(&SelfSigned::loopback(), ok);
    let uploader = PyroscopeUploader::builder(server.url())
        .with_upload_every(Duration::from_millis(200))
        .with_heap(false)
        .with_backoff(quick_backoff())
        .start()
        .unwrap();
    let start = Instant::now();
    while uploader.stats().failed_pushes == 0 && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let stats = uploader.stats();
    assert!(stats.failed_pushes >= 1, "{stats:?}");
    assert_eq!((stats.uploaded, stats.retries), (0, 0), "{stats:?}");
    assert!(stats.dropped >= 1, "{stats:?}");
    // The period in progress is refused too: the shutdown says so, quickly.
    let started = Instant::now();
    let err = uploader.shutdown(Duration::from_secs(5)).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(err.to_string().contains("not uploaded"), "{err}");
    let stats = uploader.stats();
    assert_eq!(stats.dropped, stats.collected, "{stats:?}");
    assert_eq!(stats.retries, 0, "{stats:?}");
    assert!(server.received().is_empty());
}

/// In a child process with `SSL_CERT_FILE` naming the server's certificate
/// (the system store `TlsRoots::Native` reads); the child runs the same test.
#[test]
fn native_roots_trust_what_the_system_store_holds() {
    const KEY_ENV: &str = "TRACEWIRE_TEST_KEY_FILE";
    if !is_child() {
        let cert = SelfSigned::loopback();
        let dir = std::env::temp_dir();
        let id = std::process::id();
        let bundle = dir.join(format!("tracewire-pyroscope-ca-{id}.pem"));
        let key = dir.join(format!("tracewire-pyroscope-key-{id}.pem"));
        std::fs::write(&bundle, &cert.pem).unwrap();
        std::fs::write(&key, &cert.key_pem).unwrap();
        in_child(
            "native_roots_trust_what_the_system_store_holds",
            &[
                ("SSL_CERT_FILE", bundle.as_os_str()),
                ("SSL_CERT_DIR", "/nonexistent".as_ref()),
                (KEY_ENV, key.as_os_str()),
            ],
        );
        std::fs::remove_file(&bundle).unwrap();
        std::fs::remove_file(&key).unwrap();
        return;
    }
    let _s = serial();
    let read = |var: &str| std::fs::read_to_string(std::env::var_os(var).unwrap()).unwrap();
    let cert = SelfSigned::from_pems(&read("SSL_CERT_FILE"), &read(KEY_ENV));
    let server = Server::start_tls(&cert, ok);
    let uploader = PyroscopeUploader::builder(server.url())
        .with_tls_roots(TlsRoots::Native)
        .with_upload_every(Duration::from_millis(200))
        .with_heap(false)
        .with_backoff(quick_backoff())
        .start()
        .unwrap();
    let cpu = server.wait_for(Duration::from_secs(10), |s| name(s) == "process_cpu");
    uploader.shutdown(Duration::from_secs(5)).unwrap();
    assert!(cpu.is_some(), "{:?}", uploader.stats());
    // The webpki roots do not know it.
    let webpki = PyroscopeUploader::builder(server.url())
        .with_upload_every(Duration::from_secs(30))
        .with_heap(false)
        .start()
        .unwrap();
    assert!(webpki.shutdown(Duration::from_secs(5)).is_err());
    assert_eq!(webpki.stats().failed_pushes, 1, "{:?}", webpki.stats());
}

#[test]
fn trusting_nothing_or_a_ca_that_is_not_pem_fails_at_start() {
    let https = || PyroscopeUploader::builder("https://127.0.0.1:1");
    let cases = [
        (
            "a CA that is not PEM",
            https().with_ca_certificate("not a certificate"),
        ),
        ("trusting nothing", https().with_tls_roots(TlsRoots::None)),
        ("an invalid header", https().with_header("x proxy", "token")),
    ];
    for (case, builder) in cases {
        assert!(builder.start().is_err(), "{case}");
    }
    assert!(
        PyroscopeUploader::builder("http://127.0.0.1:1")
            .with_ca_certificate("not a certificate")
            .start()
            .is_err(),
        "a bad PEM is a mistake whatever the scheme"
    );
}
