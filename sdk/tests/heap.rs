//! The heap profiler, installed as this test binary's global allocator: in-use
//! and allocated bytes per label set within the sampling error, frees matched,
//! spans on live samples, readable stacks, deltas, a rate of 0, concurrent
//! allocation and snapshots, and `go tool pprof` reading the result.
#![cfg(target_os = "linux")]

mod support;

use std::alloc::System;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use support::{allocate_blocks, go_tool, run, serial, within};
use tracewire::alloc::{self, HeapProfile, Profiled, SampleType};
use tracewire::labels::{with_labels, LabelSet};
use tracewire::profile::pprof;
use tracewire::{Context, TracerProvider};

#[global_allocator]
static ALLOC: Profiled<System> = Profiled::new(System);

/// The functions of a stack of return addresses, innermost first, inlined
/// frames included.
fn function_names(stack: &[usize]) -> Vec<String> {
    stack
        .iter()
        .flat_map(|&a| {
            tracewire::profile::resolve(a - 1)
                .iter()
                .map(|f| f.function.clone())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn in_use_and_allocated_bytes_per_label_are_estimated_and_frees_matched() {
    let _s = serial();
    alloc::set_sample_rate(64 * 1024);
    assert!(alloc::is_installed());
    let mb = 1 << 20;
    let a = LabelSet::new([("http-path", "/heavy")]);
    let b = LabelSet::new([("http-path", "/light")]);
    let heavy = with_labels(&a, || allocate_blocks(64 * mb, 4096));
    let light = with_labels(&b, || allocate_blocks(16 * mb, 1000));
    let p = HeapProfile::take();
    let inuse = p.inuse_by_label("http-path");
    // 64 MiB at one sample per 64 KiB: ~1,000 samples, a few percent of error.
    assert!(within(inuse["/heavy"], 64 * mb as i64, 0.15), "{inuse:?}");
    assert!(within(inuse["/light"], 16 * mb as i64, 0.25), "{inuse:?}");
    drop(heavy);
    let p = HeapProfile::take();
    let inuse = p.inuse_by_label("http-path");
    assert!(inuse.get("/heavy").copied().unwrap_or(0) == 0, "{inuse:?}");
    // Freed, still allocated: alloc_space keeps them.
    let alloc_heavy: i64 = p
        .samples()
        .iter()
        .filter(|s| s.labels.get("http-path") == Some("/heavy"))
        .map(|s| s.alloc_space)
        .sum();
    assert!(within(alloc_heavy, 64 * mb as i64, 0.15), "{alloc_heavy}");
    drop(light);
    alloc::set_sample_rate(512 * 1024);
}

#[test]
fn live_samples_carry_the_span_and_name_the_allocating_function() {
    let _s = serial();
    alloc::set_sample_rate(16 * 1024);
    let provider = TracerProvider::builder().build();
    let span = provider.tracer("heap").start("load cache");
    let span_id = span.span_context().span_id();
    let kept = {
        let _g = Context::new().with_span(span.clone()).attach();
        allocate_blocks(4 << 20, 8192)
    };
    // Grown by reallocation, outside the span.
    let mut grown: Vec<u32> = Vec::new();
    for i in 0..(1u32 << 20) {
        grown.push(black_box(i));
    }
    let p = HeapProfile::take();
    let under: Vec<_> = p
        .samples()
        .iter()
        .filter(|s| s.span_id == Some(span_id))
        .collect();
    assert!(!under.is_empty());
    let bytes: i64 = under.iter().map(|s| s.inuse_space).sum();
    assert!(within(bytes, 4 << 20, 0.25), "{bytes}");
    let names = function_names(&under[0].stack);
    assert!(
        names
            .iter()
            .any(|n| n.ends_with("support::allocate_blocks")),
        "{names:?}"
    );
    // In the pprof, no sample (allocated, zeroed or grown, or taken by other
    // tests of this binary) starts in an allocator frame (the wrapper, the
    // `__rust_*` shims, `alloc::alloc`), even one inlined into the caller's code:
    // `go tool pprof -top` names the allocating function.
    let prof = p.to_pprof(SampleType::InuseSpace);
    for s in &prof.sample {
        let names = prof.stack(s);
        let leaf = names.first().copied().unwrap_or("");
        assert!(
            !(leaf.contains("tracewire::alloc::")
                || leaf.starts_with("__rust_alloc")
                || leaf.starts_with("__rust_realloc")
                || leaf.starts_with("__rustc::__rust_")
                || leaf.starts_with("alloc::alloc::")
                || leaf.starts_with("<alloc::alloc::Global")),
            "allocator frames are left out: {names:?}"
        );
    }
    drop((kept, grown));
    span.end();
    alloc::set_sample_rate(512 * 1024);
}

#[test]
fn a_delta_shows_only_what_happened_in_between_and_rate_zero_samples_nothing() {
    let _s = serial();
    alloc::set_sample_rate(32 * 1024);
    let before = HeapProfile::take();
    let l = LabelSet::new([("phase", "between")]);
    let kept = with_labels(&l, || allocate_blocks(8 << 20, 2048));
    let after = HeapProfile::take();
    let d = after.delta(&before);
    let between = d.inuse_by_label("phase")["between"];
    assert!(within(between, 8 << 20, 0.25), "{between}");
    // Taking a profile is not sampled: nothing else appeared in between.
    assert!(within(d.inuse_space(), 8 << 20, 0.3), "{}", d.inuse_space());
    assert!(d.samples().iter().all(|s| s.alloc_space >= 0));
    alloc::set_sample_rate(0);
    let off = LabelSet::new([("phase", "off")]);
    let more = with_labels(&off, || allocate_blocks(8 << 20, 2048));
    assert!(!HeapProfile::take()
        .inuse_by_label("phase")
        .contains_key("off"));
    drop((kept, more));
    alloc::set_sample_rate(512 * 1024);
}

#[test]
fn concurrent_allocation_frees_and_snapshots_neither_deadlock_nor_leak_samples() {
    let _s = serial();
    alloc::set_sample_rate(4 * 1024);
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|t| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let l = LabelSet::new([("worker", format!("w{t}"))]);
                let mut rounds = 0u64;
                while rounds == 0 || !stop.load(Ordering::Relaxed) {
                    with_labels(&l, || {
                        let v: Vec<Box<[u8]>> = (0..256)
                            .map(|i| vec![0u8; 64 + i * 16].into_boxed_slice())
                            .collect();
                        let mut s = String::new();
                        for i in 0..200 {
                            s.push_str(&i.to_string()); // realloc
                        }
                        black_box((v, s));
                    });
                    rounds += 1;
                }
                rounds
            })
        })
        .collect();
    for _ in 0..50 {
        black_box(HeapProfile::take());
    }
    stop.store(true, Ordering::Relaxed);
    let rounds: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert!(rounds > 0);
    // Everything the workers allocated was freed: nothing of theirs in use.
    let p = HeapProfile::take();
    let left: i64 = p
        .samples()
        .iter()
        .filter(|s| s.labels.get("worker").is_some())
        .map(|s| s.inuse_space)
        .sum();
    assert_eq!(left, 0);
    assert_eq!(alloc::stats().dropped_samples, 0);
    alloc::set_sample_rate(512 * 1024);
}

