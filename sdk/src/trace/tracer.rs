//! Tracers and the span builder.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use super::lifetime::{self, Live, Owner};
use super::record::Record;
use super::span::limit_attributes;
use super::{
    KeyValue, Link, SamplingDecision, SamplingParams, SamplingState, Span, SpanContext, SpanId,
    SpanKind, SpanStart, Str, TraceFlags, TraceId, TraceState,
};
use crate::context::Context;

/// Starts spans. Cheap to clone. A tracer from
/// [`TracerProvider::tracer`](crate::TracerProvider::tracer) keeps its
/// provider's pipeline alive; one from
/// [`global::tracer`](crate::global::tracer) records into whichever provider is
/// installed when each span starts.
#[derive(Clone)]
pub struct Tracer {
    target: Target,
    scope: Str,
}

/// Where a tracer's spans go.
#[derive(Clone)]
enum Target {
    /// Nowhere: [`Tracer::noop`].
    Noop,
    Provider(Arc<Owner>),
    /// The process-wide provider of the moment.
    Global,
}

impl fmt::Debug for Tracer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let target = match self.target {
            Target::Noop => "noop",
            Target::Provider(_) => "provider",
            Target::Global => "global",
        };
        f.debug_struct("Tracer")
            .field("scope", &self.scope)
            .field("target", &target)
            .finish()
    }
}

/// Where a new span takes its parent from.
#[derive(Debug)]
enum Parent<'a> {
    Current,
    Context(&'a Context),
    /// The parent's context is in the builder's record (as its span context
    /// until the span's own replaces it), which keeps the builder small.
    Remote,
    Root,
}

impl Tracer {
    /// A tracer that records nothing (what [`global::tracer`](crate::global::tracer)
    /// behaves as while no provider is installed). Its spans propagate their parent.
    pub fn noop() -> Tracer {
        Tracer {
            target: Target::Noop,
            scope: Str::from("noop"),
        }
    }

    /// A tracer recording into the provider `owner` keeps alive.
    pub(crate) fn of(owner: Arc<Owner>, scope: Str) -> Tracer {
        Tracer {
            target: Target::Provider(owner),
            scope,
        }
    }

    /// A tracer recording into the process-wide provider of the moment.
    pub(crate) fn global(scope: Str) -> Tracer {
        Tracer {
            target: Target::Global,
            scope,
        }
    }

    /// The instrumentation scope name.
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// Starts a span whose parent is the current context's span.
    #[inline]
    pub fn start(&self, name: impl Into<Str>) -> Span {
        if let Some(span) = self.unsampled_child_of_current() {
            return span;
        }
        self.span_builder(name).start()
    }

    /// The span a provider whose sampler drops everything starts under the
    /// current context, decided before anything is built: one flag read, the
    /// parent's ids, a new span id. `None` when the general path must decide (no
    /// such sampler, collection stopped, a B3 debug parent).
    #[inline]
    fn unsampled_child_of_current(&self) -> Option<Span> {
        let Target::Provider(owner) = &self.target else {
            return None;
        };
        let provider = owner.inner();
        if !provider.always_drops || !provider.enabled.load(Ordering::Relaxed) {
            return None;
        }
        Context::map_current(
            #[inline(always)]
            |c| {
                let parent = c.span().span_context();
                if parent.is_debug() {
                    return None;
                }
                Some(Span::non_recording(unsampled_child(parent)))
            },
        )
    }

    /// Starts a span whose parent is `ctx`'s span.
    pub fn start_with_context(&self, name: impl Into<Str>, ctx: &Context) -> Span {
        self.span_builder(name).with_parent(ctx).start()
    }

