//! Zipkin B3: the single `b3` header and the multiple `X-B3-*` headers.

use crate::context::Context;
use crate::trace::{SamplingState, SpanContext, SpanId, TraceFlags, TraceId, TraceState};

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
/// - the sampling state, kept as the span context's [`SamplingState`]: `1`
///   (accept: `Sampled`), `0` (deny: `NotSampled`), `d` or `X-B3-Flags: 1`
///   (debug: `Debug`, which implies accept, also beside `X-B3-Sampled`), and an
///   absent state (defer: `Deferred`, the receiver's sampler decides); `true` and
///   `false` are accepted in `X-B3-Sampled`;
/// - a sampling state sent without ids (`b3: 0`, `X-B3-Sampled: 0`,
///   `X-B3-Flags: 1` alone) gives [`SpanContext::sampling_only`]: no ids, but the
///   decision, which a server span follows (a deny is not sampled, and neither is
///   what it calls);
/// - the parent span id is checked but not kept; a malformed (present but
///   invalid) `X-B3-Sampled` or `X-B3-ParentSpanId`, or a present but invalid id,
///   makes the headers invalid;
/// - of repeated `X-B3-*` or `b3` headers, the first value wins.
///
/// Injection writes the encoding chosen with [`B3Propagator::new`]: trace id (16
/// hex characters when its upper 64 bits are zero, 32 otherwise), span id and the
/// sampling state (`1`, `0`, `d`, or nothing for a deferred one; in multiple
/// headers debug is `X-B3-Flags: 1` without `X-B3-Sampled`, as the spec says); no
/// parent span id. A sampling decision without ids is written alone (`b3: 0`).
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

impl Propagator for B3Propagator {
    fn extract_span_context(&self, carrier: &dyn Extractor) -> Option<SpanContext> {
        if let Some(value) = carrier.get_all(B3).first() {
            if let Some(sc) = parse_single(value) {
                return Some(sc);
            }
        }
        parse_multi(carrier)
    }

    fn inject(&self, cx: &Context, carrier: &mut dyn Injector) {
        let sc = cx.span().span_context();
        if !sc.is_valid() && !sc.is_sampling_only() {
            return;
        }
        let state = sc.sampling_state();
        let single = matches!(
            self.encoding,
            B3Encoding::Single | B3Encoding::SingleAndMulti
        );
        let multi = matches!(
            self.encoding,
            B3Encoding::Multi | B3Encoding::SingleAndMulti
        );
        if single {
            let mut value = String::with_capacity(32 + 1 + 16 + 2);
            if sc.is_valid() {
                value.push_str(&trace_id_hex(sc.trace_id()));
                value.push('-');
                value.push_str(&sc.span_id().to_string());
            }
            if let Some(c) = single_state(state) {
                if !value.is_empty() {
                    value.push('-');
                }
                value.push(c);
            }
            carrier.set(B3, value);
        }
        if multi {
            if sc.is_valid() {
                carrier.set(TRACE_ID, trace_id_hex(sc.trace_id()));
                carrier.set(SPAN_ID, sc.span_id().to_string());
            }
            match state {
                SamplingState::Deferred => {}
                SamplingState::NotSampled => carrier.set(SAMPLED, "0".to_owned()),
                SamplingState::Sampled => carrier.set(SAMPLED, "1".to_owned()),
                SamplingState::Debug => carrier.set(FLAGS, "1".to_owned()),
            }
        }
    }

    fn fields(&self) -> &[&'static str] {
        &FIELDS
    }
}