#[test]
fn go_tool_pprof_reads_inuse_space_with_labels() {
    let _s = serial();
    alloc::set_sample_rate(64 * 1024);
    let l = LabelSet::new([("http-path", "/pprof")]);
    let kept = with_labels(&l, || allocate_blocks(8 << 20, 4096));
    let p = HeapProfile::take();
    let mut bytes = Vec::new();
    p.write_pprof(&mut bytes).unwrap();
    // Our decoder: Go's sample types, inuse_space first.
    let decoded = pprof::decode(&bytes).unwrap();
    let types: Vec<&str> = decoded
        .sample_type
        .iter()
        .map(|t| decoded.string(t.r#type))
        .collect();
    assert_eq!(
        types,
        [
            "alloc_objects",
            "alloc_space",
            "inuse_objects",
            "inuse_space"
        ]
    );
    assert_eq!(decoded.string(decoded.default_sample_type), "inuse_space");
    let allocs = p.to_pprof(SampleType::AllocSpace);
    assert_eq!(allocs.string(allocs.default_sample_type), "alloc_space");
    if let Some(go) = go_tool() {
        let path = std::env::temp_dir().join(format!("heap-{}.pb.gz", std::process::id()));
        std::fs::write(&path, &bytes).unwrap();
        let top = run(
            &go,
            &[
                "tool",
                "pprof",
                "-top",
                "-tagfocus",
                "http-path=/pprof",
                path.to_str().unwrap(),
            ],
        );
        assert!(top.contains("inuse_space"), "{top}");
        assert!(top.contains("allocate_blocks"), "{top}");
        let _ = std::fs::remove_file(path);
    }
    drop(kept);
    alloc::set_sample_rate(512 * 1024);
}
