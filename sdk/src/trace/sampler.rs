//! Samplers: which spans are recorded and exported.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::{KeyValue, Link, SamplingState, SpanContext, SpanKind, TraceId, TraceState};

/// What a sampler is asked about a span that is starting.
#[derive(Debug)]
#[non_exhaustive]
pub struct SamplingParams<'a> {
    /// The parent's span context, if the span has a valid parent, or a remote
    /// sampling decision that came without ids
    /// ([`SpanContext::is_sampling_only`]: its ids are invalid, and the span
    /// starts a new trace). A parent whose
    /// [sampling state](super::SamplingState) is `Deferred` made no decision.
    pub parent: Option<&'a SpanContext>,
    /// The trace id the span will have.
    pub trace_id: TraceId,
    /// The span name.
    pub name: &'a str,
    /// The span kind.
    pub kind: SpanKind,
    /// Attributes given when the span was built.
    pub attributes: &'a [KeyValue],
    /// Links given when the span was built.
    pub links: &'a [Link],
}

/// Whether a span is dropped, recorded only, or recorded and sampled (exported).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SamplingDecision {
    /// Non-recording and not sampled: costs nothing more.
    Drop,
    /// Recorded for local use (e.g. profiler span ids) but not exported.
    RecordOnly,
    /// Recorded, sampled and exported.
    RecordAndSample,
}

/// A sampler's answer.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingResult {
    /// The decision.
    pub decision: SamplingDecision,
    /// Attributes to add to the span.
    pub attributes: Vec<KeyValue>,
    /// A trace state to use instead of the parent's.
    pub trace_state: Option<TraceState>,
}

impl SamplingResult {
    /// A result with `decision` and nothing else.
    pub const fn new(decision: SamplingDecision) -> Self {
        SamplingResult {
            decision,
            attributes: Vec::new(),
            trace_state: None,
        }
    }
}

/// Decides, when a span starts, whether it is recorded and exported.
pub trait Sampler: Send + Sync + fmt::Debug {
    /// The decision for the span described by `params`.
    fn should_sample(&self, params: &SamplingParams<'_>) -> SamplingResult;

    /// Whether this sampler drops every span whatever the parameters, so the tracer
    /// can skip asking it (default `false`).
    fn always_drops(&self) -> bool {
        false
    }
}

/// Samples every span.
#[derive(Clone, Copy, Debug, Default)]
pub struct AlwaysOn;

/// Samples no span.
#[derive(Clone, Copy, Debug, Default)]
pub struct AlwaysOff;

impl Sampler for AlwaysOn {
    fn should_sample(&self, _: &SamplingParams<'_>) -> SamplingResult {
        SamplingResult::new(SamplingDecision::RecordAndSample)
    }
}

impl Sampler for AlwaysOff {
    fn should_sample(&self, _: &SamplingParams<'_>) -> SamplingResult {
        SamplingResult::new(SamplingDecision::Drop)
    }
    fn always_drops(&self) -> bool {
        true
    }
}

/// Samples a fixed fraction of traces, decided from the trace id alone, the way
/// OpenTelemetry's consistent probability sampling decides (the SDK
/// specification's `ProbabilitySampler`, which supersedes `TraceIdRatioBased`):
/// every process of a trace that samples at the same ratio, in any SDK that
/// follows the specification, keeps the same traces, and one with a higher ratio
/// keeps at least those.
///
/// The randomness `R` is the low 56 bits of the trace id (the part W3C Trace
/// Context level 2 makes random), or the explicit randomness of the parent's
/// `ot=rv:…` tracestate entry if it has one. The rejection threshold is
/// `T = 2^56 - round(ratio * 2^56)`, at full precision; a span is sampled when
/// `R >= T`. So a ratio of 0.5 has `T = 0x80000000000000`, 1.0 samples every
/// trace (`T = 0`) and 0.0 none.
///
/// The specification says a sampler SHOULD (not MUST) record `th:T` in the `ot`
/// tracestate entry of the spans it samples; tracewire does not, so a sampled
/// span carries no tracestate it did not receive (and a sampled root allocates
/// none). Downstream samplers then see no threshold: they treat the span's
/// sampling probability as unknown, which is what they do for every SDK that
/// predates the `th` key.
///
/// ```
/// use tracewire::trace::TraceIdRatio;
/// assert_eq!(TraceIdRatio::new(0.5).threshold(), 0x80_0000_0000_0000);
/// assert_eq!(TraceIdRatio::new(1.0).threshold(), 0);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct TraceIdRatio {
    threshold: u64,
    ratio: f64,
}

/// 2^56: one more than the largest randomness value.
const MAX_THRESHOLD: u64 = 1 << 56;

