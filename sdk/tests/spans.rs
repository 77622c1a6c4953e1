//! The span API: parents, kinds, attributes, events, links, status, names, limits,
//! ending, samplers and runtime on/off, observed through the in-memory exporter.

use std::time::{Duration, SystemTime};

use tracewire::export::InMemoryExporter;
use tracewire::trace::{AlwaysOff, Link, ParentBased, SpanLimits, TraceIdRatio};
use tracewire::{
    Context, ContextExt, KeyValue, SamplingState, Span, SpanContext, SpanId, SpanKind, Status,
    TraceFlags, TraceId, TraceState, TracerProvider, Value,
};

fn pipeline() -> (TracerProvider, InMemoryExporter) {
    let exporter = InMemoryExporter::new();
    let provider = TracerProvider::builder()
        .with_service_name("svc")
        .with_simple_exporter(exporter.clone())
        .build();
    (provider, exporter)
}

#[test]
fn child_span_takes_trace_and_parent_from_the_current_context() {
    let (p, exp) = pipeline();
    let t = p.tracer("test");
    let root = t.start("root");
    let root_sc = root.span_context().clone();
    let _g = Context::current_with_span(root).attach();
    let child = t.span_builder("child").with_kind(SpanKind::Client).start();
    assert_eq!(child.span_context().trace_id(), root_sc.trace_id());
    child.end();
    let spans = exp.spans();
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].parent_span_id, root_sc.span_id());
    assert_eq!(spans[0].kind, SpanKind::Client);
    assert!(!spans[0].parent_is_remote);
    assert_eq!(spans[0].scope, "test");
    assert_eq!(exp.resource().unwrap().service_name, "svc");
}

#[test]
fn root_spans_get_random_valid_ids_and_the_random_flag() {
    let (p, _exp) = pipeline();
    let s = p.tracer("t").span_builder("r").root().start();
    let sc = s.span_context();
    assert!(sc.is_valid() && sc.is_sampled() && sc.flags().is_random());
    assert!(!sc.is_remote());
}

#[test]
fn remote_parent_keeps_trace_id_flags_and_trace_state() {
    let (p, exp) = pipeline();
    let remote = SpanContext::new(
        TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
        SpanId::from_hex("00f067aa0ba902b7").unwrap(),
        TraceFlags::SAMPLED.with_random(true),
        true,
        "congo=t61rcWkgMzE".parse::<TraceState>().unwrap(),
    );
    let s = p
        .tracer("t")
        .span_builder("server")
        .with_kind(SpanKind::Server)
        .with_parent_span_context(remote.clone())
        .start();
    assert_eq!(s.span_context().trace_id(), remote.trace_id());
    assert!(s.span_context().flags().is_random());
    assert_eq!(
        s.span_context().trace_state().get("congo"),
        Some("t61rcWkgMzE")
    );
    s.end();
    let d = &exp.spans()[0];
    assert_eq!(d.parent_span_id, remote.span_id());
    assert!(d.parent_is_remote);
}

#[test]
fn span_records_attributes_events_links_status_and_rename() {
    let (p, exp) = pipeline();
    let t = p.tracer("t");
    let linked = t.start("other");
    let link_sc = linked.span_context().clone();
    let s = t
        .span_builder("first")
        .with_attribute(KeyValue::new("a", "1"))
        .with_link(Link::new(
            link_sc.clone(),
            vec![KeyValue::new("why", "batch")],
        ))
        .start();
    s.set_attribute("n", 7);
    s.set_attribute("a", "2"); // replaces
    s.set_attributes([KeyValue::new("f", 1.5), KeyValue::new("b", true)]);
    s.set_attribute("arr", vec![1i64, 2]);
    s.add_event("cache miss", vec![KeyValue::new("key", "user:1")]);
    s.update_name("second");
    s.set_status(Status::error("boom"));
    s.end();
    s.set_attribute("late", 1); // after end: ignored
    let d = exp.find(s.span_context().span_id()).unwrap();
    assert_eq!(d.name, "second");
    assert_eq!(d.attribute("a"), Some(&Value::from("2")));
    assert_eq!(d.attribute("n"), Some(&Value::I64(7)));
    assert_eq!(d.attribute("f"), Some(&Value::F64(1.5)));
    assert_eq!(d.attribute("b"), Some(&Value::Bool(true)));
    assert_eq!(d.attribute("arr"), Some(&Value::from(vec![1i64, 2])));
    assert_eq!(d.attribute("late"), None);
    assert_eq!(d.events.len(), 1);
    assert_eq!(d.events[0].name, "cache miss");
    assert_eq!(d.links[0].span_context, link_sc);
    assert_eq!(d.status, Status::error("boom"));
    assert!(d.end_time >= d.start_time);
}

