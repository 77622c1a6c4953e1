//! Shared helpers for the propagation fuzz targets.

use std::collections::HashMap;

use tracewire::propagation::{Extractor, HeaderValues, Propagator};
use tracewire::{Context, SamplingState, Span, SpanContext};

/// A carrier of raw header bytes, as a transport might hand them over (any byte,
/// any case, repeated names).
#[derive(Debug, Default)]
pub struct RawHeaders(pub Vec<(String, Vec<u8>)>);

impl RawHeaders {
    /// Adds a header.
    pub fn push(&mut self, name: &str, value: &[u8]) {
        self.0.push((name.to_owned(), value.to_vec()));
    }

    /// Each `\n`-separated line of `data` as a value of `names[i % names.len()]`.
    pub fn from_lines(data: &[u8], names: &[&str]) -> Self {
        let mut h = RawHeaders::default();
        for (i, line) in data.split(|&c| c == b'\n').enumerate() {
            h.push(names[i % names.len()], line);
        }
        h
    }

    /// Lines of `name:value`; a line without `:` is a value of `default`.
    pub fn from_name_value_lines(data: &[u8], default: &str) -> Self {
        let mut h = RawHeaders::default();
        for line in data.split(|&c| c == b'\n') {
            match line.iter().position(|&c| c == b':') {
                Some(i) => h.push(&String::from_utf8_lossy(&line[..i]), &line[i + 1..]),
                None => h.push(default, line),
            }
        }
        h
    }
}

impl Extractor for RawHeaders {
    fn get_all(&self, name: &str) -> HeaderValues<'_> {
        self.0
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| &v[..])
            .collect()
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }
}

/// Injects `sc` with `p` into a fresh map and extracts it again.
pub fn reinject(
    p: &dyn Propagator,
    sc: &SpanContext,
) -> (HashMap<String, String>, Option<SpanContext>) {
    let cx = Context::new().with_span(Span::non_recording(sc.clone()));
    let mut out = HashMap::new();
    p.inject(&cx, &mut out);
    let back = p.extract_span_context(&out);
    (out, back)
}

/// Checks what every extracted span context must satisfy (valid ids, or a
/// sampling decision without ids), and that injecting it and extracting again
/// gives the same ids and sampling decision.
pub fn check_round_trip(p: &dyn Propagator, sc: &SpanContext) {
    assert!(sc.is_remote());
    assert!(sc.is_valid() || sc.is_sampling_only(), "{sc:?}");
    let (out, back) = reinject(p, sc);
    let back = back.unwrap_or_else(|| panic!("{sc:?} injected as {out:?} did not extract"));
    assert_eq!(back.trace_id(), sc.trace_id());
    assert_eq!(back.span_id(), sc.span_id());
    assert_eq!(back.is_sampled(), sc.is_sampled());
    assert_eq!(back.is_sampling_only(), sc.is_sampling_only());
}

/// [`check_round_trip`] for a format that carries every [`SamplingState`]
/// (B3): the state itself survives too.
pub fn check_round_trip_with_state(p: &dyn Propagator, sc: &SpanContext) {
    check_round_trip(p, sc);
    let (_, back) = reinject(p, sc);
    let state: Option<SamplingState> = back.map(|b| b.sampling_state());
    assert_eq!(state, Some(sc.sampling_state()));
}
