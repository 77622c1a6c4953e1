//! Propagation benchmarks: tracewire against opentelemetry_sdk 0.33, in the same
//! run, over the same carrier (`http::HeaderMap`).
//!
//! Run with `cargo bench -p tracewire --bench propagation`.
//!
//! `traceparent_roundtrip`: extract `traceparent` + `tracestate` (two members) from
//! an incoming header map into a context, then inject that context into an
//! outgoing header map (cleared each iteration, so its capacity is reused). The
//! OpenTelemetry carrier adapters are the ones `opentelemetry-http` ships
//! (`HeaderExtractor` / `HeaderInjector`), reproduced here.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderName, HeaderValue};

use tracewire::propagation::{Propagator, TraceContextPropagator};
use tracewire::Context;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACESTATE: &str = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE";

/// `opentelemetry-http`'s `HeaderExtractor`.
struct OtelExtractor<'a>(&'a HeaderMap);

impl opentelemetry::propagation::Extractor for OtelExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// `opentelemetry-http`'s `HeaderInjector`.
struct OtelInjector<'a>(&'a mut HeaderMap);

impl opentelemetry::propagation::Injector for OtelInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let Ok(name) = HeaderName::from_bytes(key.as_bytes()) {
            if let Ok(val) = HeaderValue::from_str(&value) {
                self.0.insert(name, val);
            }
        }
    }
}

fn incoming() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("traceparent", HeaderValue::from_static(TRACEPARENT));
    h.insert("tracestate", HeaderValue::from_static(TRACESTATE));
    h
}

fn tracewire_roundtrip(p: &TraceContextPropagator, incoming: &HeaderMap, out: &mut HeaderMap) {
    out.clear();
    let cx = p.extract(&Context::new(), incoming);
    p.inject(&cx, out);
}

fn otel_roundtrip(
    p: &opentelemetry_sdk::propagation::TraceContextPropagator,
    incoming: &HeaderMap,
    out: &mut HeaderMap,
) {
    use opentelemetry::propagation::TextMapPropagator as _;
    out.clear();
    let cx = p.extract_with_context(&opentelemetry::Context::new(), &OtelExtractor(incoming));
    p.inject_context(&cx, &mut OtelInjector(out));
}

fn traceparent_roundtrip(c: &mut Criterion) {
    let incoming = incoming();

    // Both must do the same work: the same headers come out.
    let tw = TraceContextPropagator::new();
    let otel = opentelemetry_sdk::propagation::TraceContextPropagator::new();
    let (mut a, mut b) = (HeaderMap::new(), HeaderMap::new());
    tracewire_roundtrip(&tw, &incoming, &mut a);
    otel_roundtrip(&otel, &incoming, &mut b);
    assert_eq!(a, b);
    assert_eq!(a, incoming);

    let mut g = c.benchmark_group("traceparent_roundtrip");
    g.bench_function("tracewire", |bench| {
        let mut out = HeaderMap::new();
        bench.iter(|| {
            tracewire_roundtrip(&tw, black_box(&incoming), &mut out);
            black_box(&out);
        })
    });
    g.bench_function("opentelemetry_sdk", |bench| {
        let mut out = HeaderMap::new();
        bench.iter(|| {
            otel_roundtrip(&otel, black_box(&incoming), &mut out);
            black_box(&out);
        })
    });
    g.finish();
}

criterion_group!(benches, traceparent_roundtrip);
criterion_main!(benches);