#[test]
fn status_ok_is_final_and_unset_is_ignored() {
    let (p, exp) = pipeline();
    let s = p.tracer("t").start("s");
    s.set_status(Status::error("first"));
    s.set_status(Status::Unset);
    s.set_status(Status::Ok);
    s.set_status(Status::error("later"));
    s.end();
    assert_eq!(exp.spans()[0].status, Status::Ok);
}

#[test]
fn limits_drop_and_count_what_goes_over() {
    let exporter = InMemoryExporter::new();
    let p = TracerProvider::builder()
        .with_span_limits(SpanLimits {
            max_attributes_per_span: 2,
            max_events_per_span: 1,
            max_links_per_span: 1,
            max_attributes_per_event: 1,
            max_attributes_per_link: 1,
            max_attribute_value_length: 4,
        })
        .with_simple_exporter(exporter.clone())
        .build();
    let t = p.tracer("t");
    let other = t.start("o").span_context().clone();
    let s = t
        .span_builder("s")
        .with_attributes((0..3).map(|i| KeyValue::new(format!("k{i}"), i)))
        .with_link(Link::new(
            other.clone(),
            vec![KeyValue::new("x", 1), KeyValue::new("y", 2)],
        ))
        .with_link(Link::new(other, vec![]))
        .start();
    s.set_attribute("k0", "héllo wörld"); // replace, truncated
    s.set_attribute("k9", 1); // over the limit
    s.add_event("e1", vec![KeyValue::new("a", 1), KeyValue::new("b", 2)]);
    s.add_event("e2", vec![]);
    s.end();
    let d = exporter.find(s.span_context().span_id()).unwrap();
    assert_eq!(d.attributes.len(), 2);
    assert_eq!(
        d.attribute("k0"),
        Some(&Value::from("hél")),
        "cut on a char boundary"
    );
    assert_eq!(d.dropped_attributes_count, 2);
    assert_eq!(d.events.len(), 1);
    assert_eq!(d.dropped_events_count, 1);
    assert_eq!(d.events[0].dropped_attributes_count, 1);
    assert_eq!(d.links.len(), 1);
    assert_eq!(d.dropped_links_count, 1);
    assert_eq!(d.links[0].dropped_attributes_count, 1);
}

#[test]
fn span_ends_when_its_last_handle_drops() {
    let (p, exp) = pipeline();
    let s = p.tracer("t").start("dropped");
    let ctx = Context::new().with_span(s.clone());
    drop(s);
    assert!(exp.is_empty(), "the context still holds the span");
    drop(ctx);
    assert_eq!(exp.len(), 1);
    assert_eq!(exp.spans()[0].name, "dropped");
}

#[test]
fn end_is_idempotent_and_explicit_timestamps_are_kept() {
    let (p, exp) = pipeline();
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let s = p
        .tracer("t")
        .span_builder("s")
        .with_start_time(start)
        .start();
    s.end_with_timestamp(start + Duration::from_millis(5));
    s.end();
    drop(s);
    let spans = exp.spans();
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].duration(), Duration::from_millis(5));
}

