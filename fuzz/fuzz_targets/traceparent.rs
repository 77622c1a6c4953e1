//! `traceparent` (first line) and `tracestate` (each further line).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracewire::propagation::{Propagator, TraceContextPropagator};
use tracewire_fuzz::{check_round_trip, reinject, RawHeaders};

fuzz_target!(|data: &[u8]| {
    let mut h = RawHeaders::default();
    let mut lines = data.split(|&c| c == b'\n');
    if let Some(first) = lines.next() {
        h.push("traceparent", first);
    }
    for line in lines {
        h.push("TraceState", line);
    }
    let p = TraceContextPropagator::new();
    if let Some(sc) = p.extract_span_context(&h) {
        check_round_trip(&p, &sc);
        let (_, back) = reinject(&p, &sc);
        let back = back.expect("round trip");
        assert_eq!(back.trace_state(), sc.trace_state());
        assert_eq!(back.flags().bits(), sc.flags().bits() & 0x03);
    }
});
