//! The agent against a loopback tonic server implementing the generated
//! `ProfilerService`: the CPU profile for the duration the server gives, then a
//! heap snapshot, both as gzip'd pprof; ABORTED with RetryInfo honoured; a server
//! down then up; upload errors retried; a bounded queue; a busy profiler; and a
//! shutdown that cancels the long poll and uploads a CPU profile cut short.
#![cfg(target_os = "linux")]

use std::alloc::System;
use std::collections::VecDeque;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prost::Message as _;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Request, Response, Status};
use tracewire::alloc::Profiled;
use tracewire::export::Backoff;
use tracewire::labels::{with_labels, LabelSet};
use tracewire::profile::{self, pprof, Profiler};
use tracewire_cloud_profiler::proto::rpc::RetryInfo;
use tracewire_cloud_profiler::proto::v2::profiler_service_server::{
    ProfilerService, ProfilerServiceServer,
};
use tracewire_cloud_profiler::proto::v2::{
    CreateOfflineProfileRequest, CreateProfileRequest, Profile, ProfileType, UpdateProfileRequest,
};
use tracewire_cloud_profiler::{CloudProfilerAgent, CloudProfilerBuilder, RETRY_INFO_KEY};

#[global_allocator]
static ALLOC: Profiled<System> = Profiled::new(System);

/// CPU profiles are process-wide: one test at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the stand-in answers a `CreateProfile` with; once the script is done, it
/// hangs as the real server's long poll does.
#[derive(Clone, Copy, Debug)]
enum Answer {
    Collect(ProfileType, Option<Duration>),
    Aborted(Duration),
}

#[derive(Default)]
struct State {
    script: Mutex<VecDeque<Answer>>,
    creates: Mutex<Vec<(Instant, CreateProfileRequest)>>,
    updates: Mutex<Vec<(Instant, UpdateProfileRequest)>>,
    /// `UpdateProfile` calls to answer UNAVAILABLE before accepting.
    failing_updates: AtomicUsize,
    names: AtomicUsize,
}

/// The `ProfilerService` the tests stand up, sharing its [`State`] with them.
struct StandIn(Arc<State>);

#[tonic::async_trait]
impl ProfilerService for StandIn {
    async fn create_profile(
        &self,
        request: Request<CreateProfileRequest>,
    ) -> Result<Response<Profile>, Status> {
        let request = request.into_inner();
        self.0
            .creates
            .lock()
            .unwrap()
            .push((Instant::now(), request.clone()));
        let next = self.0.script.lock().unwrap().pop_front();
        match next {
            Some(Answer::Collect(kind, duration)) => {
                let n = self.0.names.fetch_add(1, Ordering::SeqCst) + 1;
                Ok(Response::new(Profile {
                    name: format!("projects/test-project/profiles/{n}"),
                    profile_type: kind as i32,
                    deployment: request.deployment,
                    duration: duration.map(|d| d.try_into().unwrap()),
                    ..Profile::default()
                }))
            }
            Some(Answer::Aborted(delay)) => {
                let info = RetryInfo {
                    retry_delay: Some(delay.try_into().unwrap()),
                };
                let mut md = MetadataMap::new();
                md.insert_bin(
                    RETRY_INFO_KEY,
                    MetadataValue::from_bytes(&info.encode_to_vec()),
                );
                Err(Status::with_metadata(Code::Aborted, "come back later", md))
            }
            None => std::future::pending().await,
        }
    }

    async fn create_offline_profile(
        &self,
        _: Request<CreateOfflineProfileRequest>,
    ) -> Result<Response<Profile>, Status> {
        Err(Status::unimplemented("offline profiles"))
    }

    async fn update_profile(
        &self,
        request: Request<UpdateProfileRequest>,
    ) -> Result<Response<Profile>, Status> {
        let failing = self
            .0
            .failing_updates
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err(Status::unavailable("busy"));
        }
        let request = request.into_inner();
        let profile = request.profile.clone().unwrap_or_default();
        self.0
            .updates
            .lock()
            .unwrap()
            .push((Instant::now(), request));
        Ok(Response::new(profile))
    }
}

struct Server {
    addr: SocketAddr,
    state: Arc<State>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Server {
    fn start(script: &[Answer]) -> Server {
        Self::on(SocketAddr::from(([127, 0, 0, 1], 0)), script)
    }

    fn on(addr: SocketAddr, script: &[Answer]) -> Server {
        let state = Arc::new(State::default());
        state.script.lock().unwrap().extend(script.iter().copied());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(addr))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let service = ProfilerServiceServer::new(StandIn(Arc::clone(&state)));
        runtime.spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await;
        });
        Server {
            addr,
            state,
            runtime: Some(runtime),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn updates(&self) -> Vec<(Instant, UpdateProfileRequest)> {
        self.state.updates.lock().unwrap().clone()
    }

    fn creates(&self) -> Vec<(Instant, CreateProfileRequest)> {
        self.state.creates.lock().unwrap().clone()
    }

    /// Waits (at most `limit`) for `n` accepted uploads.
    fn wait_for_updates(&self, n: usize, limit: Duration) -> Vec<(Instant, UpdateProfileRequest)> {
        let start = Instant::now();
        while self.updates().len() < n && start.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.updates()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

fn agent(url: &str) -> CloudProfilerBuilder {
    CloudProfilerAgent::builder()
        .project_id("test-project")
        .service("checkout")
        .service_version("1.2.3")
        .zone("europe-west1-b")
        .endpoint(url)
        .frequency(250)
        .backoff(Backoff {
            initial: Duration::from_millis(100),
            max_delay: Duration::from_millis(300),
            max_elapsed: Duration::MAX,
        })
        .upload_backoff(Backoff {
            initial: Duration::from_millis(50),
            max_delay: Duration::from_millis(200),
            max_elapsed: Duration::from_secs(20),
        })
}

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

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
        with_labels(&LabelSet::new([("worker", "burn")]), || {
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
    std::thread::sleep(Duration::from_millis(1000));
    let down = agent.stats();
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
        .queue_capacity(2)
        .upload_backoff(Backoff {
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
        .service("s")
        .endpoint("http://h:1")
        .project_id(" ")
        .start()
        .is_err());
    assert!(agent("ftp://h").start().is_err());
    assert!(agent("http://h:1").service("Not A Target").start().is_err());
}
