//! Starting a span and making it current in one call: [`Tracer::in_span`] for a
//! closure, [`Tracer::in_span_async`] for a future.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use super::{Span, Str, Tracer};
use crate::context::{Context, ContextExt, InContext};

impl Tracer {
    /// Runs `f` inside a new span (child of the current context), with a context
    /// holding that span current; ends the span when `f` returns, or unwinds.
    ///
    /// ```
    /// use tracewire::{Span, TracerProvider};
    ///
    /// let tracer = TracerProvider::builder().build().tracer("doc");
    /// let id = tracer.in_span("get_user", |cx| {
    ///     cx.span().set_attribute("user.id", 7);
    ///     assert_eq!(Span::current().span_context(), cx.span().span_context());
    ///     7
    /// });
    /// assert_eq!(id, 7);
    /// assert!(!Span::current().span_context().is_valid());
    /// ```
    pub fn in_span<R>(&self, name: impl Into<Str>, f: impl FnOnce(&Context) -> R) -> R {
        let ctx = Context::current_with_span(self.start(name));
        // Ends the span also when `f` panics, even if `f` kept a handle to it.
        let _end = EndOnDrop(ctx.span().clone());
        ctx.in_scope(|| f(&ctx))
    }

    /// Starts a span (child of the current context) and returns `f(cx)`, where
    /// `cx` is the current context with that span, polled with `cx` current.
    /// The span ends when the future completes, or when it is dropped before.
    ///
    /// `f` takes the context by value, so that an `async move` block can keep it.
    ///
    /// ```
    /// use tracewire::{Span, TracerProvider};
    ///
    /// # futures_executor::block_on(async {
    /// let tracer = TracerProvider::builder().build().tracer("doc");
    /// let n = tracer
    ///     .in_span_async("fetch", |cx| async move {
    ///         cx.span().set_attribute("http.route", "/user");
    ///         Span::with_current(|span| span.span_context().span_id())
    ///             == cx.span().span_context().span_id()
    ///     })
    ///     .await;
    /// assert!(n);
    /// # });
    /// ```
    pub fn in_span_async<F, Fut>(&self, name: impl Into<Str>, f: F) -> InSpan<Fut>
    where
        F: FnOnce(Context) -> Fut,
        Fut: Future,
    {
        let ctx = Context::current_with_span(self.start(name));
        let end = EndOnDrop(ctx.span().clone());
        InSpan {
            inner: f(ctx.clone()).in_context(ctx),
            end,
        }
    }
}

/// Ends its span when dropped.
#[derive(Debug)]
struct EndOnDrop(Span);

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        self.0.end();
    }
}

pin_project_lite::pin_project! {
    /// A future polled inside its own span, which ends when the future completes
    /// or is dropped. Made by [`Tracer::in_span_async`].
    #[derive(Debug)]
    #[must_use = "futures do nothing unless polled"]
    pub struct InSpan<F> {
        #[pin]
        inner: InContext<F>,
        end: EndOnDrop,
    }
}

impl<F> InSpan<F> {
    /// The span this future runs in.
    pub fn span(&self) -> &Span {
        &self.end.0
    }
}

impl<F: Future> Future for InSpan<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        let this = self.project();
        let out = this.inner.poll(cx);
        if out.is_ready() {
            this.end.0.end();
        }
        out
    }
}
