//! `X-Cloud-Trace-Context`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracewire::propagation::{CloudTraceContextPropagator, Propagator};
use tracewire_fuzz::{check_round_trip, RawHeaders};

fuzz_target!(|data: &[u8]| {
    let mut h = RawHeaders::default();
    h.push("X-Cloud-Trace-Context", data);
    let p = CloudTraceContextPropagator::new();
    if let Some(sc) = p.extract_span_context(&h) {
        check_round_trip(&p, &sc);
    }
});
