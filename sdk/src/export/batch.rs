//! The batch processor: a bounded, non-blocking queue per producing thread, drained
//! by a dedicated export thread that runs the exporter on its own tokio runtime.
//!
//! Each thread that ends spans gets its own single-producer ring (`rtrb`), so
//! ending a span is a handful of uncontended instructions: no lock, no shared
//! cache line between producing threads. A full ring drops the span and counts it.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::task::{Context as TaskContext, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rtrb::{Consumer, Producer, PushError, RingBuffer};

use super::{
    ExportError, FailureLog, FlushHandle, ShutdownError, ShutdownReport, SpanExporter,
    SpanProcessor, Stats,
};
use crate::counter::StripedCounter;
use crate::trace::clock::Converter;
use crate::trace::record::Record;
use crate::trace::{Resource, SpanData};

/// Configuration of a [`BatchProcessor`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchConfig {
    /// Spans each producing thread may have queued (default 2048). The memory bound
    /// is `queue_capacity × threads that end spans`; what does not fit is dropped
    /// and counted.
    pub queue_capacity: usize,
    /// Most spans in one export call (default 512). A thread that has this many
    /// queued wakes the export thread early.
    pub max_batch_size: usize,
    /// How long the export thread waits for a batch to fill (default 1 s).
    pub scheduled_delay: Duration,
    /// Deadline of one export call (default 30 s); a late export counts as failed.
    pub export_timeout: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            queue_capacity: 2048,
            max_batch_size: 512,
            scheduled_delay: Duration::from_secs(1),
            export_timeout: Duration::from_secs(30),
        }
    }
}

impl BatchConfig {
    /// The configuration the `OTEL_BSP_*` variables of the process environment
    /// give; see [`from_env_with`](Self::from_env_with).
    pub fn from_env() -> Self {
        Self::from_env_with(crate::env::system)
    }

    /// The default configuration with what the `OTEL_BSP_*` variables (read with
    /// `lookup`) set; an invalid value (not a positive integer) is reported on
    /// standard error and leaves the default.
    ///
    /// | variable | field | note |
    /// |---|---|---|
    /// | `OTEL_BSP_SCHEDULE_DELAY` (ms) | [`scheduled_delay`](Self::scheduled_delay) | default 1000 here (the specification says 5000) |
    /// | `OTEL_BSP_EXPORT_TIMEOUT` (ms) | [`export_timeout`](Self::export_timeout) | |
    /// | `OTEL_BSP_MAX_QUEUE_SIZE` | [`queue_capacity`](Self::queue_capacity) | the bound is **per thread that ends spans**: tracewire has one queue per producing thread, not one shared queue |
    /// | `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` | [`max_batch_size`](Self::max_batch_size) | larger than the queue: reported, and the queue size is used (the default follows a smaller queue) |
    pub fn from_env_with(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let lookup: &dyn Fn(&str) -> Option<String> = &lookup;
        let mut config = BatchConfig::default();
        if let Some(d) = crate::env::millis(lookup, "OTEL_BSP_SCHEDULE_DELAY") {
            config.scheduled_delay = d;
        }
        if let Some(d) = crate::env::millis(lookup, "OTEL_BSP_EXPORT_TIMEOUT") {
            config.export_timeout = d;
        }
        let size = |name| {
            crate::env::positive_integer(lookup, name)
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
        };
        if let Some(n) = size("OTEL_BSP_MAX_QUEUE_SIZE") {
            config.queue_capacity = n;
        }
        let batch = size("OTEL_BSP_MAX_EXPORT_BATCH_SIZE");
        if let Some(n) = batch {
            config.max_batch_size = n;
        }
        if config.max_batch_size > config.queue_capacity {
            // The default batch size follows a smaller queue silently.
            if let Some(n) = batch {
                crate::env::warn_invalid(
                    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
                    &n.to_string(),
                    "larger than the queue (OTEL_BSP_MAX_QUEUE_SIZE)",
                    format_args!("the queue size {}", config.queue_capacity),
                );
            }
            config.max_batch_size = config.queue_capacity;
        }
        config
    }
}

