//! The API a user reaches for: recording on the current span without a clone,
//! starting a span and making it current in one call (closure and future),
//! `set_attribute(key, value)`, `with_*` builder setters, the three forms of
//! `with_labels`, and a future extension trait that does not clash with
//! `futures::FutureExt`.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::{Duration, SystemTime};

use futures_util::FutureExt as _;
use tracewire::export::InMemoryExporter;
use tracewire::labels::{self, LabelSet};
use tracewire::trace::{AlwaysOff, ParentBased};
use tracewire::{
    Context, ContextExt, KeyValue, Span, SpanContext, SpanId, SpanKind, TraceFlags, TraceId,
    TraceState, TracerProvider, Value,
};

fn pipeline() -> (TracerProvider, InMemoryExporter) {
    let exporter = InMemoryExporter::new();
    let provider = TracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    (provider, exporter)
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| &kv.value)
}

/// Polls `fut` once with a no-op waker.
fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    let mut cx = TaskContext::from_waker(Waker::noop());
    Pin::new(fut).poll(&mut cx)
}

// Span::with_current

#[test]
fn with_current_records_on_the_current_span() {
    let (p, exp) = pipeline();
    let span = p.tracer("t").start("op");
    let id = span.span_context().span_id();
    let ctx = Context::new().with_span(span);
    ctx.in_scope(|| {
        let seen = Span::with_current(|s| {
            s.set_attribute("http.route", "/user");
            s.span_context().span_id()
        });
        assert_eq!(seen, id);
    });
    drop(ctx);
    let spans = exp.spans();
    assert_eq!(spans.len(), 1);
    assert_eq!(
        attribute(&spans[0].attributes, "http.route"),
        Some(&Value::from("/user"))
    );
}

#[test]
fn with_current_without_a_span_sees_the_invalid_non_recording_span() {
    let recording = Span::with_current(|s| {
        s.set_attribute("ignored", 1);
        (s.is_recording(), s.span_context().is_valid())
    });
    assert_eq!(recording, (false, false));
}

#[test]
fn with_current_may_start_spans_and_read_the_context() {
    let (p, exp) = pipeline();
    let t = p.tracer("t");
    t.in_span("parent", |cx| {
        let parent_id = cx.span().span_context().span_id();
        Span::with_current(|s| {
            assert_eq!(
                Context::current().span().span_context().span_id(),
                parent_id
            );
            let child = t.start("child");
            assert_eq!(child.span_context().trace_id(), s.span_context().trace_id());
        });
    });
    let spans = exp.spans();
    let child = spans.iter().find(|s| s.name == "child").unwrap();
    let parent = spans.iter().find(|s| s.name == "parent").unwrap();
    assert_eq!(child.parent_span_id, parent.span_context.span_id());
}

#[test]
fn attaching_inside_with_current_panics_and_leaves_the_context_as_it_was() {
    let (p, _exp) = pipeline();
    let outer = Context::new().with_span(p.tracer("t").start("outer"));
    let outer_id = outer.span().span_context().span_id();
    let _g = outer.attach();
    let r = catch_unwind(|| {
        Span::with_current(|_| {
            let _inner = Context::new().attach();
        })
    });
    assert!(r.is_err(), "attaching while the stack is borrowed panics");
    assert_eq!(Span::current().span_context().span_id(), outer_id);
    // The thread's stack still works.
    let other = Context::new().with_value(7u8);
    other.in_scope(|| assert_eq!(Context::current().get::<u8>(), Some(&7)));
    assert_eq!(Span::current().span_context().span_id(), outer_id);
}

// Tracer::in_span and Tracer::in_span_async

#[test]
fn in_span_makes_the_span_current_and_ends_it_on_return() {
    let (p, exp) = pipeline();
    let out = p.tracer("t").in_span("op", |cx| {
        assert_eq!(
            Span::current().span_context().span_id(),
            cx.span().span_context().span_id()
        );
        42
    });
    assert_eq!(out, 42);
    assert!(!Span::current().span_context().is_valid(), "restored");
    assert_eq!(exp.spans().len(), 1);
}

