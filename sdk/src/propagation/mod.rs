//! Propagation: reading a remote span context (and baggage) from request headers and
//! writing the current one into outgoing requests.
//!
//! - Carriers: [`Extractor`] and [`Injector`], implemented for [`http::HeaderMap`]
//!   and `HashMap<String, String>`. Header names are matched ASCII
//!   case-insensitively; values are read as raw bytes, so nothing is silently lost
//!   before a format decides what is valid.
//! - Formats, each a [`Propagator`]:
//!   - [`TraceContextPropagator`]: W3C `traceparent` and `tracestate` (level 2).
//!   - [`BaggagePropagator`]: W3C `baggage`, read and written through
//!     [`BaggageExt`] on [`Context`].
//!   - [`B3Propagator`]: Zipkin B3, single (`b3`) and multiple (`X-B3-*`) headers.
//!   - [`CloudTraceContextPropagator`]: Google's `X-Cloud-Trace-Context`.
//!   - [`GrpcTraceBinPropagator`]: OpenCensus `grpc-trace-bin`, with the binary codec
//!     itself in [`binary::to_bytes`] and [`binary::from_bytes`].
//! - [`CompositePropagator`]: several formats at once; on extract the first format
//!   that finds a valid span context wins (without one, the first sampling
//!   decision sent without ids, like B3 `b3: 0`), on inject every format writes.
//! - Sampling beyond the W3C `sampled` flag: a span context's
//!   [`SamplingState`](crate::SamplingState) also carries B3's "defer" (ids
//!   without a decision: the local sampler decides) and "debug" (forced sampling,
//!   passed on by B3 and exported as Zipkin `debug: true`).
//! - [`TrustPolicy`]: whether a server continues a remote trace or starts a new
//!   root linked to it (OpenCensus `IsPublicEndpoint`).
//!
//! Input from the wire never panics and never fails a request: a header that is
//! invalid for its format is ignored, so the server starts a new trace, exactly as
//! the W3C processing model says.
//!
//! ```
//! use http::HeaderMap;
//! use tracewire::propagation::{Propagator, TraceContextPropagator};
//! use tracewire::Context;
//!
//! let mut incoming = HeaderMap::new();
//! incoming.insert(
//!     "traceparent",
//!     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap(),
//! );
//! incoming.insert("tracestate", "congo=t61rcWkgMzE".parse().unwrap());
//!
//! let propagator = TraceContextPropagator::new();
//! let cx = propagator.extract(&Context::new(), &incoming);
//! let remote = cx.span().span_context();
//! assert!(remote.is_remote() && remote.is_sampled());
//! assert_eq!(remote.trace_state().get("congo"), Some("t61rcWkgMzE"));
//!
//! let mut outgoing = HeaderMap::new();
//! propagator.inject(&cx, &mut outgoing);
//! assert_eq!(
//!     outgoing["traceparent"],
//!     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
//! );
//! ```

use std::fmt;

use crate::context::Context;
use crate::trace::{Span, SpanContext};

mod b3;
pub mod baggage;
pub mod binary;
mod carrier;
mod cloud_trace;
mod composite;
mod trace_context;
mod trust;

pub use b3::{B3Encoding, B3Propagator};
pub use baggage::{Baggage, BaggageEntry, BaggageError, BaggageExt, BaggagePropagator};
pub use binary::GrpcTraceBinPropagator;
pub use carrier::{Extractor, HeaderValues, Injector};
pub use cloud_trace::CloudTraceContextPropagator;
pub use composite::CompositePropagator;
pub use trace_context::TraceContextPropagator;
pub use trust::{RemoteParent, TrustPolicy};

/// A wire format that moves a [`Context`]'s propagated parts across a process
/// boundary.
///
/// Formats that carry a span context implement [`extract_span_context`] and
/// [`inject`]; the provided [`extract`] then makes the extracted context the span of
/// a new [`Context`]. Formats that carry other values (like baggage) implement
/// [`extract`] themselves and keep the default `extract_span_context`, which finds
/// nothing.
///
/// [`extract_span_context`]: Propagator::extract_span_context
/// [`extract`]: Propagator::extract
/// [`inject`]: Propagator::inject
pub trait Propagator: Send + Sync + fmt::Debug {
    /// The valid remote span context `carrier` holds in this format, if any. The
    /// result has `is_remote() == true`.
    fn extract_span_context(&self, carrier: &dyn Extractor) -> Option<SpanContext> {
        let _ = carrier;
        None
    }

    /// `cx` with what `carrier` holds in this format. For span-context formats: if a
    /// valid span context is found, a context whose span is
    /// [`Span::non_recording`] of it; otherwise `cx` unchanged.
    fn extract(&self, cx: &Context, carrier: &dyn Extractor) -> Context {
        match self.extract_span_context(carrier) {
            Some(sc) => cx.with_span(Span::non_recording(sc)),
            None => cx.clone(),
        }
    }

    /// Writes what `cx` carries into `carrier` in this format. Writes nothing for a
    /// context without a valid span (for span-context formats).
    fn inject(&self, cx: &Context, carrier: &mut dyn Injector);

