//! `Context`: the immutable carrier of the current span, the profiler labels and
//! typed values, and the machinery that makes a context *current* on a thread.
//!
//! Making a context current (with [`Context::attach`], or by polling a future wrapped
//! with [`ContextExt::in_context`]) also publishes it in the per-thread slot that the
//! CPU profiler reads, so labels and span ids follow the work, not the thread.

use std::any::{Any, TypeId};
use std::borrow::Borrow;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use crate::labels::LabelSet;
use crate::slot::{self, Record, Ticket};
use crate::trace::Span;

/// An immutable bundle of the current span, profiler labels and typed values.
///
/// Cloning is one reference-count increment; the empty context allocates nothing.
/// Every `with_*` method returns a new context and leaves `self` unchanged, like
/// Go's `context.WithValue`.
///
/// ```
/// use tracewire::{Context, labels::LabelSet};
///
/// let ctx = Context::new().with_labels(LabelSet::new([("http-path", "/user")]));
/// let _guard = ctx.attach();
/// assert_eq!(tracewire::labels::current().get("http-path"), Some("/user"));
/// ```
#[derive(Clone, Default)]
pub struct Context {
    inner: Option<Arc<ContextInner>>,
}

struct ContextInner {
    data: ContextData,
    /// What the profiler reads of `data`, built with it.
    record: Record,
}

#[derive(Clone, Default)]
struct ContextData {
    span: Option<Span>,
    /// The span name the profiler labels samples with; only filled in while a
    /// profile asks for span names (see `profile::SpanIds`).
    span_name: Option<Arc<crate::trace::Str>>,
    labels: LabelSet,
    values: Vec<(TypeId, Arc<dyn Any + Send + Sync>)>,
}

impl ContextInner {
    fn new(data: ContextData) -> ContextInner {
        let (trace_id, span_id, local_root) = match &data.span {
            Some(span) => {
                let sc = span.span_context();
                (
                    sc.trace_id().to_u128(),
                    sc.span_id().to_u64(),
                    span.local_root_span_id().map_or(0, |id| id.to_u64()),
                )
            }
            None => (0, 0, 0),
        };
        let record = Record::new(
            &data.labels,
            data.span_name.as_ref(),
            trace_id,
            span_id,
            local_root,
        );
        ContextInner { data, record }
    }
}

impl Context {
    /// The empty context: no span, no labels, no values.
    pub const fn new() -> Self {
        Context { inner: None }
    }

    /// A clone of the calling thread's current context (empty if none is attached).
    ///
    /// Inside [`labels::with_labels`](crate::labels::with_labels) it is the
    /// context with those labels merged in, built on the first call inside it.
    pub fn current() -> Self {
        slot::current()
    }

    /// Runs `f` with a reference to the current context, without cloning it.
    /// `f` must not attach or detach contexts.
    #[inline]
    pub(crate) fn map_current<R>(f: impl FnOnce(&Context) -> R) -> R {
        slot::map_current(f)
    }

    fn derive(&self, edit: impl FnOnce(&mut ContextData)) -> Context {
        let mut data = self
            .inner
            .as_deref()
            .map(|i| i.data.clone())
            .unwrap_or_default();
        edit(&mut data);
        Context {
            inner: Some(Arc::new(ContextInner::new(data))),
        }
    }

    /// A context like this one whose current span is `span`.
    pub fn with_span(&self, span: Span) -> Context {
        self.derive(|i| {
            #[cfg(feature = "profile")]
            {
                i.span_name = crate::profile::span_name_for(&span, i.span_name.take());
            }
            i.span = Some(span);
        })
    }

    /// `self.with_span(span).with_labels(labels)` in one step (one allocation):
    /// what a server layer makes for each request.
    pub fn with_span_and_labels(&self, span: Span, labels: LabelSet) -> Context {
        self.derive(|i| {
            #[cfg(feature = "profile")]
            {
                i.span_name = crate::profile::span_name_for(&span, i.span_name.take());
            }
            i.span = Some(span);
            if !labels.is_empty() {
                i.labels = i.labels.merge(&labels);
            }
        })
    }

    /// The current context with `span` as its span (OpenTelemetry's
    /// `Context::current_with_span`).
    pub fn current_with_span(span: Span) -> Context {
        Context::map_current(|c| c.with_span(span))
    }

