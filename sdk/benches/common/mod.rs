//! What the span benches share: counting exporters and the span each library
//! starts and ends (a root "GET /user" with 4 attributes).
#![allow(dead_code)] // each bench uses its own part

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use opentelemetry::trace::{Span as _, Tracer as _};
use opentelemetry_sdk::error::OTelSdkResult;
use tracewire::export::{ExportError, SpanExporter};
use tracewire::trace::SpanData;

/// A tracewire exporter that counts the spans it is given and drops them.
#[derive(Clone, Default)]
pub struct CountingExporter {
    pub count: Arc<AtomicU64>,
}

impl SpanExporter for CountingExporter {
    fn export(
        &mut self,
        batch: &[SpanData],
    ) -> impl std::future::Future<Output = Result<(), ExportError>> {
        self.count.fetch_add(batch.len() as u64, Ordering::Relaxed);
        async { Ok(()) }
    }
}

/// An opentelemetry_sdk exporter that counts the spans it is given and drops them.
#[derive(Clone, Debug, Default)]
pub struct OtelCountingExporter {
    pub count: Arc<AtomicU64>,
}

impl opentelemetry_sdk::trace::SpanExporter for OtelCountingExporter {
    fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        self.count.fetch_add(batch.len() as u64, Ordering::Relaxed);
        drop(batch);
        async { Ok(()) }
    }
}

#[inline(always)]
pub fn tracewire_span(tracer: &tracewire::Tracer) {
    let span = tracer
        .span_builder("GET /user")
        .root()
        .with_attributes([
            tracewire::KeyValue::new("http.method", "GET"),
            tracewire::KeyValue::new("http.route", "/user"),
            tracewire::KeyValue::new("http.status_code", 200i64),
            tracewire::KeyValue::new("cache.hit", true),
        ])
        .start();
    span.end();
}

#[inline(always)]
pub fn otel_span(tracer: &opentelemetry_sdk::trace::SdkTracer) {
    let mut span = tracer
        .span_builder("GET /user")
        .with_attributes([
            opentelemetry::KeyValue::new("http.method", "GET"),
            opentelemetry::KeyValue::new("http.route", "/user"),
            opentelemetry::KeyValue::new("http.status_code", 200i64),
            opentelemetry::KeyValue::new("cache.hit", true),
        ])
        .start_with_context(tracer, &opentelemetry::Context::new());
    span.end();
}
