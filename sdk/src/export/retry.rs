//! Retrying exports: exponential backoff with jitter, bounded in time, and the
//! counters exporters keep (exported, dropped, failed, retried).

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ExportError;

/// Exponential backoff with full jitter, bounded by a total time budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// First delay (before jitter); default 100 ms.
    pub initial: Duration,
    /// Largest delay; default 5 s.
    pub max_delay: Duration,
    /// Total time after which no retry starts; default 30 s.
    pub max_elapsed: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            max_elapsed: Duration::from_secs(30),
        }
    }
}

/// Whether a failed attempt may be retried.
#[derive(Debug)]
pub enum Attempt {
    /// Retryable (connection error, 429, 5xx, UNAVAILABLE, ...).
    Retry(ExportError),
    /// Permanent: the batch is dropped.
    Fail(ExportError),
}

impl Backoff {
    /// The delay before retry number `n` (0-based): a random duration in
    /// `[0, min(max_delay, initial * 2^n)]` ("full jitter").
    pub fn delay(&self, n: u32) -> Duration {
        let cap = self
            .initial
            .saturating_mul(1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX))
            .min(self.max_delay);
        let r = crate::trace::SpanId::random().to_u64();
        Duration::from_nanos(r % (cap.as_nanos() as u64).max(1))
    }

    /// Runs `attempt` until it succeeds, fails permanently, or the time budget is
    /// spent, sleeping with jitter between tries. Counts retries in `counters`.
    pub async fn run<F, Fut>(
        &self,
        counters: &ExportCounters,
        mut attempt: F,
    ) -> Result<(), ExportError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), Attempt>>,
    {
        let start = Instant::now();
        let mut n = 0;
        loop {
            match attempt().await {
                Ok(()) => return Ok(()),
                Err(Attempt::Fail(e)) => return Err(e),
                Err(Attempt::Retry(e)) => {
                    let delay = self.delay(n);
                    if start.elapsed() + delay >= self.max_elapsed {
                        return Err(e);
                    }
                    counters.add_retried();
                    tokio::time::sleep(delay).await;
                    n += 1;
                }
            }
        }
    }
}

/// Counters an exporter keeps: clones share them, so keep one to read them after
/// the exporter has moved to the export thread.
#[derive(Clone, Default)]
pub struct ExportCounters {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    exported: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
}

/// A snapshot of [`ExportCounters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExporterStats {
    /// Spans the collector accepted.
    pub exported: u64,
    /// Spans given up on (permanent error, retries exhausted, over a size limit).
    pub dropped: u64,
    /// Export calls that failed in the end.
    pub failed: u64,
    /// Retries made.
    pub retried: u64,
}

impl ExportCounters {
    /// New, zeroed counters.
    pub fn new() -> Self {
        Self::default()
    }
    /// Counts `n` spans exported.
    pub fn add_exported(&self, n: u64) {
        self.inner.exported.fetch_add(n, Ordering::Relaxed);
    }
    /// Counts `n` spans dropped.
    pub fn add_dropped(&self, n: u64) {
        self.inner.dropped.fetch_add(n, Ordering::Relaxed);
    }
    /// Counts one failed export call.
    pub fn add_failed(&self) {
        self.inner.failed.fetch_add(1, Ordering::Relaxed);
    }
    /// Counts one retry.
    pub fn add_retried(&self) {
        self.inner.retried.fetch_add(1, Ordering::Relaxed);
    }
    /// The current values.
    pub fn snapshot(&self) -> ExporterStats {
        let i = &self.inner;
        ExporterStats {
            exported: i.exported.load(Ordering::Relaxed),
            dropped: i.dropped.load(Ordering::Relaxed),
            failed: i.failed.load(Ordering::Relaxed),
            retried: i.retried.load(Ordering::Relaxed),
        }
    }
}

impl fmt::Debug for ExportCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.snapshot().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_exponentially_within_the_cap() {
        let b = Backoff {
            initial: Duration::from_millis(10),
            max_delay: Duration::from_millis(80),
            max_elapsed: Duration::from_secs(1),
        };
        for n in 0..10 {
            let cap = Duration::from_millis(10 * (1 << n.min(3)));
            for _ in 0..100 {
                assert!(b.delay(n) <= cap);
            }
        }
    }

    #[test]
    fn run_retries_retryable_errors_and_stops_on_permanent_ones() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let b = Backoff {
            initial: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            max_elapsed: Duration::from_secs(5),
        };
        let counters = ExportCounters::new();
        let mut calls = 0;
        let r = rt.block_on(b.run(&counters, || {
            calls += 1;
            let n = calls;
            async move {
                if n < 3 {
                    Err(Attempt::Retry(ExportError::new("503")))
                } else {
                    Ok(())
                }
            }
        }));
        assert!(r.is_ok());
        assert_eq!(counters.snapshot().retried, 2);
        let r = rt.block_on(b.run(&counters, || async {
            Err(Attempt::Fail(ExportError::new("400")))
        }));
        assert_eq!(r.unwrap_err().to_string(), "400");
        assert_eq!(counters.snapshot().retried, 2);
    }

    #[test]
    fn run_gives_up_when_the_time_budget_is_spent() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let b = Backoff {
            initial: Duration::from_millis(20),
            max_delay: Duration::from_millis(20),
            max_elapsed: Duration::from_millis(100),
        };
        let start = Instant::now();
        let r = rt.block_on(b.run(&ExportCounters::new(), || async {
            Err(Attempt::Retry(ExportError::new("connection refused")))
        }));
        assert!(r.is_err());
        assert!(start.elapsed() < Duration::from_millis(300));
    }
}
