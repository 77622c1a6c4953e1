//! What the span path of one provider shares: the sampler, limits, observers,
//! counters and lifetime, and the [`Output`] its ended spans go to.
//!
//! The output is the provider's (its processors and exporters live in
//! [`export`](crate::export), above this module): `trace` knows it only through
//! the trait, so it depends on nothing that exports.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::lifetime::Lifetime;
use super::record::Record;
use super::{Sampler, SpanLimits, SpanObserver};
use crate::counter::StripedCounter;
use crate::error::ExportError;

/// A flush in progress, as [`Output::flush`] returns it.
pub(crate) type Flush<'a> = Pin<Box<dyn Future<Output = Result<(), ExportError>> + Send + 'a>>;

/// Where a pipeline's ended sampled spans go: the provider's processors.
pub(crate) trait Output: Send + Sync + fmt::Debug {
    /// A sampled span ended (its observers have seen it); the record is the
    /// output's to export and give back.
    fn on_end(&self, rec: Box<Record>);
    /// Flushes everything ended so far, waiting at most `timeout`.
    fn flush(&self, timeout: Duration) -> Flush<'_>;
    /// The last handle of `pipeline` is gone (shut down, unless that was done).
    fn on_last_handle(&self, pipeline: &Pipeline);
}

/// The state every tracer and span of one provider shares.
///
/// Handles (`TracerProvider`, `Tracer`) share it through an `Arc`; recording spans
/// refer to it without a shared reference count (which would make every span
/// start and end contend across cores): see the [`lifetime`](super::lifetime)
/// module for how it is freed once the last handle and the last open span are
/// gone.
pub(crate) struct Pipeline {
    pub(crate) enabled: AtomicBool,
    shut_down: AtomicBool,
    /// `OTEL_SDK_DISABLED=true`: never enabled, no processors.
    pub(crate) sdk_disabled: bool,
    pub(crate) sampler: Box<dyn Sampler>,
    /// `sampler.always_drops()`, asked once: an unsampled span is then decided
    /// without a call through the trait.
    pub(crate) always_drops: bool,
    pub(crate) limits: SpanLimits,
    pub(crate) observers: Box<[Arc<dyn SpanObserver>]>,
    /// Recording spans the sampler did not sample (`started` is the other
    /// recording spans: the opened ones minus these).
    pub(crate) record_only: StripedCounter,
    ended: StripedCounter,
    pub(crate) lifetime: Lifetime,
    output: Arc<dyn Output>,
}

impl Pipeline {
    /// A pipeline sending its ended spans to `output`; collection runs unless
    /// `sdk_disabled`.
    pub(crate) fn new(
        sampler: Box<dyn Sampler>,
        limits: SpanLimits,
        observers: Box<[Arc<dyn SpanObserver>]>,
        sdk_disabled: bool,
        output: Arc<dyn Output>,
    ) -> Pipeline {
        super::clock::init();
        Pipeline {
            enabled: AtomicBool::new(!sdk_disabled),
            shut_down: AtomicBool::new(false),
            sdk_disabled,
            always_drops: sampler.always_drops(),
            sampler,
            limits,
            observers,
            record_only: StripedCounter::default(),
            ended: StripedCounter::default(),
            lifetime: Lifetime::default(),
            output,
        }
    }

    /// A sampled span ended: counted, shown to the observers, sent out.
    #[inline]
    pub(crate) fn on_end(&self, mut rec: Box<Record>) {
        self.ended.add(1);
        if !self.observers.is_empty() {
            rec.stamp();
            for o in self.observers.iter() {
                o.on_end(&rec.data);
            }
        }
        self.output.on_end(rec);
    }

    /// Flushes the output, waiting at most `timeout`.
    pub(crate) fn flush(&self, timeout: Duration) -> Flush<'_> {
        self.output.flush(timeout)
    }

    /// Stops collection for good; false if that was done before.
    pub(crate) fn begin_shutdown(&self) -> bool {
        if self.shut_down.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.enabled.store(false, Ordering::Release);
        true
    }

    /// Whether the pipeline was shut down.
    pub(crate) fn is_shut_down(&self) -> bool {
        self.shut_down.load(Ordering::Acquire)
    }

    /// Whether collection is running.
    pub(crate) fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Stops or resumes collection, unless shut down or disabled by the
    /// environment.
    pub(crate) fn set_enabled(&self, enabled: bool) {
        if !self.is_shut_down() && !self.sdk_disabled {
            self.enabled.store(enabled, Ordering::Release);
        }
    }

    /// Sampled spans started and ended so far.
    pub(crate) fn span_counts(&self) -> (u64, u64) {
        let ended = self.ended.sum();
        // Read after `ended`, so that a snapshot never shows more ended than
        // started.
        let started = self
            .lifetime
            .opened()
            .saturating_sub(self.record_only.sum());
        (started, ended)
    }

    /// The last handle is gone.
    pub(crate) fn on_last_handle(&self) {
        self.output.on_last_handle(self);
    }
}

impl fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("sampler", &self.sampler)
            .field("output", &self.output)
            .field("observers", &self.observers)
            .field("enabled", &self.enabled.load(Ordering::Relaxed))
            .finish()
    }
}
