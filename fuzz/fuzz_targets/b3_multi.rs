//! The `X-B3-*` headers: lines in the order TraceId, SpanId, Sampled, Flags,
//! ParentSpanId, repeating.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracewire::propagation::{B3Encoding, B3Propagator, Propagator};
use tracewire_fuzz::{check_round_trip_with_state, RawHeaders};

fuzz_target!(|data: &[u8]| {
    let h = RawHeaders::from_lines(
        data,
        &[
            "X-B3-TraceId",
            "X-B3-SpanId",
            "X-B3-Sampled",
            "X-B3-Flags",
            "X-B3-ParentSpanId",
        ],
    );
    let p = B3Propagator::new(B3Encoding::Multi);
    if let Some(sc) = p.extract_span_context(&h) {
        check_round_trip_with_state(&p, &sc);
    }
});
