//! Zipkin B3: the single `b3` header and the multiple `X-B3-*` headers.

use crate::context::Context;
use crate::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

use super::{lower_hex, push_hex, trim_ows, Extractor, Injector, Propagator};

const B3: &str = "b3";
const TRACE_ID: &str = "x-b3-traceid";
const SPAN_ID: &str = "x-b3-spanid";
const SAMPLED: &str = "x-b3-sampled";
const FLAGS: &str = "x-b3-flags";
const PARENT_SPAN_ID: &str = "x-b3-parentspanid";
const FIELDS: [&str; 6] = [B3, TRACE_ID, SPAN_ID, SAMPLED, FLAGS, PARENT_SPAN_ID];

/// The longest valid `b3` value: 32 + 1 + 16 + 1 + 1 + 1 + 16 characters.
const MAX_SINGLE_LEN: usize = 68;

/// Which B3 headers [`B3Propagator`] writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum B3Encoding {
    /// The single `b3` header.
    Single,
    /// The `X-B3-TraceId`, `X-B3-SpanId` and `X-B3-Sampled` headers (the default:
    /// the encoding every B3 implementation reads).
    #[default]
    Multi,
    /// Both the single and the multiple headers.
    SingleAndMulti,
}

/// The Zipkin B3 format.
///
/// Extraction reads the single `b3` header if it is present and well-formed (it
/// wins over the multiple headers), and the `X-B3-*` headers otherwise:
/// - trace ids of 16 or 32 lowercase hex characters (64-bit ids are left-padded
///   with zeros to 128 bits), span ids of 16;
/// - sampling state `1` (accept), `0` (deny), `d` or `X-B3-Flags: 1` (debug,
///   which implies accept); `true` and `false` are accepted in `X-B3-Sampled`.
///   An absent state ("defer") is read as not sampled: a [`SpanContext`] holds a
///   sampling decision, not its absence. Debug is read as sampled and not kept;
/// - a sampling state sent without ids (`b3: 0`, `X-B3-Sampled: 1` alone) gives
///   no span context: a deny or accept decision without ids is not representable
///   as a [`SpanContext`], so the receiver's own sampler decides;
/// - the parent span id is checked but not kept; a malformed (present but
///   invalid) `X-B3-Sampled` or `X-B3-ParentSpanId` makes the headers invalid;
/// - of repeated `X-B3-*` or `b3` headers, the first value wins.
///
/// Injection writes the encoding chosen with [`B3Propagator::new`]: trace id (16
/// hex characters when its upper 64 bits are zero, 32 otherwise), span id and the
/// sampling state `1` or `0`; no parent span id.
#[derive(Clone, Copy, Debug, Default)]
pub struct B3Propagator {
    encoding: B3Encoding,
}

impl B3Propagator {
    /// A B3 propagator that injects `encoding`. It extracts every encoding.
    pub const fn new(encoding: B3Encoding) -> Self {
        B3Propagator { encoding }
    }

    /// The encoding this propagator injects.
    pub fn encoding(&self) -> B3Encoding {
        self.encoding
    }
}

/// What a `b3` single header holds.
enum Single {
    Context(SpanContext),
    SamplingOnly,
    Invalid,
}

impl Propagator for B3Propagator {
    fn extract_span_context(&self, carrier: &dyn Extractor) -> Option<SpanContext> {
        if let Some(value) = carrier.get_all(B3).first() {
            match parse_single(value) {
                Single::Context(sc) => return Some(sc),
                Single::SamplingOnly => return None,
                Single::Invalid => {}
            }
        }
        parse_multi(carrier)
    }

    fn inject(&self, cx: &Context, carrier: &mut dyn Injector) {
        let sc = cx.span().span_context();
        if !sc.is_valid() {
            return;
        }
        let trace_id = trace_id_hex(sc.trace_id());
        let span_id = sc.span_id().to_string();
        let sampled = if sc.is_sampled() { "1" } else { "0" };
        if matches!(
            self.encoding,
            B3Encoding::Single | B3Encoding::SingleAndMulti
        ) {
            let mut single = String::with_capacity(trace_id.len() + 19);
            single.push_str(&trace_id);
            single.push('-');
            single.push_str(&span_id);
            single.push('-');
            single.push_str(sampled);
            carrier.set(B3, single);
        }
        if matches!(
            self.encoding,
            B3Encoding::Multi | B3Encoding::SingleAndMulti
        ) {
            carrier.set(TRACE_ID, trace_id);
            carrier.set(SPAN_ID, span_id);
            carrier.set(SAMPLED, sampled.to_owned());
        }
    }

