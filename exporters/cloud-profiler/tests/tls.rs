//! The agent against a Cloud Profiler stand-in over TLS on loopback (a tonic
//! server with a self-signed certificate made by `rcgen` for each test): trusted
//! as a private CA, it gets the profiles; not trusted, `CreateProfile` fails,
//! is counted and logged, and is not asked again before the backoff's longest
//! delay; nothing panics.
#![cfg(target_os = "linux")]

mod support;

use std::alloc::System;
use std::time::{Duration, Instant};

use tracewire::alloc::Profiled;
use tracewire::export::Backoff;
use tracewire_cloud_profiler::proto::v2::ProfileType;
use tracewire_cloud_profiler::{CloudProfilerAgent, TlsRoots};

use support::{agent, in_child, is_child, serial, Answer, SelfSigned, Server};

#[global_allocator]
static ALLOC: Profiled<System> = Profiled::new(System);

#[test]
fn an_endpoint_behind_a_private_ca_gets_the_profiles() {
    let _s = serial();
    let cert = SelfSigned::loopback();
    let server = Server::start_tls(&cert, &[Answer::Collect(ProfileType::Heap, None)]);
    let agent = agent(&server.url())
        .with_ca_certificate(&cert.pem)
        .start()
        .unwrap();
    let updates = server.wait_for_updates(1, Duration::from_secs(10));
    agent.shutdown(Duration::from_secs(5)).unwrap();
    assert_eq!(updates.len(), 1, "{:?}", agent.stats());
    let profile = updates[0].1.profile.as_ref().unwrap();
    assert_eq!(profile.profile_type, ProfileType::Heap as i32);
    let stats = agent.stats();
    assert_eq!(
        (stats.uploaded, stats.dropped, stats.create_errors),
        (1, 0, 0),
        "{stats:?}"
    );
}

/// In a child process, so that what the agent logs can be read; the child runs
/// the same test.
#[test]
fn a_certificate_the_agent_does_not_trust_is_counted_logged_and_not_asked_again_soon() {
    if !is_child() {
        let stderr = in_child(
            "a_certificate_the_agent_does_not_trust_is_counted_logged_and_not_asked_again_soon",
        );
        let line = stderr
            .lines()
            .find(|l| l.starts_with("tracewire-cloud-profiler: CreateProfile failed: "))
            .unwrap_or_else(|| panic!("no log line about CreateProfile:\n{stderr}"));
        assert!(line.contains("certificate"), "the line says why: {line}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        return;
    }
    let _s = serial();
    // Trusted nowhere: the webpki roots do not know it.
    let server = Server::start_tls(
        &SelfSigned::loopback(),
        &[Answer::Collect(ProfileType::Heap, None)],
    );
    let agent = agent(&server.url())
        .with_backoff(Backoff {
            initial: Duration::from_millis(10),
            max_delay: Duration::from_secs(60),
            max_elapsed: Duration::MAX,
        })
        .start()
        .unwrap();
    let start = Instant::now();
    while agent.stats().create_errors == 0 && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    // With the first delays (10 ms, 20 ms, ...) it would have asked ten times by now.
    std::thread::sleep(Duration::from_millis(500));
    let stats = agent.stats();
    assert_eq!(stats.create_errors, 1, "{stats:?}");
    assert_eq!(
        (stats.asked, stats.uploaded, stats.dropped),
        (0, 0, 0),
        "{stats:?}"
    );
    assert!(server.creates().is_empty());
    let started = Instant::now();
    agent.shutdown(Duration::from_secs(5)).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn trusting_nothing_or_a_ca_that_is_not_pem_fails_at_start() {
    let https = || {
        CloudProfilerAgent::builder()
            .with_project_id("p-1234")
            .with_service("checkout")
            .with_endpoint("https://127.0.0.1:1")
    };
    let cases = [
        (
            "a CA that is not PEM",
            https().with_ca_certificate("not a certificate"),
        ),
        ("trusting nothing", https().with_tls_roots(TlsRoots::None)),
        (
            "a CA that is not PEM on a plain endpoint",
            https()
                .with_endpoint("http://127.0.0.1:1")
                .with_ca_certificate("junk"),
        ),
    ];
    for (case, builder) in cases {
        assert!(builder.start().is_err(), "{case}");
    }
}
