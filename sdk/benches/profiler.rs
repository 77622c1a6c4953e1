//! The CPU profiler against pprof-rs 0.15 in the same run: captured CPU fraction
//! with 2 busy threads, overhead on a CPU-bound workload, and the cost of one
//! sample. `cargo bench -p tracewire --bench profiler`.
//!
//! Each configuration is run `ROUNDS` times, alternating profilers, and the median
//! is reported, so both see the same machine conditions.

use std::hint::black_box;
use std::time::{Duration, Instant};

use tracewire::profile::{self, Profiler, SpanIds};

#[path = "../tests/support/mod.rs"]
mod support;
use support::burn_cpu;

const ROUNDS: usize = 3;
const OVERHEAD_ROUNDS: usize = 5;
const BURN: Duration = Duration::from_millis(1500);

/// A fixed amount of work: the wall time it takes is the overhead probe.
#[inline(never)]
fn work(iterations: u64) -> u64 {
    let mut x = 0u64;
    for i in 0..iterations {
        x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i) ^ (x >> 17));
    }
    x
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Which {
    None,
    Tracewire,
    PprofRs,
}

/// Runs `f` on 2 threads under the profiler; returns (threads' CPU, sampled CPU,
/// process CPU spent, wall time).
fn under_profiler(which: Which, hz: u32, f: fn()) -> (Duration, Duration, Duration, Duration) {
    let wall = Instant::now();
    let cpu = profile::process_cpu_time().unwrap();
    let (measured, sampled) = match which {
        Which::None => (run_threads(f), Duration::ZERO),
        Which::Tracewire => {
            let p = Profiler::builder()
                .with_frequency(hz)
                .with_span_ids(SpanIds::None)
                .start()
                .unwrap();
            let measured = run_threads(f);
            (measured, p.stop().unwrap().total_cpu())
        }
        Which::PprofRs => {
            let guard = pprof::ProfilerGuardBuilder::default()
                .frequency(hz as i32)
                .build()
                .unwrap();
            let measured = run_threads(f);
            let report = guard.report().build().unwrap();
            let samples: isize = report.data.values().sum();
            (
                measured,
                Duration::from_nanos(1_000_000_000 / u64::from(hz)) * samples as u32,
            )
        }
    };
    (
        measured,
        sampled,
        profile::process_cpu_time().unwrap() - cpu,
        wall.elapsed(),
    )
}

fn run_threads(f: fn()) -> Duration {
    let threads: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(move || {
                profile::register_current_thread().unwrap();
                let before = profile::thread_cpu_time().unwrap();
                f();
                profile::thread_cpu_time().unwrap() - before
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).sum()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    // `cargo test --benches` runs bench binaries with no --bench flag: keep it short.
    if !std::env::args().any(|a| a == "--bench") {
        println!("profiler bench: run with `cargo bench -p tracewire --bench profiler`");
        return;
    }
    println!("## captured CPU fraction, 2 busy threads, {BURN:?} CPU each, median of {ROUNDS}");
    println!("| frequency | tracewire | pprof-rs 0.15 |");
    println!("|---|---|---|");
    for hz in [100, 1000] {
        let mut tw = Vec::new();
        let mut pr = Vec::new();
        for _ in 0..ROUNDS {
            for which in [Which::Tracewire, Which::PprofRs] {
                let (measured, sampled, _, _) = under_profiler(which, hz, || burn_cpu(BURN));
                let frac = sampled.as_secs_f64() / measured.as_secs_f64() * 100.0;
                if which == Which::Tracewire {
                    tw.push(frac)
                } else {
                    pr.push(frac)
                }
            }
        }
        println!("| {hz} Hz | {:.1}% | {:.1}% |", median(tw), median(pr));
    }

    // Calibrate a workload of about 2 s per thread.
    let t = Instant::now();
    black_box(work(50_000_000));
    let per_iter = t.elapsed().as_secs_f64() / 50_000_000.0;
    static ITERS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    ITERS.get_or_init(|| (2.0 / per_iter) as u64);
    fn workload() {
        black_box(work(*ITERS.get().unwrap()));
    }
    println!();
    println!(
        "## overhead on a CPU-bound workload (2 threads, ~2 s each): process CPU time, median of {OVERHEAD_ROUNDS}"
    );
    println!("| frequency | no profiler | tracewire | pprof-rs 0.15 | tracewire overhead | pprof-rs overhead |");
    println!("|---|---|---|---|---|---|");
    for hz in [100, 1000] {
        let mut none = Vec::new();
        let mut tw = Vec::new();
        let mut pr = Vec::new();
        for _ in 0..OVERHEAD_ROUNDS {
            for which in [Which::None, Which::Tracewire, Which::PprofRs] {
                let (_, _, cpu, _) = under_profiler(which, hz, workload);
                match which {
                    Which::None => none.push(cpu.as_secs_f64()),
                    Which::Tracewire => tw.push(cpu.as_secs_f64()),
                    Which::PprofRs => pr.push(cpu.as_secs_f64()),
                }
            }
        }
        let (n, t, p) = (median(none), median(tw), median(pr));
        println!(
            "| {hz} Hz | {n:.3} s | {t:.3} s | {p:.3} s | {:+.2}% | {:+.2}% |",
            (t / n - 1.0) * 100.0,
            (p / n - 1.0) * 100.0
        );
    }

    println!();
    let cost = profile::measure_sample_cost(200_000).unwrap();
    println!("## cost of one sample (tracewire)");
    println!(
        "| handler body (unwind + labels + ring) | kernel signal delivery and return | total | \
         the walk on an unregistered thread (stack read by process_vm_readv, 2 KiB at a time) |"
    );
    println!("|---|---|---|---|");
    println!(
        "| {} ns | {} ns | {} ns | {} ns for {} frames |",
        cost.body.as_nanos(),
        cost.delivery.as_nanos(),
        (cost.body + cost.delivery).as_nanos(),
        cost.unregistered_walk.as_nanos(),
        cost.unregistered_depth
    );
}
