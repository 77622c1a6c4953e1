//! Carriers: the header maps propagators read from and write to.

use std::collections::HashMap;

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// Read access to request headers (or gRPC metadata) for [`Propagator::extract`].
///
/// [`Propagator::extract`]: super::Propagator::extract
pub trait Extractor {
    /// Every value of the header `name`, in the order received, with `name` matched
    /// ASCII case-insensitively. Propagators always pass `name` in lowercase.
    ///
    /// Values are raw bytes: a value that is not ASCII reaches the format, which
    /// decides what the spec says to do with it. A carrier of gRPC metadata passes
    /// `-bin` values base64-decoded.
    fn get_all(&self, name: &str) -> HeaderValues<'_>;

    /// The header names present in the carrier.
    fn keys(&self) -> Vec<&str>;

    /// Which of `names` (lowercase header names) the carrier holds: bit `i` is
    /// set when it holds `names[i]` (names past the 64th count as held).
    /// Propagators that look up many headers ask once, for the trace headers,
    /// and skip the lookups of those it lacks: on a request without trace
    /// headers, a lookup of each costs more than listing the few names a
    /// request has. The default says every name is held, which is always
    /// right; a carrier that can list its names cheaply says exactly.
    fn holds(&self, names: &[&str]) -> u64 {
        let _ = names;
        u64::MAX
    }
}

/// What [`Extractor::holds`] answers for a carrier whose names are `keys`,
/// compared with `same`.
fn held<'k>(
    names: &[&str],
    keys: impl Iterator<Item = &'k str>,
    same: impl Fn(&str, &str) -> bool,
) -> u64 {
    if names.len() > 64 {
        return u64::MAX;
    }
    let mut held = 0;
    for key in keys {
        if let Some(i) = names.iter().position(|n| same(n, key)) {
            held |= 1 << i;
        }
    }
    held
}

/// Write access to request headers (or gRPC metadata) for [`Propagator::inject`].
///
/// [`Propagator::inject`]: super::Propagator::inject
pub trait Injector {
    /// Sets the header `name` (lowercase) to `value`, replacing any earlier values.
    fn set(&mut self, name: &str, value: String);
}

/// The values of one header, as returned by [`Extractor::get_all`]. Holds up to one
/// value without allocating.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderValues<'a> {
    first: Option<&'a [u8]>,
    rest: Vec<&'a [u8]>,
}

impl<'a> HeaderValues<'a> {
    /// No value: the header is absent.
    pub const fn new() -> Self {
        HeaderValues {
            first: None,
            rest: Vec::new(),
        }
    }

    /// Appends a value.
    pub fn push(&mut self, value: &'a [u8]) {
        if self.first.is_none() {
            self.first = Some(value);
        } else {
            self.rest.push(value);
        }
    }

    /// The number of values.
    pub fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    /// Whether the header is absent.
    pub fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    /// The first value, if any.
    pub fn first(&self) -> Option<&'a [u8]> {
        self.first
    }

    /// The value if the header appears exactly once.
    pub fn single(&self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            self.first
        } else {
            None
        }
    }

    /// The values in order.
    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.first.into_iter().chain(self.rest.iter().copied())
    }
}

impl<'a> FromIterator<&'a [u8]> for HeaderValues<'a> {
    fn from_iter<I: IntoIterator<Item = &'a [u8]>>(iter: I) -> Self {
        let mut values = HeaderValues::new();
        for v in iter {
            values.push(v);
        }
        values
    }
}

impl Extractor for HeaderMap {
    fn get_all(&self, name: &str) -> HeaderValues<'_> {
        let values = match known_name(name) {
            Some(known) => HeaderMap::get_all(self, known),
            // `HeaderMap` lowercases names itself; an invalid name finds nothing.
            None => HeaderMap::get_all(self, name),
        };
        let mut iter = values.iter();
        HeaderValues {
            first: iter.next().map(HeaderValue::as_bytes),
            rest: iter.map(HeaderValue::as_bytes).collect(),
        }
    }

    fn keys(&self) -> Vec<&str> {
        HeaderMap::keys(self).map(HeaderName::as_str).collect()
    }

    /// Compares each name the map holds (a few, for most requests) with `names`.
    fn holds(&self, names: &[&str]) -> u64 {
        held(
            names,
            HeaderMap::keys(self).map(HeaderName::as_str),
            |a, b| a == b,
        )
    }
}

/// Header names the propagators write, as static `HeaderName`s (no allocation).
static KNOWN_NAMES: [HeaderName; 12] = [
    HeaderName::from_static("traceparent"),
    HeaderName::from_static("tracestate"),
    HeaderName::from_static("baggage"),
    HeaderName::from_static("b3"),
    HeaderName::from_static("x-b3-traceid"),
    HeaderName::from_static("x-b3-spanid"),
    HeaderName::from_static("x-b3-sampled"),
    HeaderName::from_static("x-b3-flags"),
    HeaderName::from_static("x-b3-parentspanid"),
    HeaderName::from_static("x-cloud-trace-context"),
    HeaderName::from_static("grpc-trace-bin"),
    HeaderName::from_static("traceresponse"),
];

