//! `grpc-trace-bin`: the binary codec, and the propagator (raw bytes or base64).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracewire::propagation::binary::{from_bytes, to_bytes};
use tracewire::propagation::{GrpcTraceBinPropagator, Propagator};
use tracewire_fuzz::{check_round_trip, RawHeaders};

fuzz_target!(|data: &[u8]| {
    if let Some(sc) = from_bytes(data) {
        assert_eq!(from_bytes(&to_bytes(&sc)), Some(sc));
    }
    let mut h = RawHeaders::default();
    h.push("grpc-trace-bin", data);
    let p = GrpcTraceBinPropagator::new();
    if let Some(sc) = p.extract_span_context(&h) {
        check_round_trip(&p, &sc);
    }
});
