//! The heap profiler's cost on an allocation-heavy workload, beside the system
//! allocator alone and jemalloc with its own heap profiling (`prof:true`,
//! `lg_prof_sample:19`: the same 512 KiB mean interval), in one run:
//!
//! ```text
//! cargo bench -p tracewire --bench heap
//! ```
//!
//! A process has one global allocator for its whole life, so the bench runs
//! itself three times, one allocator each (chosen by `TRACEWIRE_HEAP_BENCH`
//! before the first allocation; every mode goes through the same dispatch), and
//! prints the three criterion estimates and their ratios at the end. The
//! jemalloc run ends with a pprof dump through `jemalloc_pprof`, which shows its
//! profiling was on.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicU8, Ordering};

use criterion::Criterion;
use tracewire::alloc::Profiled;
use tracewire::labels::{with_labels, LabelSet};

/// System, tracewire over it; jemalloc, tracewire over it, jemalloc profiling.
const MODES: [&str; 5] = [
    "system",
    "tracewire",
    "jemalloc",
    "tracewire_jemalloc",
    "jemalloc_prof",
];
const ENV: &str = "TRACEWIRE_HEAP_BENCH";

/// 0: not read yet; else 1 + the index in `MODES`.
static MODE: AtomicU8 = AtomicU8::new(0);
static TRACEWIRE: Profiled<System> = Profiled::new(System);
static JEMALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
static TRACEWIRE_JEMALLOC: Profiled<tikv_jemallocator::Jemalloc> =
    Profiled::new(tikv_jemallocator::Jemalloc);

/// The mode, read from the environment with `getenv` (which does not
/// allocate) on the first allocation.
fn mode() -> u8 {
    let m = MODE.load(Ordering::Relaxed);
    if m != 0 {
        return m;
    }
    // SAFETY: a NUL-terminated name; the result is read before anything can
    // change the environment (the first allocation, before main).
    let value = unsafe { libc::getenv(c"TRACEWIRE_HEAP_BENCH".as_ptr()) };
    let m = if value.is_null() {
        1
    } else {
        // SAFETY: getenv returns a NUL-terminated string.
        let v = unsafe { std::ffi::CStr::from_ptr(value) }.to_bytes();
        MODES
            .iter()
            .position(|m| m.as_bytes() == v)
            .map_or(1, |i| i as u8 + 1)
    };
    MODE.store(m, Ordering::Relaxed);
    m
}

/// Routes every call to the allocator of the mode. Every mode is a case of the
/// same jump table (none is the match's fallthrough), so the dispatch costs each
/// the same instructions.
struct Switch;

// SAFETY: each method forwards to one allocator, the same for the whole
// process (the mode never changes once read), so every block is freed by the
// allocator that made it.
unsafe impl GlobalAlloc for Switch {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's contract.
        unsafe {
            match mode() {
                2 => TRACEWIRE.alloc(l),
                3 | 5 => JEMALLOC.alloc(l),
                4 => TRACEWIRE_JEMALLOC.alloc(l),
                1 => System.alloc(l),
                _ => unreachable!(),
            }
        }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: as above.
        unsafe {
            match mode() {
                2 => TRACEWIRE.dealloc(p, l),
                3 | 5 => JEMALLOC.dealloc(p, l),
                4 => TRACEWIRE_JEMALLOC.dealloc(p, l),
                1 => System.dealloc(p, l),
                _ => unreachable!(),
            }
        }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        // SAFETY: as above.
        unsafe {
            match mode() {
                2 => TRACEWIRE.realloc(p, l, n),
                3 | 5 => JEMALLOC.realloc(p, l, n),
                4 => TRACEWIRE_JEMALLOC.realloc(p, l, n),
                1 => System.realloc(p, l, n),
                _ => unreachable!(),
            }
        }
    }
}

#[global_allocator]
static ALLOC: Switch = Switch;

