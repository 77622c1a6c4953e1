//! Google Cloud's `X-Cloud-Trace-Context` header.

use crate::context::Context;
use crate::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

use super::{push_hex, trim_ows, Extractor, Injector, Propagator};

const HEADER: &str = "x-cloud-trace-context";
const FIELDS: [&str; 1] = [HEADER];

/// The longest value read: 32 + 1 + 20 + `;o=` and a generous options field.
const MAX_LEN: usize = 128;

/// The `X-Cloud-Trace-Context: TRACE_ID/SPAN_ID;o=OPTIONS` format of Google Cloud
/// (load balancers, App Engine, Cloud Run).
///
/// - `TRACE_ID`: 32 hex characters (either case), not all zero;
/// - `SPAN_ID`: the span id in *decimal* (an unsigned 64-bit integer), not zero;
/// - `;o=OPTIONS`: optional decimal trace options; bit 0 is "sampled" (`o=1`).
///   Without it, or with a malformed one (`o=`, `o=x`), the ids are kept and the
///   context is not sampled. Other `;` parameters are ignored.
///
/// Of repeated headers the first is used. Injection writes
/// `{trace_id}/{span_id};o=1` (or `o=0`), with the trace id in lowercase hex.
#[derive(Clone, Copy, Debug, Default)]
pub struct CloudTraceContextPropagator {
    _private: (),
}

impl CloudTraceContextPropagator {
    /// The `X-Cloud-Trace-Context` propagator.
    pub const fn new() -> Self {
        CloudTraceContextPropagator { _private: () }
    }
}

impl Propagator for CloudTraceContextPropagator {
    fn extract_span_context(&self, carrier: &dyn Extractor) -> Option<SpanContext> {
        parse(carrier.get_all(HEADER).first()?)
    }

    fn inject(&self, cx: &Context, carrier: &mut dyn Injector) {
        let sc = cx.span().span_context();
        if !sc.is_valid() {
            return;
        }
        let mut out = String::with_capacity(32 + 1 + 20 + 4);
        push_hex(&mut out, sc.trace_id().to_u128(), 32);
        out.push('/');
        out.push_str(&sc.span_id().to_u64().to_string());
        out.push_str(if sc.is_sampled() { ";o=1" } else { ";o=0" });
        carrier.set(HEADER, out);
    }

    fn fields(&self) -> &[&'static str] {
        &FIELDS
    }
}

fn parse(value: &[u8]) -> Option<SpanContext> {
    let v = trim_ows(value);
    if v.len() > MAX_LEN {
        return None;
    }
    let slash = v.iter().position(|&c| c == b'/')?;
    let (trace, rest) = (&v[..slash], &v[slash + 1..]);
    let (span, params) = match rest.iter().position(|&c| c == b';') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let trace_id = TraceId::from_u128(any_case_hex(trace)?);
    let span_id = SpanId::from_u64(decimal(span)?);
    if !trace_id.is_valid() || !span_id.is_valid() {
        return None;
    }
    let mut sampled = false;
    for param in params.into_iter().flat_map(|p| p.split(|&c| c == b';')) {
        if let Some(options) = param.strip_prefix(b"o=") {
            // A malformed options field says nothing about sampling; the ids
            // still hold.
            sampled = decimal(options).is_some_and(|o| o & 1 == 1);
        }
    }
    Some(SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::NONE.with_sampled(sampled),
        true,
        TraceState::NONE,
    ))
}

/// Exactly 32 hex digits of either case.
fn any_case_hex(s: &[u8]) -> Option<u128> {
    let mut lower: [u8; 32] = s.try_into().ok()?;
    lower.make_ascii_lowercase();
    super::lower_hex(&lower)
}