enum Reply {
    Sync(mpsc::SyncSender<Result<(), ExportError>>),
    Async(tokio::sync::oneshot::Sender<Result<(), ExportError>>),
}

impl Reply {
    fn send(self, result: Result<(), ExportError>) {
        match self {
            Reply::Sync(tx) => drop(tx.try_send(result)),
            Reply::Async(tx) => drop(tx.send(result)),
        }
    }
}

enum Control {
    Flush(Reply),
    Shutdown { deadline: Instant, reply: Reply },
    Resource(Resource),
}

/// The export thread's side of one producing thread's rings: the spans it queued,
/// and a way to hand exported spans back so that thread frees (and reuses) their
/// memory itself. Freeing another thread's allocations contends on its allocator
/// arena, which cost more than the rest of a span's life in the benchmarks.
struct RingPair {
    id: u64,
    spans: Consumer<Box<Record>>,
    returns: Arc<Returns>,
    /// Spans were taken from this ring since the export thread last looked:
    /// while a thread makes none, what waits for it is freed.
    active: bool,
}

/// Exported records waiting for the thread that made them, which takes a
/// pool's worth at a time (one uncontended lock per 16 or more spans). The
/// export thread frees them when that thread has made no spans for a round,
/// so a thread that has stopped holds no more than its pool and its ring.
#[derive(Default)]
#[allow(clippy::vec_box)] // records travel as pointers
struct Returns(Mutex<Vec<Box<Record>>>);

impl RingPair {
    /// The producing thread is gone (or forgot the ring) and nothing is left in it.
    fn is_done(&self) -> bool {
        self.spans.is_abandoned() && self.spans.is_empty()
    }
}

/// Every producing thread's ring, shared by the export thread (which takes spans
/// out of them a chunk at a time, under the lock) and a shutdown that gives up on
/// the export thread (which then counts what is left).
struct Rings {
    list: Vec<RingPair>,
    next_id: u64,
    /// A shutdown gave up on the export thread (its deadline passed while the
    /// exporter held the thread): the thread takes and counts nothing more.
    abandoned: bool,
}

/// How long `shutdown` waits past its deadline for the export thread's answer
/// (the thread enforces the deadline itself unless an exporter blocks it).
const SHUTDOWN_GRACE: Duration = Duration::from_millis(100);

struct Shared {
    id: u64,
    config: BatchConfig,
    /// No more spans are taken: shutdown has begun, or the export thread is gone.
    /// Also held by each producing thread's `Local`, so a thread forgets its ring
    /// of a closed processor.
    closed: Arc<AtomicBool>,
    /// `shutdown` was called.
    shut_down: AtomicBool,
    /// The export thread has finished (or unwound).
    finished: AtomicBool,
    rings: Mutex<Rings>,
    control: Mutex<Vec<Control>>,
    wake: tokio::sync::Notify,
    /// Set by `shutdown`: an export already in flight is cut off at this deadline.
    deadline: tokio::sync::watch::Sender<Option<Instant>>,
    /// Spans the export thread took out of the rings and has not accounted for
    /// yet (the batch being filled or exported). Whoever swaps it to zero counts
    /// them: the export thread when the export returns, or a shutdown that gives
    /// up on the thread; never both.
    held: AtomicU64,
    queue_dropped: StripedCounter,
    exported: AtomicU64,
    export_dropped: AtomicU64,
    failures: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn send(&self, c: Control) {
        lock(&self.control).push(c);
        self.wake.notify_one();
    }

