//! What the gRPC and HTTP tests share: spans with every field set, the way back
//! from OTLP to `SpanData` (so a round trip can be compared whole), and small
//! helpers.

#![allow(dead_code)]

use std::time::{Duration, Instant, SystemTime};

use tracewire::export::{Backoff, ExportError, SpanExporter};
use tracewire::trace::{Array, Event, Link, Resource, SpanData};
use tracewire::{
    KeyValue, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState, Value,
};
use tracewire_otlp::proto::collector::trace::v1::ExportTraceServiceRequest;
use tracewire_otlp::proto::common::v1::{any_value, AnyValue, KeyValue as OtlpKeyValue};
use tracewire_otlp::proto::trace::v1::{self as otlp, span, status};
use tracewire_otlp::{OtlpExporter, OtlpExporterBuilder, Protocol};

pub fn fast_backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
        max_elapsed: Duration::from_secs(30),
    }
}

/// An exporter for `url` over `protocol`, with a 5 s timeout and quick retries.
pub fn exporter_for(protocol: Protocol, url: &str) -> OtlpExporterBuilder {
    OtlpExporter::builder()
        .with_protocol(protocol)
        .with_endpoint(url)
        .with_timeout(Duration::from_secs(5))
        .with_backoff(fast_backoff())
}

/// A stand-in collector running on loopback; stopped on drop.
pub struct Server {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// The server that `task` runs, reached at `url`.
    pub fn new(url: String, task: tokio::task::JoinHandle<()>) -> Server {
        Server { url, task }
    }

    /// The endpoint to give the exporter.
    pub fn url(&self) -> String {
        self.url.clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn at(secs: u64, nanos: u32) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::new(secs, nanos)
}

pub fn resource() -> Resource {
    Resource::new("checkout")
        .with_attribute(KeyValue::new("deployment.environment", "test"))
        .with_attribute(KeyValue::new("host.cores", 2_i64))
}

/// A child of a remote parent with every field set: attributes of each type,
/// events, links, an error status, trace state, flags and dropped counts.
pub fn full_span() -> SpanData {
    let state: TraceState = "vendor=a1,other=b@2".parse().unwrap();
    SpanData {
        span_context: SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED.with_random(true),
            false,
            state,
        ),
        parent_span_id: SpanId::from_hex("a3ce929d0e0e4736").unwrap(),
        parent_is_remote: true,
        name: "GET /cart/{id}".into(),
        kind: SpanKind::Server,
        start_time: at(1_700_000_000, 123_456_789),
        end_time: at(1_700_000_001, 987_654_321),
        attributes: vec![
            KeyValue::new("http.request.method", "GET"),
            KeyValue::new("http.response.status_code", 503_i64),
            KeyValue::new("retry", true),
            KeyValue::new("ratio", 0.25_f64),
            KeyValue::new(
                "tags",
                Value::Array(Array::String(vec!["a".into(), "b".into()])),
            ),
            KeyValue::new("flags", Value::Array(Array::Bool(vec![true, false]))),
            KeyValue::new("ids", Value::Array(Array::I64(vec![1, -2, 3]))),
            KeyValue::new("weights", Value::Array(Array::F64(vec![0.5, 1.5]))),
        ],
        events: vec![
            Event {
                name: "cache miss".into(),
                timestamp: at(1_700_000_000, 500_000_000),
                attributes: vec![KeyValue::new("key", "cart:42")],
                dropped_attributes_count: 1,
            },
            Event {
                name: "retry".into(),
                timestamp: at(1_700_000_001, 0),
                attributes: Vec::new(),
                dropped_attributes_count: 0,
            },
        ],
        links: vec![
            Link {
                span_context: SpanContext::new(
                    TraceId::from_u128(0x0af7651916cd43dd8448eb211c80319c),
                    SpanId::from_u64(0xb7ad6b7169203331),
                    TraceFlags::SAMPLED,
                    true,
                    "congo=t61rcWkgMzE".parse().unwrap(),
                ),
                attributes: vec![KeyValue::new("link.kind", "follows")],
                dropped_attributes_count: 2,
            },
            Link::new(
                SpanContext::new(
                    TraceId::from_u128(7),
                    SpanId::from_u64(8),
                    TraceFlags::NONE,
                    false,
                    TraceState::NONE,
                ),
                Vec::new(),
            ),
        ],
        status: Status::error("upstream unavailable"),
        dropped_attributes_count: 3,
        dropped_events_count: 4,
        dropped_links_count: 5,
        scope: "tracewire-http".into(),
    }
}

