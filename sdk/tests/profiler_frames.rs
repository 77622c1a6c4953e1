//! CPU samples taken inside `labels::with_labels` (which borrows its set and
//! merges nothing on entry) carry the context's labels merged with every frame's,
//! per sample, and no label set outlives the profile.
#![cfg(target_os = "linux")]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::{burn_cpu, serial};

use tracewire::labels::{self, LabelSet};
use tracewire::profile::{self, Profiler};
use tracewire::Context;

#[test]
fn samples_inside_nested_frames_carry_the_merged_labels() {
    let _serial = serial();
    let baseline = labels::live_sets().expect("the live-set counter counts in debug builds");
    {
        let p = std::thread::spawn(|| {
            profile::register_current_thread().unwrap();
            let profiler = Profiler::builder().with_frequency(250).start().unwrap();
            let parent =
                Context::new().with_labels(LabelSet::new([("service", "api"), ("job", "outer")]));
            let a = LabelSet::new([("job", "a")]);
            let step = LabelSet::new([("step", "1")]);
            let b = LabelSet::new([("job", "b")]);
            parent.in_scope(|| {
                labels::with_labels(&a, || {
                    burn_cpu(Duration::from_millis(200));
                    labels::with_labels(&step, || burn_cpu(Duration::from_millis(200)));
                });
                labels::with_labels(&b, || burn_cpu(Duration::from_millis(200)));
            });
            profiler.stop().unwrap()
        })
        .join()
        .unwrap();

        let labelled: Vec<_> = p
            .samples()
            .iter()
            .filter(|s| !s.labels.is_empty())
            .collect();
        assert!(labelled.len() > 10, "{} labelled samples", labelled.len());
        for s in &labelled {
            // Every sample carries the context's labels and the innermost frame's
            // value of a shared key, never the context's.
            assert_eq!(s.labels.get("service"), Some("api"), "{}", s.labels);
            let job = s.labels.get("job");
            assert!(matches!(job, Some("a" | "b")), "{}", s.labels);
            if s.labels.get("step").is_some() {
                assert_eq!(job, Some("a"), "{}", s.labels);
            }
        }
        let shares = |key: &str| -> BTreeMap<String, f64> {
            let cpu = p.cpu_by_label(key);
            let total = p.total_cpu().as_secs_f64();
            cpu.into_iter()
                .map(|(k, v)| (k, v.as_secs_f64() / total * 100.0))
                .collect()
        };
        let job = shares("job");
        let step = shares("step");
        eprintln!("job {job:?} step {step:?} stats {:?}", p.stats());
        assert!((job["a"] - 66.7).abs() <= 10.0, "{job:?}");
        assert!((job["b"] - 33.3).abs() <= 10.0, "{job:?}");
        assert!((step["1"] - 33.3).abs() <= 10.0, "{step:?}");

        // The pprof output has the merged labels on each sample.
        let pp = p.to_pprof();
        let nested = pp
            .sample
            .iter()
            .map(|s| pp.labels(s).collect::<BTreeMap<_, _>>())
            .find(|l| l.contains_key("step"))
            .expect("a sample inside the nested frame");
        assert_eq!(nested["service"], "api");
        assert_eq!(nested["job"], "a");
    }
    // The profile (dropped above) held the merged sets; the samples' counts on
    // the frames' own sets were given back.
    assert_eq!(labels::live_sets().unwrap(), baseline);
}
