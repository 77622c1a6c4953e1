//! A propagator made of several formats.

use crate::context::Context;
use crate::trace::{Span, SpanContext};

use super::carrier::{trace_header_mask, Presence};
use super::{BaggagePropagator, Extractor, Injector, Propagator, TraceContextPropagator};

/// Several formats used together, for example W3C Trace Context plus B3 plus
/// baggage during a migration.
///
/// - Extraction tries the span-context formats in the configured order and uses
///   the first valid span context found. If no format finds ids, the first
///   sampling decision sent without ids ([`SpanContext::sampling_only`], B3
///   `b3: 0`) is used. Formats that carry other values (like baggage) are all
///   applied.
/// - Injection writes every format.
///
/// The default is W3C Trace Context plus W3C Baggage (OpenCensus's default
/// format is Trace Context).
///
/// ```
/// use tracewire::propagation::{
///     B3Encoding, B3Propagator, BaggagePropagator, CompositePropagator, Propagator,
///     TraceContextPropagator,
/// };
///
/// let propagator = CompositePropagator::new()
///     .with(TraceContextPropagator::new())
///     .with(B3Propagator::new(B3Encoding::Single))
///     .with(BaggagePropagator::new());
/// assert_eq!(propagator.fields()[..2], ["traceparent", "tracestate"]);
/// ```
#[derive(Debug)]
pub struct CompositePropagator {
    members: Vec<Member>,
    fields: Vec<&'static str>,
}

/// A format of a composite, with its fields as trace-header bits when all of
/// them are trace headers: a carrier that holds none of them gives it nothing
/// to extract, so it is not asked.
#[derive(Debug)]
struct Member {
    format: Box<dyn Propagator>,
    trace_fields: Option<u64>,
}

impl Member {
    /// Whether the format may find something in `presence`'s carrier.
    #[inline]
    fn may_read(&self, presence: &Presence<'_>) -> bool {
        !self.trace_fields.is_some_and(|m| presence.lacks_all(m))
    }
}

impl CompositePropagator {
    /// A composite of no format (it extracts and injects nothing); add formats
    /// with [`with`](CompositePropagator::with).
    pub fn new() -> Self {
        CompositePropagator {
            members: Vec::new(),
            fields: Vec::new(),
        }
    }

    /// This composite with `propagator` added after the others.
    pub fn with(mut self, propagator: impl Propagator + 'static) -> Self {
        self.push(Box::new(propagator));
        self
    }

    /// Adds `propagator` after the others.
    pub fn push(&mut self, propagator: Box<dyn Propagator>) {
        for &f in propagator.fields() {
            if !self.fields.contains(&f) {
                self.fields.push(f);
            }
        }
        self.members.push(Member {
            trace_fields: trace_header_mask(propagator.fields()),
            format: propagator,
        });
    }
}

impl Default for CompositePropagator {
    fn default() -> Self {
        CompositePropagator::new()
            .with(TraceContextPropagator::new())
            .with(BaggagePropagator::new())
    }
}

impl FromIterator<Box<dyn Propagator>> for CompositePropagator {
    fn from_iter<I: IntoIterator<Item = Box<dyn Propagator>>>(iter: I) -> Self {
        let mut c = CompositePropagator::new();
        for p in iter {
            c.push(p);
        }
        c
    }
}

impl Propagator for CompositePropagator {
    /// The first valid span context, trying the members in order; without one,
    /// the first sampling decision without ids.
    fn extract_span_context(&self, carrier: &dyn Extractor) -> Option<SpanContext> {
        let presence = Presence::new(carrier);
        let carrier = presence.carrier();
        let mut found = None;
        for m in self.members.iter().filter(|m| m.may_read(&presence)) {
            if let Some(sc) = m.format.extract_span_context(carrier) {
                if sc.is_valid() {
                    return Some(sc);
                }
                found = found.or(Some(sc));
            }
        }
        found
    }

    fn extract(&self, cx: &Context, carrier: &dyn Extractor) -> Context {
        // Asked once which trace headers there are, so that members skip the
        // lookups of absent ones (most requests carry none or one format), and
        // are not asked at all when none of the headers they read (their
        // `fields`) is there.
        let presence = Presence::new(carrier);
        let carrier = presence.carrier();
        let mut out = cx.clone();
        let mut found: Option<SpanContext> = None;
        for m in self.members.iter().filter(|m| m.may_read(&presence)) {
            let p = &m.format;
            let valid_found = found.as_ref().is_some_and(SpanContext::is_valid);
            match p.extract_span_context(carrier) {
                // Only the first valid span context (or, without one, the first
                // decision) counts.
                Some(sc) if !valid_found && (found.is_none() || sc.is_valid()) => {
                    found = Some(sc);
                }
                Some(_) => {}
                // A span format's `extract` would replace the span: only formats
                // that found no span context are asked for what else they carry.
                None => out = p.extract(&out, carrier),
            }
        }
        match found {
            Some(sc) => out.with_span(Span::non_recording(sc)),
            None => out,
        }
    }

