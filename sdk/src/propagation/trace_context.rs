//! W3C Trace Context: the `traceparent` and `tracestate` headers (level 2).

use crate::context::Context;
use crate::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

use super::{lower_hex, trim_ows, write_hex, Extractor, Injector, Propagator};

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";
const FIELDS: [&str; 2] = [TRACEPARENT, TRACESTATE];

/// The longest `traceparent` read. Version `00` is 55 bytes; later versions may add
/// fields, and the spec asks only that "prohibitively large" headers be refused.
const MAX_TRACEPARENT_LEN: usize = 512;

/// The longest combined `tracestate` read or written. The spec asks for at least
/// 512 bytes; 8192 holds 32 members of 250 bytes each.
const MAX_TRACESTATE_LEN: usize = 8192;

/// Trace flags this version of the spec defines: `sampled` and `random-trace-id`.
const KNOWN_FLAGS: u8 = 0x03;

/// The W3C Trace Context format: `traceparent` and `tracestate`.
///
/// Extraction follows the spec's processing model:
/// - exactly one `traceparent` header; two or more are invalid;
/// - version `00` is exactly 55 characters; a higher version is parsed by position
///   (its first 55 characters, then the end or a `-`); version `ff` is invalid;
/// - lowercase hex only; all-zero trace or parent ids are invalid;
/// - headers longer than 512 bytes are invalid;
/// - `tracestate` is read only when `traceparent` is valid; several `tracestate`
///   headers are combined in order; an invalid or over-long (8192 bytes)
///   `tracestate` is discarded without affecting `traceparent`.
///
/// Injection writes version `00` with the `sampled` and `random-trace-id` flags of
/// the span context (other flags are zero), and `tracestate` only when it is not
/// empty.
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceContextPropagator {
    _private: (),
}

impl TraceContextPropagator {
    /// The W3C Trace Context propagator.
    pub const fn new() -> Self {
        TraceContextPropagator { _private: () }
    }
}

impl Propagator for TraceContextPropagator {
    fn extract_span_context(&self, carrier: &dyn Extractor) -> Option<SpanContext> {
        let parent = carrier.get_all(TRACEPARENT).single()?;
        let (trace_id, span_id, flags) = parse_traceparent(parent)?;
        let state = parse_tracestate(carrier).unwrap_or_default();
        Some(SpanContext::new(trace_id, span_id, flags, true, state))
    }

    fn inject(&self, cx: &Context, carrier: &mut dyn Injector) {
        let sc = cx.span().span_context();
        if !sc.is_valid() {
            return;
        }
        carrier.set(TRACEPARENT, traceparent(sc));
        if !sc.trace_state().is_empty() {
            if let Some(state) = tracestate(sc.trace_state()) {
                carrier.set(TRACESTATE, state);
            }
        }
    }

    fn fields(&self) -> &[&'static str] {
        &FIELDS
    }
}

/// Parses one `traceparent` value into its ids and flags.
fn parse_traceparent(value: &[u8]) -> Option<(TraceId, SpanId, TraceFlags)> {
    if value.len() > MAX_TRACEPARENT_LEN {
        return None;
    }
    let v = trim_ows(value);
    // version "-" trace-id "-" parent-id "-" trace-flags: 2+1+32+1+16+1+2 = 55.
    if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let version = lower_hex(&v[..2])?;
    let flags = lower_hex(&v[53..55])? as u8;
    let flags = match version {
        0xff => return None,
        0 if v.len() != 55 => return None,
        0 => flags,
        // A later version: its first 55 characters are read as version 00, and must
        // be followed by the end or a `-`. Flags this version does not define are
        // dropped.
        _ if v.len() > 55 && v[55] != b'-' => return None,
        _ => flags & KNOWN_FLAGS,
    };
    let trace_id = TraceId::from_u128(lower_hex(&v[3..35])?);
    let span_id = SpanId::from_u64(lower_hex(&v[36..52])? as u64);
    if !trace_id.is_valid() || !span_id.is_valid() {
        return None;
    }
    Some((trace_id, span_id, TraceFlags::new(flags)))
}