#[test]
fn unsampled_spans_record_nothing_but_propagate() {
    let exporter = InMemoryExporter::new();
    let p = TracerProvider::builder()
        .with_sampler(ParentBased::new(AlwaysOff))
        .with_simple_exporter(exporter.clone())
        .build();
    let t = p.tracer("t");
    let root = t.start("root");
    assert!(!root.is_recording());
    assert!(root.span_context().is_valid());
    assert!(!root.span_context().is_sampled());
    let _g = Context::current_with_span(root.clone()).attach();
    let child = t.start("child");
    assert_eq!(
        child.span_context().trace_id(),
        root.span_context().trace_id()
    );
    child.set_attribute("ignored", 1);
    child.end();
    assert!(exporter.is_empty());
    assert_eq!(p.stats().started, 0);
}

#[test]
fn ratio_sampler_in_the_provider_samples_roughly_the_ratio() {
    let exporter = InMemoryExporter::new();
    let p = TracerProvider::builder()
        .with_sampler(ParentBased::new(TraceIdRatio::new(0.1)))
        .with_simple_exporter(exporter.clone())
        .build();
    let t = p.tracer("t");
    for _ in 0..5000 {
        t.start("s").end();
    }
    let n = exporter.len();
    assert!((350..650).contains(&n), "sampled {n} of 5000");
}

#[test]
fn collection_can_be_stopped_and_resumed_at_runtime() {
    let (p, exp) = pipeline();
    let t = p.tracer("t");
    let parent = t.start("parent");
    let parent_sc = parent.span_context().clone();
    let _g = Context::current_with_span(parent).attach();
    p.set_enabled(false);
    assert!(!p.is_enabled());
    let off = t.start("while-off");
    assert!(!off.is_recording());
    assert_eq!(
        off.span_context(),
        &parent_sc,
        "propagates the parent unchanged"
    );
    off.end();
    p.set_enabled(true);
    t.start("while-on").end();
    let names: Vec<_> = exp.spans().into_iter().map(|s| s.name).collect();
    assert_eq!(names, vec!["while-on"]);
}

#[test]
fn in_span_makes_the_span_current_and_ends_it() {
    let (p, exp) = pipeline();
    let t = p.tracer("t");
    let id = t.in_span("outer", |cx| {
        assert_eq!(Span::current().span_context(), cx.span().span_context());
        t.in_span("inner", |_| {});
        cx.span().span_context().span_id()
    });
    let spans = exp.spans();
    assert_eq!(spans.len(), 2);
    assert_eq!(spans[0].name, "inner");
    assert_eq!(spans[0].parent_span_id, id);
    assert!(spans[1].is_root());
    assert!(!Context::current().has_span());
}

