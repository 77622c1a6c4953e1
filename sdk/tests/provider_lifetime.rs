//! What a provider holds is released with it: rings, queued and exported span
//! records, the export thread, the provider's own state. And a `Tracer` holds its
//! provider, so a tracer is never silently dead.

use std::time::{Duration, Instant};

use tracewire::export::{BatchConfig, InMemoryExporter};
use tracewire::TracerProvider;

/// Resident set size of this process, from `/proc/self/statm` (in pages).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let resident: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    resident * page_size()
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(n).unwrap_or(4096)
}

/// Builds a batch pipeline, ends `spans` spans through it, shuts it down and
/// drops it.
fn one_pipeline(spans: usize) {
    let exporter = InMemoryExporter::new();
    let provider = TracerProvider::builder()
        .with_batch_exporter_config(
            exporter.clone(),
            BatchConfig {
                queue_capacity: 256,
                max_batch_size: 64,
                scheduled_delay: Duration::from_millis(5),
                ..BatchConfig::default()
            },
        )
        .build();
    let tracer = provider.tracer("lifetime");
    for i in 0..spans {
        let span = tracer.start("op");
        span.set_attribute("i", i as i64);
        span.set_attribute("http.route", "/user/profile");
        span.end();
    }
    provider.shutdown(Duration::from_secs(10)).unwrap();
    assert_eq!(exporter.len(), spans);
}

#[test]
fn rebuilding_a_provider_a_thousand_times_leaves_memory_flat() {
    // Warm up: allocator arenas, the thread stack cache, thread-locals.
    for _ in 0..100 {
        one_pipeline(100);
    }
    let before = rss_bytes();
    let start = Instant::now();
    for _ in 0..1000 {
        one_pipeline(100);
    }
    let after = rss_bytes();
    let grown = after.saturating_sub(before);
    eprintln!(
        "RSS {} KiB -> {} KiB (+{} KiB) over 1000 pipelines in {:?}",
        before / 1024,
        after / 1024,
        grown / 1024,
        start.elapsed()
    );
    // 100 exported spans of ~300 bytes plus rings of 256 slots, two striped
    // counters and a thread per pipeline: anything kept is tens of KiB a
    // pipeline, tens of MiB over the loop.
    assert!(
        grown < 4 << 20,
        "RSS grew by {} KiB over 1000 pipelines ({} KiB -> {} KiB)",
        grown / 1024,
        before / 1024,
        after / 1024
    );
}

#[test]
fn a_tracer_keeps_its_provider_alive() {
    let exporter = InMemoryExporter::new();
    // The provider is a temporary: only the tracer is kept.
    let tracer = TracerProvider::builder()
        .with_batch_exporter(exporter.clone())
        .build()
        .tracer("kept");
    let span = tracer.start("recorded");
    assert!(span.is_recording(), "the tracer's pipeline is alive");
    span.end();
    // The last handle (the tracer) shuts the pipeline down and flushes it.
    let start = Instant::now();
    drop(tracer);
    let took = start.elapsed();
    assert_eq!(exporter.len(), 1, "the span was exported");
    assert!(exporter.is_shut_down());
    assert!(took < Duration::from_secs(2), "dropping took {took:?}");
}

#[test]
fn a_span_outliving_its_provider_and_tracer_ends_without_harm() {
    let exporter = InMemoryExporter::new();
    let provider = TracerProvider::builder()
        .with_batch_exporter(exporter.clone())
        .build();
    let tracer = provider.tracer("t");
    let late = tracer.start("late");
    let child =
        tracer.start_with_context("child", &tracewire::Context::new().with_span(late.clone()));
    drop(tracer);
    drop(provider);
    // The pipeline shut down with the last handle; the spans still work as
    // values and end into the (closed) pipeline, which counts them dropped.
    late.set_attribute("k", "v");
    assert_eq!(
        child.span_context().trace_id(),
        late.span_context().trace_id()
    );
    let handle = std::thread::spawn(move || child.end());
    late.end();
    handle.join().unwrap();
    assert!(exporter.is_empty());
    assert!(exporter.is_shut_down());
}
