//! The response body wrapper: polled inside the request's context, it ends the
//! span when the body has been sent (or fails, or is dropped).

use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use http_body::{Body, Frame, SizeHint};
use tracewire::Context;

use super::{Protocol, Side};

pin_project_lite::pin_project! {
    /// A response body that ends its request's span when the last frame has been
    /// sent. Made by [`Trace`](super::Trace).
    #[derive(Debug)]
    pub struct ResponseBody<B> {
        #[pin]
        inner: B,
        // The request's context (its span and labels); `None` once ended.
        ctx: Option<Context>,
        protocol: Protocol,
        side: Side,
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn new(inner: B, ctx: Option<Context>, protocol: Protocol, side: Side) -> Self {
        ResponseBody {
            inner,
            ctx,
            protocol,
            side,
        }
    }
    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
    /// Unwraps the body (the span then ends when it would have been dropped).
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body,
    B::Error: std::fmt::Display,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let Some(ctx) = this.ctx.as_ref() else {
            return this.inner.poll_frame(cx);
        };
        // Streaming work done while producing the body is the request's work too.
        let guard = ctx.clone().attach();
        let polled = this.inner.poll_frame(cx);
        drop(guard);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.protocol
                        .record_trailers(ctx.span(), *this.side, trailers);
                }
            }
            Poll::Ready(Some(Err(e))) => {
                ctx.span()
                    .set_status(tracewire::Status::error(format!("response body: {e}")));
                ctx.span().end();
                *this.ctx = None;
            }
            Poll::Ready(None) => {
                ctx.span().end();
                *this.ctx = None;
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
