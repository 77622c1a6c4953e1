//! Getting finished spans out of the process.
//!
//! A [`SpanProcessor`] receives each sampled span when it ends. The
//! [`BatchProcessor`] queues it without blocking and a dedicated thread hands
//! batches to a [`SpanExporter`]; the [`SimpleProcessor`] exports on the caller's
//! thread (for tests).

mod batch;
mod json;
mod memory;
mod retry;
mod simple;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

pub use batch::{BatchConfig, BatchProcessor};
pub use json::JsonLinesExporter;
pub use memory::InMemoryExporter;
pub use retry::{Attempt, Backoff, ExportCounters, ExporterStats};
pub use simple::SimpleProcessor;

use crate::trace::{Resource, SpanContext, SpanData};

/// Sends batches of finished spans somewhere (a collector, a file, memory).
///
/// Exporters run on the batch processor's own thread and tokio runtime, never on
/// the instrumented path. They should be cooperative (await I/O rather than block)
/// so that deadlines can interrupt them.
pub trait SpanExporter: Send + 'static {
    /// Exports one batch. An error means the whole batch is lost: it is counted as
    /// dropped, and logged by the processor.
    fn export(&mut self, batch: &[SpanData]) -> impl Future<Output = Result<(), ExportError>>;

    /// Releases the exporter's resources; called once, at shutdown.
    fn shutdown(&mut self) -> impl Future<Output = Result<(), ExportError>> {
        async { Ok(()) }
    }

    /// Tells the exporter which process produces the spans (called before the
    /// first export).
    fn set_resource(&mut self, _resource: &Resource) {}
}

/// Receives spans as they end. Implemented by [`BatchProcessor`] and
/// [`SimpleProcessor`].
pub trait SpanProcessor: Send + Sync + fmt::Debug {
    /// Called on the thread that ended a sampled span. Must not block.
    fn on_end(&self, span: SpanData);
    /// Exports every span ended before the call; waits at most `timeout`. An error
    /// when an export since the previous flush failed (spans were lost), also one
    /// the processor made on its own before this call.
    fn force_flush(&self, timeout: Duration) -> Result<(), ExportError>;
    /// Like `force_flush`, as a future (used by `Span::end_and_flush`).
    fn flush(&self) -> FlushHandle;
    /// Exports or counts as dropped every span ended before the call, then shuts the
    /// exporter down; waits at most `timeout`. Spans ended later are dropped and
    /// counted.
    fn shutdown(&self, timeout: Duration) -> Result<(), ExportError>;
    /// Passes the provider's resource on to the exporter.
    fn set_resource(&self, resource: &Resource);
    /// Counters of exported and dropped spans and failed exports.
    fn stats(&self) -> Stats;
}

/// What a [`SpanObserver`] learns when a sampled span starts.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct SpanStart<'a> {
    /// The new span's context.
    pub span_context: &'a SpanContext,
    /// The parent's span id; [`SpanId::INVALID`](crate::trace::SpanId::INVALID) for a root span.
    pub parent_span_id: crate::trace::SpanId,
    /// The name the span starts with (it may be renamed before it ends).
    pub name: &'a str,
    /// The span kind.
    pub kind: crate::trace::SpanKind,
    /// When the span started.
    pub start_time: std::time::SystemTime,
}

/// Watches sampled spans start and end, by reference, on the thread that starts
/// or ends them: for in-process views such as a running-span count or a latency
/// summary (the `/debug/tracez` page of `tracewire-http` is one), which need no
/// copy of the span. Added with
/// [`TracerProviderBuilder::with_observer`](crate::trace::TracerProviderBuilder::with_observer).
///
/// Both methods run on the instrumented path: they must be short and must not
/// block. Every span seen by `on_start` is later seen by `on_end`, with the same
/// span id, also when the span is dropped without being ended; spans started
/// before the observer was added (there are none: observers are fixed at build)
/// or while the provider is disabled are seen by neither.
pub trait SpanObserver: Send + Sync + fmt::Debug {
    /// A sampled span started.
    fn on_start(&self, span: &SpanStart<'_>);
    /// A sampled span ended (called before the processors receive it).
    fn on_end(&self, span: &SpanData);
}

/// Pipeline counters. See [`TracerProvider::stats`](crate::TracerProvider::stats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Sampled spans started.
    pub started: u64,
    /// Sampled spans ended.
    pub ended: u64,
    /// Spans an exporter accepted.
    pub exported: u64,
    /// Spans lost: queue full, export failed or timed out, or ended after shutdown.
    pub dropped: u64,
    /// Export calls that failed or timed out.
    pub export_failures: u64,
}

