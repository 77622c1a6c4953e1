//! What a profile uploader is made of: a bounded queue between what it collects
//! and what it uploads, and a thread of its own with a tokio runtime of its own,
//! shut down within a deadline.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use tracewire::export::Backoff;
//! use tracewire_transport::upload::{Names, PendingQueue, Worker};
//!
//! const NAMES: Names = Names { thread: "my-uploader", role: "uploader", items: "profiles" };
//!
//! let queue = Arc::new(PendingQueue::<Vec<u8>>::new(NAMES.thread, 4));
//! let q = Arc::clone(&queue);
//! let worker = Worker::spawn(NAMES, move || {
//!     // Set up on the worker's runtime (clients, channels), then the work itself.
//!     Ok(async move {
//!         q.until_deadline(async {
//!             tokio::join!(
//!                 async {
//!                     // Collects until shut down.
//!                     q.push(b"a profile".to_vec());
//!                     q.stopping().await;
//!                     q.close();
//!                 },
//!                 async {
//!                     while let Some(item) = q.pop().await {
//!                         let upload = || async { Ok(()) }; // one attempt at sending `item`
//!                         q.send(1, &Backoff::default(), "a profile was dropped", upload).await;
//!                         drop(item);
//!                     }
//!                 },
//!             )
//!         })
//!         .await;
//!     })
//! })
//! .expect("a thread");
//! worker.shutdown(&queue, Duration::from_secs(5)).expect("everything uploaded");
//! let c = queue.counters().snapshot();
//! assert_eq!((queue.collected(), c.exported, c.dropped), (1, 1, 0));
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};
use tracewire::export::{Attempt, Backoff, ExportCounters, FailureLog};

use crate::{Error, InFlight};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The queue between an uploader's collecting and its uploading: at most
/// `capacity` items (when one more does not fit, the oldest is dropped and
/// counted), one consumer, and the shutdown deadline after which what is left is
/// counted as dropped. Its [`counters`](Self::counters) say what became of every
/// item: exported = uploaded, dropped, failed = failed uploads, retried. Failures
/// are logged on standard error at most once a minute.
pub struct PendingQueue<T> {
    items: Mutex<VecDeque<T>>,
    capacity: usize,
    /// Nothing more will be pushed.
    closed: AtomicBool,
    /// Something was pushed, the queue was closed, or a stop was asked for.
    wake: Notify,
    /// Set by a shutdown: its deadline.
    stop: watch::Sender<Option<Instant>>,
    counters: ExportCounters,
    collected: AtomicU64,
    log: Mutex<FailureLog>,
}

impl<T> fmt::Debug for PendingQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingQueue")
            .field("len", &self.len())
            .field("capacity", &self.capacity)
            .field("collected", &self.collected())
            .field("counters", &self.counters)
            .field("deadline", &*self.stop.borrow())
            .finish()
    }
}

impl<T> PendingQueue<T> {
    /// A queue of at most `capacity` items (at least 1), whose log lines start
    /// with `source`.
    pub fn new(source: &'static str, capacity: usize) -> Self {
        PendingQueue {
            items: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            closed: AtomicBool::new(false),
            wake: Notify::new(),
            stop: watch::Sender::new(None),
            counters: ExportCounters::new(),
            collected: AtomicU64::new(0),
            log: Mutex::new(FailureLog::new(source, Duration::from_secs(60))),
        }
    }

    /// What became of the items: exported (uploaded), dropped, failed uploads,
    /// retried attempts.
    pub fn counters(&self) -> &ExportCounters {
        &self.counters
    }

    /// Items pushed so far.
    pub fn collected(&self) -> u64 {
        self.collected.load(Ordering::Relaxed)
    }

    /// Items waiting now.
    pub fn len(&self) -> usize {
        lock(&self.items).len()
    }

    /// Whether no item is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues `item` (counted as collected), dropping the oldest if the queue is
    /// full (counted as dropped).
    pub fn push(&self, item: T) {
        self.collected.fetch_add(1, Ordering::Relaxed);
        let mut q = lock(&self.items);
        while q.len() >= self.capacity {
            q.pop_front();
            self.counters.add_dropped(1);
        }
        q.push_back(item);
        drop(q);
        self.wake.notify_one();
    }

    /// Nothing more will be pushed: [`pop`](Self::pop) and
    /// [`pop_all`](Self::pop_all) return `None` once the queue is empty.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// The oldest item, waiting for one; `None` once the queue is closed and
    /// empty. For one consumer.
    pub async fn pop(&self) -> Option<T> {
        self.wait_then(|q| q.pop_front()).await
    }

    /// Every item waiting (oldest first), waiting for at least one; `None` once
    /// the queue is closed and empty. For one consumer.
    pub async fn pop_all(&self) -> Option<Vec<T>> {
        self.wait_then(|q| Some(q.drain(..).collect::<Vec<T>>()).filter(|v| !v.is_empty()))
            .await
    }

    async fn wait_then<R>(&self, mut take: impl FnMut(&mut VecDeque<T>) -> Option<R>) -> Option<R> {
        loop {
            if let Some(r) = take(&mut lock(&self.items)) {
                return Some(r);
            }
            if self.closed.load(Ordering::Acquire) {
                // Pushed just before the close?
                return take(&mut lock(&self.items));
            }
            // A push or close since the checks left a permit: this returns at once.
            self.wake.notified().await;
        }
    }

