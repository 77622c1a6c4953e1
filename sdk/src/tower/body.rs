//! The response body wrapper: polled inside the request's context, it ends the
//! span when the body reports its end (or fails, or is dropped), and
//! [`OpenSpan`], the owner of a request's span (and of the failure hook) until
//! then.

use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use http_body::{Body, Frame, SizeHint};

use super::hooks::{self, Failure, OnFailure};
use super::{Protocol, Side, StatusError};
use crate::{Context, Status};

/// The request's context while its span is open, and the layer's
/// [`OnFailure`] hook. Ends the span when dropped, so no clone of the context
/// kept elsewhere (a task the handler spawned, say) can keep the span open: the
/// span lasts as long as the request.
pub(crate) struct OpenSpan<Fail: OnFailure = ()> {
    // `None` once the span has been ended here (or handed on).
    ctx: Option<Context>,
    // Dropped before a response existed: the caller went away.
    cancel_on_drop: bool,
    on_failure: Fail,
}

impl<Fail: OnFailure> fmt::Debug for OpenSpan<Fail> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenSpan")
            .field("ctx", &self.ctx)
            .field("cancel_on_drop", &self.cancel_on_drop)
            .finish_non_exhaustive()
    }
}

impl<Fail: OnFailure> OpenSpan<Fail> {
    /// The span of a request that has no response yet.
    pub(crate) fn new(ctx: Context, on_failure: Fail) -> Self {
        OpenSpan {
            ctx: Some(ctx),
            cancel_on_drop: true,
            on_failure,
        }
    }

    /// The context, for a response body to carry on: dropping that one ends the
    /// span without an error.
    pub(crate) fn for_body(&mut self) -> OpenSpan<Fail>
    where
        Fail: Clone,
    {
        OpenSpan {
            ctx: self.ctx.take(),
            cancel_on_drop: false,
            on_failure: self.on_failure.clone(),
        }
    }

    /// The request's context while the span is open.
    pub(crate) fn ctx(&self) -> Option<&Context> {
        self.ctx.as_ref()
    }

    /// Ends the span now.
    pub(crate) fn end(&mut self) {
        if let Some(ctx) = self.ctx.take() {
            ctx.span().end();
        }
    }

    /// Marks the span as an error (status message: `failure`) and tells the
    /// [`OnFailure`] hook; the span stays open.
    pub(crate) fn report(&self, failure: Failure<'_>) {
        if let Some(ctx) = &self.ctx {
            let span = ctx.span();
            span.set_status(Status::error(failure.to_string()));
            hooks::run(span, "on_failure", || {
                self.on_failure.on_failure(failure, span)
            });
        }
    }

    /// [`report`](Self::report)s the error status the protocol read, if any.
    pub(crate) fn report_status(&self, error: Option<StatusError>) {
        if let Some(e) = error {
            self.report(e.as_failure());
        }
    }

    /// Ends the span with an error status.
    pub(crate) fn fail(&mut self, failure: Failure<'_>) {
        self.report(failure);
        self.end();
    }

    /// Runs `poll` (the handler's future or the body); if it panics, records the
    /// panic on the span (error status, `error.type=panic`), ends the span, and
    /// resumes the unwind so an outer catch-panic layer answers as before.
    pub(crate) fn catch_panic<T>(&mut self, poll: impl FnOnce() -> T) -> T {
        match panic::catch_unwind(AssertUnwindSafe(poll)) {
            Ok(polled) => polled,
            Err(payload) => {
                if let Some(ctx) = &self.ctx {
                    ctx.span().set_attribute("error.type", "panic");
                }
                self.fail(Failure::Panic(hooks::panic_message(&*payload)));
                panic::resume_unwind(payload)
            }
        }
    }
}

impl<Fail: OnFailure> Drop for OpenSpan<Fail> {
    fn drop(&mut self) {
        if self.cancel_on_drop {
            self.fail(Failure::Cancelled);
        } else {
            self.end();
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that ends its request's span when the body reports its end:
    /// its last frame (`is_end_stream()` true after it, or trailers), `None`, an
    /// error, `is_end_stream()` answering true, or the body being dropped —
    /// whichever comes first. Made by [`Trace`](super::Trace) and
    /// [`ClientTrace`](super::ClientTrace); `Fail` is their
    /// [`OnFailure`] hook.
    pub struct ResponseBody<B, Fail: OnFailure = ()> {
        #[pin]
        inner: B,
        span: OpenSpan<Fail>,
        protocol: Protocol,
        side: Side,
    }
}

impl<B: fmt::Debug, Fail: OnFailure> fmt::Debug for ResponseBody<B, Fail> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseBody")
            .field("inner", &self.inner)
            .field("span", &self.span)
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

impl<B, Fail: OnFailure> ResponseBody<B, Fail> {
    pub(crate) fn new(inner: B, span: OpenSpan<Fail>, protocol: Protocol, side: Side) -> Self {
        ResponseBody {
            inner,
            span,
            protocol,
            side,
        }
    }
    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
    /// Unwraps the body, ending the span.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B, Fail> Body for ResponseBody<B, Fail>
where
    B: Body,
    B::Error: std::fmt::Display,
    Fail: OnFailure,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let Some(ctx) = this.span.ctx() else {
            return this.inner.poll_frame(cx);
        };
        // Streaming work done while producing the body is the request's work too.
        let guard = ctx.clone().attach();
        let polled = this.span.catch_panic(|| this.inner.as_mut().poll_frame(cx));
        drop(guard);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                let trailers = frame.trailers_ref();
                if let (Some(trailers), Some(ctx)) = (trailers, this.span.ctx()) {
                    let error = this
                        .protocol
                        .record_trailers(ctx.span(), *this.side, trailers);
                    this.span.report_status(error);
                }
                // Trailers are the last frame; and hyper never polls a body again
                // once it says it has ended.
                if trailers.is_some() || this.inner.is_end_stream() {
                    this.span.end();
                }
            }
            Poll::Ready(Some(Err(e))) => this.span.fail(Failure::Body(&e.to_string())),
            Poll::Ready(None) => this.span.end(),
            Poll::Pending => {}
        }
        polled
    }

    /// The inner body's answer; `true` also ends the span (there is nothing left
    /// to send, and hyper will not poll the body again).
    fn is_end_stream(&self) -> bool {
        let end = self.inner.is_end_stream();
        if let (true, Some(ctx)) = (end, self.span.ctx()) {
            ctx.span().end();
        }
        end
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
