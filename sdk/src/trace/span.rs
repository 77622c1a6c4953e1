//! `Span`: a handle that records one operation and ends on `end()` or drop.

use std::cell::RefCell;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use super::clock;
use super::lifetime::SpanRef;
use super::pipeline::Pipeline;
use super::record::Record;
use super::{Event, KeyValue, Link, SpanContext, SpanId, SpanLimits, Status, Str, Value};
use crate::context::Context;
use crate::error::ExportError;

/// A span: one timed operation in a trace.
///
/// A span is either *recording* (sampled, or kept by the sampler for local use) or
/// *non-recording*: the latter only carries its [`SpanContext`] for propagation,
/// allocates nothing and ignores every recording call, so instrumented code never
/// needs to check.
///
/// Cloning gives another handle to the same span. The span ends when
/// [`end`](Span::end) is called on any handle, or when the last handle (including
/// the ones held by [`Context`]s) is dropped.
#[derive(Clone)]
pub struct Span {
    repr: Repr,
}

#[derive(Clone)]
enum Repr {
    NonRecording(SpanContext),
    Recording(Arc<RecordingSpan>),
}

pub(crate) struct RecordingSpan {
    span_context: SpanContext,
    /// The first ancestor of this span in this process (itself for a local root).
    local_root: SpanId,
    /// Keeps the provider allocated until this span drops; `None` while the
    /// allocation waits in a thread's pool for its next span.
    provider: Option<SpanRef>,
    /// What the span recorded; `None` once it ended.
    record: Mutex<Option<Box<Record>>>,
}

/// Recording spans' allocations a thread keeps for its next spans: the last
/// handle of a span gives its `Arc` back here (it is the only reference, so
/// reusing it is safe) instead of freeing it. 32 of about 100 bytes.
const SPAN_POOL_CAPACITY: usize = 32;

thread_local! {
    static SPAN_POOL: RefCell<Vec<Arc<RecordingSpan>>> = const { RefCell::new(Vec::new()) };
}

static NONE: Span = Span {
    repr: Repr::NonRecording(SpanContext::INVALID),
};

/// Applies the attribute limits to `kv` and sets it in `attrs` (replacing an earlier
/// value of the same key). Returns `false` if it was dropped.
pub(crate) fn push_attribute(
    attrs: &mut Vec<KeyValue>,
    mut kv: KeyValue,
    max_count: u32,
    max_len: usize,
) -> bool {
    kv.value.truncate(max_len);
    if let Some(existing) = attrs.iter_mut().find(|e| e.key == kv.key) {
        existing.value = kv.value;
        return true;
    }
    if attrs.len() >= max_count as usize {
        return false;
    }
    attrs.push(kv);
    true
}

/// Keeps at most `max` of `attrs` (cutting long values); returns how many it dropped.
pub(crate) fn limit_attributes(attrs: &mut Vec<KeyValue>, max: u32, max_len: usize) -> u32 {
    let mut dropped = 0;
    if attrs.len() > max as usize {
        dropped = (attrs.len() - max as usize) as u32;
        attrs.truncate(max as usize);
    }
    for kv in attrs.iter_mut() {
        kv.value.truncate(max_len);
    }
    dropped
}