    /// A builder for a span with more options.
    #[inline]
    pub fn span_builder(&self, name: impl Into<Str>) -> SpanBuilder<'_> {
        SpanBuilder {
            tracer: self,
            name: name.into(),
            kind: SpanKind::Internal,
            parent: Parent::Current,
            // Taken from the pool when an attribute is added or the span records.
            record: None,
            explicit_start: false,
        }
    }

    fn build(&self, b: SpanBuilder<'_>) -> Span {
        match &self.target {
            Target::Provider(owner) => self.build_in(owner.live(), b),
            Target::Global => match lifetime::current() {
                Some(pinned) => self.build_in(pinned.live(), b),
                None => Span::non_recording(b.parent_span().0),
            },
            Target::Noop => Span::non_recording(b.parent_span().0),
        }
    }

    fn build_in(&self, live: Live<'_>, b: SpanBuilder<'_>) -> Span {
        let provider = live.inner();
        if !provider.enabled.load(Ordering::Relaxed) {
            return Span::non_recording(b.parent_span().0);
        }
        let (parent, local_root) = b.parent_span();
        let parent_valid = parent.is_valid();
        // A B3 debug parent (with or without ids) forces sampling.
        let debug = parent.is_debug();
        if provider.always_drops && !debug {
            // Fast path: no sampler call, no result to build.
            if let Some(rec) = b.record {
                Record::give(rec);
            }
            return Span::non_recording(unsampled_child(&parent));
        }
        let (trace_id, flags) = if parent_valid {
            (parent.trace_id(), parent.flags())
        } else {
            (TraceId::random(), TraceFlags::RANDOM)
        };
        // A decision that came without ids is shown to the sampler as the parent
        // of what is, by its ids, a new trace.
        let decided_by = parent_valid || parent.is_sampling_only();
        let attributes = b.record.as_ref().map_or(&[][..], |r| &r.data.attributes);
        let mut result = provider.sampler.should_sample(&SamplingParams {
            parent: decided_by.then_some(&parent),
            trace_id,
            name: &b.name,
            kind: b.kind,
            attributes,
            links: b.record.as_ref().map_or(&[][..], |r| &r.data.links),
        });
        if debug {
            result.decision = SamplingDecision::RecordAndSample;
        }
        let state = match result.trace_state.take() {
            Some(s) => s,
            None if parent_valid => parent.trace_state().clone(),
            None => TraceState::NONE,
        };
        let span_id = SpanId::random();
        let sampled = result.decision == SamplingDecision::RecordAndSample;
        let mut span_context =
            SpanContext::new(trace_id, span_id, flags.with_sampled(sampled), false, state);
        if debug {
            span_context = span_context.with_sampling_state(SamplingState::Debug);
        }
        if result.decision == SamplingDecision::Drop {
            if let Some(rec) = b.record {
                Record::give(rec);
            }
            return Span::non_recording(span_context);
        }
        let mut rec = b.record.unwrap_or_else(Record::take);
        // Observers are shown the start time now; otherwise it stays a counter
        // reading until the export thread converts it.
        let start_time = if b.explicit_start {
            Some(rec.data.start_time)
        } else if sampled && !provider.observers.is_empty() {
            Some(SystemTime::now())
        } else {
            None
        };
        rec.set_start(start_time);
        if !sampled {
            provider.record_only.add(1);
        }
        // Counted open (as started, if sampled) from here until the span drops.
        let provider_ref = live.open_span();
        let parent_span_id = if parent_valid {
            parent.span_id()
        } else {
            SpanId::INVALID
        };
        if sampled {
            for o in provider.observers.iter() {
                o.on_start(&SpanStart {
                    span_context: &span_context,
                    parent_span_id,
                    name: &b.name,
                    kind: b.kind,
                    start_time: rec.data.start_time,
                });
            }
        }
        let limits = &provider.limits;
        let d = &mut rec.data;
        d.attributes.append(&mut result.attributes);
        d.dropped_attributes_count = limit_attributes(
            &mut d.attributes,
            limits.max_attributes_per_span,
            limits.max_attribute_value_length,
        );
        d.span_context = span_context.clone();
        d.parent_span_id = parent_span_id;
        d.parent_is_remote = parent_valid && parent.is_remote();
        d.name = b.name;
        d.kind = b.kind;
        d.scope = self.scope.clone();
        rec.limit_links(limits);
        Span::recording(span_context, local_root, provider_ref, rec)
    }
}

