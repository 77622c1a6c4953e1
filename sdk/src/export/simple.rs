//! The simple processor: exports each span on the thread that ends it.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::{
    ExportError, FlushHandle, ShutdownError, ShutdownReport, SpanExporter, SpanProcessor, Stats,
};
use crate::trace::{Resource, SpanData};

/// Exports every span synchronously when it ends, on the caller's thread.
///
/// Meant for tests and for exporters that never wait on I/O (such as
/// [`InMemoryExporter`](super::InMemoryExporter)): it blocks the caller for the
/// whole export, which the [`BatchProcessor`](super::BatchProcessor) never does,
/// and its deadlines are not enforced (an exporter that blocks, blocks the
/// caller). A panicking exporter never reaches the caller: the span it was
/// exporting counts as dropped.
pub struct SimpleProcessor<E> {
    exporter: Mutex<E>,
    closed: AtomicBool,
    exported: AtomicU64,
    dropped: AtomicU64,
    failures: AtomicU64,
}

impl<E: SpanExporter> SimpleProcessor<E> {
    /// A processor exporting to `exporter`.
    pub fn new(exporter: E) -> Self {
        SimpleProcessor {
            exporter: Mutex::new(exporter),
            closed: AtomicBool::new(false),
            exported: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }

    fn exporter(&self) -> std::sync::MutexGuard<'_, E> {
        self.exporter.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<E: SpanExporter> SpanProcessor for SimpleProcessor<E> {
    fn on_end(&self, span: SpanData) {
        if self.closed.load(Ordering::Acquire) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut exporter = self.exporter();
        let exported = catch_unwind(AssertUnwindSafe(|| {
            futures_executor::block_on(exporter.export(std::slice::from_ref(&span)))
        }))
        .unwrap_or_else(|_| Err(ExportError::new("the exporter panicked")));
        match exported {
            Ok(()) => self.exported.fetch_add(1, Ordering::Relaxed),
            Err(_) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                self.dropped.fetch_add(1, Ordering::Relaxed)
            }
        };
    }

    fn force_flush(&self, _timeout: Duration) -> Result<(), ExportError> {
        Ok(())
    }

    fn flush(&self) -> FlushHandle {
        FlushHandle::ready(Ok(()))
    }

    fn shutdown(&self, _timeout: Duration) -> Result<ShutdownReport, ShutdownError> {
        let report = || {
            let s = self.stats();
            ShutdownReport::new(s.exported, s.dropped)
        };
        if self.closed.swap(true, Ordering::AcqRel) {
            return Err(ShutdownError::new(report(), Some(ExportError::shut_down())));
        }
        let mut exporter = self.exporter();
        let done = catch_unwind(AssertUnwindSafe(|| {
            futures_executor::block_on(exporter.shutdown())
        }))
        .unwrap_or_else(|_| Err(ExportError::new("the exporter panicked in shutdown")));
        drop(exporter);
        report().into_result(done.err())
    }

    fn set_resource(&self, resource: &Resource) {
        let mut exporter = self.exporter();
        if catch_unwind(AssertUnwindSafe(|| exporter.set_resource(resource))).is_err() {
            eprintln!("tracewire: the exporter panicked in set_resource; the resource was not set");
        }
    }

    fn stats(&self) -> Stats {
        Stats {
            exported: self.exported.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            export_failures: self.failures.load(Ordering::Relaxed),
            ..Stats::default()
        }
    }
}

impl<E> fmt::Debug for SimpleProcessor<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimpleProcessor")
            .field("exported", &self.exported.load(Ordering::Relaxed))
            .field("dropped", &self.dropped.load(Ordering::Relaxed))
            .finish()
    }
}
