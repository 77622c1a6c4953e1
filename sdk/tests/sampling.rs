//! `TraceIdRatio` decides as OpenTelemetry's consistent probability sampling does
//! (`tracestate-probability-sampling.md`, the `ProbabilitySampler` algorithm of the
//! SDK specification): the span is sampled when the randomness `R`, the low 56 bits
//! of the trace id, is at least the rejection threshold `T = (1 - ratio) * 2^56`.
//! Every process of a fleet then keeps the same traces for the same ratio, whatever
//! its SDK.

use tracewire::trace::TraceIdRatio;
use tracewire::{SpanContext, SpanId, TraceFlags, TraceId, TraceState, TracerProvider};

/// A pipeline sampling with `TraceIdRatio::new(ratio)` (and no exporter).
struct Ratio {
    _provider: TracerProvider,
    tracer: tracewire::Tracer,
}

impl Ratio {
    fn new(ratio: f64) -> Self {
        let provider = TracerProvider::builder()
            .with_sampler(TraceIdRatio::new(ratio))
            .build();
        Ratio {
            tracer: provider.tracer("sampling"),
            _provider: provider,
        }
    }

    /// Whether a span of the trace `trace_id` is sampled (the remote parent's own
    /// flags say "not sampled": the ratio sampler ignores them, as specified).
    fn sampled_with(&self, trace_id: u128, state: TraceState) -> bool {
        let parent = SpanContext::new(
            TraceId::from_u128(trace_id),
            SpanId::from_u64(0x1234),
            TraceFlags::NONE,
            true,
            state,
        );
        self.tracer
            .span_builder("s")
            .with_parent_span_context(parent)
            .start()
            .span_context()
            .is_sampled()
    }

    fn sampled(&self, trace_id: u128) -> bool {
        self.sampled_with(trace_id, TraceState::NONE)
    }
}

fn sampled(ratio: f64, trace_id: u128) -> bool {
    Ratio::new(ratio).sampled(trace_id)
}

fn sampled_with(ratio: f64, trace_id: u128, state: TraceState) -> bool {
    Ratio::new(ratio).sampled_with(trace_id, state)
}

/// A trace id whose low 56 bits are `r`; the bits above (not random by W3C Trace
/// Context level 2) are set so that a sampler reading them would be caught.
fn with_randomness(r: u64) -> u128 {
    assert!(r < 1 << 56);
    0x4bf9_2f35_77b3_4da6_a300_0000_0000_0000 | u128::from(r)
}

#[test]
fn ratio_samples_exactly_the_trace_ids_whose_randomness_reaches_the_threshold() {
    // (ratio, T): T = 2^56 - round(ratio * 2^56), full precision.
    let cases: &[(f64, u64)] = &[
        (0.5, 0x80_0000_0000_0000),
        (0.25, 0xc0_0000_0000_0000),
        (0.1, 0xe6_6666_6666_6666),
        (0.01, 0xfd_70a3_d70a_3d71),
        (2f64.powi(-56), 0xff_ffff_ffff_ffff),
    ];
    for &(ratio, t) in cases {
        assert!(
            !sampled(ratio, with_randomness(t - 1)),
            "ratio {ratio}: R = T - 1 = {:#x} must be dropped",
            t - 1
        );
        assert!(
            sampled(ratio, with_randomness(t)),
            "ratio {ratio}: R = T = {t:#x} must be sampled"
        );
        assert!(
            !sampled(ratio, with_randomness(0)),
            "ratio {ratio}: R = 0 must be dropped"
        );
        assert!(
            sampled(ratio, with_randomness((1 << 56) - 1)),
            "ratio {ratio}: R = 2^56 - 1 must be sampled"
        );
    }
}

#[test]
fn ratio_one_samples_every_trace_and_ratio_zero_none() {
    for r in [0, 1, 0x80_0000_0000_0000, (1 << 56) - 1] {
        assert!(sampled(1.0, with_randomness(r)), "ratio 1, R = {r:#x}");
        assert!(!sampled(0.0, with_randomness(r)), "ratio 0, R = {r:#x}");
    }
}

#[test]
fn bits_above_the_56_random_ones_do_not_change_the_decision() {
    let r = 0x80_0000_0000_0000u128;
    for high in [0u128, 0xff << 56, u128::MAX << 56] {
        assert!(sampled(0.5, (high << 8) | r), "high bits {high:#x}");
        assert!(!sampled(0.5, (high << 8) | (r - 1)), "high bits {high:#x}");
    }
}

#[test]
fn explicit_randomness_in_the_ot_tracestate_entry_replaces_the_trace_ids() {
    // The trace id says "drop" at 0.5 (R = 0); `rv` says "sample", and wins.
    let rv: TraceState = "ot=rv:ffffffffffffff,other=1".parse().unwrap();
    assert!(sampled_with(0.5, with_randomness(0), rv));
    // And the other way round, with another `ot` sub-key before it.
    let rv: TraceState = "ot=th:8;rv:7fffffffffffff".parse().unwrap();
    assert!(!sampled_with(0.5, with_randomness((1 << 56) - 1), rv));
    // A malformed `rv` (not 14 hex digits) is ignored: the trace id decides.
    let bad: TraceState = "ot=rv:fff".parse().unwrap();
    assert!(sampled_with(0.5, with_randomness((1 << 56) - 1), bad));
}

#[test]
fn the_sampled_fraction_of_random_trace_ids_matches_the_ratio() {
    const N: usize = 200_000;
    for ratio in [0.5, 0.1, 0.01] {
        let provider = TracerProvider::builder()
            .with_sampler(TraceIdRatio::new(ratio))
            .build();
        let tracer = provider.tracer("sampling");
        let hits = (0..N)
            .filter(|_| {
                tracer
                    .span_builder("root")
                    .root()
                    .start()
                    .span_context()
                    .is_sampled()
            })
            .count();
        let frac = hits as f64 / N as f64;
        // Five standard deviations of a binomial proportion.
        let tolerance = 5.0 * (ratio * (1.0 - ratio) / N as f64).sqrt();
        assert!(
            (frac - ratio).abs() < tolerance,
            "ratio {ratio}: sampled {frac} of {N} random trace ids (tolerance {tolerance})"
        );
    }
}

#[test]
fn a_higher_ratio_keeps_every_trace_a_lower_one_keeps() {
    let ratios = [0.001, 0.01, 0.1, 0.3, 0.5, 0.9];
    let samplers: Vec<Ratio> = ratios.iter().map(|&r| Ratio::new(r)).collect();
    for _ in 0..20_000 {
        let id = TraceId::random().to_u128();
        let decisions: Vec<bool> = samplers.iter().map(|s| s.sampled(id)).collect();
        for w in decisions.windows(2) {
            assert!(
                !w[0] || w[1],
                "trace {id:032x}: {decisions:?} for {ratios:?}"
            );
        }
    }
}
