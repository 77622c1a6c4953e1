//! Encoding throughput of Zipkin JSON and proto3 for a realistic span (6
//! attributes, 1 event), in batches of 512. `cargo bench -p tracewire-zipkin`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tracewire::export::InMemoryExporter;
use tracewire::{KeyValue, SpanKind, TracerProvider};
use tracewire_zipkin::{Encoding, ZipkinExporter};

fn spans(n: usize) -> Vec<tracewire::trace::SpanData> {
    let memory = InMemoryExporter::new();
    let provider = TracerProvider::builder()
        .with_simple_exporter(memory.clone())
        .build();
    let t = provider.tracer("bench");
    for i in 0..n {
        let s = t
            .span_builder("GET /api/users/{id}")
            .kind(SpanKind::Server)
            .attribute(KeyValue::new("http.request.method", "GET"))
            .attribute(KeyValue::new("http.route", "/api/users/{id}"))
            .attribute(KeyValue::new("http.response.status_code", 200))
            .attribute(KeyValue::new("network.peer.address", "10.0.0.7"))
            .attribute(KeyValue::new("user_agent.original", "curl/8.5.0"))
            .attribute(KeyValue::new("request.id", i as i64))
            .start();
        s.add_event("cache miss", vec![KeyValue::new("key", "user:42")]);
        s.end();
    }
    memory.spans()
}

fn encode(c: &mut Criterion) {
    let batch = spans(512);
    let mut g = c.benchmark_group("zipkin_encode");
    g.throughput(Throughput::Elements(batch.len() as u64));
    for (name, encoding) in [("json", Encoding::Json), ("proto3", Encoding::Proto)] {
        let exp = ZipkinExporter::builder()
            .encoding(encoding)
            .build()
            .unwrap();
        g.bench_function(name, |b| b.iter(|| exp.encode(&batch)));
    }
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
