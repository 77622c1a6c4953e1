//! Span-pipeline, context and label benchmarks: tracewire against opentelemetry_sdk
//! 0.33 and fastrace 0.7.
//!
//! Run with `cargo bench -p tracewire --bench span`.
//!
//! Every span-pipeline benchmark counts what was delivered (DESIGN.md: a pipeline
//! that drops, or lets a backlog grow, under a tight loop is not faster, it is
//! lossy). After each such function the bench prints to stderr, for the spans the
//! closure created during warm-up and measurement:
//!
//! - `at end`: the fraction the exporter/reporter had received when the
//!   measurement stopped (what kept up with the loop), and
//! - `after flush`: the fraction received once the pipeline was flushed and shut
//!   down (what was not dropped).
#![allow(missing_docs)] // criterion_group! makes an undocumented pub fn

mod common;
use common::{otel_span, tracewire_span, CountingExporter, OtelCountingExporter};

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Bencher, Criterion};

use tracewire::labels::{self, LabelSet};
use tracewire::trace::AlwaysOff;

use opentelemetry::trace::{Span as _, TraceContextExt as _, Tracer as _, TracerProvider as _};
use opentelemetry_sdk::trace::{Sampler as OtelSampler, SdkTracerProvider};

/// A fastrace reporter that counts the spans it is given and drops them.
struct CountingReporter {
    count: Arc<AtomicU64>,
}

