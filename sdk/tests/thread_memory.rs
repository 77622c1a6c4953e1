//! The memory a thread that makes spans holds in the batch pipeline once it has
//! stopped: its rings, its pooled span records and the records the export
//! thread handed back to it. Counted by a counting global allocator
//! (`stats_alloc`) as the live heap with a second producing thread minus the
//! live heap with one, so the export thread's own batch (one per processor) is
//! not charged to a thread.
//!
//! One test in this binary: the counter is process-wide.

use std::alloc::System;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};
use tracewire::export::{ExportError, SpanExporter};
use tracewire::trace::{SpanData, Tracer};
use tracewire::{KeyValue, TracerProvider};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Bytes allocated and not freed, process-wide.
fn live() -> i64 {
    let s = GLOBAL.stats();
    // A realloc's growth or shrinkage is counted in these two as well.
    s.bytes_allocated as i64 - s.bytes_deallocated as i64
}

#[derive(Clone, Default)]
struct Counting(Arc<AtomicU64>);

impl SpanExporter for Counting {
    fn export(
        &mut self,
        batch: &[SpanData],
    ) -> impl std::future::Future<Output = Result<(), ExportError>> {
        self.0.fetch_add(batch.len() as u64, Ordering::Relaxed);
        async { Ok(()) }
    }
}

/// An HTTP server span as the tower layer records it: 12 attributes, so its
/// vector has room for 16 (the most a pooled record keeps).
fn span(tracer: &Tracer) {
    let span = tracer
        .span_builder("GET /user")
        .root()
        .with_attributes([
            KeyValue::new("http.request.method", "GET"),
            KeyValue::new("url.path", "/user".to_owned()),
            KeyValue::new("url.scheme", "http"),
            KeyValue::new("http.route", "/user"),
            KeyValue::new("network.protocol.version", "1.1"),
            KeyValue::new("server.address", "127.0.0.1"),
            KeyValue::new("server.port", 8080i64),
            KeyValue::new("network.peer.address", "127.0.0.1".to_owned()),
            KeyValue::new("network.peer.port", 51234i64),
            KeyValue::new("client.address", "127.0.0.1".to_owned()),
            KeyValue::new("client.port", 51234i64),
        ])
        .start();
    span.set_attribute("http.response.status_code", 200i64);
    span.end();
}

/// A thread that makes `n` spans in bursts, flushing after each, then waits
/// (holding whatever the pipeline left it) until told to exit.
fn producer(
    provider: &TracerProvider,
    n: usize,
) -> (mpsc::Receiver<()>, mpsc::Sender<()>, JoinHandle<()>) {
    let (done_tx, done_rx) = mpsc::channel();
    let (exit_tx, exit_rx) = mpsc::channel::<()>();
    let provider = provider.clone();
    let handle = std::thread::spawn(move || {
        let tracer = provider.tracer("memory");
        for burst in 0..n / 1000 {
            for _ in 0..1000 {
                span(&tracer);
            }
            provider
                .force_flush(Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("flush after burst {burst}: {e}"));
        }
        done_tx.send(()).unwrap();
        let _ = exit_rx.recv();
    });
    (done_rx, exit_tx, handle)
}

#[test]
fn a_producing_thread_holds_at_most_64_kib_and_gives_it_back_on_exit() {
    let exported = Arc::new(AtomicU64::new(0));
    let provider = TracerProvider::builder()
        .with_batch_exporter(Counting(Arc::clone(&exported)))
        .build();
    // The export thread frees what waits for an idle thread at the end of a
    // round, after answering that round's flush: the second flush's answer
    // comes after the first round's end.
    let settle = || {
        for _ in 0..3 {
            provider.force_flush(Duration::from_secs(10)).unwrap();
        }
    };

    let (a_done, a_exit, a) = producer(&provider, 20_000);
    a_done.recv().unwrap();
    settle();
    let one = live();

    // Three more threads, one after another: each holds its share while it
    // lives and gives it all back when it exits.
    let mut held = Vec::new();
    let mut left = Vec::new();
    for _ in 0..3 {
        let (b_done, b_exit, b) = producer(&provider, 20_000);
        b_done.recv().unwrap();
        settle();
        held.push(live() - one);
        b_exit.send(()).unwrap();
        b.join().unwrap();
        // The export thread forgets an exited thread's rings after a round.
        settle();
        left.push(live() - one);
    }

    a_exit.send(()).unwrap();
    a.join().unwrap();
    provider.shutdown(Duration::from_secs(10)).unwrap();
    let stats = provider.stats();
    eprintln!(
        "one producing thread: {one} B live; a second thread holds {held:?} B; \
         after it exits, {left:?} B more than with one; {stats:?}"
    );
    assert_eq!(stats.exported, 80_000, "{stats:?}");
    assert_eq!(exported.load(Ordering::Relaxed), 80_000);
    for &h in &held {
        assert!(h <= 64 * 1024, "a producing thread holds {h} B: {held:?}");
    }
    // What stays (1.5 KiB or so) is what the process keeps once (the export
    // thread's list of rings has grown to two, the allocator's tables), not
    // more after each thread.
    for &l in &left {
        assert!(l <= 4 * 1024, "{l} B left after a thread exited: {left:?}");
    }
}
