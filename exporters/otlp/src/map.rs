//! tracewire spans as OTLP messages, and batches cut into requests of bounded
//! size.

use std::time::SystemTime;

use bytes::Bytes;
use prost::Message as _;
use tracewire::export::ExportCounters;
use tracewire::trace::{Array, KeyValue, Resource, SpanData, SpanKind, Status, TraceFlags, Value};

use crate::proto::collector::trace::v1::ExportTraceServiceRequest;
use crate::proto::common::v1::KeyValue as OtlpKeyValue;
use crate::proto::common::v1::{any_value, AnyValue, ArrayValue, InstrumentationScope};
use crate::proto::resource::v1::Resource as OtlpResource;
use crate::proto::trace::v1::{span, status, ResourceSpans, ScopeSpans, Span, SpanFlags};

/// One encoded `ExportTraceServiceRequest`: how many spans it carries and its
/// bytes (before compression).
#[derive(Debug, Clone)]
pub struct Request {
    /// Spans in the request.
    pub spans: usize,
    /// The encoded `opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest`.
    pub body: Bytes,
}

/// The OTLP resource: `service.name` first, then the resource's other attributes.
pub(crate) fn resource(r: &Resource) -> OtlpResource {
    let mut attributes = Vec::with_capacity(r.attributes.len() + 1);
    attributes.push(OtlpKeyValue {
        key: "service.name".to_owned(),
        value: Some(string(&r.service_name)),
        ..OtlpKeyValue::default()
    });
    attributes.extend(
        r.attributes
            .iter()
            .filter(|kv| kv.key != "service.name")
            .map(key_value),
    );
    OtlpResource {
        attributes,
        ..OtlpResource::default()
    }
}

/// One span, every field of [`SpanData`] that OTLP has a place for.
pub(crate) fn span(sd: &SpanData) -> Span {
    let sc = &sd.span_context;
    Span {
        trace_id: sc.trace_id().to_bytes().to_vec(),
        span_id: sc.span_id().to_bytes().to_vec(),
        trace_state: sc.trace_state().as_str().to_owned(),
        parent_span_id: if sd.is_root() {
            Vec::new()
        } else {
            sd.parent_span_id.to_bytes().to_vec()
        },
        // The remote bits describe the parent.
        flags: flags(sc.flags(), sd.parent_is_remote),
        name: sd.name.to_string(),
        kind: kind(sd.kind) as i32,
        start_time_unix_nano: unix_nanos(sd.start_time),
        end_time_unix_nano: unix_nanos(sd.end_time),
        attributes: sd.attributes.iter().map(key_value).collect(),
        dropped_attributes_count: sd.dropped_attributes_count,
        events: sd
            .events
            .iter()
            .map(|e| span::Event {
                time_unix_nano: unix_nanos(e.timestamp),
                name: e.name.to_string(),
                attributes: e.attributes.iter().map(key_value).collect(),
                dropped_attributes_count: e.dropped_attributes_count,
            })
            .collect(),
        dropped_events_count: sd.dropped_events_count,
        links: sd
            .links
            .iter()
            .map(|l| {
                let sc = &l.span_context;
                span::Link {
                    trace_id: sc.trace_id().to_bytes().to_vec(),
                    span_id: sc.span_id().to_bytes().to_vec(),
                    trace_state: sc.trace_state().as_str().to_owned(),
                    attributes: l.attributes.iter().map(key_value).collect(),
                    dropped_attributes_count: l.dropped_attributes_count,
                    // The remote bits describe the linked span.
                    flags: flags(sc.flags(), sc.is_remote()),
                }
            })
            .collect(),
        dropped_links_count: sd.dropped_links_count,
        status: match &sd.status {
            Status::Unset => None,
            Status::Ok => Some(crate::proto::trace::v1::Status {
                code: status::StatusCode::Ok as i32,
                message: String::new(),
            }),
            Status::Error { message } => Some(crate::proto::trace::v1::Status {
                code: status::StatusCode::Error as i32,
                message: message.to_string(),
            }),
        },
    }
}

