//! `baggage`: each line is one header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracewire::propagation::{Baggage, BaggageExt, BaggagePropagator, Propagator};
use tracewire::Context;
use tracewire_fuzz::RawHeaders;

fuzz_target!(|data: &[u8]| {
    let h = RawHeaders::from_lines(data, &["baggage"]);
    let cx = BaggagePropagator::new().extract(&Context::new(), &h);
    let b = cx.baggage();
    assert!(b.len() <= Baggage::MAX_MEMBERS);
    let header = b.header();
    assert!(header.len() <= Baggage::MAX_BYTES);
    let back = Baggage::from_headers([header.as_bytes()]);
    // Re-encoding can grow a value (`%zz` becomes `%25zz`), so entries may be
    // left out; those written must come back unchanged.
    for e in back.iter() {
        assert_eq!(b.entry(e.key()), Some(e));
    }
    if back.len() == b.len() {
        assert_eq!(&back, b);
    }
});
