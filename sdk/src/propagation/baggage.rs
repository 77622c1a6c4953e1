//! W3C Baggage: application key/value pairs that travel with a request in the
//! `baggage` header.
//!
//! [`Baggage`] lives in the [`Context`]; read and set it with [`BaggageExt`] and
//! [`current`], and move it across processes with [`BaggagePropagator`].
//!
//! ```
//! use tracewire::propagation::baggage::{self, Baggage, BaggageExt};
//! use tracewire::Context;
//!
//! let mut b = Baggage::new();
//! b.insert("userId", "alice").unwrap();
//! b.insert("serverNode", "DF 28").unwrap();
//! let _guard = Context::new().with_baggage(b).attach();
//! assert_eq!(baggage::current().get("userId"), Some("alice"));
//! assert_eq!(baggage::current().header(), "userId=alice,serverNode=DF%2028");
//! ```

use std::fmt;

use crate::context::Context;

use super::{trim_ows, Extractor, Injector, Propagator};

const BAGGAGE: &str = "baggage";
const FIELDS: [&str; 1] = [BAGGAGE];

/// An immutable-in-the-context, ordered set of baggage entries with unique keys.
///
/// Limits follow the W3C spec's minimums, which are also what is propagated: at
/// most [`MAX_MEMBERS`](Baggage::MAX_MEMBERS) entries, and a `baggage` header of at
/// most [`MAX_BYTES`](Baggage::MAX_BYTES) bytes (entries that do not fit are left
/// out whole, never cut).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Baggage {
    entries: Vec<BaggageEntry>,
}

/// One baggage entry: a key, its (decoded) value and its opaque metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaggageEntry {
    key: String,
    value: String,
    metadata: String,
}

impl BaggageEntry {
    /// The key (an HTTP token).
    pub fn key(&self) -> &str {
        &self.key
    }
    /// The value, percent-decoded.
    pub fn value(&self) -> &str {
        &self.value
    }
    /// The properties after the value (`prop1;prop2=v`), without the leading `;`;
    /// empty if none. Opaque to this crate.
    pub fn metadata(&self) -> &str {
        &self.metadata
    }
}

/// Why a baggage entry was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaggageError {
    /// The key is not an HTTP token (RFC 9110 `token`).
    InvalidKey,
    /// The metadata is not a `;`-separated list of `key` or `key=value` properties.
    InvalidMetadata,
    /// The baggage already holds [`Baggage::MAX_MEMBERS`] entries.
    TooManyMembers,
}

impl fmt::Display for BaggageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BaggageError::InvalidKey => "invalid baggage key",
            BaggageError::InvalidMetadata => "invalid baggage metadata",
            BaggageError::TooManyMembers => "more than 64 baggage entries",
        })
    }
}

impl std::error::Error for BaggageError {}

static EMPTY: Baggage = Baggage::new();

impl Baggage {
    /// The most entries a baggage holds and propagates.
    pub const MAX_MEMBERS: usize = 64;
    /// The longest `baggage` header read or written.
    pub const MAX_BYTES: usize = 8192;