/// 1 to 20 ASCII digits that fit in a `u64`.
fn decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;
    use crate::propagation::testing;
    use crate::trace::Span;

    const TID: &str = "105445aa7843bc8bf206b12000100000";

    fn extract(value: &str) -> Option<SpanContext> {
        let mut h = http::HeaderMap::new();
        h.insert("X-Cloud-Trace-Context", value.parse().unwrap());
        CloudTraceContextPropagator::new().extract_span_context(&h)
    }

    #[test]
    fn documented_example_is_parsed_with_a_decimal_span_id() {
        let sc = extract("105445aa7843bc8bf206b12000100000/1;o=1").unwrap();
        assert_eq!(sc.trace_id().to_string(), TID);
        assert_eq!(sc.span_id().to_u64(), 1);
        assert!(sc.is_sampled());
        assert!(sc.is_remote());
    }

    #[test]
    fn options_are_optional_and_only_bit_0_means_sampled() {
        let sampled = |v: &str| extract(v).map(|sc| sc.is_sampled());
        assert_eq!(sampled(&format!("{TID}/18446744073709551615")), Some(false));
        assert_eq!(sampled(&format!("{TID}/42;o=0")), Some(false));
        assert_eq!(sampled(&format!("{TID}/42;o=3")), Some(true));
        assert_eq!(sampled(&format!("{TID}/42;o=2")), Some(false));
        assert_eq!(sampled(&format!("{TID}/42;x=y;o=1")), Some(true));
        assert_eq!(sampled(&format!("{TID}/42;")), Some(false));
    }

    #[test]
    fn a_bad_options_field_keeps_the_ids_and_reads_as_not_sampled() {
        for options in [
            "o=",
            "o=x",
            "o=-1",
            "o=1a",
            "o=99999999999999999999999",
            "o= 1",
        ] {
            let value = format!("{TID}/42;{options}");
            let sc = extract(&value).unwrap_or_else(|| panic!("ids lost for {value:?}"));
            assert_eq!(sc.trace_id().to_string(), TID, "{value:?}");
            assert_eq!(sc.span_id().to_u64(), 42, "{value:?}");
            assert!(!sc.is_sampled(), "{value:?}");
        }
    }

    #[test]
    fn uppercase_trace_id_is_accepted_and_written_back_lowercase() {
        let sc = extract(&format!("{}/42;o=1", TID.to_ascii_uppercase())).unwrap();
        assert_eq!(sc.trace_id().to_string(), TID);
    }

    #[test]
    fn invalid_values_are_rejected() {
        for value in [
            "",
            TID,
            &format!("{TID}/"),
            &format!("{TID}/0;o=1"),
            &format!("{TID}/-1"),
            &format!("{TID}/+1"),
            &format!("{TID}/18446744073709551616"),
            &format!("{TID}/00000000000000000000001"),
            &format!("{TID}/1a"),
            &format!("{}/1", &TID[..31]),
            &format!("{TID}0/1"),
            "00000000000000000000000000000000/1;o=1",
            "105445aa7843bc8bf206b1200010000g/1",
        ] {
            assert_eq!(extract(value), None, "{value:?}");
        }
    }

    #[test]
    fn inject_writes_decimal_span_id_and_options() {
        let sc = extract(&format!("{TID}/12345678901234567890;o=1")).unwrap();
        let cx = Context::new().with_span(Span::non_recording(sc));
        let mut out = HashMap::new();
        CloudTraceContextPropagator::new().inject(&cx, &mut out);
        assert_eq!(
            out["x-cloud-trace-context"],
            format!("{TID}/12345678901234567890;o=1")
        );
    }

    proptest! {
        #[test]
        fn inject_then_extract_round_trips(
            trace_id in testing::trace_id(),
            span_id in testing::span_id(),
            flags in testing::flags(),
        ) {
            let sc = SpanContext::new(trace_id, span_id, flags, false, TraceState::NONE);
            let cx = Context::new().with_span(Span::non_recording(sc));
            let mut out = HashMap::new();
            CloudTraceContextPropagator::new().inject(&cx, &mut out);
            let back = CloudTraceContextPropagator::new().extract_span_context(&out);
            let expected = SpanContext::new(
                trace_id,
                span_id,
                TraceFlags::NONE.with_sampled(flags.is_sampled()),
                true,
                TraceState::NONE,
            );
            prop_assert_eq!(back, Some(expected));
        }
    }
}