impl Span {
    /// The non-recording span with the invalid context (what a context without a
    /// span returns).
    pub fn none() -> &'static Span {
        &NONE
    }

    /// A non-recording span that only carries `span_context` (for example a remote
    /// parent extracted from headers).
    pub fn non_recording(span_context: SpanContext) -> Span {
        Span {
            repr: Repr::NonRecording(span_context),
        }
    }

    #[inline(never)]
    pub(crate) fn recording(
        span_context: SpanContext,
        local_root: Option<SpanId>,
        provider: SpanRef,
        record: Box<Record>,
    ) -> Span {
        let local_root = local_root.unwrap_or(span_context.span_id());
        let pooled = SPAN_POOL.try_with(|p| p.borrow_mut().pop()).ok().flatten();
        let arc = match pooled {
            Some(mut arc) => match Arc::get_mut(&mut arc) {
                Some(r) => {
                    r.span_context = span_context;
                    r.local_root = local_root;
                    r.provider = Some(provider);
                    *r.record.get_mut().unwrap_or_else(|e| e.into_inner()) = Some(record);
                    arc
                }
                // Never: only unique allocations are pooled.
                None => RecordingSpan::new(span_context, local_root, provider, record),
            },
            None => RecordingSpan::new(span_context, local_root, provider, record),
        };
        Span {
            repr: Repr::Recording(arc),
        }
    }

    /// The span of `ctx` (Go's `trace.FromContext`).
    pub fn from_context(ctx: &Context) -> &Span {
        ctx.span()
    }

    /// A handle to the span of the current context.
    ///
    /// To record on the current span without cloning it, use
    /// [`with_current`](Span::with_current).
    pub fn current() -> Span {
        Context::map_current(|c| c.span().clone())
    }

    /// Runs `f` with a reference to the current context's span (a non-recording,
    /// invalid span if there is none), without cloning the span or the context:
    /// the cheapest way to record on the current span.
    ///
    /// ```
    /// use tracewire::{Span, TracerProvider};
    ///
    /// let tracer = TracerProvider::builder().build().tracer("doc");
    /// tracer.in_span("get_user", |_cx| {
    ///     Span::with_current(|span| span.set_attribute("http.route", "/user"));
    /// });
    /// ```
    ///
    /// The thread's context stack stays borrowed while `f` runs. `f` may read it
    /// (start spans, call [`Context::current`], [`labels::current`]), but must
    /// not change it: attaching a context, [`Context::in_scope`],
    /// [`Tracer::in_span`](crate::Tracer::in_span),
    /// [`labels::with_labels`] or dropping a [`ContextGuard`] inside `f` panics
    /// (never undefined behaviour). An attach that panics leaves the stack as
    /// it was. For those, take a handle with [`Span::current`] first.
    ///
    /// [`labels::current`]: crate::labels::current
    /// [`labels::with_labels`]: crate::labels::with_labels
    /// [`ContextGuard`]: crate::ContextGuard
    #[inline]
    pub fn with_current<R>(f: impl FnOnce(&Span) -> R) -> R {
        Context::map_current(|c| f(c.span()))
    }

    /// The span's propagated context.
    pub fn span_context(&self) -> &SpanContext {
        match &self.repr {
            Repr::NonRecording(sc) => sc,
            Repr::Recording(r) => &r.span_context,
        }
    }

    /// The id of this span's local root: its first ancestor in this process, or the
    /// span itself. `None` for a non-recording span.
    pub fn local_root_span_id(&self) -> Option<SpanId> {
        match &self.repr {
            Repr::NonRecording(_) => None,
            Repr::Recording(r) => Some(r.local_root),
        }
    }

    /// The span's current name (`None` for a non-recording or ended span).
    pub fn name(&self) -> Option<Str> {
        match &self.repr {
            Repr::NonRecording(_) => None,
            Repr::Recording(r) => lock(&r.record).as_ref().map(|r| r.data.name.clone()),
        }
    }

    /// Whether this span records (and has not ended yet).
    pub fn is_recording(&self) -> bool {
        match &self.repr {
            Repr::NonRecording(_) => false,
            Repr::Recording(r) => lock(&r.record).is_some(),
        }
    }

    #[inline]
    fn with_record(&self, f: impl FnOnce(&mut Record, &SpanLimits)) {
        if let Repr::Recording(r) = &self.repr {
            if let Some(rec) = lock(&r.record).as_mut() {
                if let Some(p) = r.pipeline() {
                    f(rec, &p.limits);
                }
            }
        }
    }

    /// Sets the attribute `key` to `value` (replacing an earlier value of the
    /// same key). To set [`KeyValue`]s, use
    /// [`set_attributes`](Span::set_attributes).
    ///
    /// ```
    /// use tracewire::TracerProvider;
    ///
    /// let tracer = TracerProvider::builder().build().tracer("doc");
    /// let span = tracer.start("get_user");
    /// span.set_attribute("http.route", "/user");
    /// span.set_attribute("http.response.status_code", 200);
    /// span.set_attribute(String::from("user.admin"), false);
    /// ```
    pub fn set_attribute(&self, key: impl Into<Str>, value: impl Into<Value>) {
        if let Repr::Recording(_) = self.repr {
            self.set_attribute_kv(KeyValue::new(key, value));
        }
    }

    fn set_attribute_kv(&self, kv: KeyValue) {
        self.with_record(|r, l| {
            if !push_attribute(
                &mut r.data.attributes,
                kv,
                l.max_attributes_per_span,
                l.max_attribute_value_length,
            ) {
                r.data.dropped_attributes_count += 1;
            }
        });
    }

    /// Sets several attributes.
    pub fn set_attributes(&self, kvs: impl IntoIterator<Item = KeyValue>) {
        self.with_record(|r, l| {
            for kv in kvs {
                if !push_attribute(
                    &mut r.data.attributes,
                    kv,
                    l.max_attributes_per_span,
                    l.max_attribute_value_length,
                ) {
                    r.data.dropped_attributes_count += 1;
                }
            }
        });
    }

    /// Adds an event (annotation) at the current time.
    pub fn add_event(&self, name: impl Into<Str>, attributes: Vec<KeyValue>) {
        if matches!(self.repr, Repr::Recording(_)) {
            self.add_event_with_timestamp(name, SystemTime::now(), attributes);
        }
    }

    /// Adds an event at `timestamp`.
    pub fn add_event_with_timestamp(
        &self,
        name: impl Into<Str>,
        timestamp: SystemTime,
        mut attributes: Vec<KeyValue>,
    ) {
        self.with_record(|r, l| {
            if r.data.events.len() >= l.max_events_per_span as usize {
                r.data.dropped_events_count += 1;
                return;
            }
            let dropped = limit_attributes(
                &mut attributes,
                l.max_attributes_per_event,
                l.max_attribute_value_length,
            );
            r.data.events.push(Event {
                name: name.into(),
                timestamp,
                attributes,
                dropped_attributes_count: dropped,
            });
        });
    }

    /// Adds a link to another span.
    pub fn add_link(&self, span_context: SpanContext, attributes: Vec<KeyValue>) {
        self.with_record(|r, l| r.add_link(Link::new(span_context, attributes), l));
    }

    /// Sets the status. `Ok` is final; `Unset` is ignored; a later `Error` replaces
    /// an earlier one.
    pub fn set_status(&self, status: Status) {
        self.with_record(|r, _| match (&r.data.status, &status) {
            (Status::Ok, _) | (_, Status::Unset) => {}
            _ => r.data.status = status,
        });
    }

    /// Records `err` as an `exception` event and sets an error status.
    pub fn record_error(&self, err: &dyn std::error::Error) {
        let message = err.to_string();
        self.add_event(
            "exception",
            vec![KeyValue::new("exception.message", message.clone())],
        );
        self.set_status(Status::error(message));
    }

    /// Renames the span.
    pub fn update_name(&self, name: impl Into<Str>) {
        self.with_record(|r, _| r.data.name = name.into());
    }

    /// Ends the span now. Later calls, and recording calls after it, do nothing.
    #[inline]
    pub fn end(&self) {
        if let Repr::Recording(r) = &self.repr {
            r.end(None);
        }
    }

    /// Ends the span at `end_time`.
    pub fn end_with_timestamp(&self, end_time: SystemTime) {
        if let Repr::Recording(r) = &self.repr {
            r.end(Some(end_time));
        }
    }

    /// Ends the span and waits until it, and every span ended before it, has been
    /// handed to the exporters (Go's `FinishWait`): for short-lived programs that
    /// must not lose their last spans. Waits at most 5 seconds (see
    /// [`end_and_flush_within`](Self::end_and_flush_within)).
    pub async fn end_and_flush(&self) -> Result<(), ExportError> {
        self.end_and_flush_within(Duration::from_secs(5)).await
    }

    /// Like [`end_and_flush`](Self::end_and_flush), waiting at most `timeout`:
    /// then it fails with a [timeout](ExportError::is_timeout), also when the
    /// export thread is stuck in an exporter or gone. It needs no timer from the
    /// runtime that polls it.
    pub async fn end_and_flush_within(&self, timeout: Duration) -> Result<(), ExportError> {
        let Repr::Recording(r) = &self.repr else {
            return Ok(());
        };
        r.end(None);
        match r.pipeline() {
            Some(p) => p.flush(timeout).await,
            None => Ok(()),
        }
    }
}

