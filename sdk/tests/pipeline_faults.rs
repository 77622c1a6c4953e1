//! The batch pipeline under faulty exporters: one that panics (in the synchronous
//! part of `export`, in `set_resource`, in `shutdown`), one that blocks its thread
//! (a `std::thread::sleep` inside `async fn export`, the JSON exporter on a pipe
//! nobody reads). Whatever the exporter does, deadlines hold, the pipeline keeps
//! going, and exported + dropped == ended, exactly.

use std::future::Future;
use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tracewire::export::{BatchConfig, ExportError, JsonLinesExporter, SpanExporter};
use tracewire::trace::{Resource, SpanData};
use tracewire::TracerProvider;

/// Polls `cond` until it holds or `timeout` passes; whether it held.
fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

fn batch_provider(exporter: impl SpanExporter, config: BatchConfig) -> TracerProvider {
    TracerProvider::builder()
        .with_batch_exporter_config(exporter, config)
        .build()
}

/// Exports are driven by flushes and shutdown only.
fn on_demand() -> BatchConfig {
    BatchConfig {
        scheduled_delay: Duration::from_secs(3600),
        ..BatchConfig::default()
    }
}

fn end_spans(provider: &TracerProvider, n: usize) {
    let tracer = provider.tracer("faults");
    for i in 0..n {
        let span = tracer.start("op");
        span.set_attribute("i", i as i64);
        span.end();
    }
}

/// A gate the test opens; exporters wait on it with a blocking wait.
#[derive(Clone, Default)]
struct Gate {
    state: Arc<(Mutex<GateState>, Condvar)>,
}

#[derive(Default)]
struct GateState {
    entered: usize,
    open: bool,
}

impl Gate {
    /// Blocks the calling thread until the gate opens.
    fn pass(&self) {
        let (m, cv) = &*self.state;
        let mut s = m.lock().unwrap();
        s.entered += 1;
        cv.notify_all();
        while !s.open {
            s = cv.wait(s).unwrap();
        }
    }
    /// Waits until someone is blocked at the gate.
    fn wait_entered(&self, timeout: Duration) -> bool {
        let (m, cv) = &*self.state;
        let s = m.lock().unwrap();
        let (s, _) = cv
            .wait_timeout_while(s, timeout, |s| s.entered == 0)
            .unwrap();
        s.entered > 0
    }
    fn open(&self) {
        let (m, cv) = &*self.state;
        m.lock().unwrap().open = true;
        cv.notify_all();
    }
}

/// Blocks the export thread at the gate in its first export (a synchronous wait
/// inside `async fn export`), then counts what it exports.
#[derive(Clone, Default)]
struct GatedExporter {
    gate: Gate,
    calls: Arc<AtomicUsize>,
    received: Arc<AtomicU64>,
}

