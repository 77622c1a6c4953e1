//! Configuration from the OpenTelemetry SDK environment variables.
//!
//! - [`TracerProviderBuilder::from_env`](crate::TracerProviderBuilder::from_env):
//!   `OTEL_SDK_DISABLED`, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
//!   `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG` and `OTEL_BSP_*`.
//! - [`propagators`]: `OTEL_PROPAGATORS`, as a [`CompositePropagator`] for the
//!   client layers' `with_propagator`.
//! - [`traces_exporters`]: `OTEL_TRACES_EXPORTER`, the names of the exporters to
//!   install. This crate holds no network exporter, so it only parses the list;
//!   binaries build them (`tracewire-zipkin`'s `ZipkinExporter::from_env`,
//!   `tracewire-otlp`'s `OtlpExporter::from_env`, which reads the
//!   `OTEL_EXPORTER_OTLP_*` variables).
//!
//! As the OpenTelemetry specification says, an empty value counts as unset, and
//! names (sampler, propagator, exporter, `true`) are matched case-insensitively.
//! An invalid value never panics and never fails: it is reported on standard error
//! (`tracewire: ignoring OTEL_...`, like the pipeline's other reports) and the
//! default is kept.
//!
//! Every reader has a `_with` form taking the lookup function, so that tests (and
//! programs with their own configuration source) need not touch the process
//! environment:
//!
//! ```
//! use std::collections::HashMap;
//! use tracewire::TracerProvider;
//!
//! let vars = HashMap::from([("OTEL_SERVICE_NAME", "checkout")]);
//! let provider = TracerProvider::builder()
//!     .from_env_with(|name| vars.get(name).map(|v| v.to_string()))
//!     .build();
//! assert_eq!(provider.resource().service_name, "checkout");
//! ```

use std::fmt;
use std::time::Duration;

use crate::propagation::{
    B3Encoding, B3Propagator, BaggagePropagator, CloudTraceContextPropagator, CompositePropagator,
    GrpcTraceBinPropagator, Propagator, TraceContextPropagator,
};

/// Reads variable `name` from the process environment (`None` if it is unset or
/// not valid Unicode). The lookup the `from_env` functions use.
pub fn system(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// A lookup over fixed `(name, value)` pairs instead of the process environment:
/// for tests, or a program that keeps its configuration elsewhere.
///
/// ```
/// let lookup = tracewire::env::lookup_in(&[("OTEL_SERVICE_NAME", "checkout")]);
/// assert_eq!(lookup("OTEL_SERVICE_NAME").as_deref(), Some("checkout"));
/// assert_eq!(lookup("OTEL_TRACES_SAMPLER"), None);
/// ```
pub fn lookup_in(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let vars: std::collections::HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| vars.get(name).cloned()
}

/// The value of `name` found by `lookup`, trimmed; `None` if it is unset or empty.
pub fn get(lookup: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    let value = lookup(name)?;
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_owned())
}

/// Reports that `name=value` is ignored because of `why`, and what is used instead.
pub fn warn_invalid(name: &str, value: &str, why: impl fmt::Display, instead: impl fmt::Display) {
    eprintln!("tracewire: ignoring {name}={value:?}: {why}; using {instead}");
}