    fn inject(&self, cx: &Context, carrier: &mut dyn Injector) {
        for m in &self.members {
            m.format.inject(cx, carrier);
        }
    }

    fn fields(&self) -> &[&'static str] {
        &self.fields
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;
    use crate::propagation::{
        testing, B3Encoding, B3Propagator, BaggageExt, CloudTraceContextPropagator,
        GrpcTraceBinPropagator,
    };

    const W3C: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const B3: &str = "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1";

    fn all() -> CompositePropagator {
        CompositePropagator::new()
            .with(TraceContextPropagator::new())
            .with(B3Propagator::new(B3Encoding::SingleAndMulti))
            .with(BaggagePropagator::new())
            .with(CloudTraceContextPropagator::new())
            .with(GrpcTraceBinPropagator::new())
    }

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn first_configured_valid_format_wins() {
        let carrier = map(&[("traceparent", W3C), ("b3", B3)]);
        let w3c_first = all().extract(&Context::new(), &carrier);
        assert_eq!(
            w3c_first.span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let b3_first = CompositePropagator::new()
            .with(B3Propagator::default())
            .with(TraceContextPropagator::new())
            .extract(&Context::new(), &carrier);
        assert_eq!(
            b3_first.span().span_context().trace_id().to_string(),
            "80f198ee56343ba864fe8b2a57d3eff7"
        );
    }

    #[test]
    fn invalid_first_format_falls_through_to_the_next() {
        let carrier = map(&[("traceparent", "garbage"), ("b3", B3)]);
        let sc = all().extract_span_context(&carrier).unwrap();
        assert_eq!(
            sc.trace_id().to_string(),
            "80f198ee56343ba864fe8b2a57d3eff7"
        );
    }

    #[test]
    fn baggage_is_extracted_alongside_the_span_context() {
        let carrier = map(&[("b3", B3), ("baggage", "userId=alice")]);
        let cx = all().extract(&Context::new(), &carrier);
        assert!(cx.span().span_context().is_remote());
        assert_eq!(cx.baggage().get("userId"), Some("alice"));
    }

    #[test]
    fn nothing_valid_leaves_the_context_unchanged() {
        let carrier = map(&[("traceparent", "garbage"), ("X-B3-Sampled", "yes")]);
        let cx = all().extract(&Context::new(), &carrier);
        assert!(!cx.has_span());
    }

    #[test]
    fn a_decision_without_ids_counts_only_when_no_format_has_ids() {
        use crate::trace::SamplingState;
        let deny = SpanContext::sampling_only(SamplingState::NotSampled);
        let carrier = map(&[("traceparent", "garbage"), ("b3", "0")]);
        let cx = all().extract(&Context::new(), &carrier);
        assert_eq!(cx.span().span_context(), &deny);
        assert_eq!(all().extract_span_context(&carrier), Some(deny));
        let cloud = "105445aa7843bc8bf206b12000100000/1;o=1";
        let carrier = map(&[("b3", "0"), ("x-cloud-trace-context", cloud)]);
        let cx = all().extract(&Context::new(), &carrier);
        let sc = cx.span().span_context();
        assert_eq!(
            sc.trace_id().to_string(),
            "105445aa7843bc8bf206b12000100000"
        );
        assert_eq!(all().extract_span_context(&carrier).as_ref(), Some(sc));
    }

    #[test]
    fn inject_writes_every_format_and_fields_lists_them_once() {
        let p = all();
        let cx = p.extract(&Context::new(), &map(&[("traceparent", W3C)]));
        let mut out = HashMap::new();
        p.inject(&cx, &mut out);
        let mut keys: Vec<_> = out.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "b3",
                "grpc-trace-bin",
                "traceparent",
                "x-b3-sampled",
                "x-b3-spanid",
                "x-b3-traceid",
                "x-cloud-trace-context"
            ]
        );
        assert!(keys.iter().all(|k| p.fields().contains(k)));
        let mut fields = p.fields().to_vec();
        fields.dedup();
        assert_eq!(fields.len(), p.fields().len());
    }

    #[test]
    fn default_is_trace_context_and_baggage() {
        assert_eq!(
            CompositePropagator::default().fields(),
            ["traceparent", "tracestate", "baggage"]
        );
    }

    /// A format that reads a header of its own.
    #[derive(Debug)]
    struct Custom;

    impl Propagator for Custom {
        fn extract(&self, cx: &Context, carrier: &dyn Extractor) -> Context {
            match carrier.get_all("x-custom").first() {
                Some(v) => {
                    let mut baggage = crate::propagation::Baggage::new();
                    baggage
                        .insert("custom", String::from_utf8_lossy(v))
                        .unwrap();
                    cx.with_baggage(baggage)
                }
                None => cx.clone(),
            }
        }
        fn inject(&self, _: &Context, _: &mut dyn Injector) {}
        fn fields(&self) -> &[&'static str] {
            &["x-custom"]
        }
    }