fn lock(m: &Mutex<Option<Box<Record>>>) -> MutexGuard<'_, Option<Box<Record>>> {
    // A panic while holding the lock leaves a consistent Record: keep using it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl RecordingSpan {
    fn new(
        span_context: SpanContext,
        local_root: SpanId,
        provider: SpanRef,
        record: Box<Record>,
    ) -> Arc<RecordingSpan> {
        Arc::new(RecordingSpan {
            span_context,
            local_root,
            provider: Some(provider),
            record: Mutex::new(Some(record)),
        })
    }

    /// The provider (a recording span holds it until it closes).
    #[inline]
    fn pipeline(&self) -> Option<&Pipeline> {
        self.provider.as_ref().map(SpanRef::get)
    }

    /// The last handle is gone: ends the span if it has not ended, and counts
    /// it closed (after which the provider may be freed).
    fn close(&mut self) {
        let record = self
            .record
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(record) = record {
            self.finish(record, None);
        }
        self.provider = None;
    }

    fn end(&self, end_time: Option<SystemTime>) {
        let record = lock(&self.record).take();
        if let Some(record) = record {
            self.finish(record, end_time);
        }
    }

    #[inline]
    fn finish(&self, mut rec: Box<Record>, end_time: Option<SystemTime>) {
        if !self.span_context.is_sampled() {
            Record::give(rec);
            return;
        }
        match end_time {
            Some(t) => rec.data.end_time = t,
            None => rec.end = Some(clock::now()),
        }
        match self.pipeline() {
            Some(p) => p.on_end(rec),
            None => Record::give(rec),
        }
    }
}

