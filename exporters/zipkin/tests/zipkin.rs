//! The Zipkin exporter against a real HTTP collector on loopback: every JSON body is
//! validated against the official `zipkin2-api.yaml`, fields are checked one by one,
//! and the collector is made to be down, failing, hanging and slow.

mod support;

use std::io::Read;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use prost::Message;
use serde_json::Value as Json;
use tracewire::export::{Backoff, BatchConfig, SpanExporter};
use tracewire::trace::{Link, Resource, SpanData};
use tracewire::{Context, KeyValue, SpanKind, Status, TracerProvider};
use tracewire_zipkin::{proto, Encoding, ZipkinExporter};

use support::{Behaviour, Collector};

fn exporter(addr: SocketAddr) -> tracewire_zipkin::ZipkinExporterBuilder {
    ZipkinExporter::builder()
        .with_endpoint(format!("http://{addr}/api/v2/spans"))
        .with_timeout(Duration::from_millis(500))
        .with_backoff(Backoff {
            initial: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            max_elapsed: Duration::from_secs(2),
        })
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A realistic server span with a child, an error, events, peer attributes and a link.
fn realistic_spans(provider: &TracerProvider) -> (Vec<u8>, Vec<u8>) {
    let tracer = provider.tracer("zipkin-test");
    let server = tracer
        .span_builder("GET /user")
        .with_kind(SpanKind::Server)
        .with_attribute(KeyValue::new("http.request.method", "GET"))
        .with_attribute(KeyValue::new("http.route", "/user"))
        .with_attribute(KeyValue::new("network.peer.address", "10.1.2.3"))
        .with_attribute(KeyValue::new("network.peer.port", 40123))
        .with_attribute(KeyValue::new("cache.hit", false))
        .start();
    let server_ids = (
        server.span_context().trace_id().to_string(),
        server.span_context().span_id().to_string(),
    );
    let ctx = Context::new().with_span(server);
    let other = tracer.start("batch").span_context().clone();
    let child = tracer
        .span_builder("db \"query\"")
        .with_kind(SpanKind::Client)
        .with_parent(&ctx)
        .with_attribute(KeyValue::new("peer.service", "postgres"))
        .with_attribute(KeyValue::new("network.peer.address", "::1"))
        .with_link(Link::new(other, vec![]))
        .start();
    child.add_event("retry", vec![KeyValue::new("attempt", 2)]);
    child.set_status(Status::error("timeout\nafter 5s"));
    child.end();
    ctx.span().end();
    (server_ids.0.into_bytes(), server_ids.1.into_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_bodies_match_the_schema_and_the_zipkin_model() {
    let collector = Collector::default();
    let addr = collector
        .clone()
        .start("127.0.0.1:0".parse().unwrap())
        .await;
    let exp = exporter(addr).build().unwrap();
    let counters = exp.counters();
    let provider = TracerProvider::builder()
        .with_service_name("frontend")
        .with_batch_exporter(exp)
        .build();
    let (trace_id, server_id) = realistic_spans(&provider);
    tokio::task::spawn_blocking(move || provider.shutdown(Duration::from_secs(5)).unwrap())
        .await
        .unwrap();
    let spans = collector.json_spans();
    assert_eq!(spans.len(), 3);
    let by = |name: &str| spans.iter().find(|s| s["name"] == name).unwrap().clone();
    let (server, child, batch) = (by("GET /user"), by("db \"query\""), by("batch"));
    assert_eq!(
        server["traceId"].as_str().unwrap().as_bytes(),
        &trace_id[..]
    );
    assert_eq!(server["id"].as_str().unwrap().as_bytes(), &server_id[..]);
    assert!(server.get("parentId").is_none(), "absent on roots");
    assert_eq!(server["kind"], "SERVER");
    assert_eq!(
        server["localEndpoint"],
        serde_json::json!({"serviceName": "frontend"})
    );
    assert_eq!(
        server["remoteEndpoint"],
        serde_json::json!({"ipv4": "10.1.2.3", "port": 40123})
    );
    assert_eq!(server["tags"]["http.route"], "/user");
    assert_eq!(server["tags"]["cache.hit"], "false");
    assert!(server.get("annotations").is_none(), "empty fields left out");
    assert!(server.get("debug").is_none() && server.get("shared").is_none());
    assert!(
        server["timestamp"].as_u64().unwrap() > 1_600_000_000_000_000,
        "microseconds"
    );
    assert_eq!(child["parentId"], server["id"]);
    assert_eq!(child["kind"], "CLIENT");
    assert_eq!(
        child["remoteEndpoint"],
        serde_json::json!({"serviceName": "postgres", "ipv6": "::1"})
    );
    assert_eq!(child["tags"]["error"], "timeout\nafter 5s");
    assert_eq!(child["annotations"][0]["value"], "retry attempt=2");
    assert!(batch.get("kind").is_none(), "absent for internal spans");
    let c = counters.snapshot();
    assert_eq!((c.exported, c.dropped, c.failed), (3, 0, 0));
}

/// Spans with the attributes tracewire's HTTP layers record: a server knows its own
/// `server.address`/`server.port` (from the Host header) and, when the transport
/// gives it, the caller's `network.peer.*` or `client.*`; a client knows the
/// server it calls (`server.address`/`server.port` from the URL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_endpoints_name_the_caller_of_a_server_and_the_server_a_client_called() {
    let collector = Collector::default();
    let addr = collector
        .clone()
        .start("127.0.0.1:0".parse().unwrap())
        .await;
    let provider = TracerProvider::builder()
        .with_service_name("frontend")
        .with_batch_exporter(exporter(addr).build().unwrap())
        .build();
    let tracer = provider.tracer("remote-endpoints");
    let span = |name: &str, kind, attrs: Vec<KeyValue>| {
        let mut b = tracer.span_builder(name.to_owned()).with_kind(kind);
        for a in attrs {
            b = b.with_attribute(a);
        }
        b.start().end();
    };
    span(
        "server, caller unknown",
        SpanKind::Server,
        vec![
            KeyValue::new("server.address", "10.0.0.5"),
            KeyValue::new("server.port", 8080),
        ],
    );
    span(
        "server, caller known",
        SpanKind::Server,
        vec![
            KeyValue::new("server.address", "10.0.0.5"),
            KeyValue::new("server.port", 8080),
            KeyValue::new("client.address", "10.9.9.9"),
            KeyValue::new("client.port", 5555),
        ],
    );
    span(
        "client to a host name",
        SpanKind::Client,
        vec![
            KeyValue::new("server.address", "db.internal"),
            KeyValue::new("server.port", 5432),
        ],
    );
    span(
        "client to an address",
        SpanKind::Client,
        vec![
            KeyValue::new("server.address", "10.2.2.2"),
            KeyValue::new("server.port", 443),
            KeyValue::new("client.address", "10.0.0.5"),
        ],
    );
    span(
        "internal",
        SpanKind::Internal,
        vec![KeyValue::new("server.address", "10.0.0.5")],
    );
    tokio::task::spawn_blocking(move || provider.shutdown(Duration::from_secs(5)).unwrap())
        .await
        .unwrap();
    let spans = collector.json_spans();
    let remote = |name: &str| {
        spans
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no span {name}"))
            .get("remoteEndpoint")
            .cloned()
    };
    assert_eq!(
        remote("server, caller unknown"),
        None,
        "not the server itself"
    );
    assert_eq!(
        remote("server, caller known"),
        Some(serde_json::json!({"ipv4": "10.9.9.9", "port": 5555}))
    );
    assert_eq!(
        remote("client to a host name"),
        Some(serde_json::json!({"serviceName": "db.internal", "port": 5432}))
    );
    assert_eq!(
        remote("client to an address"),
        Some(serde_json::json!({"ipv4": "10.2.2.2", "port": 443}))
    );
    assert_eq!(remote("internal"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proto3_and_gzip_bodies_decode_to_the_same_spans() {
    let collector = Collector::default();
    let addr = collector
        .clone()
        .start("127.0.0.1:0".parse().unwrap())
        .await;
    let mut exp = exporter(addr)
        .with_encoding(Encoding::Proto)
        .with_gzip(true)
        .build()
        .unwrap();
    exp.set_resource(&Resource::new("backend"));
    let memory = tracewire::export::InMemoryExporter::new();
    let provider = TracerProvider::builder()
        .with_simple_exporter(memory.clone())
        .build();
    realistic_spans(&provider);
    let spans: Vec<SpanData> = memory.spans();
    exp.export(&spans).await.unwrap();
    let r = &collector.bodies()[0];
    assert_eq!(r.content_type, "application/x-protobuf");
    assert_eq!(r.content_encoding.as_deref(), Some("gzip"));
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&r.body[..])
        .read_to_end(&mut raw)
        .unwrap();
    let list = proto::ListOfSpans::decode(&raw[..]).unwrap();
    assert_eq!(list.spans.len(), 3);
    let server = list.spans.iter().find(|s| s.name == "GET /user").unwrap();
    assert_eq!(server.trace_id.len(), 16);
    assert_eq!(server.id.len(), 8);
    assert!(server.parent_id.is_empty());
    assert_eq!(server.kind, 2);
    assert_eq!(
        server.local_endpoint.as_ref().unwrap().service_name,
        "backend"
    );
    assert_eq!(
        server.remote_endpoint.as_ref().unwrap().ipv4,
        vec![10, 1, 2, 3]
    );
    assert_eq!(server.tags["http.route"], "/user");
    let child = list.spans.iter().find(|s| s.kind == 1).unwrap();
    assert_eq!(child.parent_id, server.id);
    assert_eq!(child.annotations[0].value, "retry attempt=2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_bit_trace_ids_are_written_with_sixteen_hex_digits() {
    let collector = Collector::default();
    let addr = collector
        .clone()
        .start("127.0.0.1:0".parse().unwrap())
        .await;
    let mut exp = exporter(addr).build().unwrap();
    let memory = tracewire::export::InMemoryExporter::new();
    let provider = TracerProvider::builder()
        .with_simple_exporter(memory.clone())
        .build();
    let parent = tracewire::SpanContext::new(
        tracewire::TraceId::from_u128(0x463a_c35c_9f64_13ad),
        tracewire::SpanId::from_u64(0x4826_8a16_e0ca_3df3),
        tracewire::TraceFlags::SAMPLED,
        true,
        Default::default(),
    );
    provider
        .tracer("t")
        .span_builder("b3")
        .with_parent_span_context(parent)
        .start()
        .end();
    exp.export(&memory.spans()).await.unwrap();
    let spans = collector.json_spans();
    assert_eq!(spans[0]["traceId"], "463ac35c9f6413ad");
    assert_eq!(spans[0]["parentId"], "48268a16e0ca3df3");
}

/// B3 debug (`b3: ...-d`, `X-B3-Flags: 1`) is Zipkin's `debug: true` on every span
/// of the trace: the server span continuing it and that span's child.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_of_a_b3_debug_trace_are_written_with_debug_true() {
    use tracewire::propagation::{B3Propagator, Propagator};

    let collector = Collector::default();
    let addr = collector
        .clone()
        .start("127.0.0.1:0".parse().unwrap())
        .await;
    let mut json = exporter(addr).build().unwrap();
    let mut proto = exporter(addr)
        .with_encoding(Encoding::Proto)
        .build()
        .unwrap();
    let memory = tracewire::export::InMemoryExporter::new();
    let provider = TracerProvider::builder()
        .with_simple_exporter(memory.clone())
        .build();
    let tracer = provider.tracer("t");
    for headers in [
        &[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d")][..],
        &[
            ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
            ("x-b3-spanid", "e457b5a2e4d86bd1"),
            ("x-b3-flags", "1"),
        ],
    ] {
        let carrier: std::collections::HashMap<String, String> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let remote = B3Propagator::default().extract(&Context::new(), &carrier);
        let server = tracer
            .span_builder("server")
            .with_kind(SpanKind::Server)
            .with_parent(&remote)
            .start();
        let cx = Context::new().with_span(server);
        tracer.start_with_context("child", &cx).end();
        cx.span().end();
    }
    tracer.start("not debug").end();
    let spans = memory.spans();
    json.export(&spans).await.unwrap();
    let written = collector.json_spans();
    assert_eq!(written.len(), 5);
    for span in &written {
        let debug = span["name"] != "not debug";
        assert_eq!(
            span.get("debug"),
            debug.then_some(&Json::Bool(true)),
            "{span}"
        );
    }
    proto.export(&spans).await.unwrap();
    let list = proto::ListOfSpans::decode(&collector.bodies()[1].body[..]).unwrap();
    assert_eq!(list.spans.len(), 5);
    for span in &list.spans {
        assert_eq!(span.debug, span.name != "not debug", "{}", span.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_batches_are_split_and_an_oversized_span_is_dropped() {
    let collector = Collector::default();
    let addr = collector
        .clone()
        .start("127.0.0.1:0".parse().unwrap())
        .await;
    let mut exp = exporter(addr)
        .with_max_request_bytes(4_000)
        .build()
        .unwrap();
    let counters = exp.counters();
    let memory = tracewire::export::InMemoryExporter::new();
    let provider = TracerProvider::builder()
        .with_simple_exporter(memory.clone())
        .build();
    let t = provider.tracer("t");
    for i in 0..100 {
        t.span_builder(format!("span-{i}"))
            .with_attribute(KeyValue::new("k", "v".repeat(20)))
            .start()
            .end();
    }
    t.span_builder("huge")
        .with_attribute(KeyValue::new("blob", "x".repeat(5_000)))
        .start()
        .end();
    exp.export(&memory.spans()).await.unwrap();
    let bodies = collector.bodies();
    assert!(bodies.len() > 1, "split into {} requests", bodies.len());
    assert!(bodies.iter().all(|b| b.body.len() <= 4_000));
    assert_eq!(collector.json_spans().len(), 100);
    let c = counters.snapshot();
    assert_eq!((c.exported, c.dropped), (100, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_is_retried_until_the_collector_accepts() {
    let collector = Collector::default();
    collector
        .script
        .lock()
        .unwrap()
        .extend([Behaviour::Status(500), Behaviour::Status(503)]);
    let addr = collector
        .clone()
        .start("127.0.0.1:0".parse().unwrap())
        .await;
    let mut exp = exporter(addr).build().unwrap();
    let counters = exp.counters();
    let memory = tracewire::export::InMemoryExporter::new();
    let provider = TracerProvider::builder()
        .with_simple_exporter(memory.clone())
        .build();
    provider.tracer("t").start("s").end();
    exp.export(&memory.spans()).await.unwrap();
    assert_eq!(collector.json_spans().len(), 1);
    let c = counters.snapshot();
    assert_eq!((c.exported, c.retried, c.failed), (1, 2, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_is_not_retried_and_the_spans_are_counted_as_dropped() {
    let collector = Collector::default();
    collector
        .script
        .lock()
        .unwrap()
        .push_back(Behaviour::Status(400));
    let addr = collector
        .clone()
        .start("127.0.0.1:0".parse().unwrap())
        .await;
    let mut exp = exporter(addr).build().unwrap();
    let counters = exp.counters();
    let memory = tracewire::export::InMemoryExporter::new();
    let provider = TracerProvider::builder()
        .with_simple_exporter(memory.clone())
        .build();
    provider.tracer("t").start("s").end();
    assert!(exp.export(&memory.spans()).await.is_err());
    let c = counters.snapshot();
    assert_eq!((c.exported, c.dropped, c.failed, c.retried), (0, 1, 1, 0));
}

#[test]
fn collector_down_at_start_then_up_gets_what_the_queue_held() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let addr = free_addr();
    let exp = exporter(addr)
        .with_backoff(Backoff {
            initial: Duration::from_millis(50),
            max_delay: Duration::from_millis(200),
            max_elapsed: Duration::from_secs(10),
        })
        .build()
        .unwrap();
    let counters = exp.counters();
    let provider = TracerProvider::builder()
        .with_batch_exporter_config(
            exp,
            BatchConfig {
                queue_capacity: 1000,
                max_batch_size: 500,
                scheduled_delay: Duration::from_millis(50),
                export_timeout: Duration::from_secs(15),
            },
        )
        .build();
    let t = provider.tracer("t");
    for _ in 0..5000 {
        t.start("while-down").end();
    }
    std::thread::sleep(Duration::from_millis(500));
    let collector = Collector::default();
    rt.block_on(collector.clone().start(addr));
    provider.shutdown(Duration::from_secs(15)).unwrap_err();
    let s = provider.stats();
    let received = collector.json_spans().len() as u64;
    eprintln!("{s:?} {:?} received {received}", counters.snapshot());
    assert_eq!(s.ended, 5000);
    assert_eq!(s.exported + s.dropped, s.ended, "nothing unaccounted");
    assert_eq!(s.exported, received);
    assert!(
        (500..=1000 + 500).contains(&received),
        "the queue's worth: {received}"
    );
    assert!(counters.snapshot().retried > 0);
}

#[test]
fn a_hanging_collector_times_out_and_never_slows_the_application() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let collector = Collector::default();
    *collector.always.lock().unwrap() = Some(Behaviour::Hang);
    let addr = rt.block_on(collector.clone().start("127.0.0.1:0".parse().unwrap()));
    let exp = exporter(addr)
        .with_timeout(Duration::from_millis(200))
        .with_backoff(Backoff {
            initial: Duration::from_millis(10),
            max_delay: Duration::from_millis(20),
            max_elapsed: Duration::from_millis(500),
        })
        .build()
        .unwrap();
    let counters = exp.counters();
    let provider = TracerProvider::builder()
        .with_batch_exporter_config(
            exp,
            BatchConfig {
                scheduled_delay: Duration::from_millis(20),
                ..BatchConfig::default()
            },
        )
        .build();
    let t = provider.tracer("t");
    // Ending spans while the collector hangs costs what it always costs.
    let mut worst = Duration::ZERO;
    let start = Instant::now();
    for i in 0..10_000 {
        let one = Instant::now();
        let s = t.start("request");
        s.set_attribute("i", i);
        s.end();
        worst = worst.max(one.elapsed());
        if i % 1000 == 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let took = start.elapsed() - Duration::from_millis(200);
    eprintln!("10k spans in {took:?}, worst {worst:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    std::thread::sleep(Duration::from_millis(800));
    // Whatever is still queued is tried until the deadline, then counted.
    let _ = provider.shutdown(Duration::from_secs(2));
    let s = provider.stats();
    assert_eq!(s.exported, 0);
    assert_eq!(s.dropped, s.ended, "{s:?}");
    assert!(
        counters.snapshot().retried > 0,
        "timeouts are retried: {:?}",
        counters.snapshot()
    );
}

#[test]
fn shutdown_with_100k_pending_exports_or_counts_every_span() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let collector = Collector::default();
    let addr = rt.block_on(collector.clone().start("127.0.0.1:0".parse().unwrap()));
    let provider = TracerProvider::builder()
        .with_batch_exporter_config(
            exporter(addr).build().unwrap(),
            BatchConfig {
                queue_capacity: 100_000,
                max_batch_size: 2048,
                scheduled_delay: Duration::from_secs(3600),
                ..BatchConfig::default()
            },
        )
        .build();
    let t = provider.tracer("t");
    let start = SystemTime::now();
    for i in 0..100_000 {
        let s = t.start("pending");
        s.set_attribute("i", i);
        s.end();
    }
    let deadline = Instant::now();
    let r = provider.shutdown(Duration::from_secs(20));
    let took = deadline.elapsed();
    let s = provider.stats();
    eprintln!(
        "shutdown {r:?} in {took:?}: {s:?} (spans made in {:?})",
        start.elapsed().unwrap()
    );
    assert!(took < Duration::from_secs(21));
    assert_eq!(s.ended, 100_000);
    assert_eq!(
        s.exported + s.dropped,
        100_000,
        "nothing unaccounted: {s:?}"
    );
    let received: usize = collector
        .bodies()
        .iter()
        .map(|b| {
            serde_json::from_slice::<Json>(&b.body)
                .unwrap()
                .as_array()
                .unwrap()
                .len()
        })
        .sum();
    assert_eq!(received as u64, s.exported);
}
