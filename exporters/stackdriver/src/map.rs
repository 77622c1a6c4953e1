//! From tracewire's [`SpanData`] to Cloud Trace's `Span`, within the limits that
//! `google/devtools/cloudtrace/v2/trace.proto` documents.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::time::SystemTime;

use tracewire::trace::{Array, Event, KeyValue, Link, SpanData, SpanKind, Status, Value};

use crate::proto::rpc;
use crate::proto::v2::{self as pb, attribute_value, span};

/// Attributes per span (`Span.attributes`: "up to 32 attributes per span").
pub(crate) const MAX_ATTRIBUTES_PER_SPAN: usize = 32;
/// Attributes per annotation ("up to 4 attributes per Annotation").
pub(crate) const MAX_ATTRIBUTES_PER_ANNOTATION: usize = 4;
/// Attributes per link ("Up to 32 attributes can be specified per link").
pub(crate) const MAX_ATTRIBUTES_PER_LINK: usize = 32;
/// Annotations per span ("up to 32 annotations ... per span").
pub(crate) const MAX_ANNOTATIONS_PER_SPAN: usize = 32;
/// Links per span ("up to 128 links per Span").
pub(crate) const MAX_LINKS_PER_SPAN: usize = 128;
/// Bytes of an attribute key ("Each attribute's key can be up to 128 bytes long").
pub(crate) const MAX_KEY_BYTES: usize = 128;
/// Bytes of a string attribute value ("a string up to 256 bytes").
pub(crate) const MAX_STRING_VALUE_BYTES: usize = 256;
/// Bytes of `display_name` ("up to 128 bytes").
pub(crate) const MAX_DISPLAY_NAME_BYTES: usize = 128;
/// Bytes of an annotation's description ("The maximum length ... is 256 bytes").
pub(crate) const MAX_DESCRIPTION_BYTES: usize = 256;

/// The agent label Cloud Trace shows for each span.
pub(crate) const AGENT_KEY: &str = "g.co/agent";
/// Its value.
pub(crate) const AGENT: &str = concat!("tracewire ", env!("CARGO_PKG_VERSION"));
/// The label carrying the resource's service name.
pub(crate) const SERVICE_NAME_KEY: &str = "service.name";

/// `google.rpc.Code.UNKNOWN`, the code of an error status.
const CODE_UNKNOWN: i32 = 2;

/// What every span of one exporter shares.
#[derive(Debug, Clone)]
pub(crate) struct Mapper {
    /// `projects/{project_id}/traces/`.
    pub(crate) traces_prefix: String,
    /// The resource's service name, as the `service.name` label.
    pub(crate) service_name: Option<String>,
}

impl Mapper {
    pub(crate) fn new(project_id: &str) -> Self {
        Mapper {
            traces_prefix: format!("projects/{project_id}/traces/"),
            service_name: None,
        }
    }

    /// Maps one span.
    pub(crate) fn span(&self, sd: &SpanData) -> pb::Span {
        let trace_id = sd.span_context.trace_id();
        let span_id = sd.span_context.span_id();
        let mut name = String::with_capacity(self.traces_prefix.len() + 32 + 7 + 16);
        let _ = write!(name, "{}{trace_id}/spans/{span_id}", self.traces_prefix);
        let root = !sd.parent_span_id.is_valid();
        pb::Span {
            name,
            span_id: span_id.to_string(),
            parent_span_id: if root {
                String::new()
            } else {
                sd.parent_span_id.to_string()
            },
            display_name: Some(truncatable(&sd.name, MAX_DISPLAY_NAME_BYTES)),
            start_time: Some(timestamp(sd.start_time)),
            end_time: Some(timestamp(sd.end_time)),
            attributes: Some(self.attributes(sd)),
            stack_trace: None,
            time_events: time_events(&sd.events, sd.dropped_events_count),
            links: links(&sd.links, sd.dropped_links_count),
            status: Some(status(sd)),
            same_process_as_parent_span: (!root).then_some(!sd.parent_is_remote),
            child_span_count: None,
            span_kind: span_kind(sd.kind) as i32,
        }
    }

    /// The span's attributes (well-known keys renamed), then the service name and
    /// the agent label, 32 in all.
    fn attributes(&self, sd: &SpanData) -> span::Attributes {
        let labels = 1 + usize::from(self.service_name.is_some());
        let mut map = AttributeMap::new(MAX_ATTRIBUTES_PER_SPAN - labels);
        for kv in &sd.attributes {
            match well_known(&kv.key) {
                Some((key, int)) => map.insert(key, label_value(&kv.value, int)),
                None => map.insert(&kv.key, value(&kv.value)),
            }
        }
        map.max = MAX_ATTRIBUTES_PER_SPAN;
        if let Some(service) = &self.service_name {
            map.insert_label(SERVICE_NAME_KEY, string_value(service));
        }
        map.insert_label(AGENT_KEY, string_value(AGENT));
        map.finish(sd.dropped_attributes_count)
    }
}

