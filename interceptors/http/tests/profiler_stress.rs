//! The profiler under everything at once, served by `PprofService` on a real hyper
//! server: worker threads switch label sets and spans under load while many
//! concurrent `/debug/pprof/profile` requests arrive (most refused with 409), a
//! thread starts and stops profiles in a tight loop, another forks children that
//! check they inherited no running profile and no held lock, and short-lived
//! threads come and go.
//!
//! Afterwards: every label set's references are back to what live contexts hold
//! (the debug counter of live sets is back at its baseline), every profile's
//! samples add up to what its signal handler recorded (no sample lost
//! uncounted), every answered profile decodes (and `go tool pprof` reads it), and
//! the server still answers.
//!
//! In its own test binary: the live-set counter is process-wide.
#![cfg(target_os = "linux")]

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tracewire::labels::{self, LabelSet};
use tracewire::profile::{self, pprof, Profiler};
use tracewire::{Context, TracerProvider};
use tracewire_http::debug::PprofService;
use tracewire_http::trace::TraceLayer;

/// The test and the soak take turns (they share the live-set counter).
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The application under load: a traced handler doing a little CPU work under its
/// route's `http-path` label.
async fn serve_app(provider: &TracerProvider) -> SocketAddr {
    let app = tower::ServiceBuilder::new()
        .layer(TraceLayer::new(provider.tracer("app")))
        .service(tower::service_fn(
            |_req: Request<hyper::body::Incoming>| async {
                let mut x = 0u64;
                for k in 0..50_000u64 {
                    x = std::hint::black_box(x.wrapping_mul(31) ^ k);
                }
                Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                    Bytes::from(format!("{x}")),
                )))
            },
        ));
    support::serve(app).await
}

async fn get(addr: SocketAddr, path: &str) -> (StatusCode, Bytes) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let request = Request::get(format!("http://{addr}{path}"))
        .body(Empty::new())
        .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status();
    (
        status,
        response.into_body().collect().await.unwrap().to_bytes(),
    )
}

/// Decodes an answered CPU profile and checks its shape.
fn check_profile(bytes: &[u8]) -> pprof::Profile {
    let d = pprof::decode(bytes).expect("an answered profile decodes");
    let types: Vec<&str> = d.sample_type.iter().map(|t| d.string(t.r#type)).collect();
    assert_eq!(types, ["samples", "cpu"]);
    assert!(d.period > 0);
    d
}

/// Forks a child that checks it inherited no running profile and takes the
/// profiler's registry lock (which another thread may have held at fork); its
/// exit code, or an error if it died or hung. The child creates no thread: after
/// `fork` in a multi-threaded process that is not safe (glibc's own locks, such as
/// the one thread creation takes for TLS, may be held by a thread that is gone).
fn fork_a_checking_child() -> Result<i32, String> {
    // SAFETY: the child only queries the profiler's registry and `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = std::panic::catch_unwind(|| {
            if profile::is_running() {
                return 4;
            }
            profile::register_current_thread().unwrap();
            profile::unregister_current_thread();
            0
        })
        .unwrap_or(101);
        // SAFETY: ends the child without running the parent's exit handlers.
        unsafe { libc::_exit(code) };
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut status = 0;
        // SAFETY: our own child; valid out-pointer.
        if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
            return if libc::WIFEXITED(status) {
                Ok(libc::WEXITSTATUS(status))
            } else {
                Err(format!("child killed by signal {}", libc::WTERMSIG(status)))
            };
        }
        if Instant::now() > deadline {
            // SAFETY: kills and reaps our own hung child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return Err("child hung".into());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Work under changing label sets and spans, as a request handler does.
fn switch_contexts(provider: &TracerProvider, stop: &AtomicBool, switches: &AtomicU64) {
    profile::register_current_thread().unwrap();
    let tracer = provider.tracer("stress");
    let sets: Vec<LabelSet> = (0..4)
        .map(|i| LabelSet::new([("http-path", format!("/route/{i}"))]))
        .collect();
    let mut i = 0usize;
    let mut x = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let span = tracer.start("handler");
        let ctx = Context::new()
            .with_span(span)
            .with_labels(sets[i % sets.len()].clone());
        let _g = ctx.attach();
        // A merged set per iteration: created, sampled, dropped.
        labels::with_labels(LabelSet::new([("iter", format!("{}", i % 16))]), || {
            for k in 0..20_000u64 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(k));
            }
        });
        i += 1;
        switches.fetch_add(1, Ordering::Relaxed);
    }
}

