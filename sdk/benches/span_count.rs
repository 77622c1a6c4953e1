//! N sampled spans through one library's batch pipeline, every one delivered,
//! for instruction counts under `valgrind --tool=callgrind` (stable on a busy
//! machine, unlike times; see benches/span-callgrind.sh):
//!
//! ```text
//! TRACEWIRE_SPAN_COUNT_LIB=tracewire|opentelemetry_sdk TRACEWIRE_SPAN_COUNT_SPANS=N \
//!     target/release/deps/span_count-<hash>
//! ```
//!
//! The spans are span.rs's `span_lifecycle` ones (a root "GET /user" with 4
//! attributes) to an exporter that counts them. Both pipelines are flushed every
//! 256 spans, so no queue overflows, and the run fails unless the exporter got
//! all N. With N = 0 the provider is still built and shut down: the baseline
//! the script subtracts. Without the variables (as under `cargo bench`) it runs
//! tracewire with 1000 spans.

mod common;
use common::{otel_span, tracewire_span, CountingExporter, OtelCountingExporter};

use std::sync::atomic::Ordering;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;

/// Spans between two flushes: well under either library's queue (2048).
const FLUSH_EVERY: u64 = 256;

fn run_tracewire(n: u64) {
    let exporter = CountingExporter::default();
    let provider = tracewire::TracerProvider::builder()
        .with_service_name("bench")
        .with_batch_exporter(exporter.clone())
        .build();
    let tracer = provider.tracer("bench");
    for i in 1..=n {
        tracewire_span(&tracer);
        if i % FLUSH_EVERY == 0 {
            provider
                .force_flush(Duration::from_secs(30))
                .expect("tracewire flush");
        }
    }
    let report = provider
        .shutdown(Duration::from_secs(30))
        .expect("tracewire shutdown (an error means spans were dropped)");
    let s = provider.stats();
    let seen = exporter.count.load(Ordering::Relaxed);
    println!(
        "tracewire: {n} spans; exporter saw {seen}; stats: started {} ended {} \
         exported {} dropped {}; shutdown report: exported {} dropped {}",
        s.started, s.ended, s.exported, s.dropped, report.exported, report.dropped
    );
    assert_eq!(seen, n, "tracewire exporter count");
    assert_eq!((s.started, s.ended, s.exported, s.dropped), (n, n, n, 0));
}

fn run_otel(n: u64) {
    let exporter = OtelCountingExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter.clone())
        .build();
    let tracer = provider.tracer("bench");
    for i in 1..=n {
        otel_span(&tracer);
        if i % FLUSH_EVERY == 0 {
            provider.force_flush().expect("opentelemetry_sdk flush");
        }
    }
    provider.shutdown().expect("opentelemetry_sdk shutdown");
    // opentelemetry_sdk has no drop counter: the exporter's count is the check.
    let seen = exporter.count.load(Ordering::Relaxed);
    println!("opentelemetry_sdk: {n} spans; exporter saw {seen}");
    assert_eq!(seen, n, "opentelemetry_sdk exporter count");
}

fn main() {
    let lib = std::env::var("TRACEWIRE_SPAN_COUNT_LIB").unwrap_or_else(|_| "tracewire".into());
    let n = std::env::var("TRACEWIRE_SPAN_COUNT_SPANS").map_or(1000, |v| {
        v.parse()
            .expect("TRACEWIRE_SPAN_COUNT_SPANS: a number of spans")
    });
    match lib.as_str() {
        "tracewire" => run_tracewire(n),
        "opentelemetry_sdk" => run_otel(n),
        other => panic!("TRACEWIRE_SPAN_COUNT_LIB={other}: tracewire or opentelemetry_sdk"),
    }
}
