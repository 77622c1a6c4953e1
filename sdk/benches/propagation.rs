//! Propagation benchmarks: tracewire against opentelemetry_sdk 0.33, in the same
//! run, over the same carrier (`http::HeaderMap`).
//!
//! Run with `cargo bench -p tracewire --bench propagation`.
//!
//! `traceparent_roundtrip`: extract `traceparent` + `tracestate` (two members) from
//! an incoming header map into a context, then inject that context into an
//! outgoing header map (cleared each iteration, so its capacity is reused). The
//! OpenTelemetry carrier adapters are the ones `opentelemetry-http` ships
//! (`HeaderExtractor` / `HeaderInjector`), reproduced here.
//!
//! `traceparent_hex`: the hex part of that round trip alone: read the version,
//! trace id, span id and flags of a `traceparent` (lowercase only, as W3C says)
//! and write trace id, span id and flags back, with tracewire's hand-written codec
//! (a copy of `propagation::{lower_hex, write_hex}`, which the crate keeps private),
//! the `hex` crate and the `const-hex` crate (both accept uppercase, so a
//! lowercase check comes first).
#![allow(missing_docs)] // criterion_group! makes an undocumented pub fn

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderName, HeaderValue};

use tracewire::propagation::{Propagator, TraceContextPropagator};
use tracewire::Context;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACESTATE: &str = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE";

/// `opentelemetry-http`'s `HeaderExtractor`.
struct OtelExtractor<'a>(&'a HeaderMap);

impl opentelemetry::propagation::Extractor for OtelExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// `opentelemetry-http`'s `HeaderInjector`.
struct OtelInjector<'a>(&'a mut HeaderMap);

impl opentelemetry::propagation::Injector for OtelInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let Ok(name) = HeaderName::from_bytes(key.as_bytes()) {
            if let Ok(val) = HeaderValue::from_str(&value) {
                self.0.insert(name, val);
            }
        }
    }
}

fn incoming() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("traceparent", HeaderValue::from_static(TRACEPARENT));
    h.insert("tracestate", HeaderValue::from_static(TRACESTATE));
    h
}

fn tracewire_roundtrip(p: &TraceContextPropagator, incoming: &HeaderMap, out: &mut HeaderMap) {
    out.clear();
    let cx = p.extract(&Context::new(), incoming);
    p.inject(&cx, out);
}

fn otel_roundtrip(
    p: &opentelemetry_sdk::propagation::TraceContextPropagator,
    incoming: &HeaderMap,
    out: &mut HeaderMap,
) {
    use opentelemetry::propagation::TextMapPropagator as _;
    out.clear();
    let cx = p.extract_with_context(&opentelemetry::Context::new(), &OtelExtractor(incoming));
    p.inject_context(&cx, &mut OtelInjector(out));
}

fn traceparent_roundtrip(c: &mut Criterion) {
    let incoming = incoming();

    // Both must do the same work: the same headers come out.
    let tw = TraceContextPropagator::new();
    let otel = opentelemetry_sdk::propagation::TraceContextPropagator::new();
    let (mut a, mut b) = (HeaderMap::new(), HeaderMap::new());
    tracewire_roundtrip(&tw, &incoming, &mut a);
    otel_roundtrip(&otel, &incoming, &mut b);
    assert_eq!(a, b);
    assert_eq!(a, incoming);

    let mut g = c.benchmark_group("traceparent_roundtrip");
    g.bench_function("tracewire", |bench| {
        let mut out = HeaderMap::new();
        bench.iter(|| {
            tracewire_roundtrip(&tw, black_box(&incoming), &mut out);
            black_box(&out);
        })
    });
    g.bench_function("opentelemetry_sdk", |bench| {
        let mut out = HeaderMap::new();
        bench.iter(|| {
            otel_roundtrip(&otel, black_box(&incoming), &mut out);
            black_box(&out);
        })
    });
    g.finish();
}

/// `tracewire::propagation`'s hex codec, copied unchanged.
mod hand_written {
    static HEX_VALUE: [u8; 256] = {
        let mut t = [0xffu8; 256];
        let mut i = 0;
        while i < 10 {
            t[b'0' as usize + i] = i as u8;
            i += 1;
        }
        let mut i = 0;
        while i < 6 {
            t[b'a' as usize + i] = 10 + i as u8;
            i += 1;
        }
        t
    };

    #[inline]
    fn hex_u64(s: &[u8]) -> (u64, u8) {
        let mut v = 0u64;
        let mut bad = 0u8;
        for &c in s {
            let d = HEX_VALUE[usize::from(c)];
            bad |= d;
            v = (v << 4) | u64::from(d & 0x0f);
        }
        (v, bad)
    }

