//! The CPU profiler, proven on real CPU work: accuracy against the threads' own CPU
//! clocks, label fidelity for tokio tasks that share worker threads, safety under
//! stress, and pprof output read back by our decoder and by `go tool pprof`.
#![cfg(target_os = "linux")]

mod support;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{burn_cpu, go_tool, run, serial};

use tracewire::labels::{self, LabelSet};
use tracewire::profile::{self, pprof, CustomProfile, Profiler, SpanIds};
use tracewire::{Context, ContextExt, TracerProvider};

fn shares(cpu: &BTreeMap<String, Duration>) -> BTreeMap<String, f64> {
    let total: f64 = cpu.values().map(Duration::as_secs_f64).sum();
    cpu.iter()
        .map(|(k, v)| (k.clone(), v.as_secs_f64() / total * 100.0))
        .collect()
}

#[test]
fn label_shares_and_total_cpu_match_the_threads_own_cpu_clocks() {
    let _serial = serial();
    let profiler = Profiler::builder().with_frequency(100).start().unwrap();
    let workers: Vec<_> = [("heavy", 900u64), ("light", 300)]
        .into_iter()
        .map(|(name, ms)| {
            std::thread::spawn(move || {
                profile::register_current_thread().unwrap();
                let before = profile::thread_cpu_time().unwrap();
                labels::with_labels(LabelSet::new([("job", name)]), || {
                    burn_cpu(Duration::from_millis(ms))
                });
                profile::thread_cpu_time().unwrap() - before
            })
        })
        .collect();
    let measured: Duration = workers.into_iter().map(|w| w.join().unwrap()).sum();
    let p = profiler.stop().unwrap();
    let by_job = p.cpu_by_label("job");
    let sampled: Duration = by_job.values().sum();
    let s = shares(&by_job);
    eprintln!("by job {by_job:?} shares {s:?} sampled {sampled:?} measured {measured:?}");
    eprintln!("total {:?} stats {:?}", p.total_cpu(), p.stats());
    assert!((s["heavy"] - 75.0).abs() <= 3.0, "{s:?}");
    assert!((s["light"] - 25.0).abs() <= 3.0, "{s:?}");
    let captured = sampled.as_secs_f64() / measured.as_secs_f64();
    assert!(
        captured >= 0.95,
        "captured {:.1}% of the CPU",
        captured * 100.0
    );
    assert!(captured <= 1.05, "over-counted: {:.1}%", captured * 100.0);
    assert_eq!(p.dropped_samples(), 0);
}

#[test]
fn unregistered_threads_are_counted_once_and_idle_threads_not_at_all() {
    let _serial = serial();
    for hz in [100, 1000] {
        let profiler = Profiler::builder().with_frequency(hz).start().unwrap();
        let process_before = profile::process_cpu_time().unwrap();
        let workers: Vec<_> = ["registered", "unregistered"]
            .into_iter()
            .map(|name| {
                std::thread::spawn(move || {
                    if name == "registered" {
                        profile::register_current_thread().unwrap();
                    }
                    let before = profile::thread_cpu_time().unwrap();
                    labels::with_labels(LabelSet::new([("thread", name)]), || {
                        burn_cpu(Duration::from_millis(800))
                    });
                    profile::thread_cpu_time().unwrap() - before
                })
            })
            .collect();
        // Meanwhile this thread (and the harness's main thread) sit idle in join:
        // the process-wide timer's signals that land on them must not count.
        let measured: Duration = workers.into_iter().map(|w| w.join().unwrap()).sum();
        // What the whole process used while sampled: the workers, and whatever
        // else runs in this test binary meanwhile (counted too, rightly).
        let process = profile::process_cpu_time().unwrap() - process_before;
        let p = profiler.stop().unwrap();
        let by = p.cpu_by_label("thread");
        let total = p.total_cpu().as_secs_f64() / process.as_secs_f64();
        let labelled = (by["registered"] + by["unregistered"]).as_secs_f64();
        let labelled = labelled / measured.as_secs_f64();
        eprintln!(
            "{hz} Hz: {by:?}, total {:.1}% of the process's CPU ({process:?}), the \
             labelled {:.1}% of the workers' ({measured:?})",
            total * 100.0,
            labelled * 100.0
        );
        // Idle threads' signals add nothing: the profile is the process's CPU,
        // no more; each worker's CPU is counted once.
        assert!(
            (0.95..=1.03).contains(&total),
            "{hz} Hz: total {:.1}% of the process's CPU",
            total * 100.0
        );
        assert!(
            (0.95..=1.03).contains(&labelled),
            "{hz} Hz: labelled {:.1}% of the workers' CPU",
            labelled * 100.0
        );
        let unreg = by["unregistered"].as_secs_f64() / 0.8;
        assert!(
            (0.90..=1.02).contains(&unreg),
            "{hz} Hz: unregistered {unreg:.2}"
        );
        // An unregistered thread's samples hold its whole stack, as a registered
        // one's do: from the labelled closure up to the thread's start. (A sample
        // taken in a callee's prologue or epilogue misses that callee's caller,
        // burn_cpu here, as frame-pointer walks do: counted apart.)
        for name in ["registered", "unregistered"] {
            let samples: Vec<_> = p
                .samples()
                .iter()
                .filter(|s| s.labels.get("thread") == Some(name))
                .collect();
            let count = |f: &dyn Fn(&[String]) -> bool| {
                samples
                    .iter()
                    .filter(|s| f(&s.functions()))
                    .map(|s| s.count)
                    .sum::<u64>()
            };
            let has = |fs: &[String], name: &str| fs.iter().any(|f| f.contains(name));
            let all = count(&|_| true);
            let burning = count(&|fs| has(fs, "burn_cpu"));
            let whole = count(&|fs| has(fs, "with_labels") && has(fs, "thread_start"));
            eprintln!(
                "{hz} Hz, {name}: {all} samples, {whole} from with_labels to the thread's \
                 start, {burning} in burn_cpu"
            );
            assert!(
                all > 0 && whole * 100 >= all * 95,
                "{hz} Hz {name}: {whole} of {all} whole"
            );
            assert!(
                burning * 100 >= all * 70,
                "{hz} Hz {name}: {burning} of {all} in burn_cpu"
            );
        }
    }
}

