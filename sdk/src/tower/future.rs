//! The response future of [`Trace`](super::Trace) and
//! [`ClientTrace`](super::ClientTrace).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use crate::context::InContext;
use crate::Context;

use super::body::OpenSpan;
use super::hooks::{self, Failure, OnFailure, OnResponse};
use super::{Protocol, ResponseBody, Side};

pin_project_lite::pin_project! {
    /// Resolves to the inner service's response with a [`ResponseBody`] that ends
    /// the span. The inner future is polled inside the request's context. `Res`
    /// and `Fail` are the layer's [`OnResponse`] and [`OnFailure`] hooks.
    ///
    /// Dropped before the response (the client went away), it ends the span with
    /// the error status `cancelled`. If the inner future panics, the span gets an
    /// error status and `error.type=panic` and ends, and the panic goes on to the
    /// layers outside (a catch-panic layer still answers 500).
    pub struct ResponseFuture<F, Res = (), Fail: OnFailure = ()> {
        #[pin]
        inner: InContext<F>,
        span: OpenSpan<Fail>,
        on_response: Res,
        protocol: Protocol,
        side: Side,
    }
}

impl<F, Res, Fail: OnFailure> fmt::Debug for ResponseFuture<F, Res, Fail> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("span", &self.span)
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

impl<F, Res, Fail: OnFailure> ResponseFuture<F, Res, Fail> {
    pub(crate) fn new(
        inner: InContext<F>,
        ctx: Context,
        hooks: (Res, Fail),
        protocol: Protocol,
        side: Side,
    ) -> Self {
        let (on_response, on_failure) = hooks;
        ResponseFuture {
            inner,
            span: OpenSpan::new(ctx, on_failure),
            on_response,
            protocol,
            side,
        }
    }
}

impl<F, B, E, Res, Fail> Future for ResponseFuture<F, Res, Fail>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    E: fmt::Display,
    Res: OnResponse,
    Fail: OnFailure + Clone,
{
    type Output = Result<http::Response<ResponseBody<B, Fail>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let inner = this.inner;
        let result = match this.span.catch_panic(|| inner.poll(cx)) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(r) => r,
        };
        Poll::Ready(match result {
            Ok(response) => {
                let (parts, body) = response.into_parts();
                if let Some(ctx) = this.span.ctx() {
                    let span = ctx.span();
                    let error = this.protocol.record_response(span, *this.side, &parts);
                    let on_response = &*this.on_response;
                    hooks::run(span, "on_response", || {
                        on_response.on_response(&parts, span)
                    });
                    this.span.report_status(error);
                }
                let span = this.span.for_body();
                let body = ResponseBody::new(body, span, *this.protocol, *this.side);
                Ok(http::Response::from_parts(parts, body))
            }
            Err(e) => {
                this.span.fail(Failure::Error(&e.to_string()));
                Err(e)
            }
        })
    }
}