impl SpanExporter for GatedExporter {
    async fn export(&mut self, batch: &[SpanData]) -> Result<(), ExportError> {
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            self.gate.pass();
        }
        self.received
            .fetch_add(batch.len() as u64, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_and_flush_returns_by_its_deadline_when_the_export_thread_is_stuck() {
    let exporter = GatedExporter::default();
    let gate = exporter.gate.clone();
    let received = exporter.received.clone();
    let p = batch_provider(
        exporter,
        BatchConfig {
            scheduled_delay: Duration::from_millis(10),
            ..BatchConfig::default()
        },
    );
    let t = p.tracer("t");
    t.start("first").end();
    assert!(
        gate.wait_entered(Duration::from_secs(10)),
        "the export thread never exported"
    );
    // The export thread is stuck in the exporter now; nothing answers flushes.
    let last = t.start("last");
    let start = Instant::now();
    let waited = tokio::time::timeout(Duration::from_secs(20), last.end_and_flush()).await;
    let took = start.elapsed();
    gate.open();
    let result = waited.unwrap_or_else(|_| panic!("end_and_flush did not return within 20 s"));
    let err = result.expect_err("the flush cannot have completed");
    assert!(err.is_timeout(), "{err}");
    // The default deadline is 5 s; generous margin for a loaded machine.
    assert!(
        took >= Duration::from_millis(4500) && took < Duration::from_secs(15),
        "end_and_flush returned after {took:?}"
    );
    // Once the exporter is unstuck, both spans get out.
    let _ = p.shutdown(Duration::from_secs(10));
    assert_eq!(received.load(Ordering::SeqCst), 2);
    let s = p.stats();
    assert_eq!((s.ended, s.exported, s.dropped), (2, 2, 0), "{s:?}");
}

#[test]
fn end_and_flush_within_a_deadline_needs_no_runtime_timer() {
    let exporter = GatedExporter::default();
    let gate = exporter.gate.clone();
    let p = batch_provider(
        exporter,
        BatchConfig {
            scheduled_delay: Duration::from_millis(10),
            ..BatchConfig::default()
        },
    );
    let t = p.tracer("t");
    t.start("first").end();
    assert!(gate.wait_entered(Duration::from_secs(10)));
    let last = t.start("last");
    let deadline = Duration::from_millis(300);
    let start = Instant::now();
    // An executor without timers: the deadline still fires.
    let result = futures_executor::block_on(last.end_and_flush_within(deadline));
    let took = start.elapsed();
    gate.open();
    assert!(result.unwrap_err().is_timeout());
    assert!(
        took >= deadline && took < deadline * 3,
        "returned after {took:?}"
    );
    p.shutdown(Duration::from_secs(10)).unwrap();
}

/// Panics where it is told to, once; counts what it exports otherwise.
#[derive(Clone, Default)]
struct PanickingExporter {
    /// Panic in the synchronous part of the first `export` call (before its
    /// future exists).
    export_sync: bool,
    set_resource: bool,
    /// Panic in the synchronous part of `shutdown`.
    shutdown_sync: bool,
    /// Panic inside the future `shutdown` returns.
    shutdown_async: bool,
    calls: Arc<AtomicUsize>,
    received: Arc<AtomicU64>,
}

impl SpanExporter for PanickingExporter {
    fn export(&mut self, batch: &[SpanData]) -> impl Future<Output = Result<(), ExportError>> {
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 && self.export_sync {
            panic!("exporter bug before its future");
        }
        self.received
            .fetch_add(batch.len() as u64, Ordering::SeqCst);
        std::future::ready(Ok(()))
    }

    fn shutdown(&mut self) -> impl Future<Output = Result<(), ExportError>> {
        if self.shutdown_sync {
            panic!("exporter bug in shutdown");
        }
        let panics = self.shutdown_async;
        async move {
            if panics {
                panic!("exporter bug in the shutdown future");
            }
            Ok(())
        }
    }

    fn set_resource(&mut self, _resource: &Resource) {
        if self.set_resource {
            panic!("exporter bug in set_resource");
        }
    }
}

#[test]
fn an_exporter_panicking_before_its_export_future_exists_loses_only_that_batch() {
    let exporter = PanickingExporter {
        export_sync: true,
        ..PanickingExporter::default()
    };
    let received = exporter.received.clone();
    let p = batch_provider(exporter, on_demand());
    end_spans(&p, 10);
    let first = p.force_flush(Duration::from_secs(5));
    end_spans(&p, 5);
    let second = p.force_flush(Duration::from_secs(5));
    let shutdown = p.shutdown(Duration::from_secs(5));
    let s = p.stats();
    assert_eq!(s.ended, 15);
    assert_eq!(
        s.exported + s.dropped,
        s.ended,
        "every span exported or counted: {s:?}"
    );
    assert!(first.is_err(), "the flush reports the lost batch");
    assert!(
        second.is_ok(),
        "the pipeline goes on after the panic: {second:?}"
    );
    assert_eq!(
        (s.exported, s.dropped, s.export_failures),
        (5, 10, 1),
        "{s:?}"
    );
    assert_eq!(received.load(Ordering::SeqCst), 5);
    let err = shutdown.expect_err("10 spans were lost");
    assert_eq!((err.report().exported, err.dropped()), (5, 10));
}

#[test]
fn an_exporter_panicking_in_set_resource_loses_nothing() {
    let exporter = PanickingExporter {
        set_resource: true,
        ..PanickingExporter::default()
    };
    let received = exporter.received.clone();
    let p = batch_provider(exporter, on_demand());
    end_spans(&p, 10);
    let flushed = p.force_flush(Duration::from_secs(5));
    end_spans(&p, 10);
    let shutdown = p.shutdown(Duration::from_secs(5));
    let s = p.stats();
    assert_eq!(s.exported + s.dropped, s.ended, "{s:?}");
    assert!(flushed.is_ok(), "the export thread survived: {flushed:?}");
    let report = shutdown.expect("nothing was lost");
    assert_eq!((report.exported, report.dropped), (20, 0));
    assert_eq!((s.ended, s.exported, s.dropped), (20, 20, 0), "{s:?}");
    assert_eq!(received.load(Ordering::SeqCst), 20);
}

#[test]
fn an_exporter_panicking_in_shutdown_fails_the_shutdown_but_loses_no_span() {
    for (sync, name) in [(true, "synchronous part"), (false, "future")] {
        let exporter = PanickingExporter {
            shutdown_sync: sync,
            shutdown_async: !sync,
            ..PanickingExporter::default()
        };
        let received = exporter.received.clone();
        let p = batch_provider(exporter, on_demand());
        end_spans(&p, 10);
        let start = Instant::now();
        let shutdown = p.shutdown(Duration::from_secs(5));
        assert!(start.elapsed() < Duration::from_secs(3), "{name}");
        let err = shutdown.expect_err(name);
        assert!(
            err.to_string()
                .contains("the exporter panicked in shutdown"),
            "{name}: {err}"
        );
        assert_eq!((err.report().exported, err.dropped()), (10, 0), "{name}");
        let s = p.stats();
        assert_eq!(
            (s.ended, s.exported, s.dropped),
            (10, 10, 0),
            "{name}: {s:?}"
        );
        assert_eq!(received.load(Ordering::SeqCst), 10, "{name}");
    }
}

#[test]
fn a_panicking_exporter_behind_the_simple_processor_never_panics_the_caller() {
    let exporter = PanickingExporter {
        export_sync: true,
        set_resource: true,
        shutdown_sync: true,
        ..PanickingExporter::default()
    };
    let received = exporter.received.clone();
    let built = catch_unwind(AssertUnwindSafe(|| {
        TracerProvider::builder()
            .with_simple_exporter(exporter)
            .build()
    }));
    let p = built.unwrap_or_else(|_| panic!("building the provider panicked (set_resource)"));
    let t = p.tracer("t");
    let ended = catch_unwind(AssertUnwindSafe(|| t.start("lost").end()));
    assert!(
        ended.is_ok(),
        "ending a span panicked (the exporter's panic reached the caller)"
    );
    t.start("kept").end();
    let shutdown = catch_unwind(AssertUnwindSafe(|| p.shutdown(Duration::from_secs(1))));
    let shutdown = shutdown.unwrap_or_else(|_| panic!("shutdown panicked"));
    let err = shutdown.expect_err("the exporter's shutdown panicked, and a span was lost");
    assert_eq!((err.report().exported, err.dropped()), (1, 1));
    let s = p.stats();
    assert_eq!((s.ended, s.exported, s.dropped), (2, 1, 1), "{s:?}");
    assert_eq!(received.load(Ordering::SeqCst), 1);
}

/// Sleeps on the export thread (`std::thread::sleep` inside `async fn export`),
/// then accepts the batch. Tells when it is first entered and when it is dropped.
struct SleepingExporter {
    sleep: Duration,
    entered: mpsc::Sender<()>,
    dropped: mpsc::Sender<()>,
    received: Arc<AtomicU64>,
}

impl SpanExporter for SleepingExporter {
    async fn export(&mut self, batch: &[SpanData]) -> Result<(), ExportError> {
        let _ = self.entered.send(());
        std::thread::sleep(self.sleep);
        self.received
            .fetch_add(batch.len() as u64, Ordering::SeqCst);
        Ok(())
    }
}

impl Drop for SleepingExporter {
    fn drop(&mut self) {
        let _ = self.dropped.send(());
    }
}

#[test]
fn an_exporter_blocking_its_thread_does_not_hold_shutdown_past_its_deadline() {
    let (entered_tx, entered) = mpsc::channel();
    let (dropped_tx, dropped) = mpsc::channel();
    let received = Arc::new(AtomicU64::new(0));
    let exporter = SleepingExporter {
        sleep: Duration::from_secs(2),
        entered: entered_tx,
        dropped: dropped_tx,
        received: received.clone(),
    };
    let p = batch_provider(
        exporter,
        BatchConfig {
            scheduled_delay: Duration::from_millis(10),
            ..BatchConfig::default()
        },
    );
    end_spans(&p, 100);
    entered
        .recv_timeout(Duration::from_secs(10))
        .expect("the export thread never exported");
    // Queued behind the blocked export.
    end_spans(&p, 50);
    let deadline = Duration::from_millis(300);
    let start = Instant::now();
    let shutdown = p.shutdown(deadline);
    let took = start.elapsed();
    let s = p.stats();
    assert!(took < deadline * 3, "shutdown took {took:?}");
    assert_eq!(s.ended, 150);
    assert_eq!(
        s.exported + s.dropped,
        150,
        "what the blocked exporter held and what was queued behind it is counted: {s:?}"
    );
    let err = shutdown.expect_err("spans were lost");
    assert!(err.is_timeout(), "{err}");
    assert_eq!(err.dropped(), 150);
    // When the exporter finally returns, nothing is counted twice.
    dropped
        .recv_timeout(Duration::from_secs(20))
        .expect("the export thread never finished");
    assert_eq!(p.stats(), s);
}

/// A stalled stdout: a pipe whose reader never reads.
fn stalled_pipe() -> (std::io::PipeReader, std::io::PipeWriter) {
    std::io::pipe().unwrap()
}

/// Spans of ~1 KiB of JSON each.
fn end_big_spans(provider: &TracerProvider, n: usize) {
    let tracer = provider.tracer("json");
    let payload = "x".repeat(1000);
    for i in 0..n {
        let span = tracer.start("op");
        span.set_attribute("i", i as i64);
        span.set_attribute("payload", payload.clone());
        span.end();
    }
}

#[test]
fn the_json_exporter_on_a_stalled_pipe_does_not_hold_shutdown_past_its_deadline() {
    let (mut reader, writer) = stalled_pipe();
    let p = batch_provider(
        JsonLinesExporter::writer(writer),
        BatchConfig {
            scheduled_delay: Duration::from_millis(10),
            max_batch_size: 64,
            ..BatchConfig::default()
        },
    );
    // ~2 MB of JSON for a pipe buffer of 64 KiB.
    end_big_spans(&p, 2000);
    let deadline = Duration::from_millis(500);
    let start = Instant::now();
    let shutdown = p.shutdown(deadline);
    let took = start.elapsed();
    let s = p.stats();
    assert!(took < deadline * 3, "shutdown took {took:?}");
    assert_eq!(s.ended, 2000);
    assert_eq!(s.exported + s.dropped, 2000, "{s:?}");
    let err = shutdown.expect_err("the stalled writer held spans at the deadline");
    assert!(s.dropped > 0 && err.is_timeout(), "{s:?} {err}");
    assert_eq!(
        (err.report().exported, err.dropped()),
        (s.exported, s.dropped)
    );
    // What was written is whole lines of the exported spans, no more.
    drop(p);
    let mut text = String::new();
    let _ = reader.read_to_string(&mut text);
    let lines = text.lines().count() as u64;
    assert!(lines <= s.exported + 64, "{lines} lines for {s:?}");
}

#[test]
fn the_json_exporter_on_a_stalled_pipe_times_out_its_exports_and_keeps_the_thread_free() {
    let (reader, writer) = stalled_pipe();
    let p = batch_provider(
        JsonLinesExporter::writer(writer),
        BatchConfig {
            scheduled_delay: Duration::from_millis(10),
            max_batch_size: 64,
            export_timeout: Duration::from_millis(300),
            ..BatchConfig::default()
        },
    );
    end_big_spans(&p, 2000);
    // The export thread is not stuck in a write: its export deadline fires and
    // the batch is counted, while the pipe is still stalled.
    let timed_out = wait_until(Duration::from_secs(15), || p.stats().export_failures >= 1);
    assert!(
        timed_out,
        "no export timed out while the pipe was stalled: {:?}",
        p.stats()
    );
    // A flush says spans were lost, by its deadline.
    let start = Instant::now();
    let flushed = p.force_flush(Duration::from_secs(2));
    let took = start.elapsed();
    assert!(flushed.is_err());
    assert!(took < Duration::from_secs(6), "force_flush took {took:?}");
    drop(reader);
    let _ = p.shutdown(Duration::from_secs(5));
    let s = p.stats();
    assert_eq!(s.exported + s.dropped, 2000, "{s:?}");
}

/// Fails the first export, counts the rest; keeps its own counters like the
/// exporters of the workspace do.
#[derive(Clone, Default)]
struct FailsFirst {
    calls: Arc<AtomicUsize>,
    counters: tracewire::export::ExportCounters,
}

impl SpanExporter for FailsFirst {
    async fn export(&mut self, batch: &[SpanData]) -> Result<(), ExportError> {
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            self.counters.add_failed();
            self.counters.add_dropped(batch.len() as u64);
            return Err(ExportError::new("collector answered 500"));
        }
        self.counters.add_exported(batch.len() as u64);
        Ok(())
    }
}

#[test]
fn shutdown_says_spans_were_dropped_before_it() {
    let exporter = FailsFirst::default();
    let counters = exporter.counters.clone();
    let p = batch_provider(exporter, on_demand());
    end_spans(&p, 5);
    assert!(p.force_flush(Duration::from_secs(5)).is_err());
    end_spans(&p, 3);
    p.force_flush(Duration::from_secs(5)).unwrap();
    let shutdown = p.shutdown(Duration::from_secs(5));
    let s = p.stats();
    assert!(
        shutdown.is_err(),
        "shutdown returned {shutdown:?} though {} spans were dropped",
        s.dropped
    );
    let err = shutdown.unwrap_err();
    assert_eq!(err.to_string(), "5 of 8 spans dropped (3 exported)");
    assert!(!err.is_timeout() && !err.is_shut_down());
    // The provider's counters, the report and the exporter's own counters agree.
    let e = counters.snapshot();
    assert_eq!((s.exported, s.dropped), (3, 5), "{s:?}");
    assert_eq!((err.report().exported, err.dropped()), (3, 5));
    assert_eq!((e.exported, e.dropped), (s.exported, s.dropped), "{e:?}");
}

#[test]
fn shutdown_of_a_pipeline_that_lost_nothing_reports_what_it_exported() {
    let exporter = tracewire::export::InMemoryExporter::new();
    let p = batch_provider(exporter.clone(), on_demand());
    end_spans(&p, 7);
    let report = p.shutdown(Duration::from_secs(5)).expect("nothing lost");
    assert_eq!((report.exported, report.dropped), (7, 0));
    assert_eq!(exporter.len(), 7);
    let s = p.stats();
    assert_eq!((s.exported, s.dropped), (report.exported, report.dropped));
    // Shutting down again is an error that still says what was delivered.
    let again = p.shutdown(Duration::from_secs(5)).unwrap_err();
    assert!(again.is_shut_down(), "{again}");
    assert_eq!(again.report(), report);
}