    /// The header names this format reads and writes, in lowercase: all of
    /// them. A [`CompositePropagator`] does not ask its formats to extract
    /// from a carrier that holds none of their fields.
    fn fields(&self) -> &[&'static str];
}

macro_rules! forward_propagator {
    ($($ptr:ident)::+) => {
        impl<P: Propagator + ?Sized> Propagator for $($ptr)::+<P> {
            fn extract_span_context(&self, carrier: &dyn Extractor) -> Option<SpanContext> {
                (**self).extract_span_context(carrier)
            }
            fn extract(&self, cx: &Context, carrier: &dyn Extractor) -> Context {
                (**self).extract(cx, carrier)
            }
            fn inject(&self, cx: &Context, carrier: &mut dyn Injector) {
                (**self).inject(cx, carrier)
            }
            fn fields(&self) -> &[&'static str] {
                (**self).fields()
            }
        }
    };
}

// So that layers can hold an `Arc<dyn Propagator>` and pass it on as a propagator.
forward_propagator!(Box);
forward_propagator!(std::sync::Arc);

/// Trims the optional whitespace (`SP` / `HTAB`) HTTP allows around a field value.
pub(crate) fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// The value of each lowercase hex digit; `0xff` for every other byte.
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

/// Up to 16 hex digits; the second value has bits above 0x0f set if any byte was
/// not a lowercase hex digit.
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

/// Parses 1 to 32 lowercase hex digits (the caller checks the length it wants).
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

/// Each byte's two hex digits.
static HEX_PAIRS: [[u8; 2]; 256] = {
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [HEX[i >> 4], HEX[i & 0xf]];
        i += 1;
    }
    t
};

/// Writes the low `out.len()` (at most 32) hex digits of `v` into `out`.
#[inline]
pub(crate) fn write_hex(out: &mut [u8], mut v: u128) {
    if out.len().is_multiple_of(2) && out.len() <= 32 {
        // A byte (two digits) at a time.
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

/// Appends `v` as exactly `digits` (at most 32) lowercase hex digits.
pub(crate) fn push_hex(out: &mut String, v: u128, digits: usize) {
    let mut buf = [0u8; 32];
    let buf = &mut buf[..digits.min(32)];
    write_hex(buf, v);
    // Hex digits are ASCII.
    out.push_str(std::str::from_utf8(buf).unwrap_or_default());
}

#[cfg(test)]
pub(crate) mod testing {
    //! Strategies shared by the round-trip property tests.

    use proptest::prelude::*;

    use crate::trace::{SpanId, TraceFlags, TraceId, TraceState};

    pub(crate) fn trace_id() -> impl Strategy<Value = TraceId> {
        (1..=u128::MAX).prop_map(TraceId::from_u128)
    }

    pub(crate) fn span_id() -> impl Strategy<Value = SpanId> {
        (1..=u64::MAX).prop_map(SpanId::from_u64)
    }

    pub(crate) fn flags() -> impl Strategy<Value = TraceFlags> {
        (0u8..4).prop_map(TraceFlags::new)
    }

    /// Valid trace states of 0 to 32 members with unique keys.
    pub(crate) fn trace_state() -> impl Strategy<Value = TraceState> {
        proptest::collection::vec(
            (
                "[a-z0-9][a-z0-9_*/@-]{0,20}",
                "[ !-+\\--<>-~]{0,20}[!-+\\--<>-~]",
            ),
            0..=32,
        )
        .prop_map(|members| {
            let mut state = TraceState::NONE;
            for (k, v) in members.iter().rev() {
                state = state.insert(k, v).unwrap_or(state);
            }
            state
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trim_ows_strips_spaces_and_tabs_only() {
        assert_eq!(trim_ows(b" \t a b\t "), b"a b");
        assert_eq!(trim_ows(b"   "), b"");
        assert_eq!(trim_ows(b"\na"), b"\na");
    }

    #[test]
    fn shared_propagators_are_propagators() {
        let p: std::sync::Arc<dyn Propagator> = std::sync::Arc::new(TraceContextPropagator::new());
        let boxed: Box<dyn Propagator> = Box::new(p.clone());
        assert_eq!(boxed.fields(), ["traceparent", "tracestate"]);
        let mut h = std::collections::HashMap::new();
        h.insert(
            "traceparent".to_string(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string(),
        );
        assert!(boxed.extract(&Context::new(), &h).has_span());
    }

    #[test]
    fn write_hex_writes_the_low_digits_even_or_odd() {
        for digits in [1, 2, 3, 16, 31, 32] {
            let v = 0x4bf92f3577b34da6a3ce929d0e0e4736u128;
            let mut out = vec![0u8; digits];
            write_hex(&mut out, v);
            let want = format!("{v:032x}");
            assert_eq!(std::str::from_utf8(&out).unwrap(), &want[32 - digits..]);
        }
    }

    #[test]
    fn lower_hex_rejects_uppercase_and_empty() {
        assert_eq!(lower_hex(b"0aF"), None);
        assert_eq!(lower_hex(b""), None);
        assert_eq!(lower_hex(b"ff"), Some(255));
        assert_eq!(lower_hex(b"g"), None);
        assert_eq!(lower_hex(&[0xff]), None);
        let max = "f".repeat(32);
        assert_eq!(lower_hex(max.as_bytes()), Some(u128::MAX));
        assert_eq!(
            lower_hex(b"4bf92f3577b34da6a3ce929d0e0e4736"),
            Some(0x4bf92f3577b34da6a3ce929d0e0e4736)
        );
        assert_eq!(lower_hex(b"123456789abcdef01"), Some(0x123456789abcdef01));
        let mut s = String::new();
        push_hex(&mut s, 0xabc, 4);
        assert_eq!(s, "0abc");
    }
}