#[test]
fn record_error_adds_exception_event_and_error_status() {
    let (p, exp) = pipeline();
    let s = p.tracer("t").start("s");
    let err = std::io::Error::other("disk full");
    s.record_error(&err);
    s.end();
    let d = &exp.spans()[0];
    assert_eq!(d.events[0].name, "exception");
    assert_eq!(d.status, Status::error("disk full"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_started_in_spawned_tasks_get_the_right_parent() {
    let (p, exp) = pipeline();
    let t = p.tracer("t");
    let root = t.start("request");
    let root_id = root.span_context().span_id();
    let t2 = t.clone();
    async move {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let t = t2.clone();
                tracewire::spawn(async move {
                    tokio::task::yield_now().await;
                    t.start(format!("work-{i}")).end();
                })
            })
            .collect();
        for h in handles {
            h.await.unwrap();
        }
    }
    .in_context(Context::new().with_span(root))
    .await;
    let spans = exp.spans();
    let work: Vec<_> = spans
        .iter()
        .filter(|s| s.name.starts_with("work-"))
        .collect();
    assert_eq!(work.len(), 4);
    assert!(work.iter().all(|s| s.parent_span_id == root_id));
    assert_eq!(
        spans.last().unwrap().name,
        "request",
        "root ended when its context dropped"
    );
}

#[test]
fn global_tracer_is_noop_until_a_provider_is_installed() {
    let s = tracewire::global::tracer("lib").start("nothing");
    assert!(!s.is_recording());
    let (p, exp) = pipeline();
    tracewire::global::set_tracer_provider(p);
    tracewire::global::tracer("lib").start("something").end();
    assert_eq!(exp.len(), 1);
    tracewire::global::shutdown_tracer_provider(Duration::from_secs(1)).unwrap();
    tracewire::global::tracer("lib").start("after").end();
    assert_eq!(exp.len(), 1);
}

fn remote_parent(state: SamplingState) -> SpanContext {
    SpanContext::new(
        TraceId::from_u128(0x80f1_98ee_5634_3ba8_64fe_8b2a_57d3_eff7),
        SpanId::from_u64(0xe457_b5a2_e4d8_6bd1),
        TraceFlags::NONE,
        true,
        TraceState::NONE,
    )
    .with_sampling_state(state)
}

#[test]
fn a_debug_parent_forces_sampling_and_passes_debug_to_every_child() {
    for always_off in [true, false] {
        let exporter = InMemoryExporter::new();
        let builder = TracerProvider::builder().with_simple_exporter(exporter.clone());
        let provider = if always_off {
            builder.with_sampler(AlwaysOff)
        } else {
            builder.with_sampler(ParentBased::new(AlwaysOff).with_remote_sampled(AlwaysOff))
        }
        .build();
        let tracer = provider.tracer("t");
        for parent in [
            remote_parent(SamplingState::Debug),
            SpanContext::sampling_only(SamplingState::Debug),
        ] {
            let server = tracer
                .span_builder("server")
                .with_parent_span_context(parent.clone())
                .start();
            assert_eq!(server.span_context().sampling_state(), SamplingState::Debug);
            let cx = Context::new().with_span(server);
            let child = tracer.start_with_context("child", &cx);
            assert_eq!(child.span_context().sampling_state(), SamplingState::Debug);
            child.end();
            cx.span().end();
        }
        let spans = exporter.spans();
        assert_eq!(spans.len(), 4);
        assert!(spans.iter().all(|s| s.span_context.is_debug()));
    }
}

#[test]
fn a_deferred_parent_is_decided_by_the_root_sampler_in_the_callers_trace() {
    for (root_samples, sampled) in [(true, true), (false, false)] {
        let builder = TracerProvider::builder();
        let provider = if root_samples {
            builder.with_sampler(ParentBased::new(tracewire::trace::AlwaysOn))
        } else {
            builder.with_sampler(ParentBased::new(AlwaysOff))
        }
        .build();
        let parent = remote_parent(SamplingState::Deferred);
        let span = provider
            .tracer("t")
            .span_builder("server")
            .with_parent_span_context(parent.clone())
            .start();
        let sc = span.span_context();
        assert_eq!(sc.trace_id(), parent.trace_id());
        assert_eq!(sc.is_sampled(), sampled);
        assert_ne!(sc.sampling_state(), SamplingState::Deferred, "decided here");
    }
}

#[test]
fn a_decision_without_ids_starts_a_new_trace_that_follows_it() {
    let (provider, exporter) = pipeline();
    let tracer = provider.tracer("t");
    for (decision, sampled) in [
        (SamplingState::NotSampled, false),
        (SamplingState::Sampled, true),
    ] {
        let span = tracer
            .span_builder("server")
            .with_parent_span_context(SpanContext::sampling_only(decision))
            .start();
        assert!(span.span_context().is_valid());
        assert_eq!(span.span_context().is_sampled(), sampled, "{decision:?}");
        span.end();
    }
    let spans = exporter.spans();
    assert_eq!(spans.len(), 1);
    assert!(spans[0].is_root());
}
