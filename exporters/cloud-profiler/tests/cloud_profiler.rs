//! The agent against a loopback tonic server implementing the generated
//! `ProfilerService`: the CPU profile for the duration the server gives, then a
//! heap snapshot, both as gzip'd pprof; ABORTED with RetryInfo honoured; a server
//! down then up; upload errors retried; a bounded queue; a busy profiler; and a
//! shutdown that cancels the long poll and uploads a CPU profile cut short.
#![cfg(target_os = "linux")]

mod support;

use std::alloc::System;
use std::hint::black_box;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tracewire::alloc::Profiled;
use tracewire::export::Backoff;
use tracewire::labels::{with_labels, LabelSet};
use tracewire::profile::{self, pprof, Profiler};
use tracewire_cloud_profiler::proto::v2::{ProfileType, UpdateProfileRequest};
use tracewire_cloud_profiler::CloudProfilerAgent;

use support::{agent, free_addr, serial, Answer, Server};

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

fn pprof_of(update: &UpdateProfileRequest) -> (ProfileType, pprof::Profile) {
    let p = update.profile.as_ref().expect("a profile");
    assert_eq!(&p.profile_bytes[..2], [0x1f, 0x8b], "gzip'd");
    (
        ProfileType::try_from(p.profile_type).unwrap(),
        pprof::decode(&p.profile_bytes).expect("a valid pprof"),
    )
}