/// Builds `Attributes`, dropping (and counting) what does not fit.
struct AttributeMap {
    map: BTreeMap<String, pb::AttributeValue>,
    max: usize,
    dropped: u32,
}

impl AttributeMap {
    fn new(max: usize) -> Self {
        AttributeMap {
            map: BTreeMap::new(),
            max,
            dropped: 0,
        }
    }

    /// Adds `key` unless it is too long, already present (an alias of a key set
    /// before) or the map is full; those are counted as dropped.
    fn insert(&mut self, key: &str, value: pb::AttributeValue) {
        if key.len() > MAX_KEY_BYTES || self.map.len() >= self.max || self.map.contains_key(key) {
            self.dropped = self.dropped.saturating_add(1);
            return;
        }
        self.map.insert(key.to_owned(), value);
    }

    /// Adds an exporter label unless the span set the same key itself.
    fn insert_label(&mut self, key: &str, value: pb::AttributeValue) {
        if !self.map.contains_key(key) && self.map.len() < self.max {
            self.map.insert(key.to_owned(), value);
        }
    }

    fn finish(self, dropped_before: u32) -> span::Attributes {
        span::Attributes {
            attribute_map: self.map,
            dropped_attributes_count: count(u64::from(dropped_before) + u64::from(self.dropped)),
        }
    }
}

/// Attributes of an annotation or a link; `None` when there is nothing to say.
fn attributes(kvs: &[KeyValue], max: usize, dropped_before: u32) -> Option<span::Attributes> {
    if kvs.is_empty() && dropped_before == 0 {
        return None;
    }
    let mut map = AttributeMap::new(max);
    for kv in kvs {
        map.insert(&kv.key, value(&kv.value));
    }
    Some(map.finish(dropped_before))
}

/// Cloud Trace's name for a well-known attribute key, and whether its value is an
/// integer. Both the older and the current OpenTelemetry HTTP conventions map.
fn well_known(key: &str) -> Option<(&'static str, bool)> {
    Some(match key {
        "http.method" | "http.request.method" => ("/http/method", false),
        "http.status_code" | "http.response.status_code" => ("/http/status_code", true),
        "http.url" | "url.full" => ("/http/url", false),
        "http.route" => ("/http/route", false),
        "http.host" | "server.address" => ("/http/host", false),
        "url.path" => ("/http/path", false),
        "http.user_agent" | "user_agent.original" => ("/http/user_agent", false),
        "http.request_content_length" | "http.request.body.size" => ("/http/request/size", true),
        "http.response_content_length" | "http.response.body.size" => ("/http/response/size", true),
        _ => return None,
    })
}

/// The value of a well-known label: integers stay integers, and a string that
/// holds one (`"200"`) becomes one where Cloud Trace expects an integer.
fn label_value(v: &Value, int: bool) -> pb::AttributeValue {
    match v {
        Value::String(s) if int => match s.trim().parse::<i64>() {
            Ok(i) => int_value(i),
            Err(_) => value(v),
        },
        _ => value(v),
    }
}

/// strings, bools and integers as themselves; floats and arrays as strings.
fn value(v: &Value) -> pb::AttributeValue {
    match v {
        Value::String(s) => string_value(s),
        Value::Bool(b) => pb::AttributeValue {
            value: Some(attribute_value::Value::BoolValue(*b)),
        },
        Value::I64(i) => int_value(*i),
        Value::F64(x) => string_value(&format!("{x:?}")),
        Value::Array(a) => string_value(&Json(a).to_string()),
    }
}

fn string_value(s: &str) -> pb::AttributeValue {
    pb::AttributeValue {
        value: Some(attribute_value::Value::StringValue(truncatable(
            s,
            MAX_STRING_VALUE_BYTES,
        ))),
    }
}

fn int_value(i: i64) -> pb::AttributeValue {
    pb::AttributeValue {
        value: Some(attribute_value::Value::IntValue(i)),
    }
}

/// An array attribute as a JSON array (`[1,2]`, `["a","b"]`).
struct Json<'a>(&'a Array);

impl fmt::Display for Json<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn list<T>(
            f: &mut fmt::Formatter<'_>,
            v: &[T],
            item: impl Fn(&mut fmt::Formatter<'_>, &T) -> fmt::Result,
        ) -> fmt::Result {
            f.write_char('[')?;
            for (i, x) in v.iter().enumerate() {
                if i > 0 {
                    f.write_char(',')?;
                }
                item(f, x)?;
            }
            f.write_char(']')
        }
        match self.0 {
            Array::String(v) => list(f, v, |f, s| json_string(f, s)),
            Array::Bool(v) => list(f, v, |f, b| write!(f, "{b}")),
            Array::I64(v) => list(f, v, |f, i| write!(f, "{i}")),
            Array::F64(v) => list(f, v, |f, x| {
                if x.is_finite() {
                    write!(f, "{x:?}")
                } else {
                    // JSON has no NaN or infinities.
                    write!(f, "\"{x}\"")
                }
            }),
        }
    }
}