/// Strings, vectors and a hash map of both, built and dropped: about 4 MiB in
/// 60,000 allocations of 8 B to 4 KiB, under a label set as a handler's would be.
fn workload(labels: &LabelSet) -> usize {
    with_labels(labels, || {
        let mut map: HashMap<String, Vec<u64>> = HashMap::new();
        for i in 0..20_000u64 {
            map.insert(format!("key-{i}"), vec![i; (i % 64) as usize + 1]);
        }
        let strings: Vec<String> = (0..20_000).map(|i| i.to_string().repeat(3)).collect();
        let total: usize = map.values().map(Vec::len).sum::<usize>() + strings.len();
        black_box((map, strings));
        total
    })
}

fn run_mode(mode: &str) {
    let mut c = Criterion::default().configure_from_args();
    let labels = LabelSet::new([("http-path", "/bench")]);
    let mut g = c.benchmark_group("heap");
    g.bench_function(mode, |b| b.iter(|| workload(&labels)));
    g.finish();
    match mode {
        "tracewire" => {
            let heap = tracewire::alloc::HeapProfile::take();
            println!(
                "tracewire heap profile: {} samples, {} bytes allocated (estimated)",
                heap.samples().len(),
                heap.alloc_space()
            );
        }
        "jemalloc_prof" => jemalloc_dump(),
        _ => {}
    }
}

fn jemalloc_dump() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let Some(ctl) = jemalloc_pprof::PROF_CTL.as_ref() else {
            println!("jemalloc profiling: not available");
            return;
        };
        let mut ctl = ctl.lock().await;
        println!("jemalloc profiling activated: {}", ctl.activated());
        match ctl.dump_pprof() {
            Ok(pprof) => println!("jemalloc_pprof dump: {} bytes of pprof", pprof.len()),
            Err(e) => println!("jemalloc_pprof dump failed: {e}"),
        }
    });
}

/// The point estimate (ns) criterion saved for `heap/<mode>`.
fn estimate(mode: &str) -> Option<f64> {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .expect("workspace")
                .join("target")
        });
    let path = dir.join(format!("criterion/heap/{mode}/new/estimates.json"));
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    json["mean"]["point_estimate"].as_f64()
}

fn main() {
    // `TRACEWIRE_HEAP_ITERS=N`: run the workload N times and exit, for
    // `valgrind --tool=callgrind` (instruction counts are stable where times on
    // a busy machine are not; see benches/heap-callgrind.sh).
    if let Ok(n) = std::env::var("TRACEWIRE_HEAP_ITERS") {
        let labels = LabelSet::new([("http-path", "/bench")]);
        for _ in 0..n.parse::<u32>().unwrap_or(10) {
            black_box(workload(&labels));
        }
        return;
    }
    if let Ok(mode) = std::env::var(ENV) {
        run_mode(&mode);
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let exe = std::env::current_exe().expect("this bench's path");
    for mode in MODES {
        let status = std::process::Command::new(&exe)
            .args(&args)
            .env(ENV, mode)
            // jemalloc's own heap profiling at tracewire's rate (2^19 = 512 KiB),
            // on in its mode only; tikv-jemallocator's symbols are prefixed, and
            // so is its variable.
            .env(
                "_RJEM_MALLOC_CONF",
                if mode == "jemalloc_prof" {
                    "prof:true,prof_active:true,lg_prof_sample:19"
                } else {
                    "prof:false"
                },
            )
            .status()
            .expect("run the bench for one allocator");
        assert!(status.success(), "heap bench for {mode}: {status}");
    }
    if args.iter().any(|a| a == "--bench") {
        let e: Vec<Option<f64>> = MODES.iter().map(|m| estimate(m)).collect();
        if let [Some(sys), Some(tw), Some(je), Some(twje), Some(jep)] = e[..] {
            let pct = |a: f64, b: f64| (a / b - 1.0) * 100.0;
            println!("\nheap (mean per workload run):");
            println!("  system              {:>9.1} µs", sys / 1e3);
            println!(
                "  tracewire           {:>9.1} µs  {:+.1} % over system",
                tw / 1e3,
                pct(tw, sys)
            );
            println!("  jemalloc            {:>9.1} µs", je / 1e3);
            println!(
                "  tracewire_jemalloc  {:>9.1} µs  {:+.1} % over jemalloc",
                twje / 1e3,
                pct(twje, je)
            );
            println!(
                "  jemalloc_prof       {:>9.1} µs  {:+.1} % over jemalloc",
                jep / 1e3,
                pct(jep, je)
            );
        }
    }
}