/// A positive integer variable; an invalid or zero value is reported and `None`.
pub fn positive_integer(lookup: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<u64> {
    let value = get(lookup, name)?;
    match value.parse::<u64>() {
        Ok(n) if n > 0 => Some(n),
        Ok(_) => {
            warn_invalid(name, &value, "it must be positive", "the default");
            None
        }
        Err(e) => {
            warn_invalid(name, &value, e, "the default");
            None
        }
    }
}

/// A duration in milliseconds (a positive integer, as the OpenTelemetry
/// variables give them); an invalid or zero value is reported and `None`.
pub fn millis(lookup: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<Duration> {
    positive_integer(lookup, name).map(Duration::from_millis)
}

/// A boolean variable: `true` (any case) is true; `false` and unset are false;
/// anything else is reported and false, as the specification says.
pub fn boolean(lookup: &dyn Fn(&str) -> Option<String>, name: &str) -> bool {
    let Some(value) = get(lookup, name) else {
        return false;
    };
    if value.eq_ignore_ascii_case("true") {
        true
    } else {
        if !value.eq_ignore_ascii_case("false") {
            warn_invalid(name, &value, "expected true or false", "false");
        }
        false
    }
}

/// The lowercase members of a comma-separated list variable, without empty ones
/// and duplicates, in their order; `None` if the variable is unset or empty.
fn list(lookup: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<Vec<String>> {
    let value = get(lookup, name)?;
    let mut names: Vec<String> = Vec::new();
    for member in value.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        let member = member.to_ascii_lowercase();
        if !names.contains(&member) {
            names.push(member);
        }
    }
    Some(names)
}

/// Reports the members of list `name` that are not known, and whether `none` is
/// mixed with other members (it then wins). Returns the known members, or
/// `Some(empty)` for `none`; `None` when nothing valid is named (the caller keeps
/// its default).
fn known_members<T>(
    name: &str,
    members: Vec<String>,
    known: impl Fn(&str) -> Option<T>,
) -> Option<Vec<T>> {
    let joined = members.join(",");
    if members.iter().any(|m| m == "none") {
        if members.len() > 1 {
            warn_invalid(name, &joined, "`none` excludes every other value", "none");
        }
        return Some(Vec::new());
    }
    let mut found = Vec::new();
    for member in &members {
        match known(member) {
            Some(t) => found.push(t),
            None => warn_invalid(name, member, "not supported by tracewire", "the others"),
        }
    }
    if found.is_empty() {
        warn_invalid(name, &joined, "no supported value", "the default");
        return None;
    }
    Some(found)
}

/// `OTEL_PROPAGATORS` from the process environment; see [`propagators_with`].
pub fn propagators() -> Option<CompositePropagator> {
    propagators_with(&system)
}

/// The propagator `OTEL_PROPAGATORS` (found by `lookup`) names, in its order.
///
/// | value | format |
/// |---|---|
/// | `tracecontext` | W3C `traceparent` / `tracestate` |
/// | `baggage` | W3C `baggage` |
/// | `b3` | B3 single header (`b3`) |
/// | `b3multi` | B3 multiple headers (`X-B3-*`) |
/// | `xcloudtrace` | Google `X-Cloud-Trace-Context` (a tracewire name) |
/// | `grpctracebin` | OpenCensus `grpc-trace-bin` (a tracewire name; binary, for gRPC metadata) |
/// | `none` | no format: nothing is injected |
///
/// `None` when the variable is unset, or names no known format (unknown names,
/// such as `jaeger`, `xray` and `ottrace`, which tracewire does not implement, are
/// reported and skipped): the layers then keep their own defaults, which already
/// match the specification's `tracecontext,baggage` (gRPC layers also write
/// `grpc-trace-bin`).
///
/// Give the result to the client layers (`ClientTraceLayer::with_propagator`,
/// `GrpcClientLayer::with_propagator`) to choose what they *inject*. Server layers
/// extract every format by default, a superset of any list here; pass the result
/// to `TraceLayer::with_propagator` too only to restrict what a server accepts.
pub fn propagators_with(lookup: &dyn Fn(&str) -> Option<String>) -> Option<CompositePropagator> {
    const NAME: &str = "OTEL_PROPAGATORS";
    let known = |name: &str| -> Option<Box<dyn Propagator>> {
        Some(match name {
            "tracecontext" => Box::new(TraceContextPropagator::new()),
            "baggage" => Box::new(BaggagePropagator::new()),
            "b3" => Box::new(B3Propagator::new(B3Encoding::Single)),
            "b3multi" => Box::new(B3Propagator::new(B3Encoding::Multi)),
            "xcloudtrace" => Box::new(CloudTraceContextPropagator::new()),
            "grpctracebin" => Box::new(GrpcTraceBinPropagator::new()),
            _ => return None,
        })
    };
    let formats = known_members(NAME, list(lookup, NAME)?, known)?;
    Some(formats.into_iter().collect())
}

/// An exporter named by `OTEL_TRACES_EXPORTER`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TracesExporter {
    /// `zipkin`: Zipkin v2 (`tracewire-zipkin`, configured by
    /// `OTEL_EXPORTER_ZIPKIN_ENDPOINT` and `OTEL_EXPORTER_ZIPKIN_TIMEOUT`).
    Zipkin,
    /// `otlp`: OTLP (`tracewire-otlp`, configured by the `OTEL_EXPORTER_OTLP_*`
    /// and `OTEL_EXPORTER_OTLP_TRACES_*` variables).
    Otlp,
    /// `console`: JSON lines on standard output
    /// ([`JsonLinesExporter::stdout`](crate::export::JsonLinesExporter::stdout)).
    Console,
}

/// `OTEL_TRACES_EXPORTER` from the process environment; see
/// [`traces_exporters_with`].
pub fn traces_exporters() -> Option<Vec<TracesExporter>> {
    traces_exporters_with(&system)
}

/// The exporters `OTEL_TRACES_EXPORTER` (found by `lookup`) names: `zipkin`,
/// `otlp`, `console`, comma-separated, or `none` (an empty list).
///
/// `None` when the variable is unset, or names nothing known (reported): the
/// caller keeps its own default. (The specification's default is `otlp`; the
/// core depends on no exporter crate, so choosing a default is the binary's
/// business.)
pub fn traces_exporters_with(
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Option<Vec<TracesExporter>> {
    const NAME: &str = "OTEL_TRACES_EXPORTER";
    let known = |name: &str| match name {
        "zipkin" => Some(TracesExporter::Zipkin),
        "otlp" => Some(TracesExporter::Otlp),
        "console" => Some(TracesExporter::Console),
        _ => None,
    };
    known_members(NAME, list(lookup, NAME)?, known)
}

/// Decodes `%XX` escapes (the W3C baggage octet encoding `OTEL_RESOURCE_ATTRIBUTES`
/// uses); `None` for a malformed escape or a result that is not UTF-8.
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    // The crate keeps a malformed escape as it is: refuse it first.
    let bytes = s.as_bytes();
    for (i, _) in bytes.iter().enumerate().filter(|(_, &c)| c == b'%') {
        let hex = bytes.get(i + 1..i + 3)?;
        if !hex.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
    }
    percent_encoding::percent_decode(bytes)
        .decode_utf8()
        .ok()
        .map(std::borrow::Cow::into_owned)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::propagation::Propagator;
    use crate::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    use crate::{Context, Span};

    use super::lookup_in as vars;

    fn injected(propagator: &CompositePropagator) -> Vec<String> {
        let sc = SpanContext::new(
            TraceId::from_u128(0x4bf92f3577b34da6a3ce929d0e0e4736),
            SpanId::from_u64(0x00f067aa0ba902b7),
            TraceFlags::SAMPLED,
            true,
            TraceState::NONE,
        );
        let cx = Context::new().with_span(Span::non_recording(sc));
        let mut headers: HashMap<String, String> = HashMap::new();
        propagator.inject(&cx, &mut headers);
        let mut names: Vec<String> = headers.into_keys().map(|k| k.to_lowercase()).collect();
        names.sort();
        names
    }

    #[test]
    fn empty_values_count_as_unset_and_values_are_trimmed() {
        let lookup = vars(&[("A", "  "), ("B", " x ")]);
        assert_eq!(get(&lookup, "A"), None);
        assert_eq!(get(&lookup, "B").as_deref(), Some("x"));
        assert_eq!(get(&lookup, "C"), None);
    }

    #[test]
    fn booleans_are_true_only_for_true_in_any_case() {
        for (value, expected) in [
            ("true", true),
            ("TRUE", true),
            ("false", false),
            ("1", false),
            ("yes", false),
            ("", false),
        ] {
            let lookup = vars(&[("X", value)]);
            assert_eq!(boolean(&lookup, "X"), expected, "{value:?}");
        }
    }

    #[test]
    fn durations_in_milliseconds_reject_zero_negative_and_garbage() {
        for (value, expected) in [
            ("250", Some(Duration::from_millis(250))),
            ("0", None),
            ("-5", None),
            ("1.5", None),
            ("5s", None),
            ("", None),
        ] {
            let lookup = vars(&[("X", value)]);
            assert_eq!(millis(&lookup, "X"), expected, "{value:?}");
        }
    }

    #[test]
    fn unset_propagators_leave_the_layers_defaults() {
        assert!(propagators_with(&vars(&[])).is_none());
        assert!(propagators_with(&vars(&[("OTEL_PROPAGATORS", " ")])).is_none());
    }

    #[test]
    fn each_propagator_name_injects_its_headers() {
        for (value, headers) in [
            ("tracecontext", &["traceparent"][..]),
            ("b3", &["b3"]),
            ("b3multi", &["x-b3-sampled", "x-b3-spanid", "x-b3-traceid"]),
            ("xcloudtrace", &["x-cloud-trace-context"]),
            ("grpctracebin", &["grpc-trace-bin"]),
            ("B3, TraceContext", &["b3", "traceparent"]),
            ("none", &[]),
        ] {
            let p = propagators_with(&vars(&[("OTEL_PROPAGATORS", value)])).unwrap();
            assert_eq!(injected(&p), headers, "{value:?}");
        }
    }

    #[test]
    fn baggage_propagator_name_adds_the_baggage_field() {
        let p = propagators_with(&vars(&[("OTEL_PROPAGATORS", "baggage")])).unwrap();
        assert_eq!(p.fields(), ["baggage"]);
    }

    #[test]
    fn unknown_propagators_are_skipped_and_none_wins() {
        let p = propagators_with(&vars(&[("OTEL_PROPAGATORS", "jaeger,b3multi,xray")]));
        assert_eq!(
            injected(&p.unwrap()),
            ["x-b3-sampled", "x-b3-spanid", "x-b3-traceid"]
        );
        let p = propagators_with(&vars(&[("OTEL_PROPAGATORS", "jaeger,xray")]));
        assert!(p.is_none());
        let p = propagators_with(&vars(&[("OTEL_PROPAGATORS", "tracecontext,none")]));
        assert!(p.unwrap().fields().is_empty());
    }

    #[test]
    fn traces_exporters_are_listed_in_order_without_duplicates() {
        use TracesExporter::*;
        for (value, expected) in [
            ("zipkin", Some(vec![Zipkin])),
            ("console, ZIPKIN,console", Some(vec![Console, Zipkin])),
            ("otlp", Some(vec![Otlp])),
            ("none", Some(vec![])),
            ("zipkin,none", Some(vec![])),
            ("jaeger,console", Some(vec![Console])),
            ("jaeger", None),
            ("", None),
        ] {
            let lookup = vars(&[("OTEL_TRACES_EXPORTER", value)]);
            assert_eq!(traces_exporters_with(&lookup), expected, "{value:?}");
        }
        assert_eq!(traces_exporters_with(&vars(&[])), None);
    }

    #[test]
    fn percent_decoding_follows_the_baggage_octet_encoding() {
        assert_eq!(percent_decode("a%20b%2Cc").as_deref(), Some("a b,c"));
        assert_eq!(percent_decode("%E2%9C%93").as_deref(), Some("✓"));
        assert_eq!(percent_decode("100%"), None);
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%ff"), None);
        for (input, want) in [
            ("", Some("")),
            ("plain", Some("plain")),
            ("%41%7a", Some("Az")),
            ("%25", Some("%")),
            ("%", None),
            ("%4", None),
            ("a%2", None),
            // `u8::from_str_radix` took a sign: `%+1` once decoded to U+0001.
            ("%+1", None),
            ("%-1", None),
            ("%c3%a9", Some("é")),
            ("%C3", None),
        ] {
            assert_eq!(percent_decode(input).as_deref(), want, "{input:?}");
        }
    }
}
