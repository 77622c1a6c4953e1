//! The `tracing` bridge: `tracing` spans become tracewire spans with the right
//! parents both ways, fields become attributes and labels, and `#[instrument]`ed
//! futures carry their context and labels on every poll, on any worker thread.
#![cfg(feature = "tracing")]

use tracewire::bridge::tracing::TracewireLayer;
use tracewire::export::InMemoryExporter;
use tracewire::labels;
use tracewire::{Context, SpanKind, TracerProvider, Value};
use tracing::Instrument;
use tracing_subscriber::prelude::*;

fn setup() -> (
    TracerProvider,
    InMemoryExporter,
    impl tracing::Subscriber + Send + Sync,
) {
    let exporter = InMemoryExporter::new();
    let provider = TracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(TracewireLayer::new(provider.tracer("bridge")).with_label_fields(["worker"]));
    (provider, exporter, subscriber)
}

#[tracing::instrument(fields(worker = "purge"))]
async fn purge(rounds: u32) -> Vec<Option<String>> {
    let mut seen = Vec::new();
    for _ in 0..rounds {
        seen.push(labels::current().get("worker").map(str::to_owned));
        tokio::task::yield_now().await;
    }
    tracing::info!(rounds, "purged");
    seen
}

#[test]
fn instrumented_async_fn_has_its_labels_on_every_poll_on_both_workers() {
    let (_p, exporter, subscriber) = setup();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let _default = tracing::subscriber::set_default(subscriber);
    let dispatch = tracing::dispatcher::get_default(|d| d.clone());
    let results = rt.block_on(async {
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                tokio::spawn(tracing::instrument::WithSubscriber::with_subscriber(
                    purge(100),
                    dispatch.clone(),
                ))
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    });
    assert_eq!(results.len(), 400);
    assert!(results.iter().all(|l| l.as_deref() == Some("purge")));
    let spans = exporter.spans();
    assert_eq!(spans.len(), 4);
    let s = &spans[0];
    assert_eq!(s.name, "purge");
    assert_eq!(s.attribute("rounds"), Some(&Value::I64(100)));
    assert_eq!(s.attribute("worker"), Some(&Value::from("purge")));
    assert_eq!(s.events[0].name, "purged");
}

#[test]
fn tracewire_span_inside_tracing_span_is_its_child_and_vice_versa() {
    let (p, exporter, subscriber) = setup();
    let tracer = p.tracer("api");
    tracing::subscriber::with_default(subscriber, || {
        let outer = tracing::info_span!("outer");
        outer.in_scope(|| {
            tracer.in_span("middle", |_| {
                tracing::info_span!("inner").in_scope(|| {});
            });
        });
    });
    let spans = exporter.spans();
    let by = |n: &str| spans.iter().find(|s| s.name == n).unwrap().clone();
    let (outer, middle, inner) = (by("outer"), by("middle"), by("inner"));
    assert_eq!(middle.parent_span_id, outer.span_context.span_id());
    assert_eq!(inner.parent_span_id, middle.span_context.span_id());
    assert_eq!(inner.span_context.trace_id(), outer.span_context.trace_id());
    assert!(outer.is_root());
}

#[test]
fn explicit_parents_roots_kind_name_and_recorded_fields() {
    let (_p, exporter, subscriber) = setup();
    tracing::subscriber::with_default(subscriber, || {
        let a = tracing::info_span!("a");
        let b = tracing::info_span!(parent: &a, "b", otel.kind = "server", otel.name = "GET /x");
        let _g = b.enter();
        let c = tracing::info_span!(parent: None, "c", late = tracing::field::Empty);
        c.record("late", 42);
        drop(c);
        drop(_g);
        drop(b);
        drop(a);
    });
    let spans = exporter.spans();
    let by = |n: &str| spans.iter().find(|s| s.name == n).unwrap().clone();
    let (a, b, c) = (by("a"), by("GET /x"), by("c"));
    assert_eq!(b.parent_span_id, a.span_context.span_id());
    assert_eq!(b.kind, SpanKind::Server);
    assert!(c.is_root(), "parent: None starts a new trace");
    assert_ne!(c.span_context.trace_id(), a.span_context.trace_id());
    assert_eq!(c.attribute("late"), Some(&Value::I64(42)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawned_work_inside_an_instrumented_future_keeps_the_parent() {
    let (p, exporter, subscriber) = setup();
    let tracer = p.tracer("api");
    let dispatch = tracing::Dispatch::new(subscriber);
    let fut = async move {
        let handle = tracewire::spawn({
            let tracer = tracer.clone();
            async move { tracer.start("spawned").end() }
        });
        handle.await.unwrap();
        assert!(Context::current().has_span());
    }
    .instrument(tracing::dispatcher::with_default(&dispatch, || {
        tracing::info_span!("request")
    }));
    tracing::instrument::WithSubscriber::with_subscriber(fut, dispatch).await;
    let spans = exporter.spans();
    let request = spans.iter().find(|s| s.name == "request").unwrap();
    let spawned = spans.iter().find(|s| s.name == "spawned").unwrap();
    assert_eq!(spawned.parent_span_id, request.span_context.span_id());
}