/// The sampling state character of the single header; none for "defer".
fn single_state(state: SamplingState) -> Option<char> {
    match state {
        SamplingState::Deferred => None,
        SamplingState::NotSampled => Some('0'),
        SamplingState::Sampled => Some('1'),
        SamplingState::Debug => Some('d'),
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

/// `b3: {TraceId}-{SpanId}[-{SamplingState}[-{ParentSpanId}]]` or
/// `b3: {SamplingState}`; `None` if malformed.
fn parse_single(value: &[u8]) -> Option<SpanContext> {
    let v = trim_ows(value);
    if v.len() > MAX_SINGLE_LEN {
        return None;
    }
    let decision = |s: &[u8]| match s {
        b"1" => Some(SamplingState::Sampled),
        b"0" => Some(SamplingState::NotSampled),
        b"d" => Some(SamplingState::Debug),
        _ => None,
    };
    if let Some(state) = decision(v) {
        return Some(SpanContext::sampling_only(state));
    }
    let mut parts = v.split(|&c| c == b'-');
    let trace_id = parse_trace_id(parts.next()?)?;
    let span_id = parse_span_id(parts.next()?)?;
    let state = match parts.next() {
        None => SamplingState::Deferred,
        Some(s) => decision(s)?,
    };
    if let Some(parent) = parts.next() {
        if parent.len() != 16 || lower_hex(parent).is_none() {
            return None;
        }
    }
    if parts.next().is_some() {
        return None;
    }
    Some(remote(trace_id, span_id, state))
}

fn parse_multi(carrier: &dyn Extractor) -> Option<SpanContext> {
    let first = |name: &str| carrier.get_all(name).first().map(trim_ows);
    let debug = matches!(first(FLAGS), Some(b"1"));
    let sampled = match first(SAMPLED) {
        None => None,
        Some(b"1" | b"true") => Some(true),
        Some(b"0" | b"false") => Some(false),
        Some(_) => return None,
    };
    let state = match (debug, sampled) {
        (true, _) => SamplingState::Debug,
        (false, Some(true)) => SamplingState::Sampled,
        (false, Some(false)) => SamplingState::NotSampled,
        (false, None) => SamplingState::Deferred,
    };
    if let Some(parent) = first(PARENT_SPAN_ID) {
        if parent.len() != 16 || lower_hex(parent).is_none() {
            return None;
        }
    }
    match (first(TRACE_ID), first(SPAN_ID)) {
        (None, None) => Some(SpanContext::sampling_only(state)).filter(|sc| sc.is_sampling_only()),
        (Some(trace), Some(span)) => {
            Some(remote(parse_trace_id(trace)?, parse_span_id(span)?, state))
        }
        _ => None,
    }
}

fn remote(trace_id: TraceId, span_id: SpanId, state: SamplingState) -> SpanContext {
    SpanContext::new(trace_id, span_id, TraceFlags::NONE, true, TraceState::NONE)
        .with_sampling_state(state)
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
    fn sampling_states_are_read_with_and_without_ids() {
        use SamplingState::*;
        let ids = |extra: &[(&'static str, &'static str)]| {
            let mut pairs = vec![("X-B3-TraceId", TID), ("X-B3-SpanId", SID)];
            pairs.extend_from_slice(extra);
            pairs
        };
        // (headers, state read, with ids)
        type Case = (
            Vec<(&'static str, &'static str)>,
            Option<SamplingState>,
            bool,
        );
        let cases: Vec<Case> = vec![
            (vec![("b3", "0")], Some(NotSampled), false),
            (vec![("b3", "1")], Some(Sampled), false),
            (vec![("b3", "d")], Some(Debug), false),
            (vec![("X-B3-Sampled", "0")], Some(NotSampled), false),
            (vec![("X-B3-Sampled", "true")], Some(Sampled), false),
            (vec![("X-B3-Flags", "1")], Some(Debug), false),
            (
                vec![("X-B3-Flags", "1"), ("X-B3-Sampled", "1")],
                Some(Debug),
                false,
            ),
            (vec![("X-B3-Flags", "0")], None, false),
            (vec![("X-B3-Sampled", "yes")], None, false),
            (
                vec![("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1")],
                Some(Deferred),
                true,
            ),
            (
                vec![("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0")],
                Some(NotSampled),
                true,
            ),
            (
                vec![("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1")],
                Some(Sampled),
                true,
            ),
            (
                vec![("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d")],
                Some(Debug),
                true,
            ),
            (ids(&[]), Some(Deferred), true),
            (ids(&[("X-B3-Sampled", "0")]), Some(NotSampled), true),
            (ids(&[("X-B3-Sampled", "1")]), Some(Sampled), true),
            (ids(&[("X-B3-Flags", "1")]), Some(Debug), true),
            (
                ids(&[("X-B3-Flags", "1"), ("X-B3-Sampled", "0")]),
                Some(Debug),
                true,
            ),
            (ids(&[("X-B3-Flags", "2")]), Some(Deferred), true),
        ];
        for (headers, state, with_ids) in cases {
            let sc = extract(&headers);
            assert_eq!(
                sc.as_ref().map(SpanContext::sampling_state),
                state,
                "{headers:?}"
            );
            if let Some(sc) = sc {
                assert!(sc.is_remote(), "{headers:?}");
                assert_eq!(sc.is_valid(), with_ids, "{headers:?}");
                assert_eq!(sc.is_sampling_only(), !with_ids, "{headers:?}");
            }
        }
    }

    #[test]
    fn inject_writes_every_sampling_state() {
        use SamplingState::*;
        let sc = remote(
            TraceId::from_hex(TID).unwrap(),
            SpanId::from_hex(SID).unwrap(),
            Sampled,
        );
        let id = format!("{TID}-{SID}");
        for (state, single, sampled, flags) in [
            (Deferred, id.clone(), None, None),
            (NotSampled, format!("{id}-0"), Some("0"), None),
            (Sampled, format!("{id}-1"), Some("1"), None),
            (Debug, format!("{id}-d"), None, Some("1")),
        ] {
            let out = inject(B3Encoding::SingleAndMulti, sc.with_sampling_state(state));
            assert_eq!(out["b3"], single, "{state:?}");
            assert_eq!(out["x-b3-traceid"], TID);
            assert_eq!(
                out.get("x-b3-sampled").map(String::as_str),
                sampled,
                "{state:?}"
            );
            assert_eq!(
                out.get("x-b3-flags").map(String::as_str),
                flags,
                "{state:?}"
            );
        }
        for (state, single) in [(NotSampled, "0"), (Sampled, "1"), (Debug, "d")] {
            let out = inject(
                B3Encoding::SingleAndMulti,
                SpanContext::sampling_only(state),
            );
            assert_eq!(out["b3"], single, "{state:?}");
            assert!(!out.contains_key("x-b3-traceid"), "{state:?}");
            let back = B3Propagator::default().extract_span_context(&out);
            assert_eq!(back, Some(SpanContext::sampling_only(state)));
        }
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
            Some(SpanContext::sampling_only(SamplingState::NotSampled))
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

    /// One hop through a B3 server: extract `headers`, start the server span as
    /// the HTTP layers do (default trust) with `ParentBased::new(root)`, then inject
    /// that span with B3 single and multiple headers.
    fn hop(root_samples: bool, headers: &[(&str, &str)]) -> (SpanContext, HashMap<String, String>) {
        use crate::propagation::TrustPolicy;
        use crate::trace::{AlwaysOff, AlwaysOn, ParentBased};
        use crate::TracerProvider;

        let provider = if root_samples {
            TracerProvider::builder().with_sampler(ParentBased::new(AlwaysOn))
        } else {
            TracerProvider::builder().with_sampler(ParentBased::new(AlwaysOff))
        }
        .build();
        let tracer = provider.tracer("b3-test");
        let mut h = http::HeaderMap::new();
        for (k, v) in headers {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        let cx = B3Propagator::default().extract(&Context::new(), &h);
        let remote = cx.span().span_context().clone();
        let builder = tracer.span_builder("server");
        let span = match TrustPolicy::Parent.apply(&remote) {
            crate::propagation::RemoteParent::Parent(sc) => builder.with_parent_span_context(sc),
            _ => builder.root(),
        }
        .start();
        let sc = span.span_context().clone();
        let out = inject(B3Encoding::SingleAndMulti, sc.clone());
        (sc, out)
    }

    /// B3 sampling states, per the spec: deny and accept with or without ids,
    /// defer (ids alone) left to the local sampler, debug kept and passed on.
    #[test]
    fn sampling_states_carry_through_a_hop() {
        const ROOTS_SAMPLED: bool = true;
        const ROOTS_DROPPED: bool = false;
        let ids = |extra: &[(&'static str, &'static str)]| {
            let mut pairs = vec![("X-B3-TraceId", TID), ("X-B3-SpanId", SID)];
            pairs.extend_from_slice(extra);
            pairs
        };
        let b3 = |value: &'static str| vec![("b3", value)];
        // (headers, the local root sampler, continues the caller's trace, state
        // injected downstream)
        type Case = (Vec<(&'static str, &'static str)>, bool, bool, &'static str);
        let cases: Vec<Case> = vec![
            // Deny without ids: a new trace, not sampled.
            (b3("0"), ROOTS_SAMPLED, false, "0"),
            (vec![("X-B3-Sampled", "0")], ROOTS_SAMPLED, false, "0"),
            // Accept without ids: a new trace, sampled even if roots are not.
            (b3("1"), ROOTS_DROPPED, false, "1"),
            (vec![("X-B3-Sampled", "1")], ROOTS_DROPPED, false, "1"),
            // Debug without ids: a new trace, debug.
            (b3("d"), ROOTS_DROPPED, false, "d"),
            (vec![("X-B3-Flags", "1")], ROOTS_DROPPED, false, "d"),
            // Deny, accept and debug with ids.
            (
                b3("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0"),
                ROOTS_SAMPLED,
                true,
                "0",
            ),
            (
                b3("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
                ROOTS_DROPPED,
                true,
                "1",
            ),
            (
                b3("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d"),
                ROOTS_DROPPED,
                true,
                "d",
            ),
            (ids(&[("X-B3-Sampled", "0")]), ROOTS_SAMPLED, true, "0"),
            (ids(&[("X-B3-Flags", "1")]), ROOTS_DROPPED, true, "d"),
            (
                ids(&[("X-B3-Sampled", "1"), ("X-B3-Flags", "1")]),
                ROOTS_DROPPED,
                true,
                "d",
            ),
            // Defer (ids alone): the local sampler decides, in the caller's trace.
            (
                b3("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1"),
                ROOTS_SAMPLED,
                true,
                "1",
            ),
            (
                b3("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1"),
                ROOTS_DROPPED,
                true,
                "0",
            ),
            (ids(&[]), ROOTS_SAMPLED, true, "1"),
            (ids(&[]), ROOTS_DROPPED, true, "0"),
        ];
        for (headers, root_samples, same_trace, state) in cases {
            let what = format!("{headers:?} (roots sampled: {root_samples})");
            let (sc, out) = hop(root_samples, &headers);
            assert!(sc.is_valid(), "{what}");
            assert_eq!(
                sc.trace_id().to_string() == TID,
                same_trace,
                "{what}: trace id"
            );
            assert_eq!(sc.is_sampled(), state != "0", "{what}: sampled");
            let trace_id = out["x-b3-traceid"].clone();
            assert_eq!(
                out["b3"],
                format!("{trace_id}-{}-{state}", sc.span_id()),
                "{what}: b3"
            );
            if state == "d" {
                // Debug implies accept: X-B3-Flags alone, no X-B3-Sampled.
                assert_eq!(
                    out.get("x-b3-flags").map(String::as_str),
                    Some("1"),
                    "{what}"
                );
                assert_eq!(out.get("x-b3-sampled"), None, "{what}");
            } else {
                assert_eq!(out["x-b3-sampled"], state, "{what}");
                assert_eq!(out.get("x-b3-flags"), None, "{what}");
            }
        }
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
            let state = if flags.is_sampled() { SamplingState::Sampled } else { SamplingState::NotSampled };
            prop_assert_eq!(back, Some(remote(trace_id, span_id, state)));
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
