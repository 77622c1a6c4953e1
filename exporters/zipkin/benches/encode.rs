//! Encoding throughput of Zipkin JSON and proto3 for a realistic span (6
//! attributes, 1 event), in batches of 512. `cargo bench -p tracewire-zipkin
//! --bench encode`.
//!
//! `zipkin_encode`: the exporter's whole path (mapping and encoding) per format.
//! `zipkin_proto3_types`: encoding the same 512-span `ListOfSpans` with the types
//! `prost-build` generates from `proto/zipkin.proto` (what the exporter uses) and
//! with the hand-written prost structs they replaced (kept below, unchanged, as
//! the rival), so the ratio comes from one run.
#![allow(missing_docs)] // criterion_group! makes an undocumented pub fn

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use prost::Message as _;
use tracewire::export::InMemoryExporter;
use tracewire::{KeyValue, SpanKind, TracerProvider};
use tracewire_zipkin::{proto, Encoding, ZipkinExporter};

/// The structs `src/proto.rs` wrote by hand before the types were generated.
mod hand_written {
    use std::collections::HashMap;

    use prost::Message;

    /// `zipkin.proto3.ListOfSpans`.
    #[derive(Clone, PartialEq, Message)]
    pub struct ListOfSpans {
        /// The spans.
        #[prost(message, repeated, tag = "1")]
        pub spans: Vec<Span>,
    }

    /// `zipkin.proto3.Span`.
    #[derive(Clone, PartialEq, Message)]
    pub struct Span {
        /// 8 or 16 bytes.
        #[prost(bytes = "vec", tag = "1")]
        pub trace_id: Vec<u8>,
        /// 8 bytes, or empty for a root.
        #[prost(bytes = "vec", tag = "2")]
        pub parent_id: Vec<u8>,
        /// 8 bytes.
        #[prost(bytes = "vec", tag = "3")]
        pub id: Vec<u8>,
        /// 0 unspecified, 1 client, 2 server, 3 producer, 4 consumer.
        #[prost(int32, tag = "4")]
        pub kind: i32,
        /// Span name.
        #[prost(string, tag = "5")]
        pub name: String,
        /// Epoch microseconds.
        #[prost(fixed64, tag = "6")]
        pub timestamp: u64,
        /// Microseconds.
        #[prost(uint64, tag = "7")]
        pub duration: u64,
        /// The recording host.
        #[prost(message, optional, tag = "8")]
        pub local_endpoint: Option<Endpoint>,
        /// The other side.
        #[prost(message, optional, tag = "9")]
        pub remote_endpoint: Option<Endpoint>,
        /// Events.
        #[prost(message, repeated, tag = "10")]
        pub annotations: Vec<Annotation>,
        /// Tags.
        #[prost(map = "string, string", tag = "11")]
        pub tags: HashMap<String, String>,
        /// Debug flag.
        #[prost(bool, tag = "12")]
        pub debug: bool,
        /// Shared flag.
        #[prost(bool, tag = "13")]
        pub shared: bool,
    }

    /// `zipkin.proto3.Endpoint`.
    #[derive(Clone, PartialEq, Message)]
    pub struct Endpoint {
        /// Service name.
        #[prost(string, tag = "1")]
        pub service_name: String,
        /// 4 bytes.
        #[prost(bytes = "vec", tag = "2")]
        pub ipv4: Vec<u8>,
        /// 16 bytes.
        #[prost(bytes = "vec", tag = "3")]
        pub ipv6: Vec<u8>,
        /// Port.
        #[prost(int32, tag = "4")]
        pub port: i32,
    }

    /// `zipkin.proto3.Annotation`.
    #[derive(Clone, PartialEq, Message)]
    pub struct Annotation {
        /// Epoch microseconds.
        #[prost(fixed64, tag = "1")]
        pub timestamp: u64,
        /// The value.
        #[prost(string, tag = "2")]
        pub value: String,
    }
}

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
    let mut g = c.benchmark_group("zipkin_encode");
    g.throughput(Throughput::Elements(batch.len() as u64));
    for (name, encoding) in [("json", Encoding::Json), ("proto3", Encoding::Proto)] {
        let exp = ZipkinExporter::builder()
            .with_encoding(encoding)
            .build()
            .unwrap();
        g.bench_function(name, |b| b.iter(|| exp.encode(&batch)));
    }
    g.finish();
}

fn proto3_types(c: &mut Criterion) {
    let batch = spans(512);
    let exp = ZipkinExporter::builder()
        .with_encoding(Encoding::Proto)
        .build()
        .unwrap();
    let body = exp.encode(&batch).remove(0).body;
    let generated = proto::ListOfSpans::decode(&body[..]).unwrap();
    let hand = hand_written::ListOfSpans::decode(&body[..]).unwrap();
    assert_eq!(generated.spans.len(), 512);
    assert_eq!(generated.encoded_len(), hand.encoded_len());
    let mut g = c.benchmark_group("zipkin_proto3_types");
    g.throughput(Throughput::Elements(512));
    g.bench_function("generated", |b| b.iter(|| generated.encode_to_vec()));
    g.bench_function("hand_written", |b| b.iter(|| hand.encode_to_vec()));
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(std::time::Duration::from_secs(3))
        .warm_up_time(std::time::Duration::from_secs(1));
    targets = encode, proto3_types
}
criterion_main!(benches);