impl fastrace::collector::Reporter for CountingReporter {
    fn report(&mut self, spans: Vec<fastrace::collector::SpanRecord>) {
        self.count.fetch_add(spans.len() as u64, Ordering::Relaxed);
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

/// Prints the delivered fraction of one span-pipeline benchmark function.
fn report_delivery(id: &str, created: u64, at_end: u64, after_flush: u64, extra: &str) {
    if created == 0 {
        return; // filtered out on the command line
    }
    eprintln!(
        "{id} delivered {:.2}% after flush ({after_flush} of {created} created); \
         {:.2}% at end of measurement ({at_end}){extra}",
        percent(after_flush, created),
        percent(at_end, created),
    );
}

// ---------------------------------------------------------------------------------
// One span, as each library starts and ends it.

/// fastrace properties are strings only, so the i64 and bool are given as static
/// strings (the cheapest form fastrace accepts; no formatting per span).
#[inline(always)]
fn fastrace_span() {
    let span = fastrace::Span::root("GET /user", fastrace::collector::SpanContext::random())
        .with_properties(|| {
            [
                ("http.method", "GET"),
                ("http.route", "/user"),
                ("http.status_code", "200"),
                ("cache.hit", "true"),
            ]
        });
    drop(span);
}

/// `fastrace::flush` hands the flush to a new thread and returns at once, so wait
/// until the reporter's count has stopped moving (unchanged for 250 ms, at most
/// 10 s). Spans still parked in the bench thread's unbounded pending queue are not
/// delivered by a flush: they stay in the backlog.
fn fastrace_flush_and_settle(count: &AtomicU64) -> u64 {
    fastrace::flush();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = count.load(Ordering::Relaxed);
    let mut stable_since = Instant::now();
    while Instant::now() < deadline && stable_since.elapsed() < Duration::from_millis(250) {
        std::thread::sleep(Duration::from_millis(10));
        let now = count.load(Ordering::Relaxed);
        if now != last {
            last = now;
            stable_since = Instant::now();
        }
    }
    last
}

fn tracewire_provider() -> (tracewire::TracerProvider, CountingExporter) {
    let exporter = CountingExporter::default();
    let provider = tracewire::TracerProvider::builder()
        .with_service_name("bench")
        .with_batch_exporter(exporter.clone())
        .build();
    (provider, exporter)
}

fn otel_provider() -> (SdkTracerProvider, OtelCountingExporter) {
    let exporter = OtelCountingExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter.clone())
        .build();
    (provider, exporter)
}

/// Shuts a tracewire pipeline down and prints what it delivered.
fn finish_tracewire(id: &str, provider: &tracewire::TracerProvider, e: &CountingExporter, n: u64) {
    let at_end = provider.stats().exported;
    // A tight loop drops what its queues cannot hold, so the shutdown reports an
    // error: the figures below say how much.
    let report = match provider.shutdown(Duration::from_secs(30)) {
        Ok(report) => report,
        Err(e) => {
            assert!(!e.is_timeout(), "tracewire shutdown: {e}");
            e.report()
        }
    };
    let s = provider.stats();
    assert_eq!(
        report.exported + report.dropped,
        s.ended,
        "{report:?} {s:?}"
    );
    let extra = format!(
        "; stats: started {} ended {} exported {} dropped {}; exporter saw {}",
        s.started,
        s.ended,
        s.exported,
        s.dropped,
        e.count.load(Ordering::Relaxed)
    );
    report_delivery(id, n, at_end, s.exported, &extra);
}

/// Shuts an opentelemetry_sdk pipeline down and prints what it delivered.
fn finish_otel(id: &str, provider: &SdkTracerProvider, e: &OtelCountingExporter, n: u64) {
    let at_end = e.count.load(Ordering::Relaxed);
    let _ = provider.force_flush();
    let _ = provider.shutdown();
    let after = e.count.load(Ordering::Relaxed);
    report_delivery(id, n, at_end, after, "");
}

// ---------------------------------------------------------------------------------

fn span_lifecycle(c: &mut Criterion) {
    let mut group = c.benchmark_group("span_lifecycle");

    {
        let (provider, exporter) = tracewire_provider();
        let tracer = provider.tracer("bench");
        let mut created = 0u64;
        group.bench_function("tracewire", |b| {
            b.iter(|| {
                created += 1;
                tracewire_span(&tracer);
            })
        });
        finish_tracewire("span_lifecycle/tracewire", &provider, &exporter, created);
    }

    {
        let (provider, exporter) = otel_provider();
        let tracer = provider.tracer("bench");
        let mut created = 0u64;
        group.bench_function("opentelemetry_sdk", |b| {
            b.iter(|| {
                created += 1;
                otel_span(&tracer);
            })
        });
        finish_otel(
            "span_lifecycle/opentelemetry_sdk",
            &provider,
            &exporter,
            created,
        );
    }

    {
        let count = Arc::new(AtomicU64::new(0));
        let mut created = 0u64;
        // Installed only when this function runs: fastrace's reporter is global.
        let mut installed = false;
        group.bench_function("fastrace", |b| {
            if !installed {
                fastrace::set_reporter(
                    CountingReporter {
                        count: Arc::clone(&count),
                    },
                    fastrace::collector::Config::default(),
                );
                installed = true;
            }
            b.iter(|| {
                created += 1;
                fastrace_span();
            })
        });
        let at_end = count.load(Ordering::Relaxed);
        let after = if installed {
            fastrace_flush_and_settle(&count)
        } else {
            at_end
        };
        report_delivery("span_lifecycle/fastrace", created, at_end, after, "");
    }

    group.finish();
}

fn span_unsampled(c: &mut Criterion) {
    let mut group = c.benchmark_group("span_unsampled");

    {
        let provider = tracewire::TracerProvider::builder()
            .with_sampler(AlwaysOff)
            .with_batch_exporter(CountingExporter::default())
            .build();
        let tracer = provider.tracer("bench");
        group.bench_function("tracewire", |b| {
            b.iter(|| {
                let span = tracer.start(black_box("unsampled"));
                span.end();
            })
        });
        provider
            .shutdown(Duration::from_secs(5))
            .expect("tracewire shutdown");
        let s = provider.stats();
        assert_eq!((s.started, s.exported), (0, 0), "unsampled spans recorded");
    }

    {
        let provider = SdkTracerProvider::builder()
            .with_sampler(OtelSampler::AlwaysOff)
            .with_batch_exporter(OtelCountingExporter::default())
            .build();
        let tracer = provider.tracer("bench");
        group.bench_function("opentelemetry_sdk", |b| {
            b.iter(|| {
                let mut span = tracer.start(black_box("unsampled"));
                span.end();
            })
        });
        let _ = provider.shutdown();
    }

    group.finish();
}

fn context_attach(c: &mut Criterion) {
    let mut group = c.benchmark_group("context_attach");

    {
        let (provider, _exporter) = tracewire_provider();
        let tracer = provider.tracer("bench");
        let ctx = tracewire::Context::new().with_span(tracer.start("parent"));
        group.bench_function("tracewire", |b| {
            b.iter(|| {
                let _g = ctx.clone().attach();
                black_box(&_g);
            })
        });
        // A borrowed enter: no clone, no reference count. It is closure-scoped
        // (`Context::in_scope`) because a guard borrowing the context could be
        // `mem::forget`-ed, leaving the thread's stack and the profiler's signal
        // handler pointing at a context that may then be freed.
        group.bench_function("tracewire_enter", |b| {
            b.iter(|| ctx.in_scope(|| black_box(())))
        });
        drop(ctx);
        let _ = provider.shutdown(Duration::from_secs(5));
    }

    {
        let (provider, _exporter) = otel_provider();
        let tracer = provider.tracer("bench");
        let cx = opentelemetry::Context::new().with_span(tracer.start("parent"));
        group.bench_function("opentelemetry_sdk", |b| {
            b.iter(|| {
                let _g = cx.clone().attach();
                black_box(&_g);
            })
        });
        drop(cx);
        let _ = provider.shutdown();
    }

    group.finish();
}

fn label_scope(c: &mut Criterion) {
    let mut group = c.benchmark_group("label_scope");

    {
        // pprof.Do(ctx, pprof.Labels(2 labels), f) under a parent carrying 1 label.
        let parent = tracewire::Context::new().with_labels(LabelSet::new([("service", "api")]));
        let set = LabelSet::new([("http-path", "/user"), ("worker", "purge")]);
        let _parent = parent.attach();
        group.bench_function("tracewire", |b| {
            b.iter(|| labels::with_labels(&set, || black_box(())))
        });
    }

    {
        // SetGoroutineLabels with a context whose label set was built beforehand.
        let ctx = tracewire::Context::new().with_labels(LabelSet::new([
            ("service", "api"),
            ("http-path", "/user"),
            ("worker", "purge"),
        ]));
        // Entered borrowed (`in_scope`), the fastest form; a clone attached with a
        // guard is `context_attach/tracewire`.
        group.bench_function("tracewire_prebuilt", |b| {
            b.iter(|| ctx.in_scope(|| black_box(())))
        });
    }

    group.finish();
}

// ---------------------------------------------------------------------------------
// Throughput with 1 and 2 producing threads.

/// Runs `iters` spans split over `threads` threads (each does `iters / threads`,
/// the first also the remainder) and returns the wall time from the moment all
/// threads are released until the last one finishes. Criterion divides it by
/// `iters`, so the figure is wall time per span and
/// `time(1 thread) / time(2 threads)` is the throughput ratio.
fn run_threads(
    iters: u64,
    threads: u64,
    created: &AtomicU64,
    span: impl Fn() + Send + Sync + Clone,
) -> Duration {
    let start_line = Barrier::new(threads as usize + 1);
    let elapsed = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let n = iters / threads + if i == 0 { iters % threads } else { 0 };
                let span = span.clone();
                let start_line = &start_line;
                s.spawn(move || {
                    start_line.wait();
                    for _ in 0..n {
                        span();
                    }
                })
            })
            .collect();
        start_line.wait();
        let start = Instant::now();
        for h in handles {
            h.join().expect("bench thread panicked");
        }
        start.elapsed()
    });
    created.fetch_add(iters, Ordering::Relaxed);
    elapsed
}

