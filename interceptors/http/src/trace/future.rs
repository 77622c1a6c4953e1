//! The response future of [`Trace`](super::Trace).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use tracewire::context::InContext;
use tracewire::Context;

use super::{Protocol, ResponseBody, Side};

pin_project_lite::pin_project! {
    /// Resolves to the inner service's response with a [`ResponseBody`] that ends
    /// the span. The inner future is polled inside the request's context.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: InContext<F>,
        ctx: Option<Context>,
        protocol: Protocol,
        side: Side,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: InContext<F>, ctx: Context, protocol: Protocol, side: Side) -> Self {
        ResponseFuture {
            inner,
            ctx: Some(ctx),
            protocol,
            side,
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    E: std::fmt::Display,
{
    type Output = Result<http::Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = match this.inner.poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(r) => r,
        };
        let ctx = this.ctx.take();
        Poll::Ready(match result {
            Ok(response) => {
                if let Some(ctx) = &ctx {
                    this.protocol
                        .record_response(ctx.span(), *this.side, &response);
                }
                let (protocol, side) = (*this.protocol, *this.side);
                Ok(response.map(|b| ResponseBody::new(b, ctx, protocol, side)))
            }
            Err(e) => {
                if let Some(ctx) = ctx {
                    ctx.span()
                        .set_status(tracewire::Status::error(e.to_string()));
                    ctx.span().end();
                }
                Err(e)
            }
        })
    }
}