impl TraceIdRatio {
    /// Samples `ratio` of traces (clamped to `0.0..=1.0`; NaN counts as 0).
    pub fn new(ratio: f64) -> Self {
        let ratio = if ratio.is_nan() {
            0.0
        } else {
            ratio.clamp(0.0, 1.0)
        };
        let kept = (ratio * MAX_THRESHOLD as f64).round() as u64;
        TraceIdRatio {
            threshold: MAX_THRESHOLD - kept.min(MAX_THRESHOLD),
            ratio,
        }
    }
    /// The configured ratio.
    pub fn ratio(&self) -> f64 {
        self.ratio
    }
    /// The rejection threshold `T`: spans whose randomness is at least `T` are
    /// sampled (2^56 for a ratio of 0: none is).
    pub fn threshold(&self) -> u64 {
        self.threshold
    }
}

/// The explicit randomness value of an `ot=…;rv:<14 hex digits>;…` tracestate
/// entry, if there is a well-formed one.
fn explicit_randomness(state: &TraceState) -> Option<u64> {
    let ot = state.get("ot")?;
    let rv = ot.split(';').find_map(|kv| kv.strip_prefix("rv:"))?;
    if rv.len() != 14 || !rv.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(rv, 16).ok()
}

impl Sampler for TraceIdRatio {
    fn should_sample(&self, p: &SamplingParams<'_>) -> SamplingResult {
        let randomness = p
            .parent
            .and_then(|parent| explicit_randomness(parent.trace_state()))
            .unwrap_or((p.trace_id.to_u128() as u64) & (MAX_THRESHOLD - 1));
        SamplingResult::new(if randomness >= self.threshold {
            SamplingDecision::RecordAndSample
        } else {
            SamplingDecision::Drop
        })
    }
}

/// Follows the parent's decision; asks `root` for spans without a parent and for
/// spans whose parent made no decision (a B3 caller that sent ids without a
/// sampling state: [`SamplingState::Deferred`](super::SamplingState::Deferred)).
///
/// The four parent cases can each be given their own sampler; by default a sampled
/// parent means sample and an unsampled one means drop. A remote decision sent
/// without ids ([`SpanContext::sampling_only`]) counts as a remote parent.
#[derive(Debug)]
pub struct ParentBased {
    root: Box<dyn Sampler>,
    remote_sampled: Box<dyn Sampler>,
    remote_not_sampled: Box<dyn Sampler>,
    local_sampled: Box<dyn Sampler>,
    local_not_sampled: Box<dyn Sampler>,
}

impl ParentBased {
    /// Parent-based sampling with `root` for root spans.
    pub fn new(root: impl Sampler + 'static) -> Self {
        ParentBased {
            root: Box::new(root),
            remote_sampled: Box::new(AlwaysOn),
            remote_not_sampled: Box::new(AlwaysOff),
            local_sampled: Box::new(AlwaysOn),
            local_not_sampled: Box::new(AlwaysOff),
        }
    }
    /// The sampler for spans whose remote parent is sampled.
    pub fn with_remote_sampled(mut self, s: impl Sampler + 'static) -> Self {
        self.remote_sampled = Box::new(s);
        self
    }
    /// The sampler for spans whose remote parent is not sampled.
    pub fn with_remote_not_sampled(mut self, s: impl Sampler + 'static) -> Self {
        self.remote_not_sampled = Box::new(s);
        self
    }
    /// The sampler for spans whose local parent is sampled.
    pub fn with_local_sampled(mut self, s: impl Sampler + 'static) -> Self {
        self.local_sampled = Box::new(s);
        self
    }
    /// The sampler for spans whose local parent is not sampled.
    pub fn with_local_not_sampled(mut self, s: impl Sampler + 'static) -> Self {
        self.local_not_sampled = Box::new(s);
        self
    }
}

impl Sampler for ParentBased {
    fn should_sample(&self, p: &SamplingParams<'_>) -> SamplingResult {
        let s = match p.parent {
            None => &self.root,
            Some(parent) if parent.sampling_state() == SamplingState::Deferred => &self.root,
            Some(parent) => match (parent.is_remote(), parent.is_sampled()) {
                (true, true) => &self.remote_sampled,
                (true, false) => &self.remote_not_sampled,
                (false, true) => &self.local_sampled,
                (false, false) => &self.local_not_sampled,
            },
        };
        s.should_sample(p)
    }

    fn always_drops(&self) -> bool {
        [
            &self.root,
            &self.remote_sampled,
            &self.remote_not_sampled,
            &self.local_sampled,
            &self.local_not_sampled,
        ]
        .iter()
        .all(|s| s.always_drops())
    }
}

