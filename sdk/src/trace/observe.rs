//! Observers: in-process views of sampled spans as they start and end.

use std::fmt;
use std::time::SystemTime;

use super::{SpanContext, SpanData, SpanId, SpanKind};

/// What a [`SpanObserver`] learns when a sampled span starts.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct SpanStart<'a> {
    /// The new span's context.
    pub span_context: &'a SpanContext,
    /// The parent's span id; [`SpanId::INVALID`] for a root span.
    pub parent_span_id: SpanId,
    /// The name the span starts with (it may be renamed before it ends).
    pub name: &'a str,
    /// The span kind.
    pub kind: SpanKind,
    /// When the span started.
    pub start_time: SystemTime,
}

/// Watches sampled spans start and end, by reference, on the thread that starts
/// or ends them: for in-process views such as a running-span count or a latency
/// summary (the `/debug/tracez` page of `tracewire-http` is one), which need no
/// copy of the span. Added with
/// [`TracerProviderBuilder::with_observer`](crate::TracerProviderBuilder::with_observer).
///
/// Both methods run on the instrumented path: they must be short and must not
/// block. Every span seen by `on_start` is later seen by `on_end`, with the same
/// span id, also when the span is dropped without being ended; spans started
/// before the observer was added (there are none: observers are fixed at build)
/// or while the provider is disabled are seen by neither.
pub trait SpanObserver: Send + Sync + fmt::Debug {
    /// A sampled span started.
    fn on_start(&self, span: &SpanStart<'_>);
    /// A sampled span ended (called before the processors receive it).
    fn on_end(&self, span: &SpanData);
}
