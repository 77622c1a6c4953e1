//! The uploader against a loopback HTTP server that decodes `push.v1.PushRequest`s
//! as Pyroscope does: series labels, the pprof inside (labels kept and removed,
//! the CPU a labelled thread burnt, the heap this binary's allocator sampled),
//! auth headers, a server that is down then up, 500s retried, a bounded queue,
//! busy periods skipped, and a shutdown that uploads the period in progress.
#![cfg(target_os = "linux")]

mod support;

use std::alloc::System;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use tracewire::alloc::Profiled;
use tracewire::export::Backoff;
use tracewire::labels::{with_labels, LabelSet};
use tracewire::profile::{self, pprof, Profiler};
use tracewire::{Context, TracerProvider};
use tracewire_pyroscope::{PyroscopeUploader, PUSH_PATH};

use support::{free_addr, name, ok, quick_backoff, serial, when, Server};

#[global_allocator]
static ALLOC: Profiled<System> = Profiled::new(System);

#[inline(never)]
fn burn(cpu: Duration) -> u64 {
    let start = profile::thread_cpu_time().unwrap();
    let mut x = 1u64;
    while profile::thread_cpu_time().unwrap() - start < cpu {
        for _ in 0..10_000 {
            x = black_box(x.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (x >> 29));
        }
    }
    x
}