    /// The span of this context; a non-recording, invalid span if there is none.
    pub fn span(&self) -> &Span {
        self.inner
            .as_ref()
            .and_then(|i| i.data.span.as_ref())
            .unwrap_or(Span::none())
    }

    /// Whether this context carries a span.
    pub fn has_span(&self) -> bool {
        self.inner.as_ref().is_some_and(|i| i.data.span.is_some())
    }

    /// A context like this one whose labels are its labels merged with `labels`
    /// (on a shared key, `labels` wins), as Go's `pprof.WithLabels`.
    pub fn with_labels(&self, labels: LabelSet) -> Context {
        if labels.is_empty() {
            return self.clone();
        }
        self.derive(|i| i.labels = i.labels.merge(&labels))
    }

    /// The labels of this context (empty if none).
    pub fn labels(&self) -> &LabelSet {
        self.inner
            .as_ref()
            .map(|i| &i.data.labels)
            .unwrap_or(LabelSet::empty_ref())
    }

    /// A context like this one carrying `value`, replacing any earlier value of
    /// the same type.
    pub fn with_value<T: Send + Sync + 'static>(&self, value: T) -> Context {
        let id = TypeId::of::<T>();
        self.derive(|i| {
            i.values.retain(|(t, _)| *t != id);
            i.values.push((id, Arc::new(value)));
        })
    }

    /// The value of type `T` carried by this context, if any.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        let id = TypeId::of::<T>();
        self.inner
            .as_ref()?
            .data
            .values
            .iter()
            .find(|(t, _)| *t == id)
            .and_then(|(_, v)| v.downcast_ref::<T>())
    }

    /// Makes this context current on the calling thread until the returned guard
    /// drops; the guard then restores the previous context. Guards may drop in any
    /// order: a guard dropped out of order removes only its own context.
    ///
    /// The guard is not `Send`. Do not hold it across an `.await`; wrap the future
    /// with [`ContextExt::in_context`] instead. (A guard held across an `.await`
    /// anyway removes only its own context when it drops: another task's stays.)
    ///
    /// To make a context current for a closure without cloning it, use
    /// [`in_scope`](Context::in_scope).
    #[inline]
    pub fn attach(self) -> ContextGuard {
        ContextGuard {
            ticket: slot::enter(self),
            _not_send: PhantomData,
        }
    }

    /// Runs `f` with this context current, then restores the previous one (also
    /// if `f` panics). Nothing is cloned or counted: the context is borrowed for
    /// the call, the cheapest way to make a context current.
    ///
    /// It takes a closure rather than returning a guard that borrows `self`
    /// because such a guard could be leaked with `mem::forget` in safe code,
    /// leaving the thread (and the profiler's signal handler) pointing at a
    /// context that may since have been freed.
    ///
    /// ```
    /// use tracewire::{Context, labels::LabelSet};
    ///
    /// let ctx = Context::new().with_labels(LabelSet::new([("worker", "purge")]));
    /// let got = ctx.in_scope(|| tracewire::labels::current().get("worker").map(str::to_owned));
    /// assert_eq!(got.as_deref(), Some("purge"));
    /// assert!(tracewire::labels::current().is_empty());
    /// ```
    #[inline]
    pub fn in_scope<R>(&self, f: impl FnOnce() -> R) -> R {
        slot::in_scope(self, f)
    }

    /// Whether this is not the empty context.
    #[inline]
    pub(crate) fn inner_is_some(&self) -> bool {
        self.inner.is_some()
    }

    /// What the profiler's slot holds for this context (null when empty).
    #[inline]
    pub(crate) fn record_ptr(&self) -> *const Record {
        self.inner.as_ref().map_or(std::ptr::null(), |i| &i.record)
    }
}

static EMPTY: Context = Context::new();

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Context");
        if let Some(i) = &self.inner {
            let i = &i.data;
            d.field("span", &i.span.as_ref().map(|s| s.span_context()))
                .field("labels", &i.labels)
                .field("values", &i.values.len());
        }
        d.finish()
    }
}

/// Restores the previous context when dropped. Returned by [`Context::attach`].
#[must_use = "the context is detached as soon as the guard is dropped"]
pub struct ContextGuard {
    ticket: Ticket,
    _not_send: PhantomData<*const ()>,
}

impl fmt::Debug for ContextGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContextGuard")
            .field("depth", &self.ticket.depth())
            .finish()
    }
}