/// Why an export, flush or shutdown did not succeed.
#[derive(Debug)]
pub struct ExportError {
    kind: ErrorKind,
    message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorKind {
    Export,
    Timeout,
    ShutDown,
}

impl ExportError {
    /// An export failure described by `message`.
    pub fn new(message: impl fmt::Display) -> Self {
        ExportError {
            kind: ErrorKind::Export,
            message: message.to_string(),
        }
    }
    /// The deadline passed first.
    pub fn timeout() -> Self {
        ExportError {
            kind: ErrorKind::Timeout,
            message: "deadline exceeded".into(),
        }
    }
    /// The pipeline was already shut down.
    pub fn shut_down() -> Self {
        ExportError {
            kind: ErrorKind::ShutDown,
            message: "already shut down".into(),
        }
    }
    /// Whether the deadline passed first.
    pub fn is_timeout(&self) -> bool {
        self.kind == ErrorKind::Timeout
    }
    /// Whether the pipeline was already shut down.
    pub fn is_shut_down(&self) -> bool {
        self.kind == ErrorKind::ShutDown
    }
}

impl fmt::Display for ExportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ExportError {}

/// Resolves when a flush has finished. Returned by [`SpanProcessor::flush`].
#[derive(Debug)]
#[must_use = "a flush handle does nothing unless awaited"]
pub struct FlushHandle {
    state: FlushState,
}

#[derive(Debug)]
enum FlushState {
    Ready(Option<Result<(), ExportError>>),
    Waiting(tokio::sync::oneshot::Receiver<Result<(), ExportError>>),
}

impl FlushHandle {
    /// A handle that is already finished with `result`.
    pub fn ready(result: Result<(), ExportError>) -> Self {
        FlushHandle {
            state: FlushState::Ready(Some(result)),
        }
    }
    pub(crate) fn waiting(rx: tokio::sync::oneshot::Receiver<Result<(), ExportError>>) -> Self {
        FlushHandle {
            state: FlushState::Waiting(rx),
        }
    }
}

impl Future for FlushHandle {
    type Output = Result<(), ExportError>;
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().state {
            FlushState::Ready(r) => Poll::Ready(r.take().unwrap_or(Ok(()))),
            FlushState::Waiting(rx) => Pin::new(rx)
                .poll(cx)
                .map(|r| r.unwrap_or_else(|_| Err(ExportError::shut_down()))),
        }
    }
}

/// Reports failures on stderr at most once per interval, with the number of
/// failures since the last report, instead of once per failure: for exporters
/// and uploaders that must say they are failing without flooding the log.
///
/// ```
/// use std::time::Duration;
/// use tracewire::export::FailureLog;
///
/// let mut log = FailureLog::new("my-exporter", Duration::from_secs(60));
/// log.report("upload failed", &"connection refused"); // printed
/// log.report("upload failed", &"connection refused"); // counted, printed with the next
/// ```
#[derive(Debug)]
pub struct FailureLog {
    source: &'static str,
    interval: Duration,
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl FailureLog {
    /// A log whose lines start with `source` and come at most once per `interval`.
    pub fn new(source: &'static str, interval: Duration) -> Self {
        FailureLog {
            source,
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// Reports `what` failed with `err`: printed if the interval since the last
    /// line has passed (with the count of failures held back meanwhile), else
    /// counted.
    pub fn report(&mut self, what: &str, err: &dyn fmt::Display) {
        let now = std::time::Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < self.interval)
        {
            self.suppressed += 1;
            return;
        }
        let source = self.source;
        match std::mem::take(&mut self.suppressed) {
            0 => eprintln!("{source}: {what}: {err}"),
            n => eprintln!("{source}: {what}: {err} ({n} more failures since the last report)"),
        }
        self.last = Some(now);
    }
}