fn json_string(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if u32::from(c) < 0x20 => write!(f, "\\u{:04x}", u32::from(c))?,
            c => f.write_char(c)?,
        }
    }
    f.write_char('"')
}

/// `s` cut to at most `max` bytes on a UTF-8 character boundary, with the number
/// of bytes cut.
pub(crate) fn truncatable(s: &str, max: usize) -> pb::TruncatableString {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    pb::TruncatableString {
        value: s[..end].to_owned(),
        truncated_byte_count: count((s.len() - end) as u64),
    }
}

fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(t)
}

fn span_kind(kind: SpanKind) -> span::SpanKind {
    match kind {
        SpanKind::Internal => span::SpanKind::Internal,
        SpanKind::Server => span::SpanKind::Server,
        SpanKind::Client => span::SpanKind::Client,
        SpanKind::Producer => span::SpanKind::Producer,
        SpanKind::Consumer => span::SpanKind::Consumer,
    }
}

/// `OK` (0) for an unset or ok status; for an error, its message and the real
/// `google.rpc.Code` ([`error_code`]).
fn status(sd: &SpanData) -> rpc::Status {
    match &sd.status {
        Status::Unset | Status::Ok => rpc::Status::default(),
        Status::Error { message } => rpc::Status {
            code: error_code(sd),
            message: message.to_string(),
            details: Vec::new(),
        },
    }
}

