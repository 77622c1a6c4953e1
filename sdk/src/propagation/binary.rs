//! The OpenCensus binary trace context, sent by gRPC as `grpc-trace-bin` metadata.
//!
//! ```text
//! version(0)  field 0: trace id (16 bytes)  field 1: span id (8)  field 2: options (1)
//! 00          00 4bf92f3577b34da6a3ce929d000e4736  01 34f067aa0ba902b7  02 01
//! ```
//!
//! [`to_bytes`] and [`from_bytes`] are the codec; [`GrpcTraceBinPropagator`] reads
//! and writes it through a text carrier.

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;

use crate::context::Context;
use crate::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

use super::{trim_ows, Extractor, Injector, Propagator};

const HEADER: &str = "grpc-trace-bin";
const FIELDS: [&str; 1] = [HEADER];

const VERSION: u8 = 0;
const TRACE_ID_FIELD: u8 = 0;
const SPAN_ID_FIELD: u8 = 1;
const OPTIONS_FIELD: u8 = 2;

/// The longest value read. A version-0 context is 29 bytes; later data type
/// versions may append fields.
const MAX_LEN: usize = 1024;

/// The 29-byte binary form of `sc`: version 0, trace id, span id and trace options
/// (bit 0: sampled; the other option bits are undefined and written as zero).
pub fn to_bytes(sc: &SpanContext) -> [u8; 29] {
    let mut out = [0u8; 29];
    out[0] = VERSION;
    out[1] = TRACE_ID_FIELD;
    out[2..18].copy_from_slice(&sc.trace_id().to_bytes());
    out[18] = SPAN_ID_FIELD;
    out[19..27].copy_from_slice(&sc.span_id().to_bytes());
    out[27] = OPTIONS_FIELD;
    out[28] = u8::from(sc.is_sampled());
    out
}

/// Decodes the binary form into a remote span context.
///
/// Returns `None` for an empty input, a version other than 0, or when the trace id
/// or span id is missing or all zeros. Fields are read in any order until the end
/// of the input, the first unknown field id, or a field cut short; what was read
/// before that is kept, as the spec's deserialization rules say. A repeated field
/// replaces the earlier one. Only the sampled bit of the trace options is kept.
pub fn from_bytes(bytes: &[u8]) -> Option<SpanContext> {
    let (&version, mut rest) = bytes.split_first()?;
    if version != VERSION {
        return None;
    }
    let mut trace_id = TraceId::INVALID;
    let mut span_id = SpanId::INVALID;
    let mut options = 0u8;
    while let Some((&field, body)) = rest.split_first() {
        let len = match field {
            TRACE_ID_FIELD => 16,
            SPAN_ID_FIELD => 8,
            OPTIONS_FIELD => 1,
            _ => break,
        };
        let Some((value, tail)) = body.split_at_checked(len) else {
            break;
        };
        match field {
            TRACE_ID_FIELD => {
                let mut b = [0u8; 16];
                b.copy_from_slice(value);
                trace_id = TraceId::from_bytes(b);
            }
            SPAN_ID_FIELD => {
                let mut b = [0u8; 8];
                b.copy_from_slice(value);
                span_id = SpanId::from_bytes(b);
            }
            _ => options = value[0],
        }
        rest = tail;
    }
    if !trace_id.is_valid() || !span_id.is_valid() {
        return None;
    }
    Some(SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::NONE.with_sampled(options & 1 == 1),
        true,
        TraceState::NONE,
    ))
}

/// The `grpc-trace-bin` format (OpenCensus binary trace context) over a text
/// carrier.
///
/// Extraction accepts the value either as raw bytes (what a gRPC layer passes
/// after base64-decoding `-bin` metadata) or still base64-encoded (what HTTP/2
/// carries), padded or not; see [`from_bytes`] for what is valid. Of repeated
/// values the first is used. Injection writes [`to_bytes`] base64-encoded without
/// padding, as gRPC sends binary metadata.
#[derive(Clone, Copy, Debug, Default)]
pub struct GrpcTraceBinPropagator {
    _private: (),
}

impl GrpcTraceBinPropagator {
    /// The `grpc-trace-bin` propagator.
    pub const fn new() -> Self {
        GrpcTraceBinPropagator { _private: () }
    }
}