/// Samples at most `per_second` new traces per second (with a burst of one second's
/// worth), lock-free. Use it as the root sampler of [`ParentBased`] so that traces
/// it started stay whole.
///
/// It is a GCRA (virtual scheduling) limiter over one atomic: each sampled span
/// moves the "theoretical arrival time" forward by `1/per_second`.
#[derive(Debug)]
pub struct RateLimiting {
    epoch: Instant,
    interval_ns: u64,
    burst_ns: u64,
    tat_ns: AtomicU64,
}

impl RateLimiting {
    /// At most `per_second` sampled spans per second (0 or less: none).
    pub fn new(per_second: f64) -> Self {
        let interval_ns = if per_second > 0.0 {
            (1e9 / per_second).max(1.0) as u64
        } else {
            u64::MAX
        };
        let burst = per_second.max(1.0).floor() as u64;
        RateLimiting {
            epoch: Instant::now(),
            interval_ns,
            burst_ns: interval_ns.saturating_mul(burst),
            tat_ns: AtomicU64::new(0),
        }
    }

    fn acquire(&self) -> bool {
        if self.interval_ns == u64::MAX {
            return false;
        }
        let now = self.epoch.elapsed().as_nanos() as u64;
        let mut tat = self.tat_ns.load(Ordering::Relaxed);
        loop {
            let new_tat = tat.max(now).saturating_add(self.interval_ns);
            if new_tat.saturating_sub(now) > self.burst_ns {
                return false;
            }
            match self.tat_ns.compare_exchange_weak(
                tat,
                new_tat,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => tat = actual,
            }
        }
    }
}

impl Sampler for RateLimiting {
    fn should_sample(&self, _: &SamplingParams<'_>) -> SamplingResult {
        SamplingResult::new(if self.acquire() {
            SamplingDecision::RecordAndSample
        } else {
            SamplingDecision::Drop
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{SpanId, TraceFlags};

    fn params(trace_id: TraceId, parent: Option<&SpanContext>) -> SamplingParams<'_> {
        SamplingParams {
            parent,
            trace_id,
            name: "s",
            kind: SpanKind::Internal,
            attributes: &[],
            links: &[],
        }
    }

    #[test]
    fn ratio_samples_about_the_ratio_and_is_deterministic_per_trace() {
        let s = TraceIdRatio::new(0.25);
        let n = 40_000;
        let hits = (0..n)
            .filter(|_| {
                s.should_sample(&params(TraceId::random(), None)).decision
                    == SamplingDecision::RecordAndSample
            })
            .count();
        let frac = hits as f64 / n as f64;
        assert!((frac - 0.25).abs() < 0.02, "sampled {frac}");
        let id = TraceId::random();
        let d = s.should_sample(&params(id, None)).decision;
        assert!((0..10).all(|_| s.should_sample(&params(id, None)).decision == d));
        assert_eq!(
            TraceIdRatio::new(0.0)
                .should_sample(&params(TraceId::from_u128(1), None))
                .decision,
            SamplingDecision::Drop
        );
        assert_eq!(
            TraceIdRatio::new(1.0)
                .should_sample(&params(TraceId::from_u128(u128::MAX), None))
                .decision,
            SamplingDecision::RecordAndSample
        );
    }

    #[test]
    fn parent_based_follows_parent_and_uses_root_for_roots() {
        let s = ParentBased::new(AlwaysOff);
        let sampled = SpanContext::new(
            TraceId::random(),
            SpanId::random(),
            TraceFlags::SAMPLED,
            true,
            TraceState::NONE,
        );
        let unsampled = SpanContext::new(
            TraceId::random(),
            SpanId::random(),
            TraceFlags::NONE,
            false,
            TraceState::NONE,
        );
        let d = |p| s.should_sample(&params(TraceId::random(), p)).decision;
        assert_eq!(d(Some(&sampled)), SamplingDecision::RecordAndSample);
        assert_eq!(d(Some(&unsampled)), SamplingDecision::Drop);
        assert_eq!(d(None), SamplingDecision::Drop);
        let s = ParentBased::new(AlwaysOn).with_remote_sampled(AlwaysOff);
        assert_eq!(
            s.should_sample(&params(TraceId::random(), Some(&sampled)))
                .decision,
            SamplingDecision::Drop
        );
    }

    #[test]
    fn rate_limiter_allows_the_burst_then_refills_over_time() {
        let s = RateLimiting::new(100.0);
        let allowed = (0..1000).filter(|_| s.acquire()).count();
        assert!((100..=101).contains(&allowed), "burst allowed {allowed}");
        std::thread::sleep(std::time::Duration::from_millis(100));
        let refill = (0..1000).filter(|_| s.acquire()).count();
        assert!((8..=15).contains(&refill), "refill allowed {refill}");
        assert!(!RateLimiting::new(0.0).acquire());
    }
}