/// A root span of another scope, with nothing but the required fields.
pub fn root_span(name: &str) -> SpanData {
    SpanData {
        span_context: SpanContext::new(
            TraceId::from_u128(0x1234),
            SpanId::from_u64(0x5678),
            TraceFlags::SAMPLED,
            false,
            TraceState::NONE,
        ),
        parent_span_id: SpanId::INVALID,
        parent_is_remote: false,
        name: name.to_owned().into(),
        kind: SpanKind::Internal,
        start_time: at(1_700_000_002, 1),
        end_time: at(1_700_000_002, 2),
        attributes: Vec::new(),
        events: Vec::new(),
        links: Vec::new(),
        status: Status::Ok,
        dropped_attributes_count: 0,
        dropped_events_count: 0,
        dropped_links_count: 0,
        scope: "app".into(),
    }
}

pub fn spans(n: usize) -> Vec<SpanData> {
    (0..n).map(|i| root_span(&format!("op-{i}"))).collect()
}

// ---------------------------------------------------------------------------
// From OTLP back to tracewire.

/// The elements of an array value, all of variant `$v`.
macro_rules! elements {
    ($items:expr, $v:ident) => {
        $items
            .into_iter()
            .map(|v| match v {
                Value::$v(x) => x,
                other => panic!("mixed array: {other:?}"),
            })
            .collect()
    };
}

fn value(v: &AnyValue) -> Value {
    use any_value::Value as V;
    match v.value.as_ref().expect("a value") {
        V::StringValue(s) => Value::String(s.clone().into()),
        V::BoolValue(b) => Value::Bool(*b),
        V::IntValue(i) => Value::I64(*i),
        V::DoubleValue(f) => Value::F64(*f),
        V::ArrayValue(a) => {
            let items: Vec<Value> = a.values.iter().map(value).collect();
            Value::Array(match items.first() {
                Some(Value::String(_)) => Array::String(elements!(items, String)),
                Some(Value::Bool(_)) => Array::Bool(elements!(items, Bool)),
                Some(Value::I64(_)) => Array::I64(elements!(items, I64)),
                Some(Value::F64(_)) => Array::F64(elements!(items, F64)),
                other => panic!("unexpected array of {other:?}"),
            })
        }
        other => panic!("unexpected value {other:?}"),
    }
}

pub fn attributes(kvs: &[OtlpKeyValue]) -> Vec<KeyValue> {
    kvs.iter()
        .map(|kv| KeyValue::new(kv.key.clone(), value(kv.value.as_ref().unwrap())))
        .collect()
}

fn time(nanos: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos)
}

fn state(s: &str) -> TraceState {
    if s.is_empty() {
        TraceState::NONE
    } else {
        s.parse().unwrap()
    }
}

fn context(trace_id: &[u8], span_id: &[u8], flags: u32, remote: bool, s: &str) -> SpanContext {
    SpanContext::new(
        TraceId::from_bytes(trace_id.try_into().expect("16 bytes")),
        SpanId::from_bytes(span_id.try_into().expect("8 bytes")),
        TraceFlags::new((flags & 0xff) as u8),
        remote,
        state(s),
    )
}

/// Whether bits 8 and 9 say the context is remote (and bit 8 is set).
fn remote(flags: u32) -> bool {
    assert_ne!(flags & 0x100, 0, "flags {flags:#x} lack HAS_IS_REMOTE");
    flags & 0x200 != 0
}