    /// The empty baggage.
    pub const fn new() -> Self {
        Baggage {
            entries: Vec::new(),
        }
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The value for `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entry(key).map(BaggageEntry::value)
    }

    /// The entry for `key`, if present.
    pub fn entry(&self, key: &str) -> Option<&BaggageEntry> {
        self.entries.iter().find(|e| e.key == key)
    }

    /// The entries in order.
    pub fn iter(&self) -> impl Iterator<Item = &BaggageEntry> {
        self.entries.iter()
    }

    /// Sets `key` to `value` (any string: it is percent-encoded on the wire). An
    /// existing entry keeps its position.
    pub fn insert(
        &mut self,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<(), BaggageError> {
        self.insert_with_metadata(key, value, String::new())
    }

    /// Sets `key` to `value` with `metadata`: properties such as `p1;p2=v`, written
    /// after the value as `key=value;p1;p2=v`.
    pub fn insert_with_metadata(
        &mut self,
        key: impl Into<String>,
        value: impl Into<String>,
        metadata: impl Into<String>,
    ) -> Result<(), BaggageError> {
        let key = key.into();
        if !is_token(key.as_bytes()) {
            return Err(BaggageError::InvalidKey);
        }
        let metadata = match parse_properties(metadata.into().as_bytes()) {
            Some(m) => m,
            None => return Err(BaggageError::InvalidMetadata),
        };
        self.put(BaggageEntry {
            key,
            value: value.into(),
            metadata,
        })
    }

    fn put(&mut self, entry: BaggageEntry) -> Result<(), BaggageError> {
        if let Some(e) = self.entries.iter_mut().find(|e| e.key == entry.key) {
            *e = entry;
        } else if self.entries.len() >= Self::MAX_MEMBERS {
            return Err(BaggageError::TooManyMembers);
        } else {
            self.entries.push(entry);
        }
        Ok(())
    }

    /// Removes `key`; returns its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let i = self.entries.iter().position(|e| e.key == key)?;
        Some(self.entries.remove(i).value)
    }

    /// Parses `baggage` header values, combined in order, leniently:
    /// - surrounding whitespace of keys, values and properties is trimmed, empty
    ///   list members are skipped;
    /// - values are percent-decoded (a `%` not followed by two hex digits stays as
    ///   is; bytes that do not decode to UTF-8 become U+FFFD);
    /// - a member that does not follow the grammar (no `=`, a key that is not a
    ///   token, a value or property with a character outside `baggage-octet`, non-
    ///   ASCII bytes) is dropped, and the others are kept;
    /// - on a repeated key the last value wins;
    /// - members past the 64th, and members that end past byte 8192 of the
    ///   combined value, are dropped whole.
    pub fn from_headers<'a, I>(values: I) -> Baggage
    where
        I: IntoIterator<Item = &'a [u8]>,
    {
        let mut baggage = Baggage::new();
        let mut offset = 0usize;
        'values: for (i, value) in values.into_iter().enumerate() {
            // Header fields are combined with `,`.
            offset += usize::from(i > 0);
            for member in value.split(|&c| c == b',') {
                offset += member.len();
                if offset > Self::MAX_BYTES || baggage.len() >= Self::MAX_MEMBERS {
                    break 'values;
                }
                offset += 1;
                if let Some(entry) = parse_member(member) {
                    // Cannot fail: the key is new only while below the member limit.
                    let _ = baggage.put(entry);
                }
            }
            offset -= 1;
        }
        baggage
    }

    /// The `baggage` header value: entries in order, values percent-encoded,
    /// leaving out whole entries that would make it longer than
    /// [`MAX_BYTES`](Baggage::MAX_BYTES). Empty for empty baggage.
    pub fn header(&self) -> String {
        let mut out = String::new();
        let mut member = String::new();
        for e in &self.entries {
            member.clear();
            member.push_str(&e.key);
            member.push('=');
            percent_encode(&e.value, &mut member);
            if !e.metadata.is_empty() {
                member.push(';');
                member.push_str(&e.metadata);
            }
            let sep = usize::from(!out.is_empty());
            if out.len() + sep + member.len() > Self::MAX_BYTES {
                continue;
            }
            if sep == 1 {
                out.push(',');
            }
            out.push_str(&member);
        }
        out
    }
}

impl fmt::Debug for Baggage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.entries.iter().map(|e| (&e.key, &e.value)))
            .finish()
    }
}

/// Reads and sets the [`Baggage`] of a [`Context`].
pub trait BaggageExt {
    /// A context like this one whose baggage is `baggage`.
    fn with_baggage(&self, baggage: Baggage) -> Context;
    /// The baggage of this context (empty if none).
    fn baggage(&self) -> &Baggage;
}

impl BaggageExt for Context {
    fn with_baggage(&self, baggage: Baggage) -> Context {
        self.with_value(baggage)
    }

    fn baggage(&self) -> &Baggage {
        self.get::<Baggage>().unwrap_or(&EMPTY)
    }
}

/// The baggage of the calling thread's current context.
pub fn current() -> Baggage {
    Context::map_current(|cx| cx.baggage().clone())
}

/// The W3C Baggage format: the `baggage` header.
///
/// Extraction replaces the context's baggage with the header's entries (see
/// [`Baggage::from_headers`] for what is kept); a missing header, or one with no
/// valid entry, leaves the context as it is. Injection writes [`Baggage::header`],
/// or nothing for empty baggage.
#[derive(Clone, Copy, Debug, Default)]
pub struct BaggagePropagator {
    _private: (),
}

impl BaggagePropagator {
    /// The W3C Baggage propagator.
    pub const fn new() -> Self {
        BaggagePropagator { _private: () }
    }
}

impl Propagator for BaggagePropagator {
    fn extract(&self, cx: &Context, carrier: &dyn Extractor) -> Context {
        let values = carrier.get_all(BAGGAGE);
        if values.is_empty() {
            return cx.clone();
        }
        let baggage = Baggage::from_headers(values.iter());
        if baggage.is_empty() {
            cx.clone()
        } else {
            cx.with_baggage(baggage)
        }
    }

    fn inject(&self, cx: &Context, carrier: &mut dyn Injector) {
        let baggage = cx.baggage();
        if baggage.is_empty() {
            return;
        }
        let header = baggage.header();
        if !header.is_empty() {
            carrier.set(BAGGAGE, header);
        }
    }

    fn fields(&self) -> &[&'static str] {
        &FIELDS
    }
}

/// RFC 9110 `tchar`.
fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&c| is_tchar(c))
}

/// `baggage-octet`: ASCII except controls, whitespace, `"`, `,`, `;` and `\`.
fn is_baggage_octet(c: u8) -> bool {
    matches!(c, 0x21 | 0x23..=0x2b | 0x2d..=0x3a | 0x3c..=0x5b | 0x5d..=0x7e)
}

/// `list-member = key OWS "=" OWS value *( OWS ";" OWS property )`.
fn parse_member(member: &[u8]) -> Option<BaggageEntry> {
    let (kv, props) = match member.iter().position(|&c| c == b';') {
        Some(i) => (&member[..i], &member[i + 1..]),
        None => (member, &[][..]),
    };
    let eq = kv.iter().position(|&c| c == b'=')?;
    let key = trim_ows(&kv[..eq]);
    let value = trim_ows(&kv[eq + 1..]);
    if !is_token(key) || !value.iter().all(|&c| is_baggage_octet(c)) {
        return None;
    }
    let metadata = parse_properties(props)?;
    Some(BaggageEntry {
        key: String::from_utf8_lossy(key).into_owned(),
        value: percent_decode(value),
        metadata,
    })
}

/// Parses `;`-separated properties (`key` or `key OWS "=" OWS value`) into their
/// normalized form (trimmed, joined with `;`). Empty properties are skipped.
fn parse_properties(props: &[u8]) -> Option<String> {
    let mut out = String::new();
    for prop in props.split(|&c| c == b';') {
        let prop = trim_ows(prop);
        if prop.is_empty() {
            continue;
        }
        let (key, value) = match prop.iter().position(|&c| c == b'=') {
            Some(i) => (trim_ows(&prop[..i]), Some(trim_ows(&prop[i + 1..]))),
            None => (prop, None),
        };
        if !is_token(key) {
            return None;
        }
        if !out.is_empty() {
            out.push(';');
        }
        // Tokens and baggage-octets are ASCII.
        out.extend(key.iter().map(|&c| char::from(c)));
        if let Some(value) = value {
            if !value.iter().all(|&c| is_baggage_octet(c)) {
                return None;
            }
            out.push('=');
            out.extend(value.iter().map(|&c| char::from(c)));
        }
    }
    Some(out)
}

/// Percent-decodes `v`; a `%` not followed by two hex digits stays as it is,
/// and bytes that are not UTF-8 become U+FFFD.
fn percent_decode(v: &[u8]) -> String {
    percent_encoding::percent_decode(v)
        .decode_utf8_lossy()
        .into_owned()
}

/// Every byte outside `baggage-octet`, and `%`: what a value's encoding escapes
/// (non-ASCII bytes are always escaped).
const NOT_BAGGAGE_OCTET: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b',')
    .add(b';')
    .add(b'\\')
    .add(b'%');

/// Appends `v` with every byte outside `baggage-octet`, and `%`, percent-encoded.
fn percent_encode(v: &str, out: &mut String) {
    out.extend(percent_encoding::utf8_percent_encode(v, NOT_BAGGAGE_OCTET));
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    fn parse(values: &[&str]) -> Baggage {
        Baggage::from_headers(values.iter().map(|v| v.as_bytes()))
    }

    fn pairs(b: &Baggage) -> Vec<(&str, &str, &str)> {
        b.iter()
            .map(|e| (e.key(), e.value(), e.metadata()))
            .collect()
    }

    #[test]
    fn spec_example_with_properties_and_whitespace() {
        let b = parse(&[
            "key1=value1;property1;property2, key2 = value2, key3=value3; propertyKey=propertyValue",
        ]);
        assert_eq!(
            pairs(&b),
            [
                ("key1", "value1", "property1;property2"),
                ("key2", "value2", ""),
                ("key3", "value3", "propertyKey=propertyValue"),
            ]
        );
    }

    #[test]
    fn spec_examples_single_split_and_spaced_headers_agree() {
        let single = parse(&["userId=alice,serverNode=DF%2028,isProduction=false"]);
        let split = parse(&["userId=alice", "serverNode=DF%2028,isProduction=false"]);
        let spaced = parse(&[
            "userId =   alice",
            "serverNode = DF%2028, isProduction = false",
        ]);
        assert_eq!(single.get("serverNode"), Some("DF 28"));
        assert_eq!(single.len(), 3);
        assert_eq!(single, split);
        assert_eq!(single, spaced);
    }

    #[test]
    fn value_may_contain_equal_signs() {
        assert_eq!(parse(&["k=a=b=="]).get("k"), Some("a=b=="));
    }

    #[test]
    fn invalid_members_are_dropped_and_the_rest_kept() {
        for bad in [
            "novalue",
            "=v",
            "k y=v",
            "k=a b",
            "k=\"quoted\"",
            "k=back\\slash",
            "k=v;bad prop",
            "k=v;p=a b",
            "k=caf\u{e9}",
            "k\u{e9}=v",
            "k=v;=x",
        ] {
            let b = parse(&[&format!("ok=1,{bad},also=2")]);
            assert_eq!(pairs(&b), [("ok", "1", ""), ("also", "2", "")], "{bad:?}");
        }
    }

    #[test]
    fn empty_members_and_empty_values_are_allowed() {
        let b = parse(&[",, a=,", " ", "b=1"]);
        assert_eq!(pairs(&b), [("a", "", ""), ("b", "1", "")]);
    }

    #[test]
    fn exactly_the_bytes_outside_baggage_octet_and_percent_are_escaped() {
        for c in 0u8..0x80 {
            let mut out = String::new();
            percent_encode(char::from(c).encode_utf8(&mut [0; 4]), &mut out);
            let escaped = out != char::from(c).to_string();
            assert_eq!(escaped, !is_baggage_octet(c) || c == b'%', "{c:#04x}");
        }
        let mut out = String::new();
        percent_encode("é ✓%", &mut out);
        assert_eq!(
            out, "%C3%A9%20%E2%9C%93%25",
            "non-ASCII as UTF-8, uppercase hex"
        );
    }

    #[test]
    fn percent_decoding_replaces_invalid_utf8_and_keeps_stray_percent() {
        let b = parse(&["a=%E2%9C%93,b=%FF,c=50%,d=%zz,e=%c3%A9"]);
        assert_eq!(b.get("a"), Some("\u{2713}"));
        assert_eq!(b.get("b"), Some("\u{fffd}"));
        assert_eq!(b.get("c"), Some("50%"));
        assert_eq!(b.get("d"), Some("%zz"));
        assert_eq!(b.get("e"), Some("\u{e9}"));
    }

    #[test]
    fn repeated_key_keeps_first_position_and_last_value() {
        let b = parse(&["a=1,b=2,a=3"]);
        assert_eq!(pairs(&b), [("a", "3", ""), ("b", "2", "")]);
    }

    #[test]
    fn more_than_64_members_are_dropped() {
        let members: Vec<String> = (0..70).map(|i| format!("k{i}=v")).collect();
        let b = parse(&[&members.join(",")]);
        assert_eq!(b.len(), 64);
        assert_eq!(b.get("k63"), Some("v"));
        assert_eq!(b.get("k64"), None);
    }

    #[test]
    fn members_past_8192_bytes_are_dropped_whole() {
        let big = "x".repeat(8000);
        let header = format!("a={big},b={}", "y".repeat(300));
        let b = parse(&[&header]);
        assert_eq!(b.len(), 1);
        assert_eq!(b.get("a").map(str::len), Some(8000));
        // The limit counts the `,` that joins header fields.
        let b = parse(&[&format!("a={}", "x".repeat(8190)), "b"]);
        assert_eq!(b.len(), 1);
        let b = parse(&[&format!("a={}", "x".repeat(8188)), "b=1"]);
        assert_eq!(b.len(), 1, "ends at byte 8194");
        let b = parse(&[&format!("a={}", "x".repeat(8186)), "b=1"]);
        assert_eq!(b.len(), 2, "ends at byte 8192");
    }

    #[test]
    fn header_percent_encodes_values_and_keeps_metadata() {
        let mut b = Baggage::new();
        b.insert("serverNode", "DF 28").unwrap();
        b.insert_with_metadata("k", "a,b;c%", " p1 ; p2 = v ")
            .unwrap();
        b.insert("u", "\u{e9}\"\\").unwrap();
        assert_eq!(
            b.header(),
            "serverNode=DF%2028,k=a%2Cb%3Bc%25;p1;p2=v,u=%C3%A9%22%5C"
        );
    }

    #[test]
    fn insert_validates_keys_metadata_and_the_member_limit() {
        let mut b = Baggage::new();
        assert_eq!(b.insert("bad key", "v"), Err(BaggageError::InvalidKey));
        assert_eq!(b.insert("", "v"), Err(BaggageError::InvalidKey));
        assert_eq!(
            b.insert_with_metadata("k", "v", "a b"),
            Err(BaggageError::InvalidMetadata)
        );
        for i in 0..64 {
            b.insert(format!("k{i}"), "v").unwrap();
        }
        assert_eq!(b.insert("one-more", "v"), Err(BaggageError::TooManyMembers));
        b.insert("k0", "replaced").unwrap();
        assert_eq!(b.get("k0"), Some("replaced"));
        assert_eq!(b.remove("k0").as_deref(), Some("replaced"));
        assert_eq!(b.len(), 63);
    }

    #[test]
    fn header_leaves_out_entries_that_do_not_fit() {
        let mut b = Baggage::new();
        b.insert("a", "x".repeat(5000)).unwrap();
        b.insert("b", "y".repeat(5000)).unwrap();
        b.insert("c", "z").unwrap();
        let h = b.header();
        assert!(h.len() <= Baggage::MAX_BYTES);
        assert!(h.starts_with("a=xxx") && h.ends_with(",c=z"));
    }

    #[test]
    fn baggage_is_read_and_set_through_the_context() {
        assert!(current().is_empty());
        let mut b = Baggage::new();
        b.insert("userId", "alice").unwrap();
        let cx = Context::new().with_baggage(b);
        assert_eq!(cx.baggage().get("userId"), Some("alice"));
        assert!(Context::new().baggage().is_empty());
        let _g = cx.attach();
        assert_eq!(current().get("userId"), Some("alice"));
    }

    #[test]
    fn propagator_extracts_into_the_context_and_injects_back() {
        let mut headers = http::HeaderMap::new();
        headers.append("Baggage", "userId=alice".parse().unwrap());
        headers.append("baggage", "serverNode=DF%2028;p".parse().unwrap());
        let p = BaggagePropagator::new();
        let cx = p.extract(&Context::new(), &headers);
        assert_eq!(cx.baggage().get("serverNode"), Some("DF 28"));
        assert!(!cx.has_span());
        let mut out = HashMap::new();
        p.inject(&cx, &mut out);
        assert_eq!(out["baggage"], "userId=alice,serverNode=DF%2028;p");
    }

    #[test]
    fn propagator_leaves_the_context_alone_without_valid_baggage() {
        let p = BaggagePropagator::new();
        let mut existing = Baggage::new();
        existing.insert("keep", "me").unwrap();
        let cx = Context::new().with_baggage(existing);
        let mut headers: HashMap<String, String> = HashMap::new();
        assert_eq!(p.extract(&cx, &headers).baggage().get("keep"), Some("me"));
        headers.insert("baggage".into(), "no equals sign".into());
        assert_eq!(p.extract(&cx, &headers).baggage().get("keep"), Some("me"));
        let mut out = HashMap::new();
        p.inject(&Context::new(), &mut out);
        assert!(out.is_empty());
    }

    fn entries() -> impl Strategy<Value = Vec<(String, String, String)>> {
        proptest::collection::vec(
            (
                "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}",
                proptest::collection::vec(any::<char>(), 0..10).prop_map(String::from_iter),
                proptest::option::of("[a-z]{1,5}(=[!#-+\\--:<-\\[\\]-~]{0,5})?"),
            )
                .prop_map(|(k, v, m)| (k, v, m.unwrap_or_default())),
            // 48 entries of at most 12 + 1 + 120 + 12 bytes fit in 8192.
            0..=48,
        )
    }

    proptest! {
        #[test]
        fn inject_then_extract_round_trips(entries in entries()) {
            let mut b = Baggage::new();
            for (k, v, m) in entries {
                b.insert_with_metadata(k, v, m).unwrap();
            }
            let cx = Context::new().with_baggage(b.clone());
            let mut out = HashMap::new();
            BaggagePropagator::new().inject(&cx, &mut out);
            let back = BaggagePropagator::new().extract(&Context::new(), &out);
            prop_assert_eq!(back.baggage(), &b);
        }

        #[test]
        fn parse_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..200)) {
            let b = Baggage::from_headers([&raw[..], &raw[..]]);
            prop_assert!(b.len() <= Baggage::MAX_MEMBERS);
        }
    }
}