#[test]
fn in_span_ends_the_span_when_the_closure_panics_even_if_it_kept_a_handle() {
    let (p, exp) = pipeline();
    let mut kept = None;
    let r = catch_unwind(AssertUnwindSafe(|| {
        p.tracer("t").in_span("boom", |cx| {
            kept = Some(cx.span().clone());
            panic!("boom");
        })
    }));
    assert!(r.is_err());
    let kept = kept.unwrap();
    assert!(!kept.is_recording(), "ended although a handle is alive");
    let spans = exp.spans();
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].name, "boom");
    assert!(!Span::current().span_context().is_valid(), "restored");
}

#[test]
fn in_span_async_polls_inside_the_span_and_ends_it_on_completion() {
    let (p, exp) = pipeline();
    let t = p.tracer("t");
    let mut fut = Box::pin(t.in_span_async("fetch", |cx| async move {
        let id = cx.span().span_context().span_id();
        assert_eq!(Span::current().span_context().span_id(), id);
        tokio::task::yield_now().await;
        Span::with_current(|s| s.set_attribute("http.route", "/user"));
        id
    }));
    let span = fut.span().clone();
    assert!(
        !Span::current().span_context().is_valid(),
        "only while polled"
    );
    let id = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(fut.as_mut());
    assert_eq!(id, span.span_context().span_id());
    assert!(!span.is_recording(), "ended on completion, before the drop");
    let spans = exp.spans();
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].span_context.span_id(), id);
    assert_eq!(
        attribute(&spans[0].attributes, "http.route"),
        Some(&Value::from("/user"))
    );
}

#[test]
fn in_span_async_ends_the_span_when_the_future_is_dropped_early() {
    let (p, exp) = pipeline();
    let t = p.tracer("t");
    let mut fut = Box::pin(t.in_span_async("cancelled", |_cx| std::future::pending::<()>()));
    assert!(poll_once(&mut fut).is_pending());
    assert!(exp.is_empty());
    drop(fut);
    let spans = exp.spans();
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].name, "cancelled");
}

#[test]
fn in_span_async_is_a_child_of_the_callers_context() {
    let (p, exp) = pipeline();
    let t = p.tracer("t");
    let parent = t.start("parent");
    let parent_sc = parent.span_context().clone();
    let mut fut = Box::pin(
        Context::new()
            .with_span(parent)
            .in_scope(|| t.in_span_async("child", |_cx| async {})),
    );
    // Polled by hand: the simple exporter exports inside `futures_executor`,
    // which cannot run inside `block_on`.
    assert!(poll_once(&mut fut).is_ready());
    let child = exp.spans().into_iter().find(|s| s.name == "child").unwrap();
    assert_eq!(child.parent_span_id, parent_sc.span_id());
    assert_eq!(child.span_context.trace_id(), parent_sc.trace_id());
}

// Span::set_attribute(key, value)

#[test]
fn set_attribute_takes_a_key_and_a_value() {
    let (p, exp) = pipeline();
    let span = p.tracer("t").start("op");
    span.set_attribute("http.route", "/user");
    span.set_attribute(String::from("http.response.status_code"), 200);
    span.set_attribute("cache.hit", false);
    span.set_attribute("http.route", "/user/:id"); // replaces
    span.set_attributes([KeyValue::new("kv.form", 1.5)]);
    span.end();
    let a = &exp.spans()[0].attributes;
    assert_eq!(a.len(), 4);
    assert_eq!(attribute(a, "http.route"), Some(&Value::from("/user/:id")));
    assert_eq!(
        attribute(a, "http.response.status_code"),
        Some(&Value::I64(200))
    );
    assert_eq!(attribute(a, "cache.hit"), Some(&Value::Bool(false)));
    assert_eq!(attribute(a, "kv.form"), Some(&Value::F64(1.5)));
}

// with_* builder setters