/// Combines and parses the `tracestate` headers; `None` if invalid or too long.
fn parse_tracestate(carrier: &dyn Extractor) -> Option<TraceState> {
    let values = carrier.get_all(TRACESTATE);
    // The combined value: the fields joined with `,`.
    let mut total = values.len().saturating_sub(1);
    for v in values.iter() {
        total += v.len();
        if total > MAX_TRACESTATE_LEN || !v.is_ascii() {
            return None;
        }
    }
    // Every value is ASCII, so every value is UTF-8.
    TraceState::from_headers(
        values
            .iter()
            .map(|v| std::str::from_utf8(v).unwrap_or_default()),
    )
    .ok()
}

/// The version-00 `traceparent` for `sc`.
fn traceparent(sc: &SpanContext) -> String {
    let mut buf = *b"00-00000000000000000000000000000000-0000000000000000-00";
    write_hex(&mut buf[3..35], sc.trace_id().to_u128());
    write_hex(&mut buf[36..52], u128::from(sc.span_id().to_u64()));
    write_hex(
        &mut buf[53..55],
        u128::from(sc.flags().bits() & KNOWN_FLAGS),
    );
    // All ASCII; `to_vec` allocates exactly 55 bytes, which a `HeaderValue` then
    // takes over without copying.
    String::from_utf8(buf.to_vec()).unwrap_or_default()
}

/// The `tracestate` header for `state`, truncated to 8192 bytes the way the spec
/// asks: whole entries only, entries over 128 characters first, then from the
/// right. `None` if nothing is left.
fn tracestate(state: &TraceState) -> Option<String> {
    // The stored form is the validated header value already.
    let header = state.as_str();
    if header.len() > MAX_TRACESTATE_LEN {
        return truncate_tracestate(state);
    }
    Some(header.to_owned())
}

