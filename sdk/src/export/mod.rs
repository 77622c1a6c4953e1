//! Getting finished spans out of the process.
//!
//! A [`SpanProcessor`] receives each sampled span when it ends. The
//! [`BatchProcessor`] queues it without blocking and a dedicated thread hands
//! batches to a [`SpanExporter`]; the [`SimpleProcessor`] exports on the caller's
//! thread (for tests).
//!
//! Every span is accounted for: after a shutdown, `exported + dropped == ended`,
//! whatever the exporter did (failed, panicked, hung, blocked its thread), and the
//! shutdown's [`ShutdownReport`] (or [`ShutdownError`], when spans were lost) says
//! so. Flushes and shutdowns keep their deadlines.

mod batch;
#[cfg(feature = "json")]
mod json;
mod memory;
mod retry;
mod simple;
mod timer;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::{Duration, Instant};

pub use batch::{BatchConfig, BatchProcessor};
#[cfg(feature = "json")]
#[cfg_attr(docsrs, doc(cfg(feature = "json")))]
pub use json::JsonLinesExporter;
pub use memory::InMemoryExporter;
pub use retry::{Attempt, Backoff, ExportCounters, ExporterStats};
pub use simple::SimpleProcessor;

pub use crate::error::ExportError;
pub use crate::trace::{SpanObserver, SpanStart};

use crate::trace::{Resource, SpanData};

/// Sends batches of finished spans somewhere (a collector, a file, memory).
///
/// Exporters run on the batch processor's own thread and tokio runtime, never on
/// the instrumented path. They should be cooperative (await I/O rather than block)
/// so that deadlines can interrupt them.
///
/// What a faulty exporter costs, behind a [`BatchProcessor`]:
/// - a panic (in `export` or its future, `set_resource`, `shutdown` or its future)
///   costs the batch it was given, counted as dropped; the export thread goes on;
/// - an exporter that blocks the thread (a synchronous wait, a blocking write)
///   cannot be interrupted: a [`shutdown`](SpanProcessor::shutdown) still returns
///   by its deadline, counts what the exporter held and what was queued as
///   dropped, and leaves the thread behind to finish on its own.
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
    ///
    /// The report counts every span the processor was given over its life; it is
    /// an error if any of them was dropped, if the exporter's shutdown failed or
    /// the deadline passed, or if the processor was already shut down.
    fn shutdown(&self, timeout: Duration) -> Result<ShutdownReport, ShutdownError>;
    /// Passes the provider's resource on to the exporter.
    fn set_resource(&self, resource: &Resource);
    /// Counters of exported and dropped spans and failed exports.
    fn stats(&self) -> Stats;
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

/// What a pipeline delivered over its life, as [`TracerProvider::shutdown`]
/// reports it: after a shutdown, `exported + dropped` is every span it was given
/// (the provider's [`Stats::ended`] for each processor).
///
/// [`TracerProvider::shutdown`]: crate::TracerProvider::shutdown
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Spans an exporter accepted.
    pub exported: u64,
    /// Spans lost: queue full, export failed or timed out, or held by an exporter
    /// when the shutdown deadline passed.
    pub dropped: u64,
}

impl ShutdownReport {
    /// A report of `exported` and `dropped` spans.
    pub fn new(exported: u64, dropped: u64) -> Self {
        ShutdownReport { exported, dropped }
    }

    /// `Ok(self)` if no span was dropped and there is no `cause`, else the error
    /// carrying this report.
    pub fn into_result(self, cause: Option<ExportError>) -> Result<Self, ShutdownError> {
        if self.dropped == 0 && cause.is_none() {
            Ok(self)
        } else {
            Err(ShutdownError {
                report: self,
                cause,
            })
        }
    }

    fn add(&mut self, other: ShutdownReport) {
        self.exported += other.exported;
        self.dropped += other.dropped;
    }
}

impl std::ops::Add for ShutdownReport {
    type Output = ShutdownReport;
    fn add(mut self, other: ShutdownReport) -> ShutdownReport {
        ShutdownReport::add(&mut self, other);
        self
    }
}

/// A shutdown that lost spans or did not finish: what it delivered anyway
/// ([`report`](Self::report)), and why, if something other than dropped spans
/// went wrong ([`source`](std::error::Error::source): the deadline passed, the
/// exporter failed or panicked, the pipeline was already shut down).
///
/// ```
/// use std::time::Duration;
/// use tracewire::export::InMemoryExporter;
/// use tracewire::TracerProvider;
///
/// let provider = TracerProvider::builder()
///     .with_batch_exporter(InMemoryExporter::new())
///     .build();
/// provider.tracer("app").start("work").end();
/// let report = provider.shutdown(Duration::from_secs(5)).unwrap();
/// assert_eq!((report.exported, report.dropped), (1, 0));
/// // A second shutdown is an error, which still says what was delivered.
/// let err = provider.shutdown(Duration::from_secs(5)).unwrap_err();
/// assert!(err.is_shut_down());
/// assert_eq!(err.report(), report);
/// ```
#[derive(Debug)]
pub struct ShutdownError {
    report: ShutdownReport,
    cause: Option<ExportError>,
}