/// Threads nobody registered, alive before the profile (each used 200 ms of CPU
/// then) and burning 30 ms each during it, one after another: what they used
/// before the profile is not counted, and what they use before their first
/// signal is. (The CPU a thread uses after its last signal is lost: at most one
/// period per thread, whence the lower bound.)
#[test]
fn unregistered_threads_are_credited_from_the_profiles_start_not_before() {
    let _serial = serial();
    let go: Vec<_> = (0..10).map(|_| std::sync::mpsc::channel::<()>()).collect();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let workers: Vec<_> = go
        .into_iter()
        .enumerate()
        .map(|(i, (tx, rx))| {
            let ready = ready_tx.clone();
            let t = std::thread::spawn(move || {
                burn_cpu(Duration::from_millis(200));
                ready.send(()).unwrap();
                rx.recv().unwrap();
                let before = profile::thread_cpu_time().unwrap();
                labels::with_labels(LabelSet::new([("early", format!("{i}"))]), || {
                    burn_cpu(Duration::from_millis(30))
                });
                profile::thread_cpu_time().unwrap() - before
            });
            (tx, t)
        })
        .collect();
    for _ in 0..10 {
        ready_rx.recv().unwrap();
    }
    let profiler = Profiler::builder().with_frequency(100).start().unwrap();
    let mut measured = Duration::ZERO;
    for (tx, t) in workers {
        tx.send(()).unwrap();
        measured += t.join().unwrap();
    }
    let p = profiler.stop().unwrap();
    let sampled: Duration = p.cpu_by_label("early").values().sum();
    let captured = sampled.as_secs_f64() / measured.as_secs_f64();
    eprintln!(
        "{:?}; sampled {sampled:?} of {measured:?}: {:.1} %",
        p.cpu_by_label("early"),
        captured * 100.0
    );
    assert!(
        (0.6..=1.05).contains(&captured),
        "captured {:.1} %",
        captured * 100.0
    );
}