/// The header names tracewire's propagators read, in [`KNOWN_NAMES`]' order:
/// what [`Presence`] asks a carrier for.
pub(crate) const TRACE_HEADERS: [&str; 12] = [
    "traceparent",
    "tracestate",
    "baggage",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-sampled",
    "x-b3-flags",
    "x-b3-parentspanid",
    "x-cloud-trace-context",
    "grpc-trace-bin",
    "traceresponse",
];

/// The static `HeaderName` for `name`, if it is one the propagators use.
#[inline]
fn known_name(name: &str) -> Option<&'static HeaderName> {
    KNOWN_NAMES.get(known_index(name)?)
}

/// The index of `name` in [`TRACE_HEADERS`]: by length first, so that a name
/// is compared with one or two of them (this runs for every header lookup a
/// composite propagator's members make).
#[inline]
fn known_index(name: &str) -> Option<usize> {
    // Each comparison is with a literal of the length just matched, which the
    // compiler turns into a few word comparisons.
    let n = name.as_bytes();
    let i = match n.len() {
        2 if n == b"b3" => 3,
        7 if n == b"baggage" => 2,
        10 if n == b"tracestate" => 1,
        10 if n == b"x-b3-flags" => 7,
        11 if n == b"traceparent" => 0,
        11 if n == b"x-b3-spanid" => 5,
        12 if n == b"x-b3-traceid" => 4,
        12 if n == b"x-b3-sampled" => 6,
        13 if n == b"traceresponse" => 11,
        14 if n == b"grpc-trace-bin" => 10,
        17 if n == b"x-b3-parentspanid" => 8,
        21 if n == b"x-cloud-trace-context" => 9,
        _ => return None,
    };
    Some(i)
}

/// A carrier that answers lookups of the trace headers it lacks without asking
/// the carrier it wraps (which told once, by [`Extractor::holds`], which it
/// has): what a composite propagator hands its members.
pub(crate) struct Presence<'a> {
    inner: &'a dyn Extractor,
    held: u64,
}

impl<'a> Presence<'a> {
    /// `carrier`, asked once which trace headers it holds.
    #[inline]
    pub(crate) fn new(carrier: &'a dyn Extractor) -> Presence<'a> {
        Presence {
            inner: carrier,
            held: carrier.holds(&TRACE_HEADERS),
        }
    }

    /// Whether the carrier holds none of the trace headers in `mask` (a
    /// [`trace_header_mask`]).
    #[inline]
    pub(crate) fn lacks_all(&self, mask: u64) -> bool {
        self.held & mask == 0
    }

    /// The carrier to read: this one, or the wrapped one when it could not say
    /// which headers it holds (then wrapping would only cost).
    #[inline]
    pub(crate) fn carrier(&self) -> &dyn Extractor {
        let all = (1u64 << TRACE_HEADERS.len()) - 1;
        if self.held & all == all {
            self.inner
        } else {
            self
        }
    }
}

/// The bits of `names` in [`TRACE_HEADERS`], if every one of them is a trace
/// header; `None` if one is not.
pub(crate) fn trace_header_mask(names: &[&str]) -> Option<u64> {
    names
        .iter()
        .try_fold(0u64, |mask, name| Some(mask | 1 << known_index(name)?))
}

impl Extractor for Presence<'_> {
    #[inline]
    fn get_all(&self, name: &str) -> HeaderValues<'_> {
        match known_index(name) {
            Some(i) if self.held & (1 << i) == 0 => HeaderValues::new(),
            _ => self.inner.get_all(name),
        }
    }

    fn keys(&self) -> Vec<&str> {
        self.inner.keys()
    }

    fn holds(&self, names: &[&str]) -> u64 {
        self.inner.holds(names)
    }
}

impl Injector for HeaderMap {
    /// Sets the header; a name or value that is not a valid HTTP header is skipped.
    fn set(&mut self, name: &str, value: String) {
        let name = match known_name(name) {
            Some(n) => n.clone(),
            None => match HeaderName::from_bytes(name.as_bytes()) {
                Ok(n) => n,
                Err(_) => return,
            },
        };
        if let Ok(value) = HeaderValue::try_from(value) {
            self.insert(name, value);
        }
    }
}

impl<S: std::hash::BuildHasher> Extractor for HashMap<String, String, S> {
    /// Looks at every key, so that `Traceparent` and `traceparent` both count.
    fn get_all(&self, name: &str) -> HeaderValues<'_> {
        self.iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_bytes())
            .collect()
    }

    fn keys(&self) -> Vec<&str> {
        HashMap::keys(self).map(String::as_str).collect()
    }

    fn holds(&self, names: &[&str]) -> u64 {
        held(names, HashMap::keys(self).map(String::as_str), |a, b| {
            a.eq_ignore_ascii_case(b)
        })
    }
}

