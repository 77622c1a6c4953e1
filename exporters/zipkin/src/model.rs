//! The mapping from a tracewire span to the Zipkin v2 model, shared by the JSON and
//! proto3 encoders.

use std::borrow::Cow;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use tracewire::trace::{SpanData, Status, Value};
use tracewire::SpanKind;

/// A Zipkin endpoint (service name and address).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Endpoint {
    /// Service name, if known.
    pub service_name: Option<String>,
    /// Address, if known.
    pub ip: Option<IpAddr>,
    /// Port, if known (never 0).
    pub port: Option<u16>,
}

impl Endpoint {
    pub(crate) fn is_empty(&self) -> bool {
        self.service_name.is_none() && self.ip.is_none() && self.port.is_none()
    }
}

/// A tag value: an attribute's value, borrowed, or text made for the tag.
pub(crate) enum Tag<'a> {
    Value(&'a Value),
    Text(Cow<'a, str>),
}

impl Tag<'_> {
    pub(crate) fn to_text(&self) -> String {
        match self {
            Tag::Value(v) => v.to_string(),
            Tag::Text(t) => t.to_string(),
        }
    }
}

/// One span in Zipkin's terms, borrowing from the `SpanData`.
pub(crate) struct ZSpan<'a> {
    /// 128-bit trace ids whose upper half is zero (64-bit ids from B3) are written
    /// as 16 hex digits, all others as 32.
    pub(crate) trace_id: u128,
    pub(crate) id: u64,
    pub(crate) parent_id: Option<u64>,
    pub(crate) kind: Option<&'static str>,
    pub(crate) name: &'a str,
    pub(crate) timestamp_us: u64,
    pub(crate) duration_us: u64,
    pub(crate) remote: Endpoint,
    pub(crate) annotations: Vec<(u64, Cow<'a, str>)>,
    pub(crate) tags: Vec<(&'a str, Tag<'a>)>,
    /// B3 debug ([`SamplingState::Debug`](tracewire::SamplingState::Debug)).
    pub(crate) debug: bool,
}

pub(crate) fn micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn tag_value(v: &Value) -> String {
    v.to_string()
}

/// Attribute keys that name the other side of a span, in order of preference, as
/// OpenTelemetry's Zipkin mapping reads them. A server's remote is its caller; a
/// client's (or producer's) is the server it called. The server's own
/// `server.address` is never a server span's remote endpoint.
const PEER_SERVICE: &[&str] = &["peer.service"];
const CALLED_NAME: &[&str] = &["server.address", "net.peer.name"];
const CALLED_IP: &[&str] = &[
    "server.address",
    "network.peer.address",
    "net.peer.ip",
    "net.peer.name",
];
const CALLED_PORT: &[&str] = &["server.port", "network.peer.port", "net.peer.port"];
const CALLER_IP: &[&str] = &["client.address", "network.peer.address", "net.peer.ip"];
const CALLER_PORT: &[&str] = &["client.port", "network.peer.port", "net.peer.port"];

fn remote_endpoint(span: &SpanData) -> Endpoint {
    let find = |keys: &[&str]| keys.iter().find_map(|k| span.attribute(k));
    let ip_of = |keys: &[&str]| {
        keys.iter()
            .filter_map(|k| span.attribute(k))
            .find_map(|v| v.as_str().and_then(|s| s.parse::<IpAddr>().ok()))
    };
    let port_of = |keys: &[&str]| {
        find(keys).and_then(|v| match v {
            Value::I64(p) => u16::try_from(*p).ok(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        })
    };
    let peer_service = find(PEER_SERVICE).map(tag_value);
    let (service_name, ip, port) = match span.kind {
        SpanKind::Client | SpanKind::Producer => {
            // A host name the client called names the remote service when no
            // `peer.service` does; an address is its IP.
            let host = CALLED_NAME
                .iter()
                .filter_map(|k| span.attribute(k))
                .filter_map(Value::as_str)
                .find(|s| s.parse::<IpAddr>().is_err())
                .map(str::to_owned);
            (
                peer_service.or(host),
                ip_of(CALLED_IP),
                port_of(CALLED_PORT),
            )
        }
        SpanKind::Server | SpanKind::Consumer => {
            (peer_service, ip_of(CALLER_IP), port_of(CALLER_PORT))
        }
        SpanKind::Internal => (peer_service, None, None),
    };
    Endpoint {
        service_name,
        ip,
        port: port.filter(|p| *p != 0),
    }
}

impl<'a> ZSpan<'a> {
    pub(crate) fn new(span: &'a SpanData) -> ZSpan<'a> {
        let sc = &span.span_context;
        let kind = match span.kind {
            SpanKind::Internal => None,
            SpanKind::Client => Some("CLIENT"),
            SpanKind::Server => Some("SERVER"),
            SpanKind::Producer => Some("PRODUCER"),
            SpanKind::Consumer => Some("CONSUMER"),
        };
        let start = micros(span.start_time);
        let mut tags: Vec<(&str, Tag<'_>)> = Vec::with_capacity(span.attributes.len() + 2);
        tags.extend(
            span.attributes
                .iter()
                .map(|kv| (&*kv.key, Tag::Value(&kv.value))),
        );
        if let Status::Error { message } = &span.status {
            let msg = Tag::Text(if message.is_empty() {
                Cow::Borrowed("true")
            } else {
                Cow::Borrowed(&**message)
            });
            match tags.iter_mut().find(|(k, _)| *k == "error") {
                Some(t) => t.1 = msg,
                None => tags.push(("error", msg)),
            }
        }
        if !span.scope.is_empty() {
            tags.push(("otel.scope.name", Tag::Text(Cow::Borrowed(&*span.scope))));
        }
        for (k, n) in [
            (
                "otel.dropped_attributes_count",
                span.dropped_attributes_count,
            ),
            ("otel.dropped_events_count", span.dropped_events_count),
            ("otel.dropped_links_count", span.dropped_links_count),
        ] {
            if n > 0 {
                tags.push((k, Tag::Text(Cow::Owned(n.to_string()))));
            }
        }
        let annotations = span
            .events
            .iter()
            .map(|e| {
                if e.attributes.is_empty() {
                    return (micros(e.timestamp), Cow::Borrowed(&*e.name));
                }
                let mut value = e.name.to_string();
                for kv in &e.attributes {
                    value.push(' ');
                    value.push_str(&kv.key);
                    value.push('=');
                    value.push_str(&kv.value.to_string());
                }
                (micros(e.timestamp), Cow::Owned(value))
            })
            .collect();
        ZSpan {
            trace_id: sc.trace_id().to_u128(),
            id: sc.span_id().to_u64(),
            parent_id: span
                .parent_span_id
                .is_valid()
                .then(|| span.parent_span_id.to_u64()),
            kind,
            name: &span.name,
            timestamp_us: start,
            duration_us: micros(span.end_time).saturating_sub(start).max(1),
            remote: remote_endpoint(span),
            annotations,
            tags,
            debug: sc.is_debug(),
        }
    }

    /// Whether the trace id is written with 16 hex digits (64 bits).
    pub(crate) fn short_trace_id(&self) -> bool {
        self.trace_id >> 64 == 0
    }
}
