//! The response future of [`Trace`](super::Trace).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use crate::context::InContext;
use crate::Context;

use super::body::OpenSpan;
use super::{Protocol, ResponseBody, Side};

pin_project_lite::pin_project! {
    /// Resolves to the inner service's response with a [`ResponseBody`] that ends
    /// the span. The inner future is polled inside the request's context.
    ///
    /// Dropped before the response (the client went away), it ends the span with
    /// the error status `cancelled`. If the inner future panics, the span gets an
    /// error status and `error.type=panic` and ends, and the panic goes on to the
    /// layers outside (a catch-panic layer still answers 500).
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: InContext<F>,
        span: OpenSpan,
        protocol: Protocol,
        side: Side,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: InContext<F>, ctx: Context, protocol: Protocol, side: Side) -> Self {
        ResponseFuture {
            inner,
            span: OpenSpan::new(ctx),
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
        let inner = this.inner;
        let result = match this.span.catch_panic(|| inner.poll(cx)) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(r) => r,
        };
        Poll::Ready(match result {
            Ok(response) => {
                if let Some(ctx) = this.span.ctx() {
                    this.protocol
                        .record_response(ctx.span(), *this.side, &response);
                }
                let span = this.span.for_body();
                let (protocol, side) = (*this.protocol, *this.side);
                Ok(response.map(|b| ResponseBody::new(b, span, protocol, side)))
            }
            Err(e) => {
                this.span.fail(e.to_string());
                Err(e)
            }
        })
    }
}