    /// Gives up on the export thread: what it holds counts as one failed export,
    /// dropped; what is queued counts as dropped; the thread takes nothing more.
    fn abandon(&self) {
        let mut rings = lock(&self.rings);
        rings.abandoned = true;
        let held = self.held.swap(0, Ordering::SeqCst);
        if held > 0 {
            self.export_dropped.fetch_add(held, Ordering::Relaxed);
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        drop(rings);
        self.reap();
    }

    /// Once the export thread has finished or been given up on: counts as dropped
    /// whatever is still in the rings (spans that raced with the shutdown), and
    /// frees the rings whose producing thread is gone.
    fn reap(&self) {
        let mut rings = lock(&self.rings);
        if !rings.abandoned && !self.finished.load(Ordering::SeqCst) {
            return;
        }
        let mut n = 0;
        for ring in rings.list.iter_mut() {
            while ring.spans.pop().is_ok() {
                n += 1;
            }
        }
        rings.list.retain(|r| !r.is_done());
        self.export_dropped.fetch_add(n, Ordering::Relaxed);
    }

    /// After each round of the export thread: forgets the rings of exited
    /// threads, and frees the records waiting for threads that made no spans
    /// since the last round.
    fn end_round(&self) {
        let mut idle = Vec::new();
        let mut rings = lock(&self.rings);
        rings.list.retain(|r| !r.is_done());
        for ring in rings.list.iter_mut() {
            if !std::mem::replace(&mut ring.active, false) {
                idle.push(std::mem::take(&mut *lock(&ring.returns.0)));
            }
        }
        drop(rings);
        drop(idle);
    }

    fn stats(&self) -> Stats {
        Stats {
            exported: self.exported.load(Ordering::Relaxed),
            dropped: self.queue_dropped.sum() + self.export_dropped.load(Ordering::Relaxed),
            export_failures: self.failures.load(Ordering::Relaxed),
            ..Stats::default()
        }
    }
}

/// A producing thread's ring for one processor.
struct Local {
    id: u64,
    closed: Arc<AtomicBool>,
    producer: Producer<Box<Record>>,
    returns: Arc<Returns>,
}

impl Local {
    #[cold]
    fn refill(&self, wants: usize) {
        let mut returned = lock(&self.returns.0);
        let keep = returned.len().saturating_sub(wants);
        Record::keep_all(returned.drain(keep..));
    }
}

thread_local! {
    static LOCAL: RefCell<Vec<Local>> = const { RefCell::new(Vec::new()) };
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Queues ended spans without blocking and exports them in batches from a
/// dedicated thread. See the [module docs](crate::export) for the design.
///
/// Guarantees: `on_end` never blocks and never runs the exporter; a full queue
/// drops the span and counts it; after [`shutdown`](SpanProcessor::shutdown)
/// returns, every span ended before it was either exported or counted as dropped
/// (`exported + dropped == ended`), whatever the exporter did: a panic costs the
/// batch it held, and an exporter still blocking the thread at the deadline has
/// what it held and what is queued counted as dropped (its thread is left behind
/// and counts nothing more).
pub struct BatchProcessor {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl BatchProcessor {
    /// Starts the export thread for `exporter`.
    ///
    /// # Panics
    /// If the OS cannot start a thread or a timer; see [`try_new`](Self::try_new).
    pub fn new(exporter: impl SpanExporter, config: BatchConfig) -> Self {
        Self::try_new(exporter, config).expect("tracewire: cannot start the export thread")
    }

    /// Starts the export thread for `exporter`, or says why it could not.
    pub fn try_new(exporter: impl SpanExporter, config: BatchConfig) -> std::io::Result<Self> {
        let config = BatchConfig {
            queue_capacity: config.queue_capacity.max(1),
            max_batch_size: config.max_batch_size.max(1),
            ..config
        };
        let shared = Arc::new(Shared {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            config,
            closed: Arc::new(AtomicBool::new(false)),
            shut_down: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            rings: Mutex::new(Rings {
                list: Vec::new(),
                next_id: 0,
                abandoned: false,
            }),
            control: Mutex::new(Vec::new()),
            wake: tokio::sync::Notify::new(),
            deadline: tokio::sync::watch::Sender::new(None),
            held: AtomicU64::new(0),
            queue_dropped: StripedCounter::default(),
            exported: AtomicU64::new(0),
            export_dropped: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("tracewire-export".into())
            .spawn(move || {
                let _guard = ThreadGuard(Arc::clone(&thread_shared));
                runtime.block_on(export_loop(thread_shared, exporter));
            })?;
        Ok(BatchProcessor {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &BatchConfig {
        &self.shared.config
    }

    /// Adds a ring for the calling thread; `None` if the export thread was given
    /// up on (nothing would read it).
    #[cold]
    fn register(&self, locals: &mut Vec<Local>) -> Option<usize> {
        // Forget rings of processors that are gone or closed.
        locals.retain(|l| !l.producer.is_abandoned() && !l.closed.load(Ordering::Relaxed));
        let (producer, consumer) = RingBuffer::new(self.shared.config.queue_capacity);
        let returns = Arc::new(Returns::default());
        let mut rings = lock(&self.shared.rings);
        if rings.abandoned {
            return None;
        }
        let id = rings.next_id;
        rings.next_id += 1;
        rings.list.push(RingPair {
            id,
            spans: consumer,
            returns: Arc::clone(&returns),
            active: false,
        });
        drop(rings);
        locals.push(Local {
            id: self.shared.id,
            closed: Arc::clone(&self.shared.closed),
            producer,
            returns,
        });
        Some(locals.len() - 1)
    }

    /// Queues `span` in the calling thread's ring; `false` if it did not fit or no
    /// one reads the ring any more (it is then dropped).
    #[inline]
    fn push(&self, span: Box<Record>) -> bool {
        let sh = &*self.shared;
        LOCAL
            .try_with(|locals| {
                let mut locals = locals.borrow_mut();
                let i = match locals.iter().position(|l| l.id == sh.id) {
                    Some(i) => i,
                    None => match self.register(&mut locals) {
                        Some(i) => i,
                        None => return false,
                    },
                };
                let local = &mut locals[i];
                // Take back exported spans' records when the pool runs low, for
                // the next spans of this thread (freed, if ever, where they
                // were made).
                let wants = Record::pool_wants();
                if wants > 0 {
                    local.refill(wants);
                }
                if local.producer.is_abandoned() {
                    // Nothing reads this ring any more: never queue into it.
                    locals.swap_remove(i);
                    return false;
                }
                let producer = &mut local.producer;
                match producer.push(span) {
                    Ok(()) => {
                        let cap = sh.config.queue_capacity;
                        if cap - producer.slots() == sh.config.max_batch_size.min(cap) {
                            sh.wake.notify_one();
                        }
                        true
                    }
                    Err(PushError::Full(_dropped)) => {
                        sh.wake.notify_one();
                        false
                    }
                }
            })
            // The thread is exiting and its ring is gone.
            .unwrap_or(false)
    }

    fn report(&self) -> ShutdownReport {
        let s = self.stats();
        ShutdownReport::new(s.exported, s.dropped)
    }
}

impl BatchProcessor {
    /// Queues an ended span's record as it is (its times converted by the
    /// export thread).
    #[inline]
    pub(crate) fn push_record(&self, rec: Box<Record>) {
        if self.shared.closed.load(Ordering::Acquire) || !self.push(rec) {
            self.shared.queue_dropped.add(1);
        }
    }
}

impl SpanProcessor for BatchProcessor {
    fn on_end(&self, span: SpanData) {
        self.push_record(Record::of(span));
    }

    fn force_flush(&self, timeout: Duration) -> Result<(), ExportError> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(ExportError::shut_down());
        }
        let (tx, rx) = mpsc::sync_channel(1);
        self.shared.send(Control::Flush(Reply::Sync(tx)));
        match rx.recv_timeout(timeout) {
            Ok(r) => r,
            Err(mpsc::RecvTimeoutError::Timeout) => Err(ExportError::timeout()),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(ExportError::shut_down()),
        }
    }

    fn flush(&self) -> FlushHandle {
        if self.shared.closed.load(Ordering::Acquire) {
            return FlushHandle::ready(Err(ExportError::shut_down()));
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.shared.send(Control::Flush(Reply::Async(tx)));
        FlushHandle::waiting(rx)
    }

    fn shutdown(&self, timeout: Duration) -> Result<ShutdownReport, ShutdownError> {
        let sh = &*self.shared;
        if sh.shut_down.swap(true, Ordering::AcqRel) {
            return Err(ShutdownError::new(
                self.report(),
                Some(ExportError::shut_down()),
            ));
        }
        sh.closed.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + timeout;
        sh.deadline.send_replace(Some(deadline));
        let (tx, rx) = mpsc::sync_channel(1);
        sh.send(Control::Shutdown {
            deadline,
            reply: Reply::Sync(tx),
        });
        // The export thread enforces the deadline itself; the grace covers its
        // reply. An exporter that blocks the thread cannot be interrupted: past
        // the grace, the thread is given up on.
        let cause = match rx.recv_timeout(timeout + SHUTDOWN_GRACE) {
            Ok(r) => {
                if let Some(t) = lock(&self.thread).take() {
                    let _ = t.join();
                }
                r.err()
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                sh.abandon();
                // Detached: it finishes (and drops the exporter) when the exporter
                // returns, counting nothing more.
                drop(lock(&self.thread).take());
                eprintln!(
                    "tracewire: the exporter still held the export thread at the shutdown deadline; \
                     what it held and what was queued is counted as dropped, and the thread is left to finish"
                );
                Some(ExportError::timeout())
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                if let Some(t) = lock(&self.thread).take() {
                    let _ = t.join();
                }
                Some(ExportError::new(
                    "the export thread stopped before shutdown",
                ))
            }
        };
        sh.reap();
        self.report().into_result(cause)
    }

    fn set_resource(&self, resource: &Resource) {
        self.shared.send(Control::Resource(resource.clone()));
    }

    fn stats(&self) -> Stats {
        let sh = &*self.shared;
        if sh.closed.load(Ordering::Acquire) {
            sh.reap();
        }
        sh.stats()
    }
}

impl Drop for BatchProcessor {
    fn drop(&mut self) {
        if !self.shared.shut_down.load(Ordering::Acquire) {
            let _ = self.shutdown(Duration::from_secs(5));
        }
        // The thread has finished or was given up on: free every ring (a
        // producing thread forgets its half when it next registers or exits).
        let sh = &*self.shared;
        sh.reap();
        let mut rings = lock(&sh.rings);
        if rings.abandoned || sh.finished.load(Ordering::SeqCst) {
            rings.list.clear();
        }
    }
}

impl fmt::Debug for BatchProcessor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchProcessor")
            .field("config", &self.shared.config)
            .field("stats", &self.stats())
            .finish()
    }
}

/// Marks the export thread finished however it ends. If it unwinds (a panic the
/// exporter wrappers did not catch), the processor closes and counts what the
/// thread held and what is queued as dropped. Pending flushes resolve.
struct ThreadGuard(Arc<Shared>);

impl Drop for ThreadGuard {
    fn drop(&mut self) {
        let sh = &*self.0;
        if std::thread::panicking() {
            sh.closed.store(true, Ordering::SeqCst);
            sh.abandon();
        }
        sh.finished.store(true, Ordering::SeqCst);
        // Replies nobody will send: their receivers learn the thread is gone.
        lock(&sh.control).clear();
    }
}

/// State of the export thread.
struct Exporting<E> {
    shared: Arc<Shared>,
    exporter: E,
    /// The batch handed to the exporter: `slots[..len]`. Slots are reused: each
    /// span is swapped in from its record, which takes the slot's earlier
    /// contents back to its thread to be cleared, so no vector changes hands
    /// without another coming back.
    slots: Vec<SpanData>,
    len: usize,
    /// The records of the batch's spans, to give back.
    #[allow(clippy::vec_box)] // the boxes travel back to their threads
    records: Vec<Box<Record>>,
    /// Which ring each run of `records` came from: (ring id, count).
    origin: Vec<(u64, usize)>,
    clock: Converter,
    log: FailureLog,
}

/// Runs `f` (a call into the exporter), turning a panic into an error.
fn guarded<R>(what: &str, f: impl FnOnce() -> R) -> Result<R, ExportError> {
    std::panic::catch_unwind(AssertUnwindSafe(f))
        .map_err(|_| ExportError::new(format!("the exporter panicked in {what}")))
}

async fn export_loop<E: SpanExporter>(shared: Arc<Shared>, exporter: E) {
    let mut st = Exporting {
        slots: Vec::new(),
        len: 0,
        records: Vec::with_capacity(shared.config.max_batch_size),
        clock: Converter::default(),
        shared,
        exporter,
        origin: Vec::new(),
        log: FailureLog::new("tracewire", Duration::from_secs(10)),
    };
    // A failed export no flush has reported yet: the next flush answers with it,
    // so `force_flush` says whether what ended before it was delivered, also when
    // the export thread had already sent (and lost) those spans on its own.
    let mut unreported: Option<String> = None;
    loop {
        let delay = st.shared.config.scheduled_delay;
        let _ = tokio::time::timeout(delay, st.shared.wake.notified()).await;
        if lock(&st.shared.rings).abandoned {
            break;
        }
        let controls = std::mem::take(&mut *lock(&st.shared.control));
        let mut flushes = Vec::new();
        let mut shutdown = None;
        for c in controls {
            match c {
                Control::Resource(r) => {
                    if let Err(e) = guarded("set_resource", || st.exporter.set_resource(&r)) {
                        st.log.report("the resource was not set", &e);
                    }
                }
                Control::Flush(reply) => flushes.push(reply),
                Control::Shutdown { deadline, reply } => shutdown = Some((deadline, reply)),
            }
        }
        let deadline = shutdown.as_ref().map(|(d, _)| *d);
        let result = st.drain(deadline).await;
        if let Err(e) = &result {
            unreported = Some(e.to_string());
        }
        if !flushes.is_empty() {
            let failure = unreported.take();
            for reply in flushes {
                reply.send(match &failure {
                    None => Ok(()),
                    Some(e) => Err(ExportError::new(e)),
                });
            }
        }
        if let Some((deadline, reply)) = shutdown {
            // Spans queued by threads that registered while we drained.
            let result = result.and(st.drain(Some(deadline)).await);
            let done = st.shutdown_exporter(deadline).await;
            reply.send(result.and(done));
            break;
        }
        st.shared.end_round();
    }
    let Exporting {
        exporter, mut log, ..
    } = st;
    if let Err(e) = guarded("drop", move || drop(exporter)) {
        log.report("the exporter was not dropped cleanly", &e);
    }
}

impl<E: SpanExporter> Exporting<E> {
    /// Exports everything queued when the drain starts (not what arrives during it,
    /// so a flush cannot be starved by busy producers).
    async fn drain(&mut self, deadline: Option<Instant>) -> Result<(), ExportError> {
        let mut result = Ok(());
        let max = self.shared.config.max_batch_size;
        let queued: Vec<(u64, usize)> = {
            let rings = lock(&self.shared.rings);
            if rings.abandoned {
                return result;
            }
            rings.list.iter().map(|r| (r.id, r.spans.slots())).collect()
        };
        for (id, mut remaining) in queued {
            while remaining > 0 {
                let n = remaining.min(max - self.len);
                {
                    let mut rings = lock(&self.shared.rings);
                    if rings.abandoned {
                        // A shutdown counted what we held.
                        self.records.clear();
                        self.len = 0;
                        self.origin.clear();
                        return result;
                    }
                    let Some(ring) = rings.list.iter_mut().find(|r| r.id == id) else {
                        break;
                    };
                    let Ok(chunk) = ring.spans.read_chunk(n) else {
                        break;
                    };
                    ring.active = true;
                    self.records.extend(chunk);
                    self.shared.held.fetch_add(n as u64, Ordering::SeqCst);
                }
                self.take_in(n);
                self.origin.push((id, n));
                remaining -= n;
                if self.len == max {
                    result = result.and(self.export(deadline).await);
                }
            }
        }
        if self.len > 0 {
            result = result.and(self.export(deadline).await);
        }
        result
    }

    /// Moves the spans of the last `n` records into the batch, converting their
    /// times.
    fn take_in(&mut self, n: usize) {
        let first = self.records.len() - n;
        for rec in &mut self.records[first..] {
            rec.stamp_with(&mut self.clock);
            match self.slots.get_mut(self.len) {
                Some(slot) => std::mem::swap(slot, &mut rec.data),
                None => self
                    .slots
                    .push(std::mem::replace(&mut rec.data, SpanData::placeholder())),
            }
            self.len += 1;
        }
    }

    async fn export(&mut self, deadline: Option<Instant>) -> Result<(), ExportError> {
        let mut limit = Instant::now() + self.shared.config.export_timeout;
        if let Some(d) = deadline {
            limit = limit.min(d);
        }
        let result = if Instant::now() >= limit {
            Err(ExportError::timeout())
        } else {
            // The synchronous part of `export` runs here, its future below: a
            // panic in either costs this batch only.
            match guarded("export", || self.exporter.export(&self.slots[..self.len])) {
                Err(e) => Err(e),
                Ok(fut) => {
                    let fut = CatchUnwind(fut, "export");
                    let mut shutdown = self.shared.deadline.subscribe();
                    tokio::select! {
                        r = tokio::time::timeout_at(limit.into(), fut) => {
                            r.unwrap_or_else(|_| Err(ExportError::timeout()))
                        }
                        () = shutdown_deadline(&mut shutdown) => Err(ExportError::timeout()),
                    }
                }
            }
        };
        self.give_back();
        // Zero if a shutdown gave up on this thread meanwhile and counted the batch.
        let n = self.shared.held.swap(0, Ordering::SeqCst);
        if n == 0 {
            return result;
        }
        let sh = &self.shared;
        match &result {
            Ok(()) => {
                sh.exported.fetch_add(n, Ordering::Relaxed);
            }
            Err(e) => {
                sh.export_dropped.fetch_add(n, Ordering::Relaxed);
                sh.failures.fetch_add(1, Ordering::Relaxed);
                self.log
                    .report(&format!("export of {n} spans failed, spans dropped"), e);
            }
        }
        result
    }

    /// The exporter's `shutdown`, by `deadline`.
    async fn shutdown_exporter(&mut self, deadline: Instant) -> Result<(), ExportError> {
        let fut = guarded("shutdown", || self.exporter.shutdown())?;
        tokio::time::timeout_at(deadline.into(), CatchUnwind(fut, "shutdown"))
            .await
            .unwrap_or_else(|_| Err(ExportError::timeout()))
    }
}

/// Resolves when a shutdown deadline has been set and has passed.
async fn shutdown_deadline(rx: &mut tokio::sync::watch::Receiver<Option<Instant>>) {
    loop {
        let deadline = *rx.borrow_and_update();
        if let Some(d) = deadline {
            tokio::time::sleep_until(d.into()).await;
            return;
        }
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

impl<E> Exporting<E> {
    /// Hands the exported batch back to the threads that made it (dropping here
    /// only what they cannot take: an exited thread's, or more than a full
    /// queue and batch).
    fn give_back(&mut self) {
        self.len = 0;
        // Emptied here (what the exported spans held is dropped on this
        // thread), so that producing threads take them back ready for use.
        for rec in &mut self.records {
            rec.clear();
        }
        let limit = self.shared.config.queue_capacity + self.shared.config.max_batch_size;
        let mut spans = self.records.drain(..);
        let rings = lock(&self.shared.rings);
        for (id, n) in self.origin.drain(..) {
            let ring = rings
                .list
                .iter()
                .find(|r| r.id == id)
                .filter(|r| !r.spans.is_abandoned());
            match ring {
                Some(ring) => {
                    let mut returns = lock(&ring.returns.0);
                    let room = limit.saturating_sub(returns.len()).min(n);
                    returns.extend(spans.by_ref().take(room));
                    drop(returns);
                    spans.by_ref().take(n - room).for_each(drop);
                }
                None => spans.by_ref().take(n).for_each(drop),
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// Turns a panic inside the exporter's future into an export error, so the
    /// export thread keeps running.
    struct CatchUnwind<F> {
        #[pin]
        inner: F,
        what: &'static str,
    }
}

#[allow(non_snake_case)]
fn CatchUnwind<F>(inner: F, what: &'static str) -> CatchUnwind<F> {
    CatchUnwind { inner, what }
}

impl<F: Future<Output = Result<(), ExportError>>> Future for CatchUnwind<F> {
    type Output = Result<(), ExportError>;
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let inner = this.inner;
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(p) => p,
            Err(_) => Poll::Ready(Err(ExportError::new(format!(
                "the exporter panicked in {}",
                this.what
            )))),
        }
    }
}
