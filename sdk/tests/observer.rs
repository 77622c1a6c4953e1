//! `SpanObserver`: sees every sampled span start and end, by reference, with the
//! same span id at both ends; unsampled spans and disabled providers show nothing.

use std::sync::{Arc, Mutex};

use tracewire::export::{SpanObserver, SpanStart};
use tracewire::trace::{AlwaysOff, SpanData, SpanId, SpanKind};
use tracewire::TracerProvider;

#[derive(Debug, Default, Clone)]
struct Log(Arc<Mutex<Vec<String>>>);

impl SpanObserver for Log {
    fn on_start(&self, span: &SpanStart<'_>) {
        self.0.lock().unwrap().push(format!(
            "start {} {} parent={} {:?}",
            span.name,
            span.span_context.span_id(),
            span.parent_span_id != SpanId::INVALID,
            span.kind
        ));
    }
    fn on_end(&self, span: &SpanData) {
        self.0
            .lock()
            .unwrap()
            .push(format!("end {} {}", span.name, span.span_context.span_id()));
    }
}

#[test]
fn observers_see_sampled_spans_start_and_end_even_when_dropped_or_renamed() {
    let log = Log::default();
    let provider = TracerProvider::builder().with_observer(log.clone()).build();
    let tracer = provider.tracer("t");
    let (outer_id, inner_id) = tracer.in_span("outer", |cx| {
        let inner = tracer
            .span_builder("inner")
            .with_kind(SpanKind::Client)
            .start();
        let inner_id = inner.span_context().span_id();
        inner.update_name("renamed");
        drop(inner); // never ended explicitly
        (cx.span().span_context().span_id(), inner_id)
    });
    assert_eq!(
        *log.0.lock().unwrap(),
        [
            format!("start outer {outer_id} parent=false Internal"),
            format!("start inner {inner_id} parent=true Client"),
            format!("end renamed {inner_id}"),
            format!("end outer {outer_id}"),
        ]
    );
}

#[test]
fn unsampled_spans_and_disabled_providers_are_not_observed() {
    let log = Log::default();
    let provider = TracerProvider::builder()
        .with_sampler(AlwaysOff)
        .with_observer(log.clone())
        .build();
    provider.tracer("t").in_span("dropped", |_| {});
    let on = TracerProvider::builder().with_observer(log.clone()).build();
    on.set_enabled(false);
    on.tracer("t").in_span("disabled", |_| {});
    assert!(log.0.lock().unwrap().is_empty());
}