impl<S: std::hash::BuildHasher> Injector for HashMap<String, String, S> {
    /// Inserts under `name` as given (lowercase), after removing keys that differ
    /// from it only in case.
    fn set(&mut self, name: &str, value: String) {
        if self
            .keys()
            .any(|k| k != name && k.eq_ignore_ascii_case(name))
        {
            self.retain(|k, _| !k.eq_ignore_ascii_case(name));
        }
        self.insert(name.to_owned(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_map_lookup_ignores_case_and_keeps_order() {
        let mut h = HeaderMap::new();
        h.append("TraceState", HeaderValue::from_static("a=1"));
        h.append("tracestate", HeaderValue::from_static("b=2"));
        let values = Extractor::get_all(&h, "tracestate");
        assert_eq!(values.len(), 2);
        assert_eq!(values.iter().collect::<Vec<_>>(), [&b"a=1"[..], b"b=2"]);
        assert_eq!(values.single(), None);
        assert_eq!(values.first(), Some(&b"a=1"[..]));
        assert_eq!(Extractor::keys(&h), ["tracestate"]);
    }

    #[test]
    fn header_map_returns_non_ascii_values_as_bytes() {
        let mut h = HeaderMap::new();
        h.insert("b3", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        assert_eq!(Extractor::get_all(&h, "b3").single(), Some(&b"caf\xe9"[..]));
        assert!(Extractor::get_all(&h, "not a header name").is_empty());
    }

    #[test]
    fn known_names_map_to_their_static_header_names() {
        for name in &KNOWN_NAMES {
            assert_eq!(known_name(name.as_str()), Some(name));
        }
        assert_eq!(known_name("x-other"), None);
    }

    #[test]
    fn header_map_set_replaces_and_skips_invalid_values() {
        let mut h = HeaderMap::new();
        h.append("traceparent", HeaderValue::from_static("x"));
        h.append("traceparent", HeaderValue::from_static("y"));
        Injector::set(&mut h, "traceparent", "z".into());
        assert_eq!(h.get_all("traceparent").iter().count(), 1);
        assert_eq!(h["traceparent"], "z");
        Injector::set(&mut h, "x-custom", "v".into());
        assert_eq!(h["x-custom"], "v");
        Injector::set(&mut h, "x-bad", "a\nb".into());
        Injector::set(&mut h, "bad name", "v".into());
        assert!(h.get("x-bad").is_none());
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn hash_map_lookup_ignores_case_and_set_replaces_other_cases() {
        let mut m: HashMap<String, String> = HashMap::new();
        m.insert("TraceParent".into(), "x".into());
        assert_eq!(
            Extractor::get_all(&m, "traceparent").single(),
            Some(&b"x"[..])
        );
        m.insert("traceparent".into(), "y".into());
        assert_eq!(Extractor::get_all(&m, "traceparent").len(), 2);
        Injector::set(&mut m, "traceparent", "z".into());
        assert_eq!(m.len(), 1);
        assert_eq!(m["traceparent"], "z");
    }

    #[test]
    fn holds_says_which_names_a_carrier_has() {
        let names = ["traceparent", "b3", "baggage"];
        let mut h = HeaderMap::new();
        assert_eq!(Extractor::holds(&h, &names), 0);
        h.insert("b3", HeaderValue::from_static("0"));
        h.insert("host", HeaderValue::from_static("a"));
        assert_eq!(Extractor::holds(&h, &names), 0b010);
        h.append("traceparent", HeaderValue::from_static("x"));
        h.append("traceparent", HeaderValue::from_static("y"));
        assert_eq!(Extractor::holds(&h, &names), 0b011);
        // A hash map's names in any case.
        let m: HashMap<String, String> = [("Baggage".to_owned(), "k=v".to_owned())].into();
        assert_eq!(Extractor::holds(&m, &names), 0b100);
        // More names than bits: all held, the safe answer.
        let many = ["x"; 65];
        assert_eq!(Extractor::holds(&h, &many), u64::MAX);
        // A carrier that cannot tell says it holds everything.
        struct Opaque;
        impl Extractor for Opaque {
            fn get_all(&self, _: &str) -> HeaderValues<'_> {
                HeaderValues::new()
            }
            fn keys(&self) -> Vec<&str> {
                Vec::new()
            }
        }
        assert_eq!(Opaque.holds(&names), u64::MAX);
        assert!(!Presence::new(&Opaque).lacks_all(1));
        assert_eq!(trace_header_mask(&["b3", "traceparent"]), Some(0b1001));
        assert_eq!(trace_header_mask(&["b3", "x-custom"]), None);
        // The table of trace headers and the index agree.
        for (i, name) in TRACE_HEADERS.iter().enumerate() {
            assert_eq!(known_index(name), Some(i));
            assert_eq!(KNOWN_NAMES[i].as_str(), *name);
        }
    }
}