/// The W3C trace flags in the low byte, and whether the context they describe
/// is remote in bits 8 and 9 (`SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK`,
/// `SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK`).
fn flags(flags: TraceFlags, remote: bool) -> u32 {
    let mut bits = u32::from(flags.bits()) | SpanFlags::ContextHasIsRemoteMask as u32;
    if remote {
        bits |= SpanFlags::ContextIsRemoteMask as u32;
    }
    bits
}

fn kind(kind: SpanKind) -> span::SpanKind {
    match kind {
        SpanKind::Internal => span::SpanKind::Internal,
        SpanKind::Server => span::SpanKind::Server,
        SpanKind::Client => span::SpanKind::Client,
        SpanKind::Producer => span::SpanKind::Producer,
        SpanKind::Consumer => span::SpanKind::Consumer,
    }
}

/// Nanoseconds since the Unix epoch; 0 before it.
fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn key_value(kv: &KeyValue) -> OtlpKeyValue {
    OtlpKeyValue {
        key: kv.key.to_string(),
        value: Some(value(&kv.value)),
        ..OtlpKeyValue::default()
    }
}

fn string(s: &str) -> AnyValue {
    any(any_value::Value::StringValue(s.to_owned()))
}

fn any(v: any_value::Value) -> AnyValue {
    AnyValue { value: Some(v) }
}

fn value(v: &Value) -> AnyValue {
    use any_value::Value as V;
    let array = |values: Vec<AnyValue>| any(V::ArrayValue(ArrayValue { values }));
    match v {
        Value::String(s) => string(s),
        Value::Bool(b) => any(V::BoolValue(*b)),
        Value::I64(i) => any(V::IntValue(*i)),
        Value::F64(f) => any(V::DoubleValue(*f)),
        Value::Array(Array::String(a)) => array(a.iter().map(|s| string(s)).collect()),
        Value::Array(Array::Bool(a)) => array(a.iter().map(|b| any(V::BoolValue(*b))).collect()),
        Value::Array(Array::I64(a)) => array(a.iter().map(|i| any(V::IntValue(*i))).collect()),
        Value::Array(Array::F64(a)) => array(a.iter().map(|f| any(V::DoubleValue(*f))).collect()),
    }
}

/// Maps `batch` and cuts it into requests of at most `max` encoded bytes, each
/// one `ResourceSpans` for `resource` with a `ScopeSpans` per instrumentation
/// scope, spans in their order within each scope. A span too large for any
/// request is dropped and counted in `counters`.
pub(crate) fn encode(
    resource: &OtlpResource,
    batch: &[SpanData],
    max: usize,
    counters: &ExportCounters,
) -> Vec<Request> {
    // Every length in a request is at most `max`, so a field's tag (one byte for
    // every field here) and length prefix take at most `frame` bytes: sizes are
    // added up as upper bounds, never underestimated.
    let frame = 1 + prost::encoding::encoded_len_varint(max as u64);
    let base = frame + frame + resource.encoded_len();
    let mut out = Vec::new();
    let mut current = Batch::default();
    for sd in batch {
        let span = span(sd);
        let span_len = frame + span.encoded_len();
        let scope_len = frame + frame + scope(&sd.scope).encoded_len();
        if base + scope_len + span_len > max {
            counters.add_dropped(1);
            continue;
        }
        let mut grows = span_len + current.scope_cost(&sd.scope, scope_len);
        if current.spans > 0 && base + current.len + grows > max {
            out.push(std::mem::take(&mut current).finish(resource));
            grows = span_len + scope_len;
        }
        current.push(&sd.scope, span);
        current.len += grows;
    }
    if current.spans > 0 {
        out.push(current.finish(resource));
    }
    out
}

fn scope(name: &str) -> InstrumentationScope {
    InstrumentationScope {
        name: name.to_owned(),
        ..InstrumentationScope::default()
    }
}

/// The request being filled.
#[derive(Default)]
struct Batch {
    scopes: Vec<ScopeSpans>,
    spans: usize,
    /// Upper bound of the encoded size of `scopes`.
    len: usize,
}