/// The `google.rpc.Code` of an error span: the gRPC status it recorded (gRPC's
/// codes are `google.rpc.Code`'s numbers), else its HTTP status mapped as
/// `google/rpc/code.proto` maps them, else `UNKNOWN`.
fn error_code(sd: &SpanData) -> i32 {
    let int = |key: &str| match sd.attribute(key)? {
        Value::I64(i) => Some(*i),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    if let Some(code) = int("rpc.grpc.status_code").filter(|c| (1..=16).contains(c)) {
        return code as i32;
    }
    let http = int("http.response.status_code").or_else(|| int("http.status_code"));
    match http {
        Some(400) => 3,  // INVALID_ARGUMENT
        Some(401) => 16, // UNAUTHENTICATED
        Some(403) => 7,  // PERMISSION_DENIED
        Some(404) => 5,  // NOT_FOUND
        Some(409) => 10, // ABORTED
        Some(429) => 8,  // RESOURCE_EXHAUSTED
        Some(499) => 1,  // CANCELLED
        Some(500) => 13, // INTERNAL
        Some(501) => 12, // UNIMPLEMENTED
        Some(503) => 14, // UNAVAILABLE
        Some(504) => 4,  // DEADLINE_EXCEEDED
        _ => CODE_UNKNOWN,
    }
}

/// Events as annotations, at most 32.
fn time_events(events: &[Event], dropped_before: u32) -> Option<span::TimeEvents> {
    if events.is_empty() && dropped_before == 0 {
        return None;
    }
    let kept = events.len().min(MAX_ANNOTATIONS_PER_SPAN);
    let time_event = events[..kept]
        .iter()
        .map(|e| span::TimeEvent {
            time: Some(timestamp(e.timestamp)),
            value: Some(span::time_event::Value::Annotation(
                span::time_event::Annotation {
                    description: Some(truncatable(&e.name, MAX_DESCRIPTION_BYTES)),
                    attributes: attributes(
                        &e.attributes,
                        MAX_ATTRIBUTES_PER_ANNOTATION,
                        e.dropped_attributes_count,
                    ),
                },
            )),
        })
        .collect();
    Some(span::TimeEvents {
        time_event,
        dropped_annotations_count: count(u64::from(dropped_before) + (events.len() - kept) as u64),
        dropped_message_events_count: 0,
    })
}

/// Links, at most 128, of type `TYPE_UNSPECIFIED` (a tracewire link says nothing
/// about which side is the parent).
fn links(links: &[Link], dropped_before: u32) -> Option<span::Links> {
    if links.is_empty() && dropped_before == 0 {
        return None;
    }
    let kept = links.len().min(MAX_LINKS_PER_SPAN);
    let link = links[..kept]
        .iter()
        .map(|l| span::Link {
            trace_id: l.span_context.trace_id().to_string(),
            span_id: l.span_context.span_id().to_string(),
            r#type: span::link::Type::Unspecified as i32,
            attributes: attributes(
                &l.attributes,
                MAX_ATTRIBUTES_PER_LINK,
                l.dropped_attributes_count,
            ),
        })
        .collect();
    Some(span::Links {
        link,
        dropped_links_count: count(u64::from(dropped_before) + (links.len() - kept) as u64),
    })
}

/// A count as the API's `int32`, saturating.
fn count(n: u64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_stops_on_a_character_boundary() {
        // "é" is two bytes: cutting at 3 would split the second one.
        let t = truncatable("éé", 3);
        assert_eq!(t.value, "é");
        assert_eq!(t.truncated_byte_count, 2);
        let t = truncatable("short", 256);
        assert_eq!(t.value, "short");
        assert_eq!(t.truncated_byte_count, 0);
    }

    #[test]
    fn arrays_and_floats_become_strings() {
        let s = |v: Value| match value(&v).value {
            Some(attribute_value::Value::StringValue(t)) => t.value,
            other => panic!("not a string: {other:?}"),
        };
        assert_eq!(s(Value::F64(1.5)), "1.5");
        assert_eq!(s(Value::F64(1e300)), "1e300");
        assert_eq!(s(Value::Array(Array::I64(vec![1, 2]))), "[1,2]");
        assert_eq!(
            s(Value::Array(Array::String(vec!["a\"b".into(), "c".into()]))),
            r#"["a\"b","c"]"#
        );
        assert_eq!(
            s(Value::Array(Array::F64(vec![0.5, f64::NAN]))),
            r#"[0.5,"NaN"]"#
        );
    }

    /// One ended span with `attrs` and `status`, as the pipeline exports it.
    fn span_data(kind: SpanKind, attrs: Vec<KeyValue>, status: Status) -> SpanData {
        let memory = tracewire::export::InMemoryExporter::new();
        let provider = tracewire::TracerProvider::builder()
            .with_simple_exporter(memory.clone())
            .build();
        let span = provider
            .tracer("map")
            .span_builder("s")
            .with_kind(kind)
            .with_attributes(attrs)
            .start();
        span.set_status(status);
        span.end();
        memory.spans().pop().unwrap()
    }

    #[test]
    fn the_http_layers_path_and_host_are_cloud_traces_path_and_host() {
        let sd = span_data(
            SpanKind::Server,
            vec![
                KeyValue::new("url.path", "/users/7"),
                KeyValue::new("server.address", "api.example.com"),
            ],
            Status::Unset,
        );
        let span = Mapper::new("p").span(&sd);
        let map = span.attributes.unwrap().attribute_map;
        let text = |k: &str| match map.get(k).and_then(|v| v.value.clone()) {
            Some(attribute_value::Value::StringValue(t)) => Some(t.value),
            _ => None,
        };
        assert_eq!(text("/http/path").as_deref(), Some("/users/7"));
        assert_eq!(text("/http/host").as_deref(), Some("api.example.com"));
    }

    #[test]
    fn error_statuses_carry_the_real_code() {
        let code = |attrs: Vec<KeyValue>| {
            let sd = span_data(SpanKind::Client, attrs, Status::error("failed"));
            Mapper::new("p").span(&sd).status.unwrap().code
        };
        // gRPC codes are google.rpc.Code's numbers.
        assert_eq!(code(vec![KeyValue::new("rpc.grpc.status_code", 14)]), 14);
        assert_eq!(code(vec![KeyValue::new("rpc.grpc.status_code", 5)]), 5);
        // HTTP statuses as Google's APIs map them.
        for (http, rpc) in [(400, 3), (401, 16), (403, 7), (404, 5), (409, 10), (429, 8)] {
            assert_eq!(
                code(vec![KeyValue::new("http.response.status_code", http)]),
                rpc,
                "HTTP {http}"
            );
        }
        for (http, rpc) in [(499, 1), (500, 13), (501, 12), (503, 14), (504, 4)] {
            assert_eq!(
                code(vec![KeyValue::new("http.response.status_code", http)]),
                rpc,
                "HTTP {http}"
            );
        }
        assert_eq!(code(vec![]), 2, "no code known: UNKNOWN");
        let ok = span_data(
            SpanKind::Server,
            vec![KeyValue::new("rpc.grpc.status_code", 0)],
            Status::Unset,
        );
        assert_eq!(Mapper::new("p").span(&ok).status.unwrap().code, 0);
    }

    #[test]
    fn status_code_strings_that_hold_integers_become_integers() {
        let v = label_value(&Value::from("404"), true);
        assert_eq!(v.value, Some(attribute_value::Value::IntValue(404)));
        let v = label_value(&Value::from("n/a"), true);
        assert!(matches!(
            v.value,
            Some(attribute_value::Value::StringValue(_))
        ));
    }
}