struct Outcome {
    served: usize,
    answered: usize,
    refused: usize,
    in_process: usize,
    forks: usize,
    threads: usize,
    switches: u64,
}

fn stress(run_for: Duration) -> Outcome {
    let rt = support::profiled_runtime();
    let addr = rt.block_on(support::serve(PprofService::new().with_max_seconds(2)));
    let provider = TracerProvider::builder().build();
    let app = rt.block_on(serve_app(&provider));
    // The layer interns its routes' label sets for the life of the process: one
    // request first, so they are part of the baseline.
    assert_eq!(rt.block_on(get(app, "/users/1")).0, StatusCode::OK);
    let baseline = labels::live_sets().expect("the live-set counter counts in debug builds");
    let stop = Arc::new(AtomicBool::new(false));
    let switches = Arc::new(AtomicU64::new(0));

    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (provider, stop, switches) = (provider.clone(), stop.clone(), switches.clone());
            std::thread::spawn(move || switch_contexts(&provider, &stop, &switches))
        })
        .collect();

    // Profiles started and stopped as fast as they go, checked for lost samples.
    let looper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut stopped = 0usize;
            while !stop.load(Ordering::Relaxed) {
                match Profiler::builder().with_frequency(1000).start() {
                    Ok(p) => {
                        std::thread::sleep(Duration::from_millis(3));
                        let profile = p.stop().expect("a profile stops");
                        let counted: u64 = profile.samples().iter().map(|s| s.count).sum();
                        let stats = profile.stats();
                        assert_eq!(
                            counted, stats.recorded_samples,
                            "samples recorded by the handler but missing from the profile: {stats:?}"
                        );
                        stopped += 1;
                    }
                    Err(e) => assert!(e.is_busy(), "{e}"),
                }
                // Tight, but leaving the HTTP clients a chance at the sampler.
                std::thread::sleep(Duration::from_millis(2));
            }
            stopped
        })
    };

    let forker = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut forks = 0usize;
            while !stop.load(Ordering::Relaxed) {
                assert_eq!(fork_a_checking_child(), Ok(0), "fork {forks}");
                forks += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            forks
        })
    };

    let churner = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut threads = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let batch: Vec<_> = (0..4)
                    .map(|i| {
                        std::thread::spawn(move || {
                            profile::register_current_thread().unwrap();
                            let set = LabelSet::new([("churn", format!("{i}"))]);
                            labels::with_labels(&set, || {
                                let mut x = 0u64;
                                for k in 0..200_000u64 {
                                    x = std::hint::black_box(x ^ k);
                                }
                            });
                        })
                    })
                    .collect();
                threads += batch.len();
                for t in batch {
                    t.join().unwrap();
                }
            }
            threads
        })
    };

    // Concurrent profile requests: one at a time is answered, the rest refused;
    // meanwhile the application serves a steady stream of requests.
    let (answered, refused, bodies, served) = rt.block_on(async {
        let deadline = Instant::now() + run_for;
        let load: Vec<_> = (0..4)
            .map(|_| {
                tokio::spawn(async move {
                    let mut served = 0usize;
                    while Instant::now() < deadline {
                        let (status, _) = get(app, "/users/1").await;
                        assert_eq!(status, StatusCode::OK, "the application failed a request");
                        served += 1;
                    }
                    served
                })
            })
            .collect();
        let clients: Vec<_> = (0..8)
            .map(|_| {
                tokio::spawn(async move {
                    let (mut ok, mut busy, mut answered) = (0usize, 0usize, Vec::new());
                    while Instant::now() < deadline {
                        let (status, body) =
                            get(addr, "/debug/pprof/profile?seconds=1&hz=500").await;
                        match status {
                            StatusCode::OK => {
                                check_profile(&body);
                                ok += 1;
                                answered.push(body);
                            }
                            StatusCode::CONFLICT => {
                                busy += 1;
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                            other => panic!("unexpected {other}: {:?}", body),
                        }
                    }
                    (ok, busy, answered)
                })
            })
            .collect();
        let (mut ok, mut busy, mut answered) = (0, 0, Vec::new());
        for c in clients {
            let (o, b, a) = c.await.unwrap();
            ok += o;
            busy += b;
            answered.extend(a);
        }
        let mut served = 0;
        for l in load {
            served += l.await.unwrap();
        }
        (ok, busy, answered, served)
    });
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let in_process = looper.join().unwrap();
    let forks = forker.join().unwrap();
    let threads = churner.join().unwrap();

    // The servers still serve once the storm is over, with a readable profile.
    assert_eq!(rt.block_on(get(app, "/users/1")).0, StatusCode::OK);
    let (status, body) = rt.block_on(get(addr, "/debug/pprof/profile?seconds=1"));
    assert_eq!(status, StatusCode::OK);
    check_profile(&body);
    for bytes in bodies.iter().chain([&body]) {
        go_tool_reads(bytes);
    }
    drop(provider);
    rt.shutdown_timeout(Duration::from_secs(5));

    let live = labels::live_sets().unwrap();
    assert_eq!(
        live, baseline,
        "label sets alive after every context was dropped: {live}, before the test: {baseline}"
    );
    Outcome {
        served,
        answered,
        refused,
        in_process,
        forks,
        threads,
        switches: switches.load(Ordering::Relaxed),
    }
}