impl Propagator for GrpcTraceBinPropagator {
    fn extract_span_context(&self, carrier: &dyn Extractor) -> Option<SpanContext> {
        let value = carrier.get_all(HEADER).first()?;
        if value.len() > MAX_LEN {
            return None;
        }
        match value.first() {
            Some(&VERSION) => from_bytes(value),
            // Not version 0: base64 text (version 0 encodes as `A...`).
            _ => from_bytes(&base64_decode(trim_ows(value))?),
        }
    }

    fn inject(&self, cx: &Context, carrier: &mut dyn Injector) {
        let sc = cx.span().span_context();
        if sc.is_valid() {
            carrier.set(HEADER, base64_encode(&to_bytes(sc)));
        }
    }

    fn fields(&self) -> &[&'static str] {
        &FIELDS
    }
}

/// gRPC's base64 for binary metadata: the standard alphabet, written without
/// padding, read with or without it; bits past the last whole byte are ignored.
const BASE64_CONFIG: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_encode_padding(false)
    .with_decode_padding_mode(DecodePaddingMode::Indifferent)
    .with_decode_allow_trailing_bits(true);
const BASE64: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, BASE64_CONFIG);
const BASE64_URL: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, BASE64_CONFIG);

/// Standard base64 without padding.
fn base64_encode(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

/// Standard or URL-safe base64 (one alphabet per value), padded or not; `None` if
/// malformed.
fn base64_decode(text: &[u8]) -> Option<Vec<u8>> {
    // The crate reads `AA=` too; padding, when there is some, completes the
    // last quantum.
    if text.contains(&b'=') && !text.len().is_multiple_of(4) {
        return None;
    }
    BASE64
        .decode(text)
        .or_else(|_| BASE64_URL.decode(text))
        .ok()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;
    use crate::propagation::testing;
    use crate::trace::Span;

    /// The valid example of BinaryEncoding.md.
    const SPEC_EXAMPLE: [u8; 29] = [
        0, 0, 75, 249, 47, 53, 119, 179, 77, 166, 163, 206, 146, 157, 0, 14, 71, 54, 1, 52, 240,
        103, 170, 11, 169, 2, 183, 2, 1,
    ];

    fn spec_context() -> SpanContext {
        SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d000e4736").unwrap(),
            SpanId::from_hex("34f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::NONE,
        )
    }

    #[test]
    fn spec_example_decodes_and_encodes() {
        assert_eq!(from_bytes(&SPEC_EXAMPLE), Some(spec_context()));
        assert_eq!(to_bytes(&spec_context()), SPEC_EXAMPLE);
    }

    #[test]
    fn wrong_version_is_rejected() {
        let mut b = SPEC_EXAMPLE;
        b[0] = 1;
        assert_eq!(from_bytes(&b), None);
        assert_eq!(from_bytes(&[]), None);
    }

    #[test]
    fn unknown_field_ends_parsing_and_keeps_what_was_read() {
        let mut b = SPEC_EXAMPLE[..27].to_vec();
        b.extend_from_slice(&[3, 0xde, 0xad, 2, 1]);
        let sc = from_bytes(&b).unwrap();
        assert_eq!(sc.span_id(), spec_context().span_id());
        assert!(
            !sc.is_sampled(),
            "options after the unknown field are not read"
        );
    }

    #[test]
    fn options_are_optional_and_fields_may_come_in_any_order() {
        let sc = from_bytes(&SPEC_EXAMPLE[..27]).unwrap();
        assert!(!sc.is_sampled());
        let mut reordered = vec![0, 2, 1];
        reordered.extend_from_slice(&SPEC_EXAMPLE[18..27]);
        reordered.extend_from_slice(&SPEC_EXAMPLE[1..18]);
        assert_eq!(from_bytes(&reordered), Some(spec_context()));
    }

    #[test]
    fn missing_truncated_or_zero_ids_are_rejected() {
        assert_eq!(from_bytes(&SPEC_EXAMPLE[..18]), None, "no span id");
        assert_eq!(from_bytes(&SPEC_EXAMPLE[..20]), None, "span id cut short");
        assert_eq!(from_bytes(&SPEC_EXAMPLE[18..]), None, "no trace id");
        let mut zero = SPEC_EXAMPLE;
        zero[2..18].fill(0);
        assert_eq!(from_bytes(&zero), None);
        let mut zero = SPEC_EXAMPLE;
        zero[19..27].fill(0);
        assert_eq!(from_bytes(&zero), None);
    }

    #[test]
    fn truncated_options_field_keeps_the_ids() {
        let sc = from_bytes(&SPEC_EXAMPLE[..28]).unwrap();
        assert_eq!(sc.trace_id(), spec_context().trace_id());
    }

    #[test]
    fn propagator_reads_raw_bytes_and_base64_text() {
        struct Raw(Vec<u8>);
        impl Extractor for Raw {
            fn get_all(&self, name: &str) -> super::super::HeaderValues<'_> {
                if name == HEADER {
                    std::iter::once(&self.0[..]).collect()
                } else {
                    Default::default()
                }
            }
            fn keys(&self) -> Vec<&str> {
                vec![HEADER]
            }
        }
        let p = GrpcTraceBinPropagator::new();
        assert_eq!(
            p.extract_span_context(&Raw(SPEC_EXAMPLE.to_vec())),
            Some(spec_context())
        );
        let text = base64_encode(&SPEC_EXAMPLE);
        assert_eq!(text, "AABL+S81d7NNpqPOkp0ADkc2ATTwZ6oLqQK3AgE");
        for t in [text.clone(), format!("{text}=")] {
            assert_eq!(
                p.extract_span_context(&Raw(t.into_bytes())),
                Some(spec_context())
            );
        }
        for bad in [
            "AABL+S81d7NNpqPOkp0ADkc2ATTwZ6oLqQK3Ag=E",
            "not base64!",
            "A",
            "",
        ] {
            assert_eq!(p.extract_span_context(&Raw(bad.into())), None, "{bad}");
        }
    }

    #[test]
    fn base64_text_is_read_padded_or_not_in_either_alphabet() {
        let cases: [(&str, Option<&[u8]>); 14] = [
            ("AAEC", Some(&[0, 1, 2])),
            ("AAE", Some(&[0, 1])),
            ("AAE=", Some(&[0, 1])),
            ("AA==", Some(&[0])),
            ("AA", Some(&[0])),
            ("", Some(&[])),
            ("+/+/", Some(&[0xfb, 0xff, 0xbf])),
            ("-_-_", Some(&[0xfb, 0xff, 0xbf])),
            // Bits past the last whole byte are ignored, as before.
            ("AAF", Some(&[0, 1])),
            ("A", None),
            ("AA=", None),
            ("A=AA", None),
            ("A*E", None),
            // One alphabet per value.
            ("+/-_", None),
        ];
        for (text, want) in cases {
            assert_eq!(base64_decode(text.as_bytes()).as_deref(), want, "{text:?}");
        }
    }

    #[test]
    fn propagator_injects_unpadded_base64() {
        let cx = Context::new().with_span(Span::non_recording(spec_context()));
        let mut out = HashMap::new();
        GrpcTraceBinPropagator::new().inject(&cx, &mut out);
        assert_eq!(
            out["grpc-trace-bin"],
            "AABL+S81d7NNpqPOkp0ADkc2ATTwZ6oLqQK3AgE"
        );
    }

    proptest! {
        #[test]
        fn bytes_round_trip(
            trace_id in testing::trace_id(),
            span_id in testing::span_id(),
            flags in testing::flags(),
        ) {
            let sc = SpanContext::new(trace_id, span_id, flags, false, TraceState::NONE);
            let expected = SpanContext::new(
                trace_id,
                span_id,
                TraceFlags::NONE.with_sampled(flags.is_sampled()),
                true,
                TraceState::NONE,
            );
            prop_assert_eq!(from_bytes(&to_bytes(&sc)), Some(expected.clone()));
            let cx = Context::new().with_span(Span::non_recording(sc));
            let mut out = HashMap::new();
            GrpcTraceBinPropagator::new().inject(&cx, &mut out);
            let back = GrpcTraceBinPropagator::new().extract_span_context(&out);
            prop_assert_eq!(back, Some(expected));
        }

        #[test]
        fn base64_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(base64_decode(base64_encode(&bytes).as_bytes()), Some(bytes));
        }

        #[test]
        fn from_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = from_bytes(&bytes);
            let _ = base64_decode(&bytes);
        }
    }
}
