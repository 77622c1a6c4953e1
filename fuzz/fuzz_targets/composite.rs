//! Every format at once: lines of `name:value` (a line without `:` is a
//! `traceparent`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracewire::propagation::{
    B3Encoding, B3Propagator, BaggagePropagator, CloudTraceContextPropagator, CompositePropagator,
    GrpcTraceBinPropagator, Propagator, TraceContextPropagator,
};
use tracewire::Context;
use tracewire_fuzz::{check_round_trip, RawHeaders};

fuzz_target!(|data: &[u8]| {
    let h = RawHeaders::from_name_value_lines(data, "traceparent");
    let p = CompositePropagator::new()
        .with(TraceContextPropagator::new())
        .with(B3Propagator::new(B3Encoding::SingleAndMulti))
        .with(CloudTraceContextPropagator::new())
        .with(GrpcTraceBinPropagator::new())
        .with(BaggagePropagator::new());
    let cx = p.extract(&Context::new(), &h);
    let sc = p.extract_span_context(&h);
    assert_eq!(cx.has_span(), sc.is_some());
    if let Some(sc) = sc {
        assert_eq!(cx.span().span_context(), &sc);
        check_round_trip(&p, &sc);
    }
});
