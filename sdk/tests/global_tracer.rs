//! `global::tracer` follows the provider installed at the time each span starts: a
//! library may take its tracer before `main` installs a provider (in a `static`,
//! a constructor, a layer built early) and still records.
//!
//! One test: the process-wide provider is shared by every test of a binary.

use std::time::Duration;

use tracewire::export::InMemoryExporter;
use tracewire::{global, TracerProvider};

fn pipeline() -> (TracerProvider, InMemoryExporter) {
    let exporter = InMemoryExporter::new();
    let provider = TracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    (provider, exporter)
}

fn names(exporter: &InMemoryExporter) -> Vec<String> {
    exporter
        .spans()
        .into_iter()
        .map(|s| s.name.to_string())
        .collect()
}

#[test]
fn a_global_tracer_taken_before_any_provider_records_into_each_provider_installed_later() {
    // What a library caches before the binary sets anything up.
    let cached = global::tracer("lib");
    let early = cached.start("before-any-provider");
    assert!(!early.is_recording(), "no provider yet: a no-op span");
    early.end();

    let (first, first_spans) = pipeline();
    global::set_tracer_provider(first);
    cached.start("into-first").end();
    assert_eq!(names(&first_spans), ["into-first"]);
    assert_eq!(
        cached.scope(),
        "lib",
        "spans carry the cached tracer's scope"
    );
    assert_eq!(first_spans.spans()[0].scope, "lib");

    // Replacing the provider moves the cached tracer along; the old one keeps
    // what it had.
    let (second, second_spans) = pipeline();
    let previous = global::set_tracer_provider(second).expect("the first provider");
    cached.start("into-second").end();
    assert_eq!(names(&second_spans), ["into-second"]);
    assert_eq!(names(&first_spans), ["into-first"]);
    previous.shutdown(Duration::from_secs(1)).unwrap();

    // A span started under one provider ends into it, even if the provider was
    // replaced meanwhile.
    let (third, third_spans) = pipeline();
    let open = cached.start("started-under-second");
    let second = global::set_tracer_provider(third).expect("the second provider");
    open.end();
    assert_eq!(
        names(&second_spans),
        ["into-second", "started-under-second"]
    );
    assert!(third_spans.is_empty());
    second.shutdown(Duration::from_secs(1)).unwrap();

    // Once the global provider is shut down and removed, the cached tracer is a
    // no-op again.
    global::shutdown_tracer_provider(Duration::from_secs(1)).unwrap();
    let after = cached.start("after-shutdown");
    assert!(!after.is_recording());
    after.end();
    assert!(third_spans.is_empty());
}