#[test]
fn span_builder_setters_are_named_with() {
    let (p, exp) = pipeline();
    let remote = SpanContext::new(
        TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
        SpanId::from_hex("00f067aa0ba902b7").unwrap(),
        TraceFlags::SAMPLED,
        true,
        TraceState::NONE,
    );
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    p.tracer("t")
        .span_builder("op")
        .with_kind(SpanKind::Server)
        .with_parent_span_context(remote.clone())
        .with_attribute(KeyValue::new("a", 1))
        .with_attributes([KeyValue::new("b", 2)])
        .with_start_time(start)
        .start()
        .end();
    let s = &exp.spans()[0];
    assert_eq!(s.kind, SpanKind::Server);
    assert_eq!(s.parent_span_id, remote.span_id());
    assert!(s.parent_is_remote);
    assert_eq!(s.start_time, start);
    assert_eq!(s.attributes.len(), 2);
}

#[test]
fn parent_based_setters_are_named_with() {
    let exporter = InMemoryExporter::new();
    let p = TracerProvider::builder()
        .with_sampler(ParentBased::new(AlwaysOff).with_remote_sampled(AlwaysOff))
        .with_simple_exporter(exporter.clone())
        .build();
    let remote = SpanContext::new(
        TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
        SpanId::from_hex("00f067aa0ba902b7").unwrap(),
        TraceFlags::SAMPLED,
        true,
        TraceState::NONE,
    );
    let s = p
        .tracer("t")
        .span_builder("op")
        .with_parent_span_context(remote)
        .start();
    assert!(
        !s.span_context().is_sampled(),
        "the remote_sampled sampler decided"
    );
}

#[cfg(feature = "profile")]
#[test]
fn profiler_builder_setters_are_named_with() {
    // Only configures: starting a CPU profile here would race the profiler tests.
    let b = tracewire::profile::Profiler::builder()
        .with_frequency(250)
        .with_span_ids(tracewire::profile::SpanIds::None);
    assert!(format!("{b:?}").contains("250"), "{b:?}");
}

// The three with_labels

#[test]
fn the_three_with_labels_take_a_set_or_a_reference_and_merge_alike() {
    let set = LabelSet::new([("job", "purge")]);
    let by_ref = labels::with_labels(&set, labels::current);
    let by_value = labels::with_labels(set.clone(), labels::current);
    let via_context = Context::current().with_labels(set.clone()).labels().clone();
    let fut_ref = futures_executor::block_on(async { labels::current() }.with_labels(&set));
    let fut_value =
        futures_executor::block_on(async { labels::current() }.with_labels(set.clone()));
    for got in [&by_ref, &by_value, &via_context, &fut_ref, &fut_value] {
        assert_eq!(got.get("job"), Some("purge"));
    }
    assert!(labels::current().is_empty());
}

#[test]
fn future_with_labels_merges_over_the_callers_labels() {
    let outer = Context::new().with_labels(LabelSet::new([("a", "1"), ("b", "1")]));
    let fut =
        outer.in_scope(|| async { labels::current() }.with_labels(LabelSet::new([("b", "2")])));
    let got = futures_executor::block_on(fut);
    assert_eq!((got.get("a"), got.get("b")), (Some("1"), Some("2")));
}

// ContextExt next to futures::FutureExt

#[test]
fn context_ext_and_futures_future_ext_are_both_usable_in_one_scope() {
    let ctx = Context::new().with_value(5u32);
    // `map` from futures_util::FutureExt, `in_context` from tracewire::ContextExt.
    let fut = async { Context::current().get::<u32>().copied() }
        .map(|v| v.map(|v| v * 2))
        .in_context(ctx);
    assert_eq!(futures_executor::block_on(fut), Some(10));
}

#[test]
#[allow(deprecated)]
fn the_deprecated_future_ext_name_still_works() {
    use tracewire::FutureExt as OldName;
    let ctx = Context::new().with_value(3u8);
    let fut = OldName::in_context(async { Context::current().get::<u8>().copied() }, ctx);
    assert_eq!(futures_executor::block_on(fut), Some(3));
}