#[test]
fn cpu_for_the_duration_given_then_heap_are_uploaded_as_gzipped_pprof() {
    let _s = serial();
    let server = Server::start(&[
        Answer::Collect(ProfileType::Cpu, Some(Duration::from_secs(1))),
        Answer::Collect(ProfileType::Heap, None),
    ]);
    let kept: Vec<Vec<u8>> = (0..64)
        .map(|i| black_box(vec![i as u8; 64 * 1024]))
        .collect();
    let worker = std::thread::spawn(|| {
        profile::register_current_thread().unwrap();
        with_labels(LabelSet::new([("worker", "burn")]), || {
            burn(Duration::from_millis(1500))
        });
    });
    let agent = agent(&server.url()).start().unwrap();
    let updates = server.wait_for_updates(2, Duration::from_secs(15));
    worker.join().unwrap();
    agent.shutdown(Duration::from_secs(5)).unwrap();
    drop(kept);

    let creates = server.creates();
    let (_, first) = &creates[0];
    assert_eq!(first.parent, "projects/test-project");
    let d = first.deployment.as_ref().unwrap();
    assert_eq!(
        (d.project_id.as_str(), d.target.as_str()),
        ("test-project", "checkout")
    );
    assert_eq!(d.labels["version"], "1.2.3");
    assert_eq!(d.labels["zone"], "europe-west1-b");
    assert_eq!(d.labels["language"], "rust");
    assert_eq!(
        first.profile_type,
        [ProfileType::Cpu as i32, ProfileType::Heap as i32]
    );

    assert_eq!(updates.len(), 2, "{:?}", agent.stats());
    let (at, cpu) = &updates[0];
    let profile = cpu.profile.as_ref().unwrap();
    assert_eq!(profile.name, "projects/test-project/profiles/1");
    assert_eq!(profile.deployment.as_ref().unwrap().target, "checkout");
    // The server's answer came right after the first CreateProfile arrived.
    assert!(
        *at - creates[0].0 >= Duration::from_millis(950),
        "{:?}",
        *at - creates[0].0
    );
    let (kind, p) = pprof_of(cpu);
    assert_eq!(kind, ProfileType::Cpu);
    assert_eq!(p.string(p.sample_type[1].r#type), "cpu");
    assert!(p.duration_nanos >= 900_000_000, "{}", p.duration_nanos);
    assert!(p
        .sample
        .iter()
        .any(|s| p.labels(s).any(|(k, v)| k == "worker" && v == "burn") && s.value[1] > 0));
    assert!(p
        .sample
        .iter()
        .all(|s| p.labels(s).all(|(k, _)| k != "trace_id" && k != "span_id")));

    let (kind, p) = pprof_of(&updates[1].1);
    assert_eq!(kind, ProfileType::Heap);
    assert_eq!(p.string(p.default_sample_type), "inuse_space");
    assert!(p.sample.iter().any(|s| s.value[3] > 0), "bytes in use");

    let stats = agent.stats();
    assert_eq!(
        (stats.asked, stats.collected, stats.uploaded),
        (2, 2, 2),
        "{stats:?}"
    );
    assert_eq!(stats.dropped, 0, "{stats:?}");
}

#[test]
fn aborted_with_retry_info_delays_the_next_create_profile() {
    let _s = serial();
    let delay = Duration::from_millis(800);
    let server = Server::start(&[
        Answer::Aborted(delay),
        Answer::Collect(ProfileType::Heap, None),
    ]);
    let agent = agent(&server.url()).start().unwrap();
    let updates = server.wait_for_updates(1, Duration::from_secs(10));
    agent.shutdown(Duration::from_secs(5)).unwrap();
    assert_eq!(updates.len(), 1);
    let creates = server.creates();
    let gap = creates[1].0 - creates[0].0;
    assert!(gap >= delay, "{gap:?}");
    // Not the (100 ms) backoff of other errors.
    let stats = agent.stats();
    assert_eq!((stats.aborted, stats.create_errors), (1, 0), "{stats:?}");
}

#[test]
fn a_server_that_is_down_then_up_is_asked_again_and_gets_the_profile() {
    let _s = serial();
    let addr = free_addr();
    let agent = agent(&format!("http://{addr}")).start().unwrap();
    // Wait for the state, not a fixed time: a loaded machine is slow.
    let start = std::time::Instant::now();
    let mut down = agent.stats();
    while down.create_errors < 2 && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
        down = agent.stats();
    }
    assert!(down.create_errors >= 2, "{down:?}");
    let server = Server::on(addr, &[Answer::Collect(ProfileType::Heap, None)]);
    let updates = server.wait_for_updates(1, Duration::from_secs(10));
    agent.shutdown(Duration::from_secs(5)).unwrap();
    assert_eq!(updates.len(), 1, "{:?}", agent.stats());
    assert_eq!(pprof_of(&updates[0].1).0, ProfileType::Heap);
}

#[test]
fn an_unavailable_update_is_retried_and_the_profile_arrives() {
    let _s = serial();
    let server = Server::start(&[Answer::Collect(ProfileType::Heap, None)]);
    server.state.failing_updates.store(2, Ordering::SeqCst);
    let agent = agent(&server.url()).start().unwrap();
    let updates = server.wait_for_updates(1, Duration::from_secs(10));
    agent.shutdown(Duration::from_secs(5)).unwrap();
    assert_eq!(updates.len(), 1);
    let stats = agent.stats();
    assert_eq!(
        (stats.retries, stats.uploaded, stats.dropped),
        (2, 1, 0),
        "{stats:?}"
    );
}

#[test]
fn the_upload_queue_is_bounded_the_oldest_dropped_and_everything_accounted_for() {
    let _s = serial();
    let server = Server::start(&[Answer::Collect(ProfileType::Heap, None); 10]);
    server
        .state
        .failing_updates
        .store(usize::MAX, Ordering::SeqCst);
    let agent = agent(&server.url())
        .with_queue_capacity(2)
        .with_upload_backoff(Backoff {
            initial: Duration::from_secs(5),
            max_delay: Duration::from_secs(5),
            max_elapsed: Duration::from_secs(60),
        })
        .start()
        .unwrap();
    let start = Instant::now();
    let mut most_queued = 0;
    while agent.stats().asked < 10 && start.elapsed() < Duration::from_secs(10) {
        most_queued = most_queued.max(agent.stats().queued);
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(200));
    let stats = agent.stats();
    assert_eq!(stats.collected, 10, "{stats:?}");
    assert!(
        most_queued <= 2 && stats.queued <= 2,
        "{most_queued} {stats:?}"
    );
    // Two queued and one in flight at most.
    assert!(stats.dropped >= 7, "{stats:?}");
    assert!(agent.shutdown(Duration::from_millis(300)).is_err());
    let stats = agent.stats();
    assert_eq!((stats.uploaded, stats.dropped), (0, 10), "{stats:?}");
}

#[test]
fn a_cpu_profile_asked_while_the_profiler_is_busy_is_skipped_and_counted() {
    let _s = serial();
    let theirs = Profiler::builder().start().unwrap();
    let server = Server::start(&[
        Answer::Collect(ProfileType::Cpu, Some(Duration::from_secs(1))),
        Answer::Collect(ProfileType::Heap, None),
    ]);
    let agent = agent(&server.url()).start().unwrap();
    let updates = server.wait_for_updates(1, Duration::from_secs(10));
    agent.shutdown(Duration::from_secs(5)).unwrap();
    drop(theirs.stop().unwrap());
    assert_eq!(updates.len(), 1);
    assert_eq!(pprof_of(&updates[0].1).0, ProfileType::Heap);
    let stats = agent.stats();
    assert_eq!(
        (stats.asked, stats.busy, stats.uploaded),
        (2, 1, 1),
        "{stats:?}"
    );
}

#[test]
fn shutdown_cancels_the_long_poll_at_once() {
    let _s = serial();
    let server = Server::start(&[]);
    let agent = agent(&server.url()).start().unwrap();
    while server.creates().is_empty() {
        std::thread::sleep(Duration::from_millis(10));
    }
    let start = Instant::now();
    agent.shutdown(Duration::from_secs(5)).unwrap();
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "{:?}",
        start.elapsed()
    );
    assert!(
        agent.shutdown(Duration::from_secs(1)).is_err(),
        "shut down twice"
    );
}

#[test]
fn shutdown_cuts_a_long_cpu_profile_short_and_uploads_it() {
    let _s = serial();
    let server = Server::start(&[Answer::Collect(
        ProfileType::Cpu,
        Some(Duration::from_secs(60)),
    )]);
    let agent = agent(&server.url()).start().unwrap();
    while agent.stats().asked == 0 {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    agent.shutdown(Duration::from_secs(5)).unwrap();
    let updates = server.updates();
    assert_eq!(updates.len(), 1);
    let (kind, p) = pprof_of(&updates[0].1);
    assert_eq!(kind, ProfileType::Cpu);
    assert!(p.duration_nanos < 5_000_000_000, "{}", p.duration_nanos);
}

#[test]
fn a_bad_configuration_is_an_error_at_start() {
    assert!(CloudProfilerAgent::builder()
        .with_service("s")
        .with_endpoint("http://h:1")
        .with_project_id(" ")
        .start()
        .is_err());
    assert!(agent("ftp://h").start().is_err());
    assert!(agent("http://h:1")
        .with_service("Not A Target")
        .start()
        .is_err());
}
