//! The Cloud Trace exporter against a real tonic `TraceService` server on loopback,
//! built from the same protos: the mapping field by field, request splitting,
//! retries, timeouts, a collector that is down or hangs, and shutdown accounting.

mod support;

use std::time::{Duration, Instant, SystemTime};

use prost::Message as _;
use tonic::Code;
use tracewire::export::{Backoff, BatchConfig, InMemoryExporter, SpanExporter};
use tracewire::trace::{Array, Link, SpanData, SpanLimits, Tracer};
use tracewire::{
    KeyValue, SpanContext, SpanId, SpanKind, Status as SpanStatus, TraceFlags, TraceId, TraceState,
    TracerProvider, Value,
};
use tracewire_stackdriver::proto::v2::{
    attribute_value, span, AttributeValue, BatchWriteSpansRequest, Span, TruncatableString,
};
use tracewire_stackdriver::{
    StackdriverExporter, StackdriverExporterBuilder, TlsRoots, TRACE_APPEND_SCOPE,
};

use support::{Collector, FixedToken, SelfSigned, Server, FIXED_TOKEN};

// ---------------------------------------------------------------------------
// Helpers.

fn fast_backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
        max_elapsed: Duration::from_secs(5),
    }
}

fn exporter_for(url: &str) -> StackdriverExporterBuilder {
    StackdriverExporter::builder()
        .with_project_id("test-project")
        .with_endpoint(url)
        .with_timeout(Duration::from_secs(5))
        .with_backoff(fast_backoff())
}

/// Spans recorded by a provider with `service` and `limits`.
fn record(service: &str, limits: SpanLimits, f: impl FnOnce(&Tracer)) -> Vec<SpanData> {
    let memory = InMemoryExporter::new();
    let provider = TracerProvider::builder()
        .with_service_name(service.to_owned())
        .with_span_limits(limits)
        .with_simple_exporter(memory.clone())
        .build();
    f(&provider.tracer("test"));
    memory.spans()
}

fn simple_spans(n: usize) -> Vec<SpanData> {
    record("svc", SpanLimits::default(), |t| {
        for i in 0..n {
            let s = t.start(format!("op-{i}"));
            s.set_attribute("i", i as i64);
            s.end();
        }
    })
}

fn attr<'a>(s: &'a Span, key: &str) -> Option<&'a attribute_value::Value> {
    s.attributes
        .as_ref()?
        .attribute_map
        .get(key)?
        .value
        .as_ref()
}

fn string_attr(s: &Span, key: &str) -> Option<TruncatableString> {
    match attr(s, key)? {
        attribute_value::Value::StringValue(t) => Some(t.clone()),
        _ => None,
    }
}

fn ts(s: &str, truncated: i32) -> TruncatableString {
    TruncatableString {
        value: s.to_owned(),
        truncated_byte_count: truncated,
    }
}

fn display_name(s: &Span) -> &str {
    s.display_name.as_ref().map_or("", |d| d.value.as_str())
}

fn find<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    spans
        .iter()
        .find(|s| display_name(s) == name)
        .unwrap_or_else(|| panic!("no span named {name:?}"))
}