impl Drop for RecordingSpan {
    /// The last handle dropped while another thread held one too (the last one
    /// normally closes the span and pools it), or a pooled one is freed.
    fn drop(&mut self) {
        self.close();
    }
}

impl Drop for Span {
    #[inline]
    fn drop(&mut self) {
        // Inlined: a non-recording span's drop stays a test of its variant.
        if matches!(self.repr, Repr::Recording(_)) {
            self.release();
        }
    }
}

impl Span {
    /// A recording handle drops: the last one closes the span and pools its
    /// allocation.
    #[inline(never)]
    fn release(&mut self) {
        if let Repr::Recording(arc) = &mut self.repr {
            if let Some(r) = Arc::get_mut(arc) {
                r.close();
                let repr =
                    std::mem::replace(&mut self.repr, Repr::NonRecording(SpanContext::INVALID));
                if let Repr::Recording(arc) = repr {
                    let _ = SPAN_POOL.try_with(move |p| {
                        let mut p = p.borrow_mut();
                        if p.len() < SPAN_POOL_CAPACITY {
                            p.push(arc);
                        }
                    });
                }
            }
        }
    }
}

impl fmt::Debug for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Span")
            .field("span_context", self.span_context())
            .field("recording", &matches!(self.repr, Repr::Recording(_)))
            .finish()
    }
}
