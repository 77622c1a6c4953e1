//! The hooks of [`TraceLayer`](super::TraceLayer) and
//! [`ClientTraceLayer`](super::ClientTraceLayer), named as tower-http names
//! them: each a trait with one method, implemented for closures, with `()` as
//! the no-op every layer starts with (it costs nothing: the calls compile away).
//!
//! A hook sees the request or response head and the span; what it records is
//! added to what the layer records. A hook that panics is stopped there: what
//! it did before the panic stays, the request goes on as if the hook had
//! returned (its response is served, its span ended as usual, neither marked
//! as an error for it), and the span gets an event `hook panicked` with
//! `tracewire.hook` (the hook's name) and `exception.message`.

use std::any::Any;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};

use crate::trace::Str;
use crate::{KeyValue, Span, Value};

/// Shapes a span before it starts: its name and the attributes the sampler
/// sees. [`TraceLayer::make_span_with`](super::TraceLayer::make_span_with).
///
/// The parent (and the trust policy that chose it) and the span kind stay the
/// layer's.
pub trait MakeSpan {
    /// Edits `span`, the span the layer is about to start for `request`.
    fn make_span(&self, request: &http::request::Parts, span: &mut NewSpan);
}

impl MakeSpan for () {
    #[inline]
    fn make_span(&self, _: &http::request::Parts, _: &mut NewSpan) {}
}

impl<F> MakeSpan for F
where
    F: Fn(&http::request::Parts, &mut NewSpan),
{
    fn make_span(&self, request: &http::request::Parts, span: &mut NewSpan) {
        self(request, span)
    }
}

/// Runs once the span has started, before the inner service is called (on a
/// server, with the request's context current; on a client, after the context
/// was injected into the headers).
/// [`TraceLayer::on_request`](super::TraceLayer::on_request).
pub trait OnRequest {
    /// Called with the request's head and its span.
    fn on_request(&self, request: &http::request::Parts, span: &Span);
}

impl OnRequest for () {
    #[inline]
    fn on_request(&self, _: &http::request::Parts, _: &Span) {}
}

impl<F> OnRequest for F
where
    F: Fn(&http::request::Parts, &Span),
{
    fn on_request(&self, request: &http::request::Parts, span: &Span) {
        self(request, span)
    }
}

/// Runs when the inner service has answered, with the response head, after
/// the layer recorded the status (so it may override it) and before the body is
/// sent; the span is still open. [`TraceLayer::on_response`](super::TraceLayer::on_response).
pub trait OnResponse {
    /// Called with the response's head and the request's span.
    fn on_response(&self, response: &http::response::Parts, span: &Span);
}

impl OnResponse for () {
    #[inline]
    fn on_response(&self, _: &http::response::Parts, _: &Span) {}
}

impl<F> OnResponse for F
where
    F: Fn(&http::response::Parts, &Span),
{
    fn on_response(&self, response: &http::response::Parts, span: &Span) {
        self(response, span)
    }
}