// ---------------------------------------------------------------------------
// (1) Mapping.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_realistic_span_maps_field_by_field() {
    let collector = Collector::new();
    let server = Server::start(collector.clone()).await;

    let remote_parent = SpanContext::new(
        TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
        SpanId::from_hex("00f067aa0ba902b7").unwrap(),
        TraceFlags::SAMPLED,
        true,
        TraceState::NONE,
    );
    let linked = SpanContext::new(
        TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap(),
        SpanId::from_hex("b7ad6b7169203331").unwrap(),
        TraceFlags::SAMPLED,
        true,
        TraceState::NONE,
    );
    // 255 ASCII bytes then a two-byte character: cutting at 256 bytes would split it.
    let note = format!("{}é", "n".repeat(255));
    let long_key = "k".repeat(129);
    let long_event = "e".repeat(300);
    let long_name = "x".repeat(200);
    let t0 = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);

    let spans = record("checkout", SpanLimits::default(), |t| {
        let server_span = t
            .span_builder("GET /users/{id}")
            .with_kind(SpanKind::Server)
            .with_parent_span_context(remote_parent.clone())
            .with_start_time(t0)
            .with_attribute(KeyValue::new("http.request.method", "GET"))
            .with_attribute(KeyValue::new("http.response.status_code", 200))
            .with_attribute(KeyValue::new("url.full", "https://shop.example/users/42"))
            .with_attribute(KeyValue::new("http.route", "/users/{id}"))
            .with_attribute(KeyValue::new("user_agent.original", "curl/8.5.0"))
            .with_attribute(KeyValue::new("cache.hit", true))
            .with_attribute(KeyValue::new("retries", 3))
            .with_attribute(KeyValue::new("ratio", 0.25))
            .with_attribute(KeyValue::new(
                "tags",
                Value::Array(Array::String(vec!["a".into(), "b".into()])),
            ))
            .with_attribute(KeyValue::new("note", note.clone()))
            .with_attribute(KeyValue::new(long_key.clone(), "dropped: key too long"))
            .with_link(Link::new(
                linked.clone(),
                vec![KeyValue::new("link.reason", "batch")],
            ))
            .start();
        // An alias of a key already set is dropped, not merged.
        server_span.set_attribute("http.method", "POST");
        server_span.add_event_with_timestamp(
            "cache miss",
            t0 + Duration::from_millis(1),
            (0..6).map(|i| KeyValue::new(format!("a{i}"), i)).collect(),
        );
        server_span.add_event_with_timestamp(
            long_event.clone(),
            t0 + Duration::from_millis(2),
            vec![],
        );
        server_span.set_status(SpanStatus::error("boom"));

        let ctx = tracewire::Context::new().with_span(server_span);
        let child = t
            .span_builder("db.query")
            .with_kind(SpanKind::Client)
            .with_parent(&ctx)
            .start();
        child.end();
        for kind in [SpanKind::Producer, SpanKind::Consumer, SpanKind::Internal] {
            let s = t
                .span_builder(format!("{kind:?}"))
                .with_kind(kind)
                .root()
                .start();
            s.set_status(SpanStatus::Ok);
            s.end();
        }
        t.span_builder(long_name.clone()).root().start().end();
        ctx.span().end_with_timestamp(t0 + Duration::from_millis(5));
    });

    let exporter = exporter_for(&server.url()).build().unwrap();
    let counters = exporter.counters();
    let mut exporter = exporter;
    exporter.set_resource(&tracewire::trace::Resource::new("checkout"));
    exporter.export(&spans).await.unwrap();
    assert_eq!(counters.snapshot().exported, spans.len() as u64);

    let requests = collector.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].name, "projects/test-project");
    let got = &requests[0].spans;
    assert_eq!(got.len(), 6);
    assert!(
        !*collector.saw_authorization.lock().unwrap(),
        "custom endpoints send no credentials"
    );
    assert!(
        collector
            .user_agents
            .lock()
            .unwrap()
            .iter()
            .any(|ua| ua.starts_with("tracewire-stackdriver/")),
        "{:?}",
        collector.user_agents.lock().unwrap()
    );

    // The server span.
    let srv = find(got, "GET /users/{id}");
    let sd = spans.iter().find(|s| s.name == "GET /users/{id}").unwrap();
    let span_id = sd.span_context.span_id().to_string();
    assert_eq!(
        srv.name,
        format!("projects/test-project/traces/4bf92f3577b34da6a3ce929d0e0e4736/spans/{span_id}")
    );
    assert_eq!(srv.span_id, span_id);
    assert_eq!(srv.span_id.len(), 16);
    assert_eq!(srv.parent_span_id, "00f067aa0ba902b7");
    assert_eq!(
        srv.same_process_as_parent_span,
        Some(false),
        "remote parent"
    );
    assert_eq!(srv.span_kind, span::SpanKind::Server as i32);
    assert_eq!(
        srv.start_time,
        Some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 123_456_789
        })
    );
    assert_eq!(
        srv.end_time,
        Some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 128_456_789
        })
    );
    let status = srv.status.as_ref().unwrap();
    assert_eq!((status.code, status.message.as_str()), (2, "boom"));
    assert_eq!(srv.child_span_count, None);
    assert!(srv.stack_trace.is_none());

    // Attributes: well-known keys renamed, types mapped, labels added.
    use attribute_value::Value as V;
    let s = |v: &str| Some(V::StringValue(ts(v, 0)));
    assert_eq!(attr(srv, "/http/method").cloned(), s("GET"));
    assert_eq!(
        attr(srv, "/http/status_code").cloned(),
        Some(V::IntValue(200))
    );
    assert_eq!(
        attr(srv, "/http/url").cloned(),
        s("https://shop.example/users/42")
    );
    assert_eq!(attr(srv, "/http/route").cloned(), s("/users/{id}"));
    assert_eq!(attr(srv, "/http/user_agent").cloned(), s("curl/8.5.0"));
    assert_eq!(attr(srv, "cache.hit").cloned(), Some(V::BoolValue(true)));
    assert_eq!(attr(srv, "retries").cloned(), Some(V::IntValue(3)));
    assert_eq!(attr(srv, "ratio").cloned(), s("0.25"));
    assert_eq!(attr(srv, "tags").cloned(), s(r#"["a","b"]"#));
    assert_eq!(attr(srv, "service.name").cloned(), s("checkout"));
    assert_eq!(
        attr(srv, "g.co/agent").cloned(),
        s(concat!("tracewire ", env!("CARGO_PKG_VERSION")))
    );
    let truncated = string_attr(srv, "note").unwrap();
    assert_eq!(
        truncated.value,
        "n".repeat(255),
        "cut before the 2-byte 'é'"
    );
    assert_eq!(truncated.truncated_byte_count, 2);
    assert!(attr(srv, &long_key).is_none());
    assert!(attr(srv, "http.request.method").is_none());
    let attributes = srv.attributes.as_ref().unwrap();
    assert_eq!(attributes.attribute_map.len(), 12);
    assert_eq!(
        attributes.dropped_attributes_count, 2,
        "the 129-byte key and the http.method alias"
    );

    // Annotations.
    let events = srv.time_events.as_ref().unwrap();
    assert_eq!(events.time_event.len(), 2);
    assert_eq!(events.dropped_annotations_count, 0);
    assert_eq!(events.dropped_message_events_count, 0);
    let annotation = |i: usize| match &events.time_event[i].value {
        Some(span::time_event::Value::Annotation(a)) => a.clone(),
        other => panic!("not an annotation: {other:?}"),
    };
    assert_eq!(
        events.time_event[0].time,
        Some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 124_456_789
        })
    );
    let miss = annotation(0);
    assert_eq!(miss.description, Some(ts("cache miss", 0)));
    let miss_attributes = miss.attributes.unwrap();
    assert_eq!(
        miss_attributes.attribute_map.len(),
        4,
        "at most 4 per annotation"
    );
    assert_eq!(miss_attributes.dropped_attributes_count, 2);
    let long = annotation(1);
    assert_eq!(long.description, Some(ts(&"e".repeat(256), 44)));
    assert!(long.attributes.is_none());

    // Links.
    let links = srv.links.as_ref().unwrap();
    assert_eq!(links.dropped_links_count, 0);
    assert_eq!(links.link.len(), 1);
    let link = &links.link[0];
    assert_eq!(link.trace_id, "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(link.span_id, "b7ad6b7169203331");
    assert_eq!(link.r#type, span::link::Type::Unspecified as i32);
    let link_attributes = link.attributes.as_ref().unwrap();
    assert_eq!(
        link_attributes.attribute_map.get("link.reason"),
        Some(&AttributeValue { value: s("batch") })
    );

    // A local child: same process; a client span.
    let child = find(got, "db.query");
    assert_eq!(child.parent_span_id, span_id);
    assert_eq!(child.same_process_as_parent_span, Some(true));
    assert_eq!(child.span_kind, span::SpanKind::Client as i32);
    assert!(child
        .name
        .contains("/traces/4bf92f3577b34da6a3ce929d0e0e4736/"));
    assert_eq!(
        child.status.as_ref().map(|s| s.code),
        Some(0),
        "unset is code 0"
    );
    assert!(child.time_events.is_none() && child.links.is_none());

    // Roots: no parent, no same-process flag; every kind; ok is code 0.
    for (name, kind) in [
        ("Producer", span::SpanKind::Producer),
        ("Consumer", span::SpanKind::Consumer),
        ("Internal", span::SpanKind::Internal),
    ] {
        let root = find(got, name);
        assert_eq!(root.parent_span_id, "");
        assert_eq!(root.same_process_as_parent_span, None);
        assert_eq!(root.span_kind, kind as i32);
        let status = root.status.as_ref().unwrap();
        assert_eq!((status.code, status.message.as_str()), (0, ""));
    }

    // The display name is cut to 128 bytes.
    let long = got
        .iter()
        .find(|s| display_name(s).starts_with("xxx"))
        .unwrap();
    assert_eq!(long.display_name, Some(ts(&"x".repeat(128), 72)));

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attributes_annotations_and_links_over_the_api_limits_are_dropped_and_counted() {
    let collector = Collector::new();
    let server = Server::start(collector.clone()).await;
    let limits = SpanLimits {
        max_attributes_per_span: 35,
        max_events_per_span: 200,
        max_links_per_span: 200,
        ..SpanLimits::default()
    };
    let spans = record("svc", limits, |t| {
        let s = t.start("busy");
        // 40 attributes: the SDK keeps 35 (drops 5), the exporter keeps 30 of those
        // plus its two labels (drops 5 more).
        for i in 0..40 {
            s.set_attribute(format!("k{i:02}"), i);
        }
        for i in 0..40 {
            s.add_event(format!("event {i}"), vec![]);
        }
        for i in 0..130u64 {
            let sc = SpanContext::new(
                TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap(),
                SpanId::from_hex(&format!("{:016x}", i + 1)).unwrap(),
                TraceFlags::SAMPLED,
                false,
                TraceState::NONE,
            );
            s.add_link(sc, vec![]);
        }
        s.end();
    });
    assert_eq!(spans[0].dropped_attributes_count, 5);

    let mut exporter = exporter_for(&server.url()).build().unwrap();
    exporter.set_resource(&tracewire::trace::Resource::new("svc"));
    exporter.export(&spans).await.unwrap();
    let got = collector.spans();
    let busy = &got[0];

    let attributes = busy.attributes.as_ref().unwrap();
    assert_eq!(attributes.attribute_map.len(), 32);
    assert_eq!(attributes.dropped_attributes_count, 10);
    for i in 0..30 {
        assert!(attributes.attribute_map.contains_key(&format!("k{i:02}")));
    }
    assert!(attributes.attribute_map.contains_key("g.co/agent"));
    assert!(attributes.attribute_map.contains_key("service.name"));

    let events = busy.time_events.as_ref().unwrap();
    assert_eq!(events.time_event.len(), 32);
    assert_eq!(events.dropped_annotations_count, 8);

    let links = busy.links.as_ref().unwrap();
    assert_eq!(links.link.len(), 128);
    assert_eq!(links.dropped_links_count, 2);
    server.stop().await;
}

// ---------------------------------------------------------------------------
// (2) Splitting.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_batches_are_split_into_requests_under_max_request_bytes() {
    const MAX: usize = 2_000;
    let collector = Collector::new();
    let server = Server::start(collector.clone()).await;
    let mut spans = simple_spans(100);
    // One span that alone is larger than a request: dropped and counted.
    spans.insert(
        50,
        record("svc", SpanLimits::default(), |t| {
            let s = t.start("huge");
            for i in 0..30 {
                s.set_attribute(format!("blob{i}"), "z".repeat(300));
            }
            s.end();
        })
        .remove(0),
    );

    let exporter = exporter_for(&server.url())
        .with_max_request_bytes(MAX)
        .build()
        .unwrap();
    let counters = exporter.counters();

    // What encode produces: every body within the limit, decodable, in order.
    let encoded = exporter.encode(&spans);
    assert!(encoded.len() > 1, "{} requests", encoded.len());
    let mut names = Vec::new();
    for r in &encoded {
        assert!(r.body.len() <= MAX, "{} bytes", r.body.len());
        let decoded = BatchWriteSpansRequest::decode(r.body.clone()).unwrap();
        assert_eq!(decoded.name, "projects/test-project");
        assert_eq!(decoded.spans.len(), r.spans);
        names.extend(decoded.spans.iter().map(|s| display_name(s).to_owned()));
    }
    let expected: Vec<_> = (0..100).map(|i| format!("op-{i}")).collect();
    assert_eq!(names, expected);
    assert_eq!(counters.snapshot().dropped, 1);

    // And what the server receives.
    let mut exporter = exporter;
    exporter.export(&spans).await.unwrap();
    let requests = collector.requests();
    assert_eq!(requests.len(), encoded.len());
    for r in &requests {
        assert!(r.encoded_len() <= MAX, "{} bytes", r.encoded_len());
    }
    let received: Vec<_> = requests
        .iter()
        .flat_map(|r| r.spans.iter().map(|s| display_name(s).to_owned()))
        .collect();
    assert_eq!(received, expected);
    let stats = counters.snapshot();
    assert_eq!(stats.exported, 100);
    assert_eq!(stats.dropped, 2, "the huge span, once per encode");
    assert_eq!(stats.failed, 0);
    server.stop().await;
}

// ---------------------------------------------------------------------------
// (3) Collector down at start.

#[test]
fn a_collector_that_is_down_at_start_gets_the_queued_spans_once_up_and_the_rest_are_counted() {
    const QUEUE: usize = 1_000;
    const BATCH: usize = 100;
    const ENDED: u64 = 3_000;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Reserve a port, then close it: connections are refused until the server binds it.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();

    let exporter = StackdriverExporter::builder()
        .with_project_id("test-project")
        .with_endpoint(format!("http://{addr}"))
        .with_timeout(Duration::from_secs(2))
        .with_backoff(Backoff {
            initial: Duration::from_millis(20),
            max_delay: Duration::from_millis(100),
            max_elapsed: Duration::from_secs(20),
        })
        .build()
        .expect("construction does not connect");
    let counters = exporter.counters();
    let provider = TracerProvider::builder()
        .with_batch_exporter_config(
            exporter,
            BatchConfig {
                queue_capacity: QUEUE,
                max_batch_size: BATCH,
                scheduled_delay: Duration::from_millis(10),
                export_timeout: Duration::from_secs(30),
            },
        )
        .build();
    let tracer = provider.tracer("t");
    for i in 0..ENDED {
        let s = tracer.start("while down");
        s.set_attribute("i", i as i64);
        s.end();
    }
    // The exporter retries against the closed port meanwhile.
    let deadline = Instant::now() + Duration::from_secs(5);
    while counters.snapshot().retried < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let before = counters.snapshot();
    assert!(before.retried >= 2, "{before:?}");
    assert_eq!(before.exported, 0);

    let collector = Collector::counting();
    let _server = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        Server::start_on(collector.clone(), listener)
    });
    provider.shutdown(Duration::from_secs(20)).unwrap_err();

    let stats = provider.stats();
    let exp = counters.snapshot();
    eprintln!("pipeline {stats:?}, exporter {exp:?}");
    assert_eq!(stats.ended, ENDED);
    assert_eq!(stats.exported + stats.dropped, stats.ended, "{stats:?}");
    assert!(
        stats.exported >= QUEUE as u64 && stats.exported <= (QUEUE + BATCH) as u64,
        "what the queue held, plus the batch in flight: {stats:?}"
    );
    assert_eq!(exp.exported, stats.exported);
    assert_eq!(collector.span_count(), stats.exported);
    assert_eq!(exp.failed, 0);
    drop(_server);
    rt.shutdown_timeout(Duration::from_secs(2));
}