    fn fields(&self) -> &[&'static str] {
        &FIELDS
    }
}

fn trace_id_hex(id: TraceId) -> String {
    let v = id.to_u128();
    let digits = if v >> 64 == 0 { 16 } else { 32 };
    let mut out = String::with_capacity(digits);
    push_hex(&mut out, v, digits);
    out
}

/// A 64- or 128-bit trace id of 16 or 32 lowercase hex characters.
fn parse_trace_id(s: &[u8]) -> Option<TraceId> {
    if s.len() != 16 && s.len() != 32 {
        return None;
    }
    Some(TraceId::from_u128(lower_hex(s)?)).filter(|id| id.is_valid())
}

fn parse_span_id(s: &[u8]) -> Option<SpanId> {
    if s.len() != 16 {
        return None;
    }
    Some(SpanId::from_u64(lower_hex(s)? as u64)).filter(|id| id.is_valid())
}

/// `b3: {TraceId}-{SpanId}[-{SamplingState}[-{ParentSpanId}]]` or `b3: {SamplingState}`.
fn parse_single(value: &[u8]) -> Single {
    let v = trim_ows(value);
    if v.len() > MAX_SINGLE_LEN {
        return Single::Invalid;
    }
    if let [b'0' | b'1' | b'd'] = v {
        return Single::SamplingOnly;
    }
    let mut parts = v.split(|&c| c == b'-');
    let (Some(trace), Some(span)) = (parts.next(), parts.next()) else {
        return Single::Invalid;
    };
    let (Some(trace_id), Some(span_id)) = (parse_trace_id(trace), parse_span_id(span)) else {
        return Single::Invalid;
    };
    let sampled = match parts.next() {
        None => false,
        Some(b"1" | b"d") => true,
        Some(b"0") => false,
        Some(_) => return Single::Invalid,
    };
    if let Some(parent) = parts.next() {
        if parent.len() != 16 || lower_hex(parent).is_none() {
            return Single::Invalid;
        }
    }
    if parts.next().is_some() {
        return Single::Invalid;
    }
    Single::Context(remote(trace_id, span_id, sampled))
}

fn parse_multi(carrier: &dyn Extractor) -> Option<SpanContext> {
    let first = |name: &str| carrier.get_all(name).first().map(trim_ows);
    let trace_id = parse_trace_id(first(TRACE_ID)?)?;
    let span_id = parse_span_id(first(SPAN_ID)?)?;
    let debug = matches!(first(FLAGS), Some(b"1"));
    let sampled = match first(SAMPLED) {
        None => false,
        Some(b"1" | b"true") => true,
        Some(b"0" | b"false") => false,
        Some(_) => return None,
    };
    if let Some(parent) = first(PARENT_SPAN_ID) {
        if parent.len() != 16 || lower_hex(parent).is_none() {
            return None;
        }
    }
    Some(remote(trace_id, span_id, sampled || debug))
}

