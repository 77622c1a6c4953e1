//! Encoding throughput of the Cloud Trace exporter: mapping to `google.devtools.
//! cloudtrace.v2.Span` plus protobuf encoding of `BatchWriteSpansRequest`s, for a
//! realistic span (6 attributes, 1 event) in batches of 512, on one core.
//! `cargo bench -p tracewire-stackdriver`.
#![allow(missing_docs)] // criterion_group! makes an undocumented pub fn

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tracewire::export::{InMemoryExporter, SpanExporter};
use tracewire::trace::Resource;
use tracewire::{KeyValue, SpanKind, TracerProvider};
use tracewire_stackdriver::StackdriverExporter;

fn spans(n: usize) -> Vec<tracewire::trace::SpanData> {
    let memory = InMemoryExporter::new();
    let provider = TracerProvider::builder()
        .with_simple_exporter(memory.clone())
        .build();
    let t = provider.tracer("bench");
    for i in 0..n {
        let s = t
            .span_builder("GET /api/users/{id}")
            .with_kind(SpanKind::Server)
            .with_attribute(KeyValue::new("http.request.method", "GET"))
            .with_attribute(KeyValue::new("http.route", "/api/users/{id}"))
            .with_attribute(KeyValue::new("http.response.status_code", 200))
            .with_attribute(KeyValue::new("network.peer.address", "10.0.0.7"))
            .with_attribute(KeyValue::new("user_agent.original", "curl/8.5.0"))
            .with_attribute(KeyValue::new("request.id", i as i64))
            .start();
        s.add_event("cache miss", vec![KeyValue::new("key", "user:42")]);
        s.end();
    }
    memory.spans()
}

fn encode(c: &mut Criterion) {
    let batch = spans(512);
    let mut exporter = StackdriverExporter::builder()
        .with_project_id("bench-project")
        .with_endpoint("http://127.0.0.1:9")
        .build()
        .expect("valid configuration");
    exporter.set_resource(&Resource::new("frontend"));
    let requests = exporter.encode(&batch);
    let bytes: usize = requests.iter().map(|r| r.body.len()).sum();
    eprintln!(
        "cloudtrace_encode: {} spans -> {} request(s), {} bytes ({} bytes/span)",
        batch.len(),
        requests.len(),
        bytes,
        bytes / batch.len()
    );
    let mut g = c.benchmark_group("cloudtrace_encode");
    g.throughput(Throughput::Elements(batch.len() as u64));
    g.bench_function("batch_512", |b| b.iter(|| exporter.encode(&batch)));
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(std::time::Duration::from_secs(3))
        .warm_up_time(std::time::Duration::from_secs(1));
    targets = encode
}
criterion_main!(benches);