#[cold]
fn truncate_tracestate(state: &TraceState) -> Option<String> {
    let entry_len = |(k, v): (&str, &str)| k.len() + 1 + v.len();
    let mut keep: Vec<(&str, &str)> = state.iter().collect();
    let len = |keep: &Vec<(&str, &str)>| {
        keep.iter().map(|&e| entry_len(e)).sum::<usize>() + keep.len().saturating_sub(1)
    };
    while len(&keep) > MAX_TRACESTATE_LEN {
        match keep.iter().rposition(|&e| entry_len(e) > 128) {
            Some(i) => {
                keep.remove(i);
            }
            None => {
                keep.pop();
            }
        }
    }
    if keep.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(MAX_TRACESTATE_LEN);
    for (i, (k, v)) in keep.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;
    use crate::propagation::testing;
    use crate::trace::Span;

    const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const PARENT_ID: &str = "00f067aa0ba902b7";
    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn extract(pairs: &[(&str, &str)]) -> Option<SpanContext> {
        TraceContextPropagator::new().extract_span_context(&headers(pairs))
    }

    fn inject(sc: SpanContext) -> HashMap<String, String> {
        let cx = Context::new().with_span(Span::non_recording(sc));
        let mut out = HashMap::new();
        TraceContextPropagator::new().inject(&cx, &mut out);
        out
    }

    #[test]
    fn valid_traceparent_is_extracted_as_remote_span_context() {
        let sc = extract(&[("traceparent", VALID)]).unwrap();
        assert_eq!(sc.trace_id(), TraceId::from_hex(TRACE_ID).unwrap());
        assert_eq!(sc.span_id(), SpanId::from_hex(PARENT_ID).unwrap());
        assert!(sc.is_sampled());
        assert!(sc.is_remote());
        assert!(sc.trace_state().is_empty());
    }

    /// Cases from the spec's traceparent rules and the W3C test suite: each must be
    /// rejected, which makes the server start a new trace.
    #[test]
    fn invalid_traceparents_start_a_new_trace() {
        let cases: &[(&str, &str)] = &[
            ("empty", ""),
            ("version only", "00"),
            ("version ff", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            ("uppercase version", "0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            ("non-hex version", "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            ("uppercase trace id", "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
            ("uppercase parent id", "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01"),
            ("uppercase flags", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A"),
            ("zero trace id", "00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            ("zero parent id", "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"),
            ("short trace id", "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01"),
            ("long trace id", "00-4bf92f3577b34da6a3ce929d0e0e47366-00f067aa0ba902b7-01"),
            ("short parent id", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01"),
            ("short flags", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1"),
            ("non-hex trace id", "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01"),
            ("non-hex flags", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g"),
            ("dot delimiters", "00.4bf92f3577b34da6a3ce929d0e0e4736.00f067aa0ba902b7.01"),
            ("version 00 trailing dash", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-"),
            ("version 00 extra field", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-will-be-like"),
            ("future version, no dash after flags", "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01.what-the-future-will-be-like"),
            ("future version, short", "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0"),
            ("future version, zero trace id", "cc-00000000000000000000000000000000-00f067aa0ba902b7-01-x"),
            ("inner space", "00-4bf92f3577b34da6a3ce929d0e0e4736 -00f067aa0ba902b7-01"),
        ];
        for (name, value) in cases {
            assert_eq!(
                extract(&[("traceparent", value)]),
                None,
                "{name}: {value:?}"
            );
        }
    }

    #[test]
    fn traceparent_with_uppercase_hex_starts_new_trace() {
        let upper = VALID.to_ascii_uppercase();
        assert_eq!(extract(&[("traceparent", &upper)]), None);
    }

    #[test]
    fn traceparent_version_ff_is_invalid() {
        let ff = VALID.replacen("00", "ff", 1);
        assert_eq!(extract(&[("traceparent", &ff)]), None);
    }

    #[test]
    fn future_version_is_parsed_by_position() {
        for value in [
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-will-be-like",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
        ] {
            let sc = extract(&[("traceparent", value)]).unwrap_or_else(|| panic!("{value}"));
            assert_eq!(sc.trace_id(), TraceId::from_hex(TRACE_ID).unwrap());
            assert!(sc.is_sampled());
        }
    }

    #[test]
    fn future_version_drops_undefined_flags_and_inject_downgrades_to_00() {
        let sc = extract(&[(
            "traceparent",
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff-extra",
        )])
        .unwrap();
        assert_eq!(sc.flags().bits(), 0x03);
        assert_eq!(
            inject(sc)["traceparent"],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03"
        );
    }

    #[test]
    fn two_traceparent_headers_are_invalid() {
        assert_eq!(
            extract(&[("traceparent", VALID), ("traceparent", VALID)]),
            None
        );
    }

    #[test]
    fn traceparent_over_512_bytes_is_invalid() {
        let long = format!("cc-{TRACE_ID}-{PARENT_ID}-01-{}", "a".repeat(500));
        assert_eq!(extract(&[("traceparent", &long)]), None);
        let ok = format!("cc-{TRACE_ID}-{PARENT_ID}-01-{}", "a".repeat(400));
        assert!(extract(&[("traceparent", &ok)]).is_some());
    }

    #[test]
    fn surrounding_whitespace_is_optional_whitespace() {
        let padded = format!(" \t{VALID}\t ");
        let mut carrier = HashMap::new();
        carrier.insert("traceparent".to_string(), padded);
        assert!(TraceContextPropagator::new()
            .extract_span_context(&carrier)
            .is_some());
    }

    #[test]
    fn header_names_are_case_insensitive() {
        let mut carrier = HashMap::new();
        carrier.insert("TraceParent".to_string(), VALID.to_string());
        carrier.insert("TRACESTATE".to_string(), "congo=t61rcWkgMzE".to_string());
        let sc = TraceContextPropagator::new()
            .extract_span_context(&carrier)
            .unwrap();
        assert_eq!(sc.trace_state().get("congo"), Some("t61rcWkgMzE"));
    }

    #[test]
    fn non_ascii_traceparent_is_invalid() {
        let mut carrier = HashMap::new();
        carrier.insert(
            "traceparent".to_string(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0é".to_string(),
        );
        assert_eq!(
            TraceContextPropagator::new().extract_span_context(&carrier),
            None
        );
    }

    #[test]
    fn unknown_flags_of_version_00_are_read_but_not_written() {
        let sc = extract(&[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09",
        )])
        .unwrap();
        assert!(sc.is_sampled());
        assert_eq!(
            inject(sc)["traceparent"],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
    }

    #[test]
    fn tracestate_headers_are_combined_in_order() {
        let sc = extract(&[
            ("traceparent", VALID),
            ("tracestate", "rojo=00f067aa0ba902b7"),
            ("tracestate", ""),
            ("tracestate", " , congo=t61rcWkgMzE"),
        ])
        .unwrap();
        assert_eq!(
            sc.trace_state().header(),
            "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
        );
    }

    /// Invalid `tracestate` cases from the spec: each is discarded as a whole and
    /// the `traceparent` is kept.
    #[test]
    fn invalid_tracestate_is_discarded_and_traceparent_kept() {
        let key257 = format!("{}=v", "k".repeat(257));
        let value257 = format!("k={}", "v".repeat(257));
        let members33: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        let members33 = members33.join(",");
        let cases: &[&str] = &[
            "Foo=1",
            "@foo=1",
            "foo",
            "foo=",
            "foo=bar=baz",
            "foo=b,ar",
            "=bar",
            "foo=\tbar",
            "_foo=1",
            &key257,
            &value257,
            &members33,
        ];
        for ts in cases {
            let sc = extract(&[("traceparent", VALID), ("tracestate", ts)])
                .unwrap_or_else(|| panic!("traceparent lost for {ts:?}"));
            assert!(sc.trace_state().is_empty(), "{ts:?} accepted");
        }
    }

    /// The W3C suite's `test_tracestate_duplicated_keys`: the inherited tracestate
    /// survives a repeated key, in one header or across two.
    #[test]
    fn tracestate_with_a_duplicated_key_is_inherited() {
        for headers in [&["foo=1,foo=2"][..], &["foo=1", "foo=2"]] {
            let mut pairs = vec![("traceparent", VALID)];
            pairs.extend(headers.iter().map(|h| ("tracestate", *h)));
            let sc = extract(&pairs).unwrap();
            assert_eq!(sc.trace_state().as_str(), "foo=1", "{headers:?}");
        }
    }

    #[test]
    fn tracestate_limits_accept_32_members_and_256_char_keys_and_values() {
        let members32: Vec<String> = (0..32).map(|i| format!("k{i}=v")).collect();
        let long = format!("{}={}", "k".repeat(256), "v".repeat(256));
        for ts in [members32.join(","), long] {
            let sc = extract(&[("traceparent", VALID), ("tracestate", &ts)]).unwrap();
            assert!(!sc.trace_state().is_empty(), "{ts:?} rejected");
        }
    }

    #[test]
    fn tracestate_split_into_33_members_across_headers_is_discarded() {
        let first: Vec<String> = (0..17).map(|i| format!("a{i}=v")).collect();
        let second: Vec<String> = (0..16).map(|i| format!("b{i}=v")).collect();
        let sc = extract(&[
            ("traceparent", VALID),
            ("tracestate", &first.join(",")),
            ("tracestate", &second.join(",")),
        ])
        .unwrap();
        assert!(sc.trace_state().is_empty());
    }

    #[test]
    fn tracestate_over_8192_bytes_is_discarded() {
        let padded = format!("a=1{}", ",".repeat(8200));
        let sc = extract(&[("traceparent", VALID), ("tracestate", &padded)]).unwrap();
        assert!(sc.trace_state().is_empty());
    }

    #[test]
    fn tracestate_without_traceparent_is_ignored() {
        assert_eq!(extract(&[("tracestate", "congo=t61rcWkgMzE")]), None);
        let p = TraceContextPropagator::new();
        let cx = p.extract(&Context::new(), &headers(&[("tracestate", "a=1")]));
        assert!(!cx.has_span());
    }

    #[test]
    fn tracestate_is_ignored_when_traceparent_is_invalid() {
        let bad = VALID.replacen("00", "ff", 1);
        assert_eq!(
            extract(&[("traceparent", &bad), ("tracestate", "congo=t61rcWkgMzE")]),
            None
        );
    }

    #[test]
    fn extract_puts_a_non_recording_remote_span_in_the_context() {
        let cx = TraceContextPropagator::new()
            .extract(&Context::new(), &headers(&[("traceparent", VALID)]));
        assert!(cx.has_span());
        assert!(!cx.span().is_recording());
        assert!(cx.span().span_context().is_remote());
    }

    #[test]
    fn inject_keeps_random_and_sampled_flags_of_a_continued_trace() {
        let sc = extract(&[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03",
        )])
        .unwrap();
        assert!(sc.flags().is_random());
        let child = SpanContext::new(
            sc.trace_id(),
            SpanId::from_u64(0xb7ad6b7169203331),
            sc.flags(),
            false,
            sc.trace_state().clone(),
        );
        assert_eq!(
            inject(child)["traceparent"],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-b7ad6b7169203331-03"
        );
    }

    #[test]
    fn inject_omits_empty_tracestate() {
        let sc = extract(&[("traceparent", VALID)]).unwrap();
        let out = inject(sc);
        assert_eq!(out["traceparent"], VALID);
        assert!(!out.contains_key("tracestate"));
    }

    #[test]
    fn inject_writes_nothing_without_a_valid_span() {
        let mut out = HashMap::new();
        TraceContextPropagator::new().inject(&Context::new(), &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn inject_truncates_oversized_tracestate_by_whole_entries_long_ones_first() {
        let mut state = TraceState::NONE;
        // 31 entries of 357 bytes (11 kB in total), then a short one at the front.
        for i in 0..31 {
            let key = format!("k{i:02}{}", "x".repeat(97));
            state = state.insert(&key, &"v".repeat(256)).unwrap();
        }
        state = state.insert("short", "1").unwrap();
        let header = tracestate(&state).unwrap();
        assert!(header.len() <= MAX_TRACESTATE_LEN);
        assert!(header.starts_with("short=1,k30x"), "{header}");
        assert_eq!(
            header.split(',').count(),
            1 + 22,
            "long entries removed from the right"
        );
        assert!(header.ends_with(&"v".repeat(256)));
        assert!(header.split(',').all(|m| m.contains('=')));
    }

    #[test]
    fn spec_example_rojo_adds_entry_to_the_left() {
        let sc = extract(&[
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            ("tracestate", "congo=t61rcWkgMzE"),
        ])
        .unwrap();
        let state = sc.trace_state().insert("rojo", "00f067aa0ba902b7").unwrap();
        let child = SpanContext::new(
            sc.trace_id(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            sc.flags(),
            false,
            state,
        );
        let out = inject(child);
        assert_eq!(
            out["traceparent"],
            "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01"
        );
        assert_eq!(out["tracestate"], "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");
    }

    proptest! {
        #[test]
        fn inject_then_extract_round_trips(
            trace_id in testing::trace_id(),
            span_id in testing::span_id(),
            flags in testing::flags(),
            state in testing::trace_state(),
        ) {
            let sc = SpanContext::new(trace_id, span_id, flags, false, state);
            let out = inject(sc.clone());
            let back = TraceContextPropagator::new().extract_span_context(&out);
            let expected = SpanContext::new(trace_id, span_id, flags, true, sc.trace_state().clone());
            prop_assert_eq!(back, Some(expected));
        }

        #[test]
        fn extract_never_panics_on_arbitrary_headers(
            parent in proptest::collection::vec(any::<u8>(), 0..80),
            state in proptest::collection::vec(any::<u8>(), 0..80),
        ) {
            let mut map: HashMap<String, String> = HashMap::new();
            map.insert("traceparent".into(), String::from_utf8_lossy(&parent).into_owned());
            map.insert("tracestate".into(), String::from_utf8_lossy(&state).into_owned());
            let _ = TraceContextPropagator::new().extract_span_context(&map);
        }
    }
}