fn remote(trace_id: TraceId, span_id: SpanId, sampled: bool) -> SpanContext {
    SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::NONE.with_sampled(sampled),
        true,
        TraceState::NONE,
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;
    use crate::propagation::testing;
    use crate::trace::Span;

    const TID: &str = "80f198ee56343ba864fe8b2a57d3eff7";
    const SID: &str = "e457b5a2e4d86bd1";
    const PID: &str = "05e3ac9a4f6e3b90";

    fn extract(pairs: &[(&str, &str)]) -> Option<SpanContext> {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        B3Propagator::default().extract_span_context(&h)
    }

    fn ids(sc: &SpanContext) -> (String, String, bool) {
        (
            sc.trace_id().to_string(),
            sc.span_id().to_string(),
            sc.is_sampled(),
        )
    }

    fn inject(encoding: B3Encoding, sc: SpanContext) -> HashMap<String, String> {
        let cx = Context::new().with_span(Span::non_recording(sc));
        let mut out = HashMap::new();
        B3Propagator::new(encoding).inject(&cx, &mut out);
        out
    }

    #[test]
    fn single_header_spec_examples() {
        let cases: &[(&str, bool)] = &[
            (
                "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
                true,
            ),
            ("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1", true),
            ("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d", true),
            ("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0", false),
            ("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1", false),
        ];
        for (value, sampled) in cases {
            let sc = extract(&[("b3", value)]).unwrap_or_else(|| panic!("{value}"));
            assert_eq!(ids(&sc), (TID.into(), SID.into(), *sampled), "{value}");
            assert!(sc.is_remote());
        }
    }

    #[test]
    fn sampling_only_values_give_no_span_context() {
        for value in ["0", "1", "d"] {
            assert_eq!(extract(&[("b3", value)]), None, "{value}");
        }
        assert_eq!(extract(&[("X-B3-Sampled", "0")]), None);
        assert_eq!(extract(&[("X-B3-Flags", "1")]), None);
    }

    #[test]
    fn sixty_four_bit_trace_id_is_left_padded_with_zeros() {
        let sc = extract(&[("b3", "64fe8b2a57d3eff7-e457b5a2e4d86bd1-1")]).unwrap();
        assert_eq!(
            sc.trace_id().to_string(),
            "000000000000000064fe8b2a57d3eff7"
        );
        let sc = extract(&[("X-B3-TraceId", "64fe8b2a57d3eff7"), ("X-B3-SpanId", SID)]).unwrap();
        assert_eq!(sc.trace_id().to_u128(), 0x64fe8b2a57d3eff7);
    }

    #[test]
    fn invalid_single_headers_are_rejected() {
        for value in [
            "",
            "2",
            "-",
            "80f198ee56343ba864fe8b2a57d3eff7",
            "80F198EE56343BA864FE8B2A57D3EFF7-E457B5A2E4D86BD1-1",
            "80f198ee56343ba864fe8b2a57d3-e457b5a2e4d86bd1-1",
            "00000000000000000000000000000000-e457b5a2e4d86bd1-1",
            "80f198ee56343ba864fe8b2a57d3eff7-0000000000000000-1",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-2",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1--05e3ac9a4f6e3b90",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90-",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-true",
        ] {
            assert_eq!(extract(&[("b3", value)]), None, "{value:?}");
        }
    }

    #[test]
    fn multiple_headers_spec_example() {
        let sc = extract(&[
            ("X-B3-TraceId", TID),
            ("X-B3-ParentSpanId", PID),
            ("X-B3-SpanId", SID),
            ("X-B3-Sampled", "1"),
        ])
        .unwrap();
        assert_eq!(ids(&sc), (TID.into(), SID.into(), true));
    }

    #[test]
    fn debug_flag_implies_sampled() {
        let sc = extract(&[
            ("X-B3-TraceId", TID),
            ("X-B3-SpanId", SID),
            ("X-B3-Flags", "1"),
        ])
        .unwrap();
        assert!(sc.is_sampled());
        let sc = extract(&[
            ("X-B3-TraceId", TID),
            ("X-B3-SpanId", SID),
            ("X-B3-Flags", "2"),
        ])
        .unwrap();
        assert!(!sc.is_sampled(), "other X-B3-Flags values are ignored");
    }

    #[test]
    fn lenient_true_and_false_are_accepted_in_x_b3_sampled() {
        let sampled = |v| {
            extract(&[
                ("X-B3-TraceId", TID),
                ("X-B3-SpanId", SID),
                ("X-B3-Sampled", v),
            ])
            .map(|sc| sc.is_sampled())
        };
        assert_eq!(sampled("true"), Some(true));
        assert_eq!(sampled("false"), Some(false));
    }

    #[test]
    fn malformed_multiple_headers_are_rejected() {
        let base = [("X-B3-TraceId", TID), ("X-B3-SpanId", SID)];
        for extra in [
            ("X-B3-Sampled", ""),
            ("X-B3-Sampled", "yes"),
            ("X-B3-ParentSpanId", "-"),
            ("X-B3-ParentSpanId", "05E3AC9A4F6E3B90"),
        ] {
            let mut pairs = base.to_vec();
            pairs.push(extra);
            assert_eq!(extract(&pairs), None, "{extra:?}");
        }
        assert_eq!(extract(&[("X-B3-TraceId", TID)]), None, "span id missing");
        assert_eq!(extract(&[("X-B3-SpanId", SID)]), None, "trace id missing");
        assert_eq!(
            extract(&[("X-B3-TraceId", &TID[..20]), ("X-B3-SpanId", SID)]),
            None
        );
    }

    #[test]
    fn first_value_of_repeated_headers_wins() {
        let sc = extract(&[
            ("X-B3-TraceId", TID),
            ("X-B3-TraceId", "64fe8b2a57d3eff7"),
            ("X-B3-SpanId", SID),
        ])
        .unwrap();
        assert_eq!(sc.trace_id().to_string(), TID);
    }

    #[test]
    fn single_header_wins_over_multiple_headers() {
        let sc = extract(&[
            ("b3", "64fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
            ("X-B3-TraceId", TID),
            ("X-B3-SpanId", PID),
            ("X-B3-Sampled", "0"),
        ])
        .unwrap();
        assert_eq!(sc.trace_id().to_u128(), 0x64fe8b2a57d3eff7);
        assert!(sc.is_sampled());
        // A sampling-only single header wins too.
        assert_eq!(
            extract(&[("b3", "0"), ("X-B3-TraceId", TID), ("X-B3-SpanId", SID)]),
            None
        );
    }

    #[test]
    fn malformed_single_header_falls_back_to_multiple_headers() {
        let sc = extract(&[
            ("b3", "garbage"),
            ("X-B3-TraceId", TID),
            ("X-B3-SpanId", SID),
        ])
        .unwrap();
        assert_eq!(sc.span_id().to_string(), SID);
    }

    #[test]
    fn inject_writes_the_configured_encodings() {
        let sc = extract(&[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1")]).unwrap();
        let single = inject(B3Encoding::Single, sc.clone());
        assert_eq!(single.len(), 1);
        assert_eq!(single["b3"], format!("{TID}-{SID}-1"));
        let multi = inject(B3Encoding::Multi, sc.clone());
        assert_eq!(multi.len(), 3);
        assert_eq!(multi["x-b3-traceid"], TID);
        assert_eq!(multi["x-b3-spanid"], SID);
        assert_eq!(multi["x-b3-sampled"], "1");
        assert_eq!(inject(B3Encoding::SingleAndMulti, sc).len(), 4);
        assert!(inject(B3Encoding::SingleAndMulti, SpanContext::INVALID).is_empty());
    }

    #[test]
    fn inject_keeps_64_bit_trace_ids_64_bit() {
        let sc = extract(&[("b3", "64fe8b2a57d3eff7-e457b5a2e4d86bd1-0")]).unwrap();
        assert_eq!(
            inject(B3Encoding::Single, sc)["b3"],
            "64fe8b2a57d3eff7-e457b5a2e4d86bd1-0"
        );
    }

    proptest! {
        #[test]
        fn inject_then_extract_round_trips(
            trace_id in testing::trace_id(),
            span_id in testing::span_id(),
            flags in testing::flags(),
            encoding in prop_oneof![
                Just(B3Encoding::Single),
                Just(B3Encoding::Multi),
                Just(B3Encoding::SingleAndMulti),
            ],
        ) {
            let sc = SpanContext::new(trace_id, span_id, flags, false, TraceState::NONE);
            let out = inject(encoding, sc);
            let back = B3Propagator::default().extract_span_context(&out);
            prop_assert_eq!(back, Some(remote(trace_id, span_id, flags.is_sampled())));
        }

        #[test]
        fn sixty_four_bit_ids_round_trip(low in 1..=u64::MAX, span_id in testing::span_id()) {
            let trace_id = TraceId::from_u128(u128::from(low));
            let sc = SpanContext::new(trace_id, span_id, TraceFlags::SAMPLED, false, TraceState::NONE);
            let out = inject(B3Encoding::Single, sc);
            prop_assert_eq!(out["b3"].len(), 16 + 1 + 16 + 2);
            let back = B3Propagator::default().extract_span_context(&out);
            prop_assert_eq!(back.map(|sc| sc.trace_id()), Some(trace_id));
        }
    }
}