impl Drop for ContextGuard {
    #[inline]
    fn drop(&mut self) {
        // `exit` hands the context back so that it is dropped here, outside the
        // stack's borrow: dropping it may end a span, which runs span processors.
        drop(slot::exit(self.ticket));
    }
}

/// Extension methods that carry a [`Context`] (and so its labels) into a future,
/// implemented for every future.
///
/// Named so that it does not clash with `futures::FutureExt` (tracing calls its
/// equivalent `Instrument`).
///
/// ```
/// use tracewire::{labels::{self, LabelSet}, ContextExt};
///
/// # futures_executor::block_on(async {
/// let got = async { labels::current().get("job").map(str::to_owned) }
///     .with_labels(LabelSet::new([("job", "purge")]))
///     .await;
/// assert_eq!(got.as_deref(), Some("purge"));
/// # });
/// ```
pub trait ContextExt: Future + Sized {
    /// Makes `ctx` current on every poll of this future, on whichever thread polls
    /// it, and restores the thread's previous context after each poll.
    fn in_context(self, ctx: Context) -> InContext<Self> {
        InContext {
            inner: self,
            ctx: Some(ctx),
        }
    }

    /// Carries the caller's current context into this future.
    fn in_current_context(self) -> InContext<Self> {
        self.in_context(Context::current())
    }

    /// Polls this future with the caller's context plus `labels` (Go's `pprof.Do`
    /// for futures): the future form of
    /// [`labels::with_labels`](crate::labels::with_labels), and the caller's
    /// context with [`Context::with_labels`] applied. Takes a `LabelSet` or a
    /// `&LabelSet`, as `labels::with_labels` does.
    fn with_labels(self, labels: impl Borrow<LabelSet>) -> InContext<Self> {
        let labels = labels.borrow();
        self.in_context(Context::map_current(|c| {
            if labels.is_empty() {
                c.clone()
            } else {
                c.with_labels(labels.clone())
            }
        }))
    }
}

impl<F: Future> ContextExt for F {}

/// The deprecated [`FutureExt`](compat::FutureExt), in a module of its own so
/// that its methods are not in scope here next to [`ContextExt`]'s. Re-exported
/// as `tracewire::FutureExt`.
pub(crate) mod compat {
    use super::{Context, ContextExt, Future, InContext, LabelSet};

    /// The former name of [`ContextExt`], which clashed with `futures::FutureExt`.
    #[deprecated(note = "Deprecated: use tracewire::ContextExt (same methods)")]
    pub trait FutureExt: Future + Sized {
        /// See [`ContextExt::in_context`].
        #[deprecated(note = "Deprecated: use tracewire::ContextExt::in_context")]
        fn in_context(self, ctx: Context) -> InContext<Self> {
            ContextExt::in_context(self, ctx)
        }

        /// See [`ContextExt::in_current_context`].
        #[deprecated(note = "Deprecated: use tracewire::ContextExt::in_current_context")]
        fn in_current_context(self) -> InContext<Self> {
            ContextExt::in_current_context(self)
        }

        /// See [`ContextExt::with_labels`].
        #[deprecated(note = "Deprecated: use tracewire::ContextExt::with_labels")]
        fn with_labels(self, labels: LabelSet) -> InContext<Self> {
            ContextExt::with_labels(self, labels)
        }
    }

    #[allow(deprecated)]
    impl<F: Future> FutureExt for F {}
}

pin_project_lite::pin_project! {
    /// A future polled inside a [`Context`]. Made by [`ContextExt::in_context`].
    #[derive(Debug)]
    pub struct InContext<F> {
        #[pin]
        inner: F,
        ctx: Option<Context>,
    }
}

impl<F> InContext<F> {
    /// The context this future is polled in.
    pub fn context(&self) -> &Context {
        self.ctx.as_ref().unwrap_or(&EMPTY)
    }
    /// The wrapped future.
    pub fn get_ref(&self) -> &F {
        &self.inner
    }
    /// The wrapped future, mutably.
    pub fn get_mut(&mut self) -> &mut F {
        &mut self.inner
    }
    /// Unwraps the future.
    pub fn into_inner(self) -> F {
        self.inner
    }
}