fn span_lifecycle_threads(c: &mut Criterion) {
    let mut group = c.benchmark_group("span_lifecycle_2_threads");

    for threads in [1u64, 2] {
        let id = format!(
            "tracewire_{threads}_thread{}",
            if threads > 1 { "s" } else { "" }
        );
        let (provider, exporter) = tracewire_provider();
        let tracer = provider.tracer("bench");
        let created = AtomicU64::new(0);
        group.bench_function(&id, |b: &mut Bencher| {
            b.iter_custom(|iters| run_threads(iters, threads, &created, || tracewire_span(&tracer)))
        });
        finish_tracewire(
            &format!("span_lifecycle_2_threads/{id}"),
            &provider,
            &exporter,
            created.load(Ordering::Relaxed),
        );
    }

    for threads in [1u64, 2] {
        let id = format!(
            "opentelemetry_sdk_{threads}_thread{}",
            if threads > 1 { "s" } else { "" }
        );
        let (provider, exporter) = otel_provider();
        let tracer = provider.tracer("bench");
        let created = AtomicU64::new(0);
        group.bench_function(&id, |b: &mut Bencher| {
            b.iter_custom(|iters| run_threads(iters, threads, &created, || otel_span(&tracer)))
        });
        finish_otel(
            &format!("span_lifecycle_2_threads/{id}"),
            &provider,
            &exporter,
            created.load(Ordering::Relaxed),
        );
    }

    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = span_lifecycle, span_unsampled, context_attach, label_scope, span_lifecycle_threads
}
criterion_main!(benches);