impl ShutdownError {
    /// An error with `report` and, if it is more than dropped spans, `cause`.
    pub fn new(report: ShutdownReport, cause: Option<ExportError>) -> Self {
        ShutdownError { report, cause }
    }
    /// What the pipeline exported and dropped over its life.
    pub fn report(&self) -> ShutdownReport {
        self.report
    }
    /// Spans lost.
    pub fn dropped(&self) -> u64 {
        self.report.dropped
    }
    /// Whether the deadline passed before the shutdown finished.
    pub fn is_timeout(&self) -> bool {
        self.cause.as_ref().is_some_and(ExportError::is_timeout)
    }
    /// Whether the pipeline was already shut down.
    pub fn is_shut_down(&self) -> bool {
        self.cause.as_ref().is_some_and(ExportError::is_shut_down)
    }
    /// Both errors' causes (the first one's if both have one) and the sum of
    /// their reports: for a pipeline of several processors.
    fn merge(self, other: ShutdownError) -> ShutdownError {
        ShutdownError {
            report: self.report + other.report,
            cause: self.cause.or(other.cause),
        }
    }
}

impl fmt::Display for ShutdownError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ShutdownReport { exported, dropped } = self.report;
        if let Some(cause) = &self.cause {
            write!(f, "{cause}; ")?;
        }
        write!(
            f,
            "{dropped} of {} spans dropped ({exported} exported)",
            exported + dropped
        )
    }
}

impl std::error::Error for ShutdownError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Shuts each of `processors` down within one deadline and sums their reports.
pub(crate) fn shutdown_all(
    processors: &[std::sync::Arc<dyn SpanProcessor>],
    timeout: Duration,
) -> Result<ShutdownReport, ShutdownError> {
    let deadline = Instant::now() + timeout;
    let mut result: Result<ShutdownReport, ShutdownError> = Ok(ShutdownReport::default());
    for p in processors {
        let left = deadline.saturating_duration_since(Instant::now());
        result = match (result, p.shutdown(left)) {
            (Ok(a), Ok(b)) => Ok(a + b),
            (Ok(a), Err(e)) | (Err(e), Ok(a)) => Err(ShutdownError {
                report: e.report + a,
                cause: e.cause,
            }),
            (Err(a), Err(b)) => Err(a.merge(b)),
        };
    }
    result
}

/// Resolves when a flush has finished. Returned by [`SpanProcessor::flush`].
///
/// With a [deadline](Self::with_deadline) it resolves by then in any case, with a
/// timeout error, also when the export thread is stuck in an exporter or gone: a
/// process-wide timer thread wakes it, so it needs no timer from the runtime that
/// polls it.
#[derive(Debug)]
#[must_use = "a flush handle does nothing unless awaited"]
pub struct FlushHandle {
    state: FlushState,
    deadline: Option<Instant>,
    /// The waker the timer was given for the deadline.
    armed: Option<Waker>,
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
            deadline: None,
            armed: None,
        }
    }
    pub(crate) fn waiting(rx: tokio::sync::oneshot::Receiver<Result<(), ExportError>>) -> Self {
        FlushHandle {
            state: FlushState::Waiting(rx),
            deadline: None,
            armed: None,
        }
    }
    /// This handle, resolving with [`ExportError::timeout`] at `deadline` if the
    /// flush has not finished by then (an earlier deadline wins).
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(self.deadline.map_or(deadline, |d| d.min(deadline)));
        self
    }
}

impl Future for FlushHandle {
    type Output = Result<(), ExportError>;
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let rx = match &mut this.state {
            FlushState::Ready(r) => return Poll::Ready(r.take().unwrap_or(Ok(()))),
            FlushState::Waiting(rx) => rx,
        };
        if let Poll::Ready(r) = Pin::new(rx).poll(cx) {
            this.state = FlushState::Ready(None);
            return Poll::Ready(r.unwrap_or_else(|_| Err(ExportError::shut_down())));
        }
        if let Some(deadline) = this.deadline {
            if Instant::now() >= deadline {
                this.state = FlushState::Ready(None);
                return Poll::Ready(Err(ExportError::timeout()));
            }
            if !this.armed.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                timer::wake_at(deadline, cx.waker().clone());
                this.armed = Some(cx.waker().clone());
            }
        }
        Poll::Pending
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