/// The context of a span the sampler drops under `parent` (invalid: a new
/// trace): the parent's trace id, flags and state, a new span id, not sampled.
#[inline(always)]
fn unsampled_child(parent: &SpanContext) -> SpanContext {
    if parent.is_valid() {
        SpanContext::new(
            parent.trace_id(),
            SpanId::random(),
            parent.flags().with_sampled(false),
            false,
            parent.trace_state().clone(),
        )
    } else {
        SpanContext::new(
            TraceId::random(),
            SpanId::random(),
            TraceFlags::RANDOM.with_sampled(false),
            false,
            TraceState::NONE,
        )
    }
}

/// Configures a span before starting it. Made by [`Tracer::span_builder`].
#[derive(Debug)]
#[must_use = "a span builder does nothing until `start` is called"]
pub struct SpanBuilder<'t> {
    tracer: &'t Tracer,
    name: Str,
    kind: SpanKind,
    parent: Parent<'t>,
    /// The span's record, taken when the first attribute, link, remote parent
    /// or start time is set: they are written into it in place.
    record: Option<Box<Record>>,
    /// The record's start time was set with `with_start_time`.
    explicit_start: bool,
}

impl<'t> SpanBuilder<'t> {
    /// The parent span context this builder says to use, and the parent's local
    /// root.
    fn parent_span(&self) -> (SpanContext, Option<SpanId>) {
        let of_span = |s: &Span| (s.span_context().clone(), s.local_root_span_id());
        match &self.parent {
            Parent::Current => Context::map_current(|c| of_span(c.span())),
            Parent::Context(ctx) => of_span(ctx.span()),
            Parent::Remote => (
                self.record
                    .as_ref()
                    .map_or(SpanContext::INVALID, |r| r.data.span_context.clone()),
                None,
            ),
            Parent::Root => (SpanContext::INVALID, None),
        }
    }

    /// The span kind (default internal).
    pub fn with_kind(mut self, kind: SpanKind) -> Self {
        self.kind = kind;
        self
    }
    /// Takes the parent from `ctx` instead of the current context.
    pub fn with_parent(mut self, ctx: &'t Context) -> Self {
        self.parent = Parent::Context(ctx);
        self
    }
    /// Uses `parent` (e.g. extracted from headers) as the parent.
    pub fn with_parent_span_context(mut self, parent: SpanContext) -> Self {
        self.record().data.span_context = parent;
        self.parent = Parent::Remote;
        self
    }
    /// Starts a new trace, ignoring the current context.
    pub fn root(mut self) -> Self {
        self.parent = Parent::Root;
        self
    }
    /// Adds an attribute (visible to the sampler).
    pub fn with_attribute(mut self, kv: KeyValue) -> Self {
        self.record().data.attributes.push(kv);
        self
    }
    /// Adds attributes (visible to the sampler).
    pub fn with_attributes(mut self, kvs: impl IntoIterator<Item = KeyValue>) -> Self {
        self.record().data.attributes.extend(kvs);
        self
    }
    /// The attribute vector of the span's record (empty, with the room a
    /// pooled record keeps), lent for filling in place: give it back with
    /// [`set_attribute_vec`](Self::set_attribute_vec). What the HTTP layers
    /// use, so that a request's attributes are neither in a vector of their
    /// own nor copied.
    pub(crate) fn take_attribute_vec(&mut self) -> Vec<KeyValue> {
        std::mem::take(&mut self.record().data.attributes)
    }

    /// Makes `attributes` the span's (replacing any set before).
    pub(crate) fn set_attribute_vec(&mut self, attributes: Vec<KeyValue>) {
        self.record().data.attributes = attributes;
    }

    /// Renames the span to start.
    pub(crate) fn set_name(&mut self, name: Str) {
        self.name = name;
    }

    /// The span's record, taken from the pool on first use.
    #[inline]
    fn record(&mut self) -> &mut Record {
        self.record.get_or_insert_with(Record::take)
    }
    /// Adds a link.
    pub fn with_link(mut self, link: Link) -> Self {
        self.record().data.links.push(link);
        self
    }
    /// Sets an explicit start time.
    pub fn with_start_time(mut self, t: SystemTime) -> Self {
        self.record().data.start_time = t;
        self.explicit_start = true;
        self
    }
    /// Starts the span.
    pub fn start(self) -> Span {
        self.tracer.build(self)
    }
}