#[test]
fn tokio_tasks_sharing_two_workers_keep_their_own_labels() {
    let _serial = serial();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .on_thread_start(|| profile::register_current_thread().unwrap())
        .on_thread_stop(profile::unregister_current_thread)
        .build()
        .unwrap();
    let profiler = Profiler::builder().with_frequency(250).start().unwrap();
    // Task t burns (t+1) units; each poll burns a 20 ms slice and yields, so the
    // tasks interleave on both workers. Each task measures the CPU it really used.
    // Slices are several kernel ticks (4 ms) long, so each gets a near-fixed number
    // of samples; slices shorter than a tick would make the count a coin toss.
    let measured: BTreeMap<String, Duration> = rt.block_on(async {
        let tasks: Vec<_> = (0..4u32)
            .map(|t| {
                let name = format!("task-{t}");
                let set = LabelSet::new([("task", name.clone())]);
                tokio::spawn(
                    async move {
                        let mut used = Duration::ZERO;
                        for _ in 0..(t + 1) * 12 {
                            let before = profile::thread_cpu_time().unwrap();
                            burn_cpu(Duration::from_millis(20));
                            used += profile::thread_cpu_time().unwrap() - before;
                            tokio::task::yield_now().await;
                        }
                        (name, used)
                    }
                    .with_labels(set),
                )
            })
            .collect();
        let mut out = BTreeMap::new();
        for t in tasks {
            let (name, used) = t.await.unwrap();
            out.insert(name, used);
        }
        out
    });
    let p = profiler.stop().unwrap();
    let sampled = shares(&p.cpu_by_label("task"));
    let expected = shares(&measured);
    eprintln!("sampled {sampled:?} expected {expected:?}");
    for (task, want) in &expected {
        let got = sampled.get(task).copied().unwrap_or(0.0);
        assert!((got - want).abs() <= 3.0, "{task}: {got:.1}% vs {want:.1}%");
    }
    // A labelled sample was taken inside that task's poll, never in the runtime's
    // idle or scheduling code after the task gave the thread back.
    for s in p
        .samples()
        .iter()
        .filter(|s| s.labels.get("task").is_some())
    {
        let f = s.functions();
        assert!(
            f.iter().any(|f| f.contains("InContext")),
            "labelled sample outside a labelled poll: {f:?}"
        );
    }
    drop(rt);
}

#[test]
fn samples_carry_the_local_root_span_and_its_name() {
    let _serial = serial();
    profile::register_current_thread().unwrap();
    let provider = TracerProvider::builder().build();
    let tracer = provider.tracer("t");
    let profiler = Profiler::builder()
        .with_frequency(250)
        .with_span_ids(SpanIds::LocalRoot)
        .start()
        .unwrap();
    let root = tracer.start("GET /user");
    let root_sc = root.span_context().clone();
    let ctx = Context::new().with_span(root);
    {
        let _g = ctx.attach();
        tracer.in_span("db.query", |_| burn_cpu(Duration::from_millis(200)));
    }
    let p = profiler.stop().unwrap();
    let in_span: Vec<_> = p.samples().iter().filter(|s| s.span_id.is_some()).collect();
    assert!(!in_span.is_empty());
    for s in &in_span {
        assert_eq!(
            s.span_id,
            Some(root_sc.span_id()),
            "local root, not db.query"
        );
        assert_eq!(s.trace_id, Some(root_sc.trace_id()));
        assert_eq!(s.span_name(), Some("GET /user"));
    }
    let pp = p.to_pprof();
    let labelled = pp.sample.iter().find(|s| !s.label.is_empty()).unwrap();
    let labels: BTreeMap<_, _> = pp.labels(labelled).collect();
    assert_eq!(labels["span_id"], root_sc.span_id().to_string());
    assert_eq!(labels["trace_id"], root_sc.trace_id().to_string());
    assert_eq!(labels["span_name"], "GET /user");
}

#[test]
fn a_second_profile_while_one_runs_is_refused() {
    let _serial = serial();
    let first = Profiler::builder().start().unwrap();
    let second = Profiler::builder().start().unwrap_err();
    assert!(second.is_busy(), "{second}");
    drop(first);
    Profiler::builder().start().unwrap().stop().unwrap();
}