    #[test]
    fn members_are_skipped_only_when_none_of_their_fields_is_there() {
        let p = all();
        let cx = Context::new();
        // No trace header: nothing extracted (and no member asked).
        let out = p.extract(&cx, &map(&[("host", "a")]));
        assert!(!out.has_span() && out.baggage().is_empty());
        // A member that reads a header of its own is always asked.
        let with_custom = CompositePropagator::new()
            .with(TraceContextPropagator::new())
            .with(Custom);
        let out = with_custom.extract(&cx, &map(&[("x-custom", "v")]));
        assert_eq!(out.baggage().get("custom"), Some("v"));
        let mut headers = http::HeaderMap::new();
        headers.insert("x-custom", http::HeaderValue::from_static("w"));
        let out = with_custom.extract(&cx, &headers);
        assert_eq!(out.baggage().get("custom"), Some("w"));
    }

    /// A carrier that cannot say which headers it holds (the trait's default):
    /// every member then looks up every header it reads.
    struct Opaque<'a>(&'a dyn Extractor);

    impl Extractor for Opaque<'_> {
        fn get_all(&self, name: &str) -> crate::propagation::HeaderValues<'_> {
            self.0.get_all(name)
        }
        fn keys(&self) -> Vec<&str> {
            self.0.keys()
        }
    }

    /// Headers of every format, valid and not, for the presence property.
    const HEADERS: &[(&str, &str)] = &[
        ("traceparent", W3C),
        (
            "traceparent",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        ),
        ("Traceparent", W3C),
        ("tracestate", "a=b,c=d"),
        ("b3", B3),
        ("b3", "0"),
        ("B3", "d"),
        ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
        ("X-B3-SpanId", "e457b5a2e4d86bd1"),
        ("x-b3-sampled", "1"),
        ("x-b3-flags", "1"),
        ("x-b3-parentspanid", "05e3ac9a4f6e3b90"),
        (
            "x-cloud-trace-context",
            "105445aa7843bc8bf206b12000100000/1;o=1",
        ),
        ("grpc-trace-bin", "garbage"),
        ("baggage", "userId=alice,serverNode=DF%2028"),
        ("host", "example.com"),
        ("user-agent", "curl/8"),
    ];

    proptest! {
        /// Skipping the lookups of absent headers changes nothing: a carrier that
        /// says which it holds (a header map, a hash map with names in any case)
        /// extracts what one that cannot say does.
        #[test]
        fn presence_of_headers_changes_no_extraction(
            picked in proptest::collection::vec(0..HEADERS.len(), 0..8),
        ) {
            let pairs: Vec<(&str, &str)> = picked.iter().map(|&i| HEADERS[i]).collect();
            let hash = map(&pairs);
            let mut headers = http::HeaderMap::new();
            for (k, v) in &pairs {
                headers.append(
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    http::HeaderValue::from_str(v).unwrap(),
                );
            }
            let p = all();
            for carrier in [&hash as &dyn Extractor, &headers] {
                let want = p.extract(&Context::new(), &Opaque(carrier));
                let got = p.extract(&Context::new(), carrier);
                prop_assert_eq!(got.span().span_context(), want.span().span_context());
                prop_assert_eq!(got.baggage(), want.baggage());
                prop_assert_eq!(
                    p.extract_span_context(carrier),
                    p.extract_span_context(&Opaque(carrier))
                );
            }
        }
    }

    proptest! {
        #[test]
        fn inject_then_extract_round_trips(
            trace_id in testing::trace_id(),
            span_id in testing::span_id(),
            flags in testing::flags(),
            state in testing::trace_state(),
        ) {
            let sc = SpanContext::new(trace_id, span_id, flags, false, state.clone());
            let cx = Context::new().with_span(Span::non_recording(sc));
            let p = all();
            let mut out = HashMap::new();
            p.inject(&cx, &mut out);
            let back = p.extract_span_context(&out);
            let expected = SpanContext::new(trace_id, span_id, flags, true, state);
            prop_assert_eq!(back, Some(expected));
            // Every format alone finds the same ids.
            for member in [
                Box::new(TraceContextPropagator::new()) as Box<dyn Propagator>,
                Box::new(B3Propagator::default()),
                Box::new(CloudTraceContextPropagator::new()),
                Box::new(GrpcTraceBinPropagator::new()),
            ] {
                let sc = member.extract_span_context(&out);
                prop_assert_eq!(sc.as_ref().map(SpanContext::trace_id), Some(trace_id));
                prop_assert_eq!(sc.as_ref().map(SpanContext::span_id), Some(span_id));
                prop_assert_eq!(sc.map(|sc| sc.is_sampled()), Some(flags.is_sampled()));
            }
        }
    }
}
