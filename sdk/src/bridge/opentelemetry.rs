//! OpenTelemetry interop (feature `opentelemetry`): span contexts converted both
//! ways, and [`OtelExporter`], which sends tracewire spans through any
//! `opentelemetry_sdk` span exporter — e.g. OTLP to an OpenTelemetry collector.
//!
//! ```
//! use opentelemetry_sdk::trace::InMemorySpanExporter;
//! use tracewire::bridge::opentelemetry::OtelExporter;
//! use tracewire::TracerProvider;
//!
//! let otel = InMemorySpanExporter::default();
//! let provider = TracerProvider::builder()
//!     .with_service_name("checkout")
//!     .with_simple_exporter(OtelExporter::new(otel.clone()))
//!     .build();
//! provider.tracer("app").start("GET /cart").end();
//! assert_eq!(otel.get_finished_spans().unwrap()[0].name, "GET /cart");
//! ```

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use opentelemetry::trace as ot;
use opentelemetry_sdk::trace as sdk;

use crate::export::{ExportError, SpanExporter};
use crate::trace::{
    Array, Event, KeyValue, Link, Resource, SpanContext, SpanData, SpanId, SpanKind, Status,
    TraceFlags, TraceId, TraceState, Value,
};

impl From<&SpanContext> for ot::SpanContext {
    fn from(sc: &SpanContext) -> Self {
        let state = ot::TraceState::from_key_value(sc.trace_state().iter()).unwrap_or_default();
        ot::SpanContext::new(
            ot::TraceId::from_bytes(sc.trace_id().to_bytes()),
            ot::SpanId::from_bytes(sc.span_id().to_bytes()),
            ot::TraceFlags::new(sc.flags().bits()),
            sc.is_remote(),
            state,
        )
    }
}

impl From<&ot::SpanContext> for SpanContext {
    fn from(sc: &ot::SpanContext) -> Self {
        let header = sc.trace_state().header();
        let state = if header.is_empty() {
            TraceState::NONE
        } else {
            header.parse().unwrap_or_default()
        };
        SpanContext::new(
            TraceId::from_bytes(sc.trace_id().to_bytes()),
            SpanId::from_bytes(sc.span_id().to_bytes()),
            TraceFlags::new(sc.trace_flags().to_u8()),
            sc.is_remote(),
            state,
        )
    }
}

fn value(v: &Value) -> opentelemetry::Value {
    use opentelemetry::{Array as OA, StringValue, Value as OV};
    let s = |s: &Cow<'static, str>| StringValue::from(s.clone().into_owned());
    match v {
        Value::String(x) => OV::String(s(x)),
        Value::Bool(b) => OV::Bool(*b),
        Value::I64(i) => OV::I64(*i),
        Value::F64(f) => OV::F64(*f),
        Value::Array(Array::String(a)) => OV::Array(OA::String(a.iter().map(s).collect())),
        Value::Array(Array::Bool(a)) => OV::Array(OA::Bool(a.clone())),
        Value::Array(Array::I64(a)) => OV::Array(OA::I64(a.clone())),
        Value::Array(Array::F64(a)) => OV::Array(OA::F64(a.clone())),
    }
}

fn attributes(kvs: &[KeyValue]) -> Vec<opentelemetry::KeyValue> {
    kvs.iter()
        .map(|kv| opentelemetry::KeyValue::new(kv.key.clone(), value(&kv.value)))
        .collect()
}

fn event(e: &Event) -> ot::Event {
    let mut out = ot::Event::new(
        e.name.clone(),
        e.timestamp,
        attributes(&e.attributes),
        e.dropped_attributes_count,
    );
    out.dropped_attributes_count = e.dropped_attributes_count;
    out
}

fn link(l: &Link) -> ot::Link {
    ot::Link::new(
        (&l.span_context).into(),
        attributes(&l.attributes),
        l.dropped_attributes_count,
    )
}

/// A tracewire span as `opentelemetry_sdk` span data.
pub fn to_otel(span: &SpanData) -> sdk::SpanData {
    sdk::SpanData {
        span_context: (&span.span_context).into(),
        parent_span_id: ot::SpanId::from_bytes(span.parent_span_id.to_bytes()),
        parent_span_is_remote: span.parent_is_remote,
        span_kind: match span.kind {
            SpanKind::Internal => ot::SpanKind::Internal,
            SpanKind::Server => ot::SpanKind::Server,
            SpanKind::Client => ot::SpanKind::Client,
            SpanKind::Producer => ot::SpanKind::Producer,
            SpanKind::Consumer => ot::SpanKind::Consumer,
        },
        name: span.name.clone(),
        start_time: span.start_time,
        end_time: span.end_time,
        attributes: attributes(&span.attributes),
        dropped_attributes_count: span.dropped_attributes_count,
        events: {
            let mut events = sdk::SpanEvents::default();
            events.events = span.events.iter().map(event).collect();
            events.dropped_count = span.dropped_events_count;
            events
        },
        links: {
            let mut links = sdk::SpanLinks::default();
            links.links = span.links.iter().map(link).collect();
            links.dropped_count = span.dropped_links_count;
            links
        },
        status: match &span.status {
            Status::Unset => ot::Status::Unset,
            Status::Ok => ot::Status::Ok,
            Status::Error { message } => ot::Status::Error {
                description: message.clone(),
            },
        },
        instrumentation_scope: opentelemetry::InstrumentationScope::builder(span.scope.clone())
            .build(),
    }
}

/// Sends tracewire spans through an `opentelemetry_sdk` span exporter (OTLP,
/// stdout, in-memory, ...). Put it behind tracewire's batch processor like any
/// exporter.
pub struct OtelExporter<E> {
    inner: E,
}

impl<E> OtelExporter<E> {
    /// Wraps `exporter`.
    pub fn new(exporter: E) -> Self {
        OtelExporter { inner: exporter }
    }
    /// The wrapped exporter.
    pub fn get_ref(&self) -> &E {
        &self.inner
    }
}

impl<E> fmt::Debug for OtelExporter<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtelExporter")
            .field("inner", &std::any::type_name::<E>())
            .finish()
    }
}

impl<E: sdk::SpanExporter + 'static> SpanExporter for OtelExporter<E> {
    async fn export(&mut self, batch: &[SpanData]) -> Result<(), ExportError> {
        let spans = batch.iter().map(to_otel).collect();
        self.inner.export(spans).await.map_err(ExportError::new)
    }

    async fn shutdown(&mut self) -> Result<(), ExportError> {
        self.inner
            .shutdown_with_timeout(Duration::from_secs(5))
            .map_err(ExportError::new)
    }

    fn set_resource(&mut self, resource: &Resource) {
        let r = opentelemetry_sdk::Resource::builder()
            .with_service_name(resource.service_name.clone().into_owned())
            .with_attributes(attributes(&resource.attributes))
            .build();
        self.inner.set_resource(&r);
    }
}