#[test]
fn stress_at_1000_hz_allocating_unwinding_panicking_and_spawning() {
    let _serial = serial();
    let secs: u64 = std::env::var("TRACEWIRE_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let profiler = Profiler::builder()
        .with_frequency(1000)
        .with_span_ids(SpanIds::Every)
        .start()
        .unwrap();
    let provider = TracerProvider::builder().build();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let tracer = provider.tracer("stress");
            let done = done.clone();
            std::thread::spawn(move || {
                let _ = profile::register_current_thread();
                std::panic::set_hook(Box::new(|_| {}));
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let set = LabelSet::new([("w", format!("{w}")), ("i", format!("{}", i % 7))]);
                    labels::with_labels(&set, || {
                        tracer.in_span(format!("op-{}", i % 5), |_| {
                            let v: Vec<Vec<u8>> = (0..64).map(|n| vec![n as u8; 512]).collect();
                            black_box(&v);
                            if i.is_multiple_of(50) {
                                black_box(std::backtrace::Backtrace::force_capture().to_string());
                            }
                            if i.is_multiple_of(20) {
                                let _ = std::panic::catch_unwind(|| panic!("expected"));
                            }
                            if i.is_multiple_of(100) {
                                std::thread::spawn(|| {
                                    let _ = profile::register_current_thread();
                                    burn_cpu(Duration::from_millis(1));
                                })
                                .join()
                                .unwrap();
                            }
                        });
                    });
                    i += 1;
                }
                done.fetch_add(i, std::sync::atomic::Ordering::Relaxed);
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let p = profiler.stop().unwrap();
    let total_ops = done.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "stress: {secs}s, {total_ops} iterations, {} distinct samples, {:?} CPU sampled, {} dropped",
        p.samples().len(),
        p.total_cpu(),
        p.dropped_samples()
    );
    assert!(total_ops > 100);
    assert!(p.total_cpu() > Duration::from_millis(500));
    assert!(p.samples().iter().any(|s| s.labels.get("w").is_some()));
    // Decodes cleanly.
    let mut buf = Vec::new();
    p.write_pprof(&mut buf).unwrap();
    pprof::decode(&buf).unwrap();
}

#[test]
fn pprof_output_decodes_with_types_period_mappings_and_labels() {
    let _serial = serial();
    profile::register_current_thread().unwrap();
    let profiler = Profiler::builder().with_frequency(200).start().unwrap();
    labels::with_labels(LabelSet::new([("http-path", "/messages")]), || {
        burn_cpu(Duration::from_millis(150))
    });
    let p = profiler.stop().unwrap();
    let mut buf = Vec::new();
    p.write_pprof(&mut buf).unwrap();
    assert_eq!(&buf[..2], &[0x1f, 0x8b], "gzip'd");
    let d = pprof::decode(&buf).unwrap();
    let types: Vec<_> = d
        .sample_type
        .iter()
        .map(|t| (d.string(t.r#type), d.string(t.unit)))
        .collect();
    assert_eq!(types, vec![("samples", "count"), ("cpu", "nanoseconds")]);
    assert_eq!(d.period, 5_000_000);
    assert!(!d.mapping.is_empty());
    let burn: i64 = d
        .sample
        .iter()
        .filter(|s| d.labels(s).any(|l| l == ("http-path", "/messages")))
        .filter(|s| d.stack(s).iter().any(|f| f.contains("burn_cpu")))
        .map(|s| s.value[1])
        .sum();
    assert!(burn >= 100_000_000, "burn_cpu under /messages: {burn} ns");
    if let Some(go) = go_tool() {
        let path =
            std::env::temp_dir().join(format!("tracewire-test-{}.pb.gz", std::process::id()));
        std::fs::write(&path, &buf).unwrap();
        let tags = run(&go, &["tool", "pprof", "-tags", path.to_str().unwrap()]);
        assert!(
            tags.contains("http-path") && tags.contains("/messages"),
            "{tags}"
        );
        let top = run(
            &go,
            &[
                "tool",
                "pprof",
                "-top",
                "-tagfocus",
                "http-path:/messages",
                path.to_str().unwrap(),
            ],
        );
        assert!(top.contains("burn_cpu"), "{top}");
        std::fs::remove_file(&path).ok();
    }
}

#[test]
fn custom_profile_lists_live_entries_with_their_stacks() {
    // Symbolizing burns CPU in this process, which a CPU profile running in
    // another test would sample.
    let _serial = serial();
    #[inline(never)]
    fn open_blob(p: &CustomProfile, id: u32) {
        p.add(&id, 0);
    }
    let p = CustomProfile::new("test.blobs").unwrap();
    for id in 0..100 {
        open_blob(&p, id);
    }
    for id in 0..30 {
        p.remove(&id);
    }
    assert_eq!(p.count(), 70);
    assert!(CustomProfile::new("test.blobs").is_err());
    assert_eq!(CustomProfile::lookup("test.blobs").unwrap().count(), 70);
    let d = p.to_pprof();
    let total: i64 = d.sample.iter().map(|s| s.value[0]).sum();
    assert_eq!(total, 70);
    assert!(d
        .sample
        .iter()
        .all(|s| d.stack(s).iter().any(|f| f.contains("open_blob"))));
    assert_eq!(d.string(d.sample_type[0].r#type), "test.blobs");
}