    /// Logs `what` failed with `err` (at most a line a minute, with the count
    /// of failures since the last line).
    pub fn report(&self, what: &str, err: &dyn fmt::Display) {
        lock(&self.log).report(what, err);
    }

    /// Asks the uploader to stop: collecting ends, what is queued is uploaded
    /// until `deadline`, when [`until_deadline`](Self::until_deadline) cuts the
    /// work off.
    pub fn stop(&self, deadline: Instant) {
        self.stop.send_replace(Some(deadline));
        self.wake.notify_one();
    }

    /// Whether a stop was asked for.
    pub fn is_stopping(&self) -> bool {
        self.stop.borrow().is_some()
    }

    /// Returns once a stop is asked for (at once if it was).
    pub async fn stopping(&self) {
        let mut rx = self.stop.subscribe();
        // The sender lives in `self`: waiting cannot fail.
        let _ = rx.wait_for(Option::is_some).await;
    }

    /// Runs `work` until it ends or the shutdown deadline passes, then counts
    /// what is still queued as dropped.
    pub async fn until_deadline<F: Future>(&self, work: F) {
        let deadline = async {
            let mut rx = self.stop.subscribe();
            let d = rx.wait_for(Option::is_some).await.ok().and_then(|d| *d);
            match d {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = work => {}
            () = deadline => {}
        }
        let left = std::mem::take(&mut *lock(&self.items)).len();
        self.counters.add_dropped(left as u64);
    }

    /// Uploads `items` items with `attempt`, retried as `backoff` says; counts
    /// them as exported, or as dropped (and the upload as failed, logged as
    /// `what`) when it fails for good, or when the shutdown deadline cuts it off.
    /// Whether they were uploaded.
    pub async fn send<F, Fut>(&self, items: u64, backoff: &Backoff, what: &str, attempt: F) -> bool
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), Attempt>>,
    {
        let mut in_flight = InFlight::new(&self.counters, items);
        let result = backoff.run(&self.counters, attempt).await;
        in_flight.settle(items);
        match result {
            Ok(()) => {
                self.counters.add_exported(items);
                true
            }
            Err(e) => {
                self.counters.add_dropped(items);
                self.counters.add_failed();
                self.report(what, &e);
                false
            }
        }
    }
}

/// How a [`Worker`] names itself: its thread, and what it is and what it uploads
/// in its errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Names {
    /// The thread's name (`tracewire-pyroscope`).
    pub thread: &'static str,
    /// What it is (`uploader`): "the uploader is already shut down".
    pub role: &'static str,
    /// What it uploads, plural (`profiles`): "2 profiles not uploaded at
    /// shutdown".
    pub items: &'static str,
}

/// A thread of its own with a single-threaded tokio runtime of its own, so that
/// an uploader needs no runtime from the application and nothing it does blocks
/// it.
#[derive(Debug)]
pub struct Worker {
    names: Names,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Worker {
    /// Starts the thread and, on it, within its runtime, `setup`; then runs the
    /// future `setup` returned until it ends. Returns once `setup` has: its error
    /// is this call's (and the thread ends).
    pub fn spawn<S, Fut>(names: Names, setup: S) -> Result<Worker, Error>
    where
        S: FnOnce() -> Result<Fut, Error> + Send + 'static,
        Fut: Future<Output = ()>,
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                Error::with_source(format!("cannot start the {}'s runtime", names.role), e)
            })?;
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name(names.thread.into())
            .spawn(move || {
                let work = {
                    let _entered = runtime.enter();
                    setup()
                };
                match work {
                    Ok(work) => {
                        let _ = ready_tx.send(Ok(()));
                        runtime.block_on(work);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })
            .map_err(|e| {
                Error::with_source(format!("cannot start the {}'s thread", names.role), e)
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Worker {
                names,
                thread: Mutex::new(Some(thread)),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(Error::new(format!(
                    "the {}'s thread stopped at start",
                    names.role
                )))
            }
        }
    }

    /// Whether the worker was not shut down yet.
    pub fn is_running(&self) -> bool {
        lock(&self.thread).is_some()
    }

    /// Asks `queue` to [stop](PendingQueue::stop) with a deadline `timeout`
    /// from now and waits for the thread (which enforces the deadline itself;
    /// a grace of 500 ms covers the work in progress). Fails if an item was not
    /// uploaded in that time (refused, retries spent, or past the deadline: it
    /// is counted as dropped), if the thread did not stop, or if the worker was
    /// already shut down.
    pub fn shutdown<T>(&self, queue: &PendingQueue<T>, timeout: Duration) -> Result<(), Error> {
        let Names { role, items, .. } = self.names;
        let Some(thread) = lock(&self.thread).take() else {
            return Err(Error::new(format!("the {role} is already shut down")));
        };
        let before = queue.counters().snapshot().dropped;
        let deadline = Instant::now() + timeout;
        queue.stop(deadline);
        let grace = Duration::from_millis(500);
        while !thread.is_finished() && Instant::now() < deadline + grace {
            std::thread::sleep(Duration::from_millis(5));
        }
        if !thread.is_finished() {
            return Err(Error::new(format!(
                "the {role} did not stop by the deadline; it stops on its own"
            )));
        }
        let _ = thread.join();
        let left = queue.counters().snapshot().dropped - before;
        if left > 0 {
            return Err(Error::new(format!(
                "{left} {items} not uploaded at shutdown (refused, retries spent, or past the deadline)"
            )));
        }
        Ok(())
    }
}