    #[inline]
    pub(crate) fn lower_hex(s: &[u8]) -> Option<u128> {
        if s.is_empty() || s.len() > 32 {
            return None;
        }
        let split = s.len().saturating_sub(16);
        let (hi, bad_hi) = hex_u64(&s[..split]);
        let (lo, bad_lo) = hex_u64(&s[split..]);
        ((bad_hi | bad_lo) & 0xf0 == 0).then_some((u128::from(hi) << 64) | u128::from(lo))
    }

    const HEX: &[u8; 16] = b"0123456789abcdef";

    static HEX_PAIRS: [[u8; 2]; 256] = {
        let mut t = [[0u8; 2]; 256];
        let mut i = 0;
        while i < 256 {
            t[i] = [HEX[i >> 4], HEX[i & 0xf]];
            i += 1;
        }
        t
    };

    #[inline]
    pub(crate) fn write_hex(out: &mut [u8], mut v: u128) {
        if out.len().is_multiple_of(2) && out.len() <= 32 {
            let bytes = v.to_be_bytes();
            let bytes = &bytes[16 - out.len() / 2..];
            for (pair, &byte) in out.chunks_exact_mut(2).zip(bytes) {
                pair.copy_from_slice(&HEX_PAIRS[usize::from(byte)]);
            }
            return;
        }
        for b in out.iter_mut().rev() {
            *b = HEX[(v & 0xf) as usize];
            v >>= 4;
        }
    }
}

type Fields = (u8, u128, u64, u8);

fn parse_hand_written(v: &[u8]) -> Option<Fields> {
    use hand_written::lower_hex;
    Some((
        lower_hex(&v[..2])? as u8,
        lower_hex(&v[3..35])?,
        lower_hex(&v[36..52])? as u64,
        lower_hex(&v[53..55])? as u8,
    ))
}

fn format_hand_written(out: &mut [u8; 55], (_, trace, span, flags): Fields) {
    hand_written::write_hex(&mut out[3..35], trace);
    hand_written::write_hex(&mut out[36..52], u128::from(span));
    hand_written::write_hex(&mut out[53..55], u128::from(flags));
}

macro_rules! crate_codec {
    ($parse:ident, $format:ident, $krate:ident) => {
        fn $parse(v: &[u8]) -> Option<Fields> {
            if v.iter().any(u8::is_ascii_uppercase) {
                return None;
            }
            let (mut version, mut trace, mut span, mut flags) =
                ([0u8; 1], [0u8; 16], [0u8; 8], [0u8; 1]);
            $krate::decode_to_slice(&v[..2], &mut version).ok()?;
            $krate::decode_to_slice(&v[3..35], &mut trace).ok()?;
            $krate::decode_to_slice(&v[36..52], &mut span).ok()?;
            $krate::decode_to_slice(&v[53..55], &mut flags).ok()?;
            Some((
                version[0],
                u128::from_be_bytes(trace),
                u64::from_be_bytes(span),
                flags[0],
            ))
        }

        fn $format(out: &mut [u8; 55], (_, trace, span, flags): Fields) {
            $krate::encode_to_slice(trace.to_be_bytes(), &mut out[3..35]).unwrap();
            $krate::encode_to_slice(span.to_be_bytes(), &mut out[36..52]).unwrap();
            $krate::encode_to_slice([flags], &mut out[53..55]).unwrap();
        }
    };
}

crate_codec!(parse_hex, format_hex, hex);
crate_codec!(parse_const_hex, format_const_hex, const_hex);

fn traceparent_hex(c: &mut Criterion) {
    type Codec = (fn(&[u8]) -> Option<Fields>, fn(&mut [u8; 55], Fields));
    let codecs: [(&str, Codec); 3] = [
        ("hand_written", (parse_hand_written, format_hand_written)),
        ("hex", (parse_hex, format_hex)),
        ("const_hex", (parse_const_hex, format_const_hex)),
    ];
    let input = TRACEPARENT.as_bytes();
    let upper = TRACEPARENT.to_ascii_uppercase();
    let mut g = c.benchmark_group("traceparent_hex");
    for (name, (parse, format)) in codecs {
        // All three read and write the same thing, and refuse uppercase.
        let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
        format(&mut out, parse(input).unwrap());
        assert_eq!(&out[..], input, "{name}");
        assert_eq!(parse(upper.as_bytes()), None, "{name}");
        g.bench_function(name, |bench| {
            bench.iter(|| {
                let fields = parse(black_box(input)).unwrap();
                format(&mut out, fields);
                black_box(&out);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, traceparent_roundtrip, traceparent_hex);
criterion_main!(benches);
