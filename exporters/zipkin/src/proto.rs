//! Zipkin proto3 (`application/x-protobuf`, `zipkin.proto3.ListOfSpans`).

use std::collections::HashMap;
use std::net::IpAddr;

use prost::Message;

use crate::model::{Endpoint as ZEndpoint, ZSpan};

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

fn endpoint(e: &ZEndpoint) -> Option<Endpoint> {
    if e.is_empty() {
        return None;
    }
    let mut out = Endpoint {
        service_name: e.service_name.clone().unwrap_or_default(),
        port: e.port.map_or(0, i32::from),
        ..Endpoint::default()
    };
    match e.ip {
        Some(IpAddr::V4(ip)) => out.ipv4 = ip.octets().to_vec(),
        Some(IpAddr::V6(ip)) => out.ipv6 = ip.octets().to_vec(),
        None => {}
    }
    Some(out)
}

pub(crate) fn span(s: &ZSpan<'_>, local: &ZEndpoint) -> Span {
    Span {
        trace_id: if s.short_trace_id() {
            (s.trace_id as u64).to_be_bytes().to_vec()
        } else {
            s.trace_id.to_be_bytes().to_vec()
        },
        parent_id: s.parent_id.map_or(Vec::new(), |p| p.to_be_bytes().to_vec()),
        id: s.id.to_be_bytes().to_vec(),
        kind: match s.kind {
            Some("CLIENT") => 1,
            Some("SERVER") => 2,
            Some("PRODUCER") => 3,
            Some("CONSUMER") => 4,
            _ => 0,
        },
        name: s.name.to_owned(),
        timestamp: s.timestamp_us,
        duration: s.duration_us,
        local_endpoint: endpoint(local),
        remote_endpoint: endpoint(&s.remote),
        annotations: s
            .annotations
            .iter()
            .map(|(t, v)| Annotation {
                timestamp: *t,
                value: v.to_string(),
            })
            .collect(),
        tags: s
            .tags
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.to_text()))
            .collect(),
        debug: s.debug,
        shared: false,
    }
}

pub(crate) fn encoded_len(s: &Span) -> usize {
    // Field 1 of ListOfSpans: tag, length prefix, body.
    let n = s.encoded_len();
    1 + prost::length_delimiter_len(n) + n
}
