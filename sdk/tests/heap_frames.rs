//! Heap samples taken inside `labels::with_labels` frames carry the context's
//! labels merged with the frames' (the heap profiler keeps one label set per
//! sample: the allocator hook merges them), and freed samples keep them.
#![cfg(target_os = "linux")]

mod support;

use std::alloc::System;

use support::{allocate_blocks, serial, within};
use tracewire::alloc::{self, HeapProfile, Profiled};
use tracewire::labels::{self, LabelSet};
use tracewire::Context;

#[global_allocator]
static ALLOC: Profiled<System> = Profiled::new(System);

#[test]
fn samples_inside_frames_carry_the_merged_labels_live_and_freed() {
    let _s = serial();
    alloc::set_sample_rate(32 * 1024);
    let parent = Context::new().with_labels(LabelSet::new([("service", "api")]));
    let heavy = LabelSet::new([("http-path", "/heavy")]);
    let step = LabelSet::new([("step", "load")]);
    let light = LabelSet::new([("http-path", "/light")]);
    let (kept_heavy, kept_light) = parent.in_scope(|| {
        let h = labels::with_labels(&heavy, || {
            labels::with_labels(&step, || allocate_blocks(16 << 20, 4096))
        });
        // A frame and no labels of the context's own: its set as it is.
        let l = Context::new()
            .in_scope(|| labels::with_labels(&light, || allocate_blocks(4 << 20, 4096)));
        (h, l)
    });

    let p = HeapProfile::take();
    let inuse = p.inuse_by_label("http-path");
    assert!(within(inuse["/heavy"], 16 << 20, 0.25), "{inuse:?}");
    assert!(within(inuse["/light"], 4 << 20, 0.3), "{inuse:?}");
    for s in p.samples() {
        match s.labels.get("http-path") {
            Some("/heavy") => {
                assert_eq!(
                    s.labels.to_string(),
                    "http-path=/heavy,service=api,step=load"
                );
            }
            Some("/light") => assert_eq!(s.labels.to_string(), "http-path=/light"),
            _ => {}
        }
    }

    drop((kept_heavy, kept_light));
    let p = HeapProfile::take();
    let heavy_samples: Vec<_> = p
        .samples()
        .iter()
        .filter(|s| s.labels.get("http-path") == Some("/heavy"))
        .collect();
    let inuse: i64 = heavy_samples.iter().map(|s| s.inuse_space).sum();
    let allocated: i64 = heavy_samples.iter().map(|s| s.alloc_space).sum();
    assert_eq!(inuse, 0);
    // Freed, still counted as allocated, with the merged labels.
    assert!(within(allocated, 16 << 20, 0.25), "{allocated}");
    assert!(heavy_samples
        .iter()
        .all(|s| s.labels.get("service") == Some("api") && s.labels.get("step") == Some("load")));
    assert_eq!(alloc::stats().dropped_samples, 0);
    alloc::set_sample_rate(512 * 1024);
}

#[test]
fn the_samples_of_one_frame_share_a_merged_set_so_freed_ones_aggregate() {
    let _s = serial();
    let parent = Context::new().with_labels(LabelSet::new([("service", "batch")]));
    let job = LabelSet::new([("job", "reindex")]);
    let lost_before = alloc::stats().freed_samples_lost;
    alloc::set_sample_rate(1024);
    // ~8,000 samples, allocated and freed in rounds: more than the table of freed
    // samples holds if each had a label set of its own.
    parent.in_scope(|| {
        labels::with_labels(&job, || {
            for _ in 0..20 {
                drop(allocate_blocks(400 * 4096, 4096));
            }
        })
    });
    alloc::set_sample_rate(512 * 1024);
    let lost = alloc::stats().freed_samples_lost - lost_before;
    let p = HeapProfile::take();
    let allocated: i64 = p
        .samples()
        .iter()
        .filter(|s| s.labels.get("job") == Some("reindex"))
        .inspect(|s| assert_eq!(s.labels.get("service"), Some("batch")))
        .map(|s| s.alloc_space)
        .sum();
    assert_eq!(lost, 0, "freed samples lost");
    assert!(within(allocated, 20 * 400 * 4096, 0.1), "{allocated}");
}