impl Batch {
    /// What adding a span of scope `name` costs besides the span: the scope's
    /// `ScopeSpans` (`scope_len`) if the request has none yet.
    fn scope_cost(&self, name: &str, scope_len: usize) -> usize {
        if self.find(name).is_some() {
            0
        } else {
            scope_len
        }
    }

    fn find(&self, name: &str) -> Option<usize> {
        self.scopes
            .iter()
            .position(|s| s.scope.as_ref().is_some_and(|s| s.name == name))
    }

    fn push(&mut self, name: &str, span: Span) {
        let i = self.find(name).unwrap_or_else(|| {
            self.scopes.push(ScopeSpans {
                scope: Some(scope(name)),
                ..ScopeSpans::default()
            });
            self.scopes.len() - 1
        });
        self.scopes[i].spans.push(span);
        self.spans += 1;
    }

    fn finish(self, resource: &OtlpResource) -> Request {
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(resource.clone()),
                scope_spans: self.scopes,
                schema_url: String::new(),
            }],
        };
        Request {
            spans: self.spans,
            body: Bytes::from(request.encode_to_vec()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Duration;
    use tracewire::trace::{SpanContext, SpanId, TraceId, TraceState};

    fn data(scope: &'static str, name: String) -> SpanData {
        SpanData {
            span_context: SpanContext::new(
                TraceId::from_u128(1),
                SpanId::from_u64(2),
                TraceFlags::SAMPLED,
                false,
                TraceState::NONE,
            ),
            parent_span_id: SpanId::INVALID,
            parent_is_remote: false,
            name: name.into(),
            kind: SpanKind::Internal,
            start_time: SystemTime::UNIX_EPOCH + Duration::from_secs(1),
            end_time: SystemTime::UNIX_EPOCH + Duration::from_secs(2),
            attributes: Vec::new(),
            events: Vec::new(),
            links: Vec::new(),
            status: Status::Unset,
            dropped_attributes_count: 0,
            dropped_events_count: 0,
            dropped_links_count: 0,
            scope: scope.into(),
        }
    }

    #[test]
    fn requests_stay_within_the_limit_and_keep_every_span_in_order() {
        let batch: Vec<SpanData> = (0..200)
            .map(|i| {
                data(
                    ["a", "b", "c"][i % 3],
                    format!("span {i} {}", "x".repeat(i)),
                )
            })
            .collect();
        let resource = resource(&Resource::new("svc"));
        let counters = ExportCounters::new();
        for max in [600, 1000, 4096, 1 << 20] {
            let requests = encode(&resource, &batch, max, &counters);
            let mut names = Vec::new();
            for r in &requests {
                assert!(r.body.len() <= max, "{} > {max}", r.body.len());
                let decoded = ExportTraceServiceRequest::decode(r.body.clone()).unwrap();
                let spans: Vec<_> = decoded.resource_spans[0]
                    .scope_spans
                    .iter()
                    .flat_map(|s| s.spans.iter())
                    .collect();
                assert_eq!(spans.len(), r.spans);
                names.extend(spans.into_iter().map(|s| s.name.clone()));
            }
            let dropped = counters.snapshot().dropped as usize;
            assert_eq!(names.len() + dropped, batch.len(), "max {max}");
            if max == 1 << 20 {
                assert_eq!(requests.len(), 1);
            }
            // Within each scope the order is kept.
            for scope in ["a", "b", "c"] {
                let sent: Vec<_> = names
                    .iter()
                    .filter(|n| batch.iter().any(|s| &*s.name == *n && s.scope == scope))
                    .collect();
                let mut sorted = sent.clone();
                sorted.sort_by_key(|n| n.split(' ').nth(1).unwrap().parse::<usize>().unwrap());
                assert_eq!(sent, sorted);
            }
        }
    }

    #[test]
    fn a_span_larger_than_any_request_is_dropped_and_counted() {
        let resource = resource(&Resource::new("svc"));
        let counters = ExportCounters::new();
        let batch = [data("a", "small".into()), data("a", "x".repeat(2000))];
        let requests = encode(&resource, &batch, 500, &counters);
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].spans, 1);
        assert_eq!(counters.snapshot().dropped, 1);
    }
}
