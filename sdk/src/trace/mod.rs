//! Traces and spans: ids, span context, the tracer, spans, samplers and limits.

mod attr;
pub(crate) mod clock;
mod id;
mod in_span;
#[allow(unsafe_code)]
pub(crate) mod lifetime;
mod observe;
pub(crate) mod pipeline;
pub(crate) mod record;
mod resource;
mod sampler;
mod span;
mod state;
mod tracer;

use std::time::SystemTime;

pub use attr::{Array, KeyValue, Str, Value};
pub use id::{SpanId, TraceId};
pub use in_span::InSpan;
pub use observe::{SpanObserver, SpanStart};
pub use resource::Resource;
pub use sampler::{
    AlwaysOff, AlwaysOn, ParentBased, RateLimiting, Sampler, SamplingDecision, SamplingParams,
    SamplingResult, TraceIdRatio,
};
pub use span::Span;
pub use state::{SamplingState, SpanContext, TraceFlags, TraceState, TraceStateError};
pub use tracer::{SpanBuilder, Tracer};

/// The role of a span in a trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum SpanKind {
    /// An internal operation (the default).
    #[default]
    Internal,
    /// The server side of a synchronous remote call.
    Server,
    /// The client side of a synchronous remote call.
    Client,
    /// The sender of an asynchronous message.
    Producer,
    /// The receiver of an asynchronous message.
    Consumer,
}

impl SpanKind {
    /// The lowercase name (`internal`, `server`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            SpanKind::Internal => "internal",
            SpanKind::Server => "server",
            SpanKind::Client => "client",
            SpanKind::Producer => "producer",
            SpanKind::Consumer => "consumer",
        }
    }
}

/// The outcome of a span's operation.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Status {
    /// No status was set (the default).
    #[default]
    Unset,
    /// The operation succeeded (final: later `Error`s are ignored).
    Ok,
    /// The operation failed.
    Error {
        /// A description of the error.
        message: Str,
    },
}

impl Status {
    /// An error status with `message`.
    pub fn error(message: impl Into<Str>) -> Status {
        Status::Error {
            message: message.into(),
        }
    }
    /// Whether this is an error status.
    pub fn is_error(&self) -> bool {
        matches!(self, Status::Error { .. })
    }
}

/// A timestamped annotation on a span (OpenCensus: annotation; OpenTelemetry: event).
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// The event's name or message.
    pub name: Str,
    /// When it happened.
    pub timestamp: SystemTime,
    /// Its attributes.
    pub attributes: Vec<KeyValue>,
    /// Attributes dropped by the span limits.
    pub dropped_attributes_count: u32,
}

/// A reference from a span to another span, possibly in another trace.
#[derive(Clone, Debug, PartialEq)]
pub struct Link {
    /// The linked span.
    pub span_context: SpanContext,
    /// Attributes of the link.
    pub attributes: Vec<KeyValue>,
    /// Attributes dropped by the span limits.
    pub dropped_attributes_count: u32,
}

impl Link {
    /// A link to `span_context` with `attributes`.
    pub fn new(span_context: SpanContext, attributes: Vec<KeyValue>) -> Self {
        Link {
            span_context,
            attributes,
            dropped_attributes_count: 0,
        }
    }
}

/// Bounds on what one span records. What goes over a bound is dropped and counted
/// in the exported [`SpanData`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanLimits {
    /// Attributes per span (default 128).
    pub max_attributes_per_span: u32,
    /// Events per span (default 128).
    pub max_events_per_span: u32,
    /// Links per span (default 128).
    pub max_links_per_span: u32,
    /// Attributes per event (default 128).
    pub max_attributes_per_event: u32,
    /// Attributes per link (default 128).
    pub max_attributes_per_link: u32,
    /// Bytes of one string attribute value (default 8192); longer values are cut on
    /// a UTF-8 boundary.
    pub max_attribute_value_length: usize,
}

impl Default for SpanLimits {
    fn default() -> Self {
        SpanLimits {
            max_attributes_per_span: 128,
            max_events_per_span: 128,
            max_links_per_span: 128,
            max_attributes_per_event: 128,
            max_attributes_per_link: 128,
            max_attribute_value_length: 8192,
        }
    }
}

/// A finished span, as handed to exporters.
#[derive(Clone, Debug, PartialEq)]
pub struct SpanData {
    /// The span's own context (trace id, span id, flags, trace state).
    pub span_context: SpanContext,
    /// The parent's span id; [`SpanId::INVALID`] for a root span.
    pub parent_span_id: SpanId,
    /// Whether the parent came from another process.
    pub parent_is_remote: bool,
    /// The span name.
    pub name: Str,
    /// The span kind.
    pub kind: SpanKind,
    /// When the span started.
    pub start_time: SystemTime,
    /// When the span ended.
    pub end_time: SystemTime,
    /// Attributes, in the order first set.
    pub attributes: Vec<KeyValue>,
    /// Events, in order.
    pub events: Vec<Event>,
    /// Links.
    pub links: Vec<Link>,
    /// The status.
    pub status: Status,
    /// Attributes dropped by the limits.
    pub dropped_attributes_count: u32,
    /// Events dropped by the limits.
    pub dropped_events_count: u32,
    /// Links dropped by the limits.
    pub dropped_links_count: u32,
    /// The name of the tracer that made the span (instrumentation scope).
    pub scope: Str,
}

impl SpanData {
    /// An empty span (what a pooled record holds between spans).
    pub(crate) const fn placeholder() -> SpanData {
        SpanData {
            span_context: SpanContext::INVALID,
            parent_span_id: SpanId::INVALID,
            parent_is_remote: false,
            name: Str::Borrowed(""),
            kind: SpanKind::Internal,
            start_time: SystemTime::UNIX_EPOCH,
            end_time: SystemTime::UNIX_EPOCH,
            attributes: Vec::new(),
            events: Vec::new(),
            links: Vec::new(),
            status: Status::Unset,
            dropped_attributes_count: 0,
            dropped_events_count: 0,
            dropped_links_count: 0,
            scope: Str::Borrowed(""),
        }
    }

    /// The attribute value for `key`, if set.
    pub fn attribute(&self, key: &str) -> Option<&Value> {
        self.attributes
            .iter()
            .find(|kv| kv.key == key)
            .map(|kv| &kv.value)
    }
    /// Whether the span has no parent.
    pub fn is_root(&self) -> bool {
        !self.parent_span_id.is_valid()
    }
    /// `end_time - start_time` (zero if the clock went backwards).
    pub fn duration(&self) -> std::time::Duration {
        self.end_time
            .duration_since(self.start_time)
            .unwrap_or_default()
    }
}