/// Runs each time the layer marks the span as an error, right after it set the
/// error status: see [`Failure`] for when. [`TraceLayer::on_failure`](super::TraceLayer::on_failure).
pub trait OnFailure {
    /// Called with what failed and the request's span (not yet ended).
    fn on_failure(&self, failure: Failure<'_>, span: &Span);
}

impl OnFailure for () {
    #[inline]
    fn on_failure(&self, _: Failure<'_>, _: &Span) {}
}

impl<F> OnFailure for F
where
    F: Fn(Failure<'_>, &Span),
{
    fn on_failure(&self, failure: Failure<'_>, span: &Span) {
        self(failure, span)
    }
}

/// Why a layer marked a span as an error, as [`OnFailure`] hears it. Its
/// `Display` is the span's status message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure<'a> {
    /// An HTTP status the layer counts as an error: 5xx on a server, 4xx too on
    /// a client ([`Protocol::Http`](super::Protocol::Http)).
    Status(http::StatusCode),
    /// A gRPC status the layer counts as an error (a server: UNKNOWN,
    /// DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS; a
    /// client: any but OK), with its percent-decoded `grpc-message` (may be
    /// empty); from the response headers or the trailers, or mapped from the
    /// HTTP status of a response without `grpc-status`.
    GrpcStatus {
        /// The `grpc-status` code.
        code: i64,
        /// The `grpc-message`, decoded.
        message: &'a str,
    },
    /// The inner service returned this error (its `Display`).
    Error(&'a str),
    /// The response body returned this error (its `Display`).
    Body(&'a str),
    /// The inner service or the response body panicked with this message; the
    /// panic goes on to the layers outside.
    Panic(&'a str),
    /// The request was dropped before its response: the caller went away.
    Cancelled,
}

impl fmt::Display for Failure<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Status(status) => write!(f, "HTTP {}", status.as_u16()),
            Failure::GrpcStatus { code, message: "" } => {
                write!(f, "grpc-status {code}")
            }
            Failure::GrpcStatus { message, .. } => f.write_str(message),
            Failure::Error(e) => f.write_str(e),
            Failure::Body(e) => write!(f, "response body: {e}"),
            Failure::Panic(message) => write!(f, "panic: {message}"),
            Failure::Cancelled => f.write_str("cancelled"),
        }
    }
}

/// The span a layer is about to start, as [`MakeSpan`] edits it.
#[derive(Debug)]
pub struct NewSpan {
    pub(crate) name: Str,
    pub(crate) attributes: Vec<KeyValue>,
}

impl NewSpan {
    /// Its name: `METHOD route` (HTTP servers), `METHOD` (HTTP clients),
    /// `package.Service/Method` (gRPC).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Renames it. Mind the cardinality: a name per user or id makes span
    /// names (and trace backends' indexes) grow without bound.
    pub fn set_name(&mut self, name: impl Into<Str>) {
        self.name = name.into();
    }

    /// The attributes the layer gives it (and the ones added so far).
    pub fn attributes(&self) -> &[KeyValue] {
        &self.attributes
    }

    /// Sets the attribute `key` to `value`, visible to the sampler; one with the
    /// key of an earlier one replaces it.
    pub fn set_attribute(&mut self, key: impl Into<Str>, value: impl Into<Value>) {
        let kv = KeyValue::new(key, value);
        match self.attributes.iter_mut().find(|a| a.key == kv.key) {
            Some(a) => *a = kv,
            None => self.attributes.push(kv),
        }
    }
}

/// The hooks a layer was given.
#[derive(Clone, Copy, Default)]
pub(crate) struct Hooks<M, Req, Res, Fail> {
    pub(crate) make_span: M,
    pub(crate) on_request: Req,
    pub(crate) on_response: Res,
    pub(crate) on_failure: Fail,
}

impl<M, Req, Res, Fail> fmt::Debug for Hooks<M, Req, Res, Fail> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("make_span", &std::any::type_name::<M>())
            .field("on_request", &std::any::type_name::<Req>())
            .field("on_response", &std::any::type_name::<Res>())
            .field("on_failure", &std::any::type_name::<Fail>())
            .finish()
    }
}

/// Runs `hook`; if it panics, the panic stops here and is recorded on `span`
/// (see the [module docs](self)).
#[inline]
pub(crate) fn run(span: &Span, name: &'static str, hook: impl FnOnce()) {
    if let Err(message) = catch(hook) {
        record_panic(span, name, message);
    }
}

/// Runs `hook`, turning a panic into its message.
#[inline]
pub(crate) fn catch(hook: impl FnOnce()) -> Result<(), String> {
    panic::catch_unwind(AssertUnwindSafe(hook)).map_err(|p| panic_message(&*p).to_owned())
}

#[cold]
pub(crate) fn record_panic(span: &Span, name: &'static str, message: String) {
    span.add_event(
        "hook panicked",
        vec![
            KeyValue::new("tracewire.hook", name),
            KeyValue::new("exception.message", message),
        ],
    );
}

/// The message of a panic payload (`panic!` makes a `&str` or a `String`).
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "non-string payload"
    }
}