fn label_keys(p: &pprof::Profile) -> Vec<&str> {
    let mut keys: Vec<&str> = p
        .sample
        .iter()
        .flat_map(|s| p.labels(s).map(|(k, _)| k))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

fn has_sample_labelled(p: &pprof::Profile, key: &str, value: &str) -> bool {
    p.sample
        .iter()
        .any(|s| p.labels(s).any(|(k, v)| k == key && v == value) && s.value.iter().any(|&v| v > 0))
}

#[test]
fn cpu_series_carry_name_service_and_static_labels_and_the_burnt_cpu_without_trace_ids() {
    let _s = serial();
    let server = Server::start(ok);
    let uploader = PyroscopeUploader::builder(server.url())
        .with_service_name("checkout")
        .with_label("env", "test")
        .with_label("region", "eu-west-1")
        .with_upload_every(Duration::from_secs(1))
        .with_frequency(250)
        .with_backoff(quick_backoff())
        .start()
        .unwrap();
    let provider = TracerProvider::builder().build();
    let span = provider.tracer("test").start("GET /checkout");
    let trace_id = span.span_context().trace_id().to_string();
    let span_id = span.span_context().span_id().to_string();
    let worker = std::thread::spawn({
        let span = span.clone();
        move || {
            profile::register_current_thread().unwrap();
            let _g = Context::new().with_span(span).attach();
            with_labels(LabelSet::new([("worker", "burn")]), || {
                burn(Duration::from_millis(2500))
            });
        }
    });
    let found = server.wait_for(Duration::from_secs(15), |s| {
        name(s) == "process_cpu" && has_sample_labelled(&s.pprof, "worker", "burn")
    });
    worker.join().unwrap();
    span.end();
    let cpu = found.expect("a CPU profile with the worker's samples");
    let want: BTreeMap<String, String> = [
        ("__name__", "process_cpu"),
        ("env", "test"),
        ("region", "eu-west-1"),
        ("service_name", "checkout"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(cpu.labels, want);
    let p = &cpu.pprof;
    assert_eq!(p.string(p.sample_type[1].r#type), "cpu");
    // The span links samples to the trace; the trace id itself is gone.
    assert!(
        has_sample_labelled(p, "span_id", &span_id),
        "{:?}",
        label_keys(p)
    );
    assert!(has_sample_labelled(p, "span_name", "GET /checkout"));
    assert!(!label_keys(p).contains(&"trace_id"), "{:?}", label_keys(p));
    assert!(!p.string_table.contains(&trace_id));
    assert!(p
        .sample
        .iter()
        .any(|s| p.stack(s).iter().any(|f| f.ends_with("burn"))));
    for r in server.received() {
        assert_eq!(r.path, PUSH_PATH);
    }
    uploader.shutdown(Duration::from_secs(5)).unwrap();
    let stats = uploader.stats();
    assert!(stats.uploaded >= 1, "{stats:?}");
    assert_eq!(stats.dropped, 0, "{stats:?}");
    assert_eq!(stats.uploaded, stats.collected, "{stats:?}");
}

#[test]
fn heap_series_carry_the_memory_held_under_labels() {
    let _s = serial();
    tracewire::alloc::set_sample_rate(16 * 1024);
    let kept: Vec<Vec<u8>> = with_labels(LabelSet::new([("cache", "users")]), || {
        (0..256)
            .map(|i| black_box(vec![i as u8; 16 * 1024]))
            .collect()
    });
    let server = Server::start(ok);
    let uploader = PyroscopeUploader::builder(server.url())
        .with_service_name("checkout")
        .with_upload_every(Duration::from_millis(500))
        .start()
        .unwrap();
    let heap = server.wait_for(Duration::from_secs(10), |s| name(s) == "memory");
    uploader.shutdown(Duration::from_secs(5)).unwrap();
    drop(kept);
    tracewire::alloc::set_sample_rate(512 * 1024);
    let heap = heap.expect("a heap profile");
    assert_eq!(heap.labels["service_name"], "checkout");
    let p = &heap.pprof;
    let types: Vec<&str> = p.sample_type.iter().map(|t| p.string(t.r#type)).collect();
    assert_eq!(
        types,
        [
            "alloc_objects",
            "alloc_space",
            "inuse_objects",
            "inuse_space"
        ]
    );
    assert_eq!(p.string(p.default_sample_type), "inuse_space");
    assert!(
        has_sample_labelled(p, "cache", "users"),
        "{:?}",
        label_keys(p)
    );
    assert!(!label_keys(p).contains(&"trace_id"));
}

#[test]
fn basic_auth_and_the_tenant_are_sent_as_headers() {
    let _s = serial();
    let server = Server::start(ok);
    let uploader = PyroscopeUploader::builder(server.url())
        .with_basic_auth("123456", "glc_secret")
        .with_tenant_id("team-a")
        .with_upload_every(Duration::from_millis(200))
        .with_heap(false)
        .start()
        .unwrap();
    assert!(server
        .wait_for(Duration::from_secs(10), |s| name(s) == "process_cpu")
        .is_some());
    uploader.shutdown(Duration::from_secs(5)).unwrap();
    let r = &server.received()[0];
    let h = |name: &str| {
        r.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    // base64("123456:glc_secret")
    assert_eq!(h("authorization"), "Basic MTIzNDU2OmdsY19zZWNyZXQ=");
    assert_eq!(h("x-scope-orgid"), "team-a");
    assert_eq!(h("content-type"), "application/proto");
    assert_eq!(h("connect-protocol-version"), "1");
    assert!(format!("{uploader:?}").contains("PyroscopeUploader"));
}

#[test]
fn a_server_that_is_down_then_up_gets_the_profiles_later() {
    let _s = serial();
    let addr = free_addr();
    let uploader = PyroscopeUploader::builder(format!("http://{addr}"))
        .with_upload_every(Duration::from_millis(500))
        .with_heap(false)
        .with_backoff(quick_backoff())
        .start()
        .unwrap();
    let down = when(|| uploader.stats(), |s| s.retries >= 1);
    assert_eq!(down.uploaded, 0, "{down:?}");
    assert!(down.retries >= 1, "{down:?}");
    let server = Server::on(addr, ok);
    assert!(server
        .wait_for(Duration::from_secs(10), |s| name(s) == "process_cpu")
        .is_some());
    // And the pushes go on.
    let first = server.accepted().len();
    let start = Instant::now();
    while server.accepted().len() == first && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    uploader.shutdown(Duration::from_secs(5)).unwrap();
    let stats = uploader.stats();
    assert!(server.accepted().len() > first, "{stats:?}");
    assert_eq!(stats.dropped, 0, "{stats:?}");
    assert_eq!(stats.uploaded, stats.collected, "{stats:?}");
}

#[test]
fn server_errors_are_retried_with_backoff_and_the_same_profile_arrives() {
    let _s = serial();
    let server = Server::start(|n| if n < 3 { 500 } else { 200 });
    let uploader = PyroscopeUploader::builder(server.url())
        .with_upload_every(Duration::from_secs(30))
        .with_heap(false)
        .with_backoff(Backoff {
            initial: Duration::from_millis(100),
            max_delay: Duration::from_millis(400),
            max_elapsed: Duration::from_secs(20),
        })
        .start()
        .unwrap();
    // The shutdown collects the period in progress and pushes it: 500, 500,
    // 500, then 200.
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    uploader.shutdown(Duration::from_secs(10)).unwrap();
    let elapsed = start.elapsed();
    let received = server.received();
    let statuses: Vec<u16> = received.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [500, 500, 500, 200]);
    let ids: Vec<String> = received.iter().map(|r| r.series()[0].id.clone()).collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    let stats = uploader.stats();
    assert_eq!(stats.retries, 3, "{stats:?}");
    assert_eq!((stats.uploaded, stats.dropped), (1, 0), "{stats:?}");
    // Full jitter: each wait is at most 100, 200, 400 ms; together well under 1 s.
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}

#[test]
fn answers_not_worth_a_retry_drop_the_profiles_and_count_them() {
    let _s = serial();
    let server = Server::start(|_| 401);
    let uploader = PyroscopeUploader::builder(server.url())
        .with_upload_every(Duration::from_secs(30))
        .with_heap(false)
        .with_backoff(quick_backoff())
        .start()
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let err = uploader.shutdown(Duration::from_secs(5)).unwrap_err();
    assert!(err.to_string().contains("1 profiles not uploaded"), "{err}");
    assert!(
        uploader.shutdown(Duration::from_secs(1)).is_err(),
        "shut down twice"
    );
    let stats = uploader.stats();
    assert_eq!(server.received().len(), 1);
    assert_eq!(
        (
            stats.collected,
            stats.dropped,
            stats.failed_pushes,
            stats.retries
        ),
        (1, 1, 1, 0),
        "{stats:?}"
    );
}

#[test]
fn the_queue_is_bounded_the_oldest_dropped_and_everything_accounted_for() {
    let _s = serial();
    let addr = free_addr();
    let uploader = PyroscopeUploader::builder(format!("http://{addr}"))
        .with_upload_every(Duration::from_millis(100))
        .with_queue_capacity(2)
        .with_heap(false)
        .with_backoff(Backoff {
            initial: Duration::from_secs(5),
            max_delay: Duration::from_secs(5),
            max_elapsed: Duration::from_secs(60),
        })
        .start()
        .unwrap();
    let start = Instant::now();
    let mut most_queued = 0;
    while start.elapsed() < Duration::from_secs(2) {
        most_queued = most_queued.max(uploader.stats().queued);
        std::thread::sleep(Duration::from_millis(20));
    }
    let stats = uploader.stats();
    assert!(most_queued <= 2, "{most_queued}");
    assert!(stats.collected >= 5, "{stats:?}");
    // At most the queue and the push in flight (itself at most a queue's worth)
    // are not dropped.
    assert!(stats.dropped >= stats.collected - 4, "{stats:?}");
    assert!(uploader.shutdown(Duration::from_millis(300)).is_err());
    let stats = uploader.stats();
    assert_eq!(stats.uploaded, 0);
    assert_eq!(stats.dropped, stats.collected, "{stats:?}");
}

#[test]
fn periods_when_the_profiler_is_busy_are_skipped_and_counted() {
    let _s = serial();
    let server = Server::start(ok);
    let theirs = Profiler::builder().start().unwrap();
    let uploader = PyroscopeUploader::builder(server.url())
        .with_upload_every(Duration::from_millis(200))
        .with_heap(false)
        .start()
        .unwrap();
    let busy = when(|| uploader.stats(), |s| s.busy_periods >= 2);
    assert!(busy.busy_periods >= 2, "{busy:?}");
    assert_eq!(busy.collected, 0, "{busy:?}");
    drop(theirs.stop().unwrap());
    // Once the other profile stops, CPU profiles flow again.
    assert!(server
        .wait_for(Duration::from_secs(10), |s| name(s) == "process_cpu")
        .is_some());
    uploader.shutdown(Duration::from_secs(5)).unwrap();
}

#[test]
fn invalid_configurations_are_errors_at_start() {
    for b in [
        PyroscopeUploader::builder("localhost:4040"),
        PyroscopeUploader::builder("http://h").with_label("a-b", "v"),
        PyroscopeUploader::builder("http://h").with_tenant_id("bad\nvalue"),
    ] {
        assert!(b.start().is_err());
    }
}