impl<F: Future> Future for InContext<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        let this = self.project();
        // Move the context onto the thread's stack for the poll and take it back
        // afterwards: no reference-count traffic per poll.
        let ticket = slot::enter(this.ctx.take().unwrap_or_default());
        let restore = Restore {
            ticket,
            slot: this.ctx,
        };
        let out = this.inner.poll(cx);
        drop(restore);
        out
    }
}

/// Detaches on drop (also while unwinding) and hands the context back to the future.
struct Restore<'a> {
    ticket: Ticket,
    slot: &'a mut Option<Context>,
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        *self.slot = Some(slot::exit(self.ticket));
    }
}

/// Spawns `future` on the current tokio runtime, carrying the caller's context (and
/// labels) into the task, as Go's goroutines inherit their creator's labels.
///
/// # Panics
/// Panics if called outside a tokio runtime, like `tokio::spawn`.
pub fn spawn<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(future.in_current_context())
}

/// Runs `f` on tokio's blocking pool with the caller's context attached.
///
/// # Panics
/// Panics if called outside a tokio runtime, like `tokio::task::spawn_blocking`.
pub fn spawn_blocking<F, R>(f: F) -> tokio::task::JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let ctx = Context::current();
    tokio::task::spawn_blocking(move || {
        let _guard = ctx.attach();
        f()
    })
}

/// Spawns an OS thread that starts with the caller's context attached.
pub fn spawn_thread<F, R>(f: F) -> std::thread::JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let ctx = Context::current();
    std::thread::spawn(move || {
        let _guard = ctx.attach();
        f()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct RequestId(u32);

    fn label_of(ctx: &Context) -> Option<String> {
        ctx.labels().get("k").map(str::to_owned)
    }

    #[test]
    fn attach_restores_previous_context_on_drop() {
        let a = Context::new().with_value(RequestId(1));
        let b = Context::new().with_value(RequestId(2));
        let ga = a.attach();
        {
            let _gb = b.attach();
            assert_eq!(Context::current().get::<RequestId>(), Some(&RequestId(2)));
        }
        assert_eq!(Context::current().get::<RequestId>(), Some(&RequestId(1)));
        drop(ga);
        assert_eq!(Context::current().get::<RequestId>(), None);
    }

    #[test]
    fn out_of_order_guard_drop_removes_only_its_context() {
        let ga = Context::new().with_value(RequestId(1)).attach();
        let gb = Context::new().with_value(RequestId(2)).attach();
        drop(ga);
        assert_eq!(Context::current().get::<RequestId>(), Some(&RequestId(2)));
        drop(gb);
        assert_eq!(Context::current().get::<RequestId>(), None);
        assert_eq!(slot::depth(), 0);
    }

    #[test]
    fn slot_follows_the_current_context() {
        let ctx = Context::new().with_labels(LabelSet::new([("k", "v")]));
        assert!(slot::published().0.is_null());
        let g = ctx.clone().attach();
        assert_eq!(slot::published().0, ctx.record_ptr());
        drop(g);
        assert!(slot::published().0.is_null());
    }

    #[test]
    fn values_are_typed_and_replaced_by_type() {
        let ctx = Context::new().with_value(RequestId(1)).with_value(7u8);
        let ctx2 = ctx.with_value(RequestId(2));
        assert_eq!(ctx.get::<RequestId>(), Some(&RequestId(1)));
        assert_eq!(ctx2.get::<RequestId>(), Some(&RequestId(2)));
        assert_eq!(ctx2.get::<u8>(), Some(&7));
        assert_eq!(ctx2.get::<u16>(), None);
    }

    #[test]
    fn panic_caught_with_catch_unwind_restores_context() {
        let outer = Context::new().with_labels(LabelSet::new([("k", "outer")]));
        let _g = outer.attach();
        let r = std::panic::catch_unwind(|| {
            let _g = Context::current()
                .with_labels(LabelSet::new([("k", "inner")]))
                .attach();
            panic!("boom");
        });
        assert!(r.is_err());
        assert_eq!(label_of(&Context::current()).as_deref(), Some("outer"));
        assert_eq!(
            slot::published().0,
            Context::current().record_ptr(),
            "slot restored too"
        );
    }

    #[test]
    fn spawn_thread_carries_context() {
        let _g = Context::new().with_value(RequestId(9)).attach();
        let got = spawn_thread(|| Context::current().get::<RequestId>().map(|r| r.0))
            .join()
            .unwrap();
        assert_eq!(got, Some(9));
    }
}