/// The span an OTLP span was made from.
pub fn span_data(scope: &str, s: &otlp::Span) -> SpanData {
    SpanData {
        span_context: context(&s.trace_id, &s.span_id, s.flags, false, &s.trace_state),
        parent_span_id: if s.parent_span_id.is_empty() {
            SpanId::INVALID
        } else {
            SpanId::from_bytes(s.parent_span_id.as_slice().try_into().unwrap())
        },
        parent_is_remote: remote(s.flags),
        name: s.name.clone().into(),
        kind: match span::SpanKind::try_from(s.kind).unwrap() {
            span::SpanKind::Internal => SpanKind::Internal,
            span::SpanKind::Server => SpanKind::Server,
            span::SpanKind::Client => SpanKind::Client,
            span::SpanKind::Producer => SpanKind::Producer,
            span::SpanKind::Consumer => SpanKind::Consumer,
            span::SpanKind::Unspecified => panic!("unspecified kind"),
        },
        start_time: time(s.start_time_unix_nano),
        end_time: time(s.end_time_unix_nano),
        attributes: attributes(&s.attributes),
        events: s
            .events
            .iter()
            .map(|e| Event {
                name: e.name.clone().into(),
                timestamp: time(e.time_unix_nano),
                attributes: attributes(&e.attributes),
                dropped_attributes_count: e.dropped_attributes_count,
            })
            .collect(),
        links: s
            .links
            .iter()
            .map(|l| Link {
                span_context: context(
                    &l.trace_id,
                    &l.span_id,
                    l.flags,
                    remote(l.flags),
                    &l.trace_state,
                ),
                attributes: attributes(&l.attributes),
                dropped_attributes_count: l.dropped_attributes_count,
            })
            .collect(),
        status: match &s.status {
            None => Status::Unset,
            Some(st) => match status::StatusCode::try_from(st.code).unwrap() {
                status::StatusCode::Unset => Status::Unset,
                status::StatusCode::Ok => Status::Ok,
                status::StatusCode::Error => Status::error(st.message.clone()),
            },
        },
        dropped_attributes_count: s.dropped_attributes_count,
        dropped_events_count: s.dropped_events_count,
        dropped_links_count: s.dropped_links_count,
        scope: scope.to_owned().into(),
    }
}

/// Every span of `requests`, back as `SpanData`, in the order received.
pub fn received_spans(requests: &[ExportTraceServiceRequest]) -> Vec<SpanData> {
    let mut out = Vec::new();
    for r in requests {
        for rs in &r.resource_spans {
            for ss in &rs.scope_spans {
                let scope = ss.scope.as_ref().map_or("", |s| s.name.as_str());
                out.extend(ss.spans.iter().map(|s| span_data(scope, s)));
            }
        }
    }
    out
}

/// The resource of the first request, as tracewire attributes.
pub fn received_resource(request: &ExportTraceServiceRequest) -> Vec<KeyValue> {
    attributes(
        &request.resource_spans[0]
            .resource
            .as_ref()
            .unwrap()
            .attributes,
    )
}

/// Checks that `requests` carry exactly `sent`, with [`resource`].
pub fn assert_round_trip(requests: &[ExportTraceServiceRequest], sent: &[SpanData]) {
    assert_eq!(requests.len(), 1);
    assert_eq!(
        received_resource(&requests[0]),
        [
            KeyValue::new("service.name", "checkout"),
            KeyValue::new("deployment.environment", "test"),
            KeyValue::new("host.cores", 2_i64),
        ]
    );
    assert_eq!(received_spans(requests), sent);
}

/// The timeout of the tests of a collector that is down or silent.
pub const SHORT_TIMEOUT: Duration = Duration::from_millis(500);

/// Exports `n` spans with `exporter`, which must fail within its timeout (and
/// some scheduling slack, on a busy 2-core machine) and count every span as
/// dropped and the request as failed; returns the error.
pub async fn export_fails_in_time(exporter: &mut OtlpExporter, n: usize) -> ExportError {
    let start = Instant::now();
    let err = exporter
        .export(&spans(n))
        .await
        .expect_err("the export fails");
    let took = start.elapsed();
    assert!(
        took < exporter.timeout() + Duration::from_millis(700),
        "took {took:?}"
    );
    let stats = exporter.counters().snapshot();
    assert_eq!(
        (stats.exported, stats.dropped, stats.failed),
        (0, n as u64, 1)
    );
    err
}

/// A loopback port where nothing listens (bound, then closed).
pub async fn closed_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

/// A loopback listener that accepts connections and never answers; the
/// connections are held until the returned task is aborted.
pub async fn silent_listener() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    (port, task)
}

/// A `google.rpc.Status` with a `RetryInfo` of `delay` in its details, encoded.
pub fn status_with_retry_info(code: i32, message: &str, delay: Duration) -> Vec<u8> {
    use prost::Message as _;
    use tracewire_otlp::proto::rpc;
    let info = rpc::RetryInfo {
        retry_delay: Some(prost_types::Duration {
            seconds: delay.as_secs() as i64,
            nanos: delay.subsec_nanos() as i32,
        }),
    };
    rpc::Status {
        code,
        message: message.to_owned(),
        details: vec![prost_types::Any {
            type_url: tracewire_otlp::proto::RETRY_INFO_TYPE_URL.to_owned(),
            value: info.encode_to_vec(),
        }],
    }
    .encode_to_vec()
}