// ---------------------------------------------------------------------------
// (4) Retries.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_twice_then_ok_is_exported_after_two_retries() {
    let collector = Collector::answering(&[Code::Unavailable, Code::Unavailable]);
    let server = Server::start(collector.clone()).await;
    let mut exporter = exporter_for(&server.url()).build().unwrap();
    let counters = exporter.counters();
    exporter.export(&simple_spans(5)).await.unwrap();
    let stats = counters.snapshot();
    assert_eq!(
        (stats.exported, stats.dropped, stats.failed, stats.retried),
        (5, 0, 0, 2)
    );
    assert_eq!(collector.calls(), 3);
    assert_eq!(collector.spans().len(), 5);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_argument_is_not_retried_and_the_spans_are_dropped() {
    let collector = Collector::answering(&[Code::InvalidArgument]);
    let server = Server::start(collector.clone()).await;
    let mut exporter = exporter_for(&server.url()).build().unwrap();
    let counters = exporter.counters();
    let err = exporter.export(&simple_spans(5)).await.unwrap_err();
    assert!(err.to_string().contains("InvalidArgument"), "{err}");
    let stats = counters.snapshot();
    assert_eq!(
        (stats.exported, stats.dropped, stats.failed, stats.retried),
        (0, 5, 1, 0)
    );
    assert_eq!(collector.calls(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_transient_codes_are_retried() {
    let cases = [
        (Code::Unavailable, true),
        (Code::DeadlineExceeded, true),
        (Code::ResourceExhausted, true),
        (Code::InvalidArgument, false),
        (Code::PermissionDenied, false),
        (Code::Unauthenticated, false),
        (Code::NotFound, false),
        (Code::Internal, false),
        (Code::Unimplemented, false),
    ];
    for (code, retried) in cases {
        let collector = Collector::answering(&[code]);
        let server = Server::start(collector.clone()).await;
        let mut exporter = exporter_for(&server.url()).build().unwrap();
        let counters = exporter.counters();
        let result = exporter.export(&simple_spans(1)).await;
        assert_eq!(result.is_ok(), retried, "{code:?}");
        let stats = counters.snapshot();
        assert_eq!(stats.retried, u64::from(retried), "{code:?}: {stats:?}");
        assert_eq!(stats.exported + stats.dropped, 1, "{code:?}: {stats:?}");
        server.stop().await;
    }
}

// ---------------------------------------------------------------------------
// (5) A collector that hangs.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_collector_times_out_and_is_retried_within_the_budget() {
    let collector = Collector::hanging();
    let server = Server::start(collector.clone()).await;
    let mut exporter = exporter_for(&server.url())
        .with_timeout(Duration::from_millis(200))
        .with_backoff(Backoff {
            initial: Duration::from_millis(10),
            max_delay: Duration::from_millis(20),
            max_elapsed: Duration::from_millis(500),
        })
        .build()
        .unwrap();
    let counters = exporter.counters();
    let start = Instant::now();
    let err = exporter.export(&simple_spans(3)).await.unwrap_err();
    let elapsed = start.elapsed();
    assert!(err.to_string().contains("did not answer"), "{err}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    let stats = counters.snapshot();
    assert_eq!((stats.exported, stats.dropped, stats.failed), (0, 3, 1));
    assert!(stats.retried >= 1, "{stats:?}");
    assert_eq!(collector.calls() as u64, stats.retried + 1);
    server.stop().await;
}

#[test]
fn ending_spans_stays_fast_while_the_collector_hangs() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let collector = Collector::hanging();
    let server = rt.block_on(Server::start(collector.clone()));
    let exporter = exporter_for(&server.url())
        .with_timeout(Duration::from_millis(300))
        .with_backoff(Backoff {
            initial: Duration::from_millis(50),
            max_delay: Duration::from_millis(100),
            max_elapsed: Duration::from_secs(1),
        })
        .build()
        .unwrap();
    let counters = exporter.counters();
    let provider = TracerProvider::builder()
        .with_batch_exporter_config(
            exporter,
            BatchConfig {
                queue_capacity: 2_048,
                max_batch_size: 512,
                scheduled_delay: Duration::from_millis(10),
                export_timeout: Duration::from_secs(2),
            },
        )
        .build();
    let tracer = provider.tracer("t");
    // Make sure an export is stuck in the collector before measuring.
    tracer.start("first").end();
    let deadline = Instant::now() + Duration::from_secs(5);
    while collector.calls() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(collector.calls() > 0, "the export reached the collector");

    let start = Instant::now();
    for i in 0..10_000 {
        let s = tracer.start("while hanging");
        s.set_attribute("i", i);
        s.end();
    }
    let elapsed = start.elapsed();
    eprintln!("10,000 spans ended in {elapsed:?} while the collector hangs");
    assert!(
        elapsed < Duration::from_millis(500),
        "span end waited on the collector: {elapsed:?}"
    );

    let _ = provider.shutdown(Duration::from_millis(500));
    let stats = provider.stats();
    assert_eq!(stats.ended, 10_001);
    assert_eq!(stats.exported, 0);
    assert_eq!(stats.exported + stats.dropped, stats.ended, "{stats:?}");
    let exp = counters.snapshot();
    assert_eq!(exp.exported, 0);
    assert!(exp.failed >= 1, "{exp:?}");
    assert_eq!(collector.span_count(), 0);
    drop(server);
    rt.shutdown_timeout(Duration::from_secs(1));
}

// ---------------------------------------------------------------------------
// (6) Shutdown with a large backlog.

#[test]
fn shutdown_with_a_hundred_thousand_spans_pending_accounts_for_every_one() {
    const ENDED: u64 = 100_000;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let collector = Collector::counting();
    let server = rt.block_on(Server::start(collector.clone()));
    let exporter = exporter_for(&server.url()).build().unwrap();
    let counters = exporter.counters();
    let provider = TracerProvider::builder()
        .with_service_name("bulk")
        .with_batch_exporter_config(
            exporter,
            BatchConfig {
                queue_capacity: ENDED as usize,
                max_batch_size: 512,
                scheduled_delay: Duration::from_secs(3600),
                export_timeout: Duration::from_secs(30),
            },
        )
        .build();
    let tracer = provider.tracer("t");
    for i in 0..ENDED {
        let s = tracer.start("bulk");
        s.set_attribute("i", i as i64);
        s.set_attribute("http.route", "/bulk");
        s.end();
    }
    let start = Instant::now();
    let result = provider.shutdown(Duration::from_secs(60));
    let stats = provider.stats();
    let exp = counters.snapshot();
    eprintln!(
        "shutdown took {:?} ({result:?}): pipeline {stats:?}, exporter {exp:?}",
        start.elapsed()
    );
    assert_eq!(stats.ended, ENDED);
    assert_eq!(stats.exported + stats.dropped, ENDED, "{stats:?}");
    assert_eq!(exp.exported, stats.exported);
    assert_eq!(collector.span_count(), exp.exported);
    assert!(stats.exported > 0);
    drop(server);
    rt.shutdown_timeout(Duration::from_secs(1));
}

// ---------------------------------------------------------------------------
// Odds and ends.

#[test]
fn exporting_without_a_tokio_runtime_fails_instead_of_panicking() {
    let mut exporter = exporter_for("http://127.0.0.1:9").build().unwrap();
    let counters = exporter.counters();
    let result = futures_executor::block_on(exporter.export(&simple_spans(2)));
    assert!(result.is_err());
    let stats = counters.snapshot();
    assert_eq!((stats.dropped, stats.failed), (2, 1));
}

// ---------------------------------------------------------------------------
// Authentication and the quota project (ADC itself: tests/adc.rs).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_provider_authenticates_a_plain_endpoint_and_the_quota_project_is_sent() {
    let collector = Collector::new();
    let server = Server::start(collector.clone()).await;
    let tokens = std::sync::Arc::new(FixedToken::default());
    let mut exporter = exporter_for(&server.url())
        .with_token_provider(tokens.clone())
        .with_quota_project("billing-project")
        .build()
        .unwrap();
    exporter.export(&simple_spans(2)).await.unwrap();
    exporter.export(&simple_spans(1)).await.unwrap();
    let bearer = Some(format!("Bearer {FIXED_TOKEN}"));
    assert_eq!(
        collector.metadata_values("authorization"),
        [bearer.clone(), bearer]
    );
    assert_eq!(
        collector.metadata_values("x-goog-user-project"),
        [
            Some("billing-project".into()),
            Some("billing-project".into())
        ]
    );
    assert_eq!(
        tokens.scopes.lock().unwrap()[0],
        TRACE_APPEND_SCOPE,
        "asked for the trace.append scope"
    );
    server.stop().await;
}

/// Which of `authorization` and `x-goog-user-project` each configuration sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_and_quota_project_per_endpoint_and_option() {
    let cert = SelfSigned::loopback();
    let plain = Collector::new();
    let plain_server = Server::start(plain.clone()).await;
    let tls = Collector::new();
    let tls_server = Server::start_tls(tls.clone(), &cert).await;
    struct Case {
        case: &'static str,
        https: bool,
        configure: fn(StackdriverExporterBuilder) -> StackdriverExporterBuilder,
        authorization: Option<&'static str>,
        quota: Option<&'static str>,
    }
    let cases = [
        Case {
            case: "http://, defaults",
            https: false,
            configure: |b| b,
            authorization: None,
            quota: None,
        },
        Case {
            case: "http://, a quota project in code",
            https: false,
            configure: |b| b.with_quota_project("q"),
            authorization: None,
            quota: Some("q"),
        },
        Case {
            case: "https://, without credentials",
            https: true,
            configure: |b| b.without_credentials(),
            authorization: None,
            quota: None,
        },
        Case {
            case: "https://, without credentials, a quota project in code",
            https: true,
            configure: |b| b.without_credentials().with_quota_project("q2"),
            authorization: None,
            quota: Some("q2"),
        },
    ];
    for Case {
        case,
        https,
        configure,
        authorization,
        quota,
    } in cases
    {
        let (collector, server) = if https {
            (&tls, &tls_server)
        } else {
            (&plain, &plain_server)
        };
        let builder = configure(exporter_for(&server.url()).with_ca_certificate(&cert.pem));
        let mut exporter = builder.build().unwrap();
        exporter.export(&simple_spans(1)).await.unwrap();
        let last = |name: &str| collector.metadata_values(name).pop().flatten();
        assert_eq!(last("authorization").as_deref(), authorization, "{case}");
        assert_eq!(last("x-goog-user-project").as_deref(), quota, "{case}");
    }
    plain_server.stop().await;
    tls_server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_endpoint_whose_certificate_is_not_trusted_gets_nothing() {
    let collector = Collector::new();
    let server = Server::start_tls(collector.clone(), &SelfSigned::loopback()).await;
    let mut exporter = exporter_for(&server.url())
        .with_ca_certificate(SelfSigned::loopback().pem)
        .without_credentials()
        .with_backoff(Backoff {
            initial: Duration::from_millis(5),
            max_delay: Duration::from_millis(10),
            max_elapsed: Duration::from_millis(200),
        })
        .build()
        .unwrap();
    let counters = exporter.counters();
    let err = exporter.export(&simple_spans(3)).await.unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");
    let c = counters.snapshot();
    assert_eq!((c.exported, c.dropped, c.failed), (0, 3, 1));
    assert_eq!(
        c.retried, 0,
        "a refused certificate is refused on every retry"
    );
    assert_eq!(collector.calls(), 0);
    server.stop().await;
}

#[test]
fn a_ca_certificate_or_quota_project_that_cannot_be_used_fails_the_build() {
    let https = || {
        StackdriverExporter::builder()
            .with_project_id("p")
            .with_endpoint("https://127.0.0.1:1")
    };
    assert!(https().with_ca_certificate("not PEM").build().is_err());
    assert!(
        https().with_tls_roots(TlsRoots::None).build().is_err(),
        "trusting nothing"
    );
    assert!(https().with_quota_project("bad\nproject").build().is_err());
    assert!(https().with_quota_project("billing-1").build().is_ok());
}