/// `go tool pprof -raw` reads the profile (`go` must be installed under CI=true).
fn go_tool_reads(bytes: &[u8]) {
    let found = std::process::Command::new("go")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but `go` is not installed"
        );
        eprintln!("go not installed: skipping the go tool pprof check");
        return;
    }
    let path = std::env::temp_dir().join(format!("tracewire-stress-{}.pb.gz", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    let out = std::process::Command::new("go")
        .args(["tool", "pprof", "-raw"])
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "go tool pprof: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn report(o: &Outcome, run_for: Duration) {
    eprintln!(
        "{run_for:?}: {} application requests served, {} profiles answered, {} refused (409), {} started and stopped in-process, \
         {} forked children, {} short-lived threads, {} context switches; live label sets back at baseline",
        o.served, o.answered, o.refused, o.in_process, o.forks, o.threads, o.switches
    );
}

#[test]
fn profiler_survives_concurrent_requests_start_stop_loops_forks_and_thread_churn() {
    let _serial = serial();
    let run_for = Duration::from_secs(10);
    let o = stress(run_for);
    report(&o, run_for);
    assert!(o.answered >= 2, "only {} profiles answered", o.answered);
    assert!(o.refused > o.answered, "most requests are refused");
    assert!(o.forks >= 10 && o.threads >= 40 && o.switches > 100 && o.served > 100);
}

/// The same for `TRACEWIRE_SOAK_SECS` (default 600) seconds:
/// `cargo test -p tracewire-http --test profiler_stress -- --ignored --nocapture`.
#[test]
#[ignore = "a long soak; run by hand"]
fn soak_profiler_under_everything_at_once() {
    let _serial = serial();
    let secs = std::env::var("TRACEWIRE_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let run_for = Duration::from_secs(secs);
    let o = stress(run_for);
    report(&o, run_for);
    assert!(o.answered >= secs as usize / 3);
}
