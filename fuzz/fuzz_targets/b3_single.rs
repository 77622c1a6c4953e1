//! The single `b3` header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracewire::propagation::{B3Encoding, B3Propagator, Propagator};
use tracewire_fuzz::{check_round_trip_with_state, RawHeaders};

fuzz_target!(|data: &[u8]| {
    let mut h = RawHeaders::default();
    h.push("B3", data);
    let p = B3Propagator::new(B3Encoding::Single);
    if let Some(sc) = p.extract_span_context(&h) {
        check_round_trip_with_state(&p, &sc);
    }
});
