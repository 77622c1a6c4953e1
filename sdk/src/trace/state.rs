//! `TraceFlags`, `TraceState` and `SpanContext`: what crosses process boundaries.

use std::fmt;
use std::sync::Arc;

use super::id::{SpanId, TraceId};

/// The W3C `trace-flags` byte.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TraceFlags(u8);

impl TraceFlags {
    /// No flag set: not sampled.
    pub const NONE: TraceFlags = TraceFlags(0);
    /// The `sampled` flag (bit 0).
    pub const SAMPLED: TraceFlags = TraceFlags(0x01);
    /// The W3C level-2 `random-trace-id` flag (bit 1): the rightmost 7 bytes of the
    /// trace id are random.
    pub const RANDOM: TraceFlags = TraceFlags(0x02);

    /// Flags from their wire byte (unknown bits are kept as received).
    pub const fn new(bits: u8) -> Self {
        TraceFlags(bits)
    }
    /// The wire byte.
    pub const fn bits(self) -> u8 {
        self.0
    }
    /// Whether the sampled bit is set.
    pub const fn is_sampled(self) -> bool {
        self.0 & 0x01 != 0
    }
    /// Whether the random-trace-id bit is set.
    pub const fn is_random(self) -> bool {
        self.0 & 0x02 != 0
    }
    /// These flags with the sampled bit set to `sampled`.
    pub const fn with_sampled(self, sampled: bool) -> Self {
        if sampled {
            TraceFlags(self.0 | 0x01)
        } else {
            TraceFlags(self.0 & !0x01)
        }
    }
    /// These flags with the random bit set to `random`.
    pub const fn with_random(self, random: bool) -> Self {
        if random {
            TraceFlags(self.0 | 0x02)
        } else {
            TraceFlags(self.0 & !0x02)
        }
    }
}

impl fmt::Debug for TraceFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceFlags({:02x})", self.0)
    }
}

/// Why a `tracestate` key, value or list was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceStateError {
    /// A key does not follow the W3C key grammar.
    InvalidKey,
    /// A value does not follow the W3C value grammar.
    InvalidValue,
    /// A list member has no `=`.
    InvalidMember,
    /// More than 32 list members.
    TooManyMembers,
}

impl fmt::Display for TraceStateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TraceStateError::InvalidKey => "invalid tracestate key",
            TraceStateError::InvalidValue => "invalid tracestate value",
            TraceStateError::InvalidMember => "invalid tracestate list member",
            TraceStateError::TooManyMembers => "more than 32 tracestate list members",
        })
    }
}
impl std::error::Error for TraceStateError {}

/// The W3C `tracestate`: an immutable, ordered list of at most 32 vendor entries.
///
/// Cloning is one reference-count increment (or nothing, for the empty state).
/// "Mutations" return a new `TraceState`; an updated or inserted key moves to the
/// front, as the W3C processing model requires.
///
/// It is stored as its validated header value (`k1=v1,k2=v2`): one allocation.
/// Since neither keys nor values may contain `,` or `=`, entries are found by
/// splitting that string.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TraceState(Option<Arc<str>>);

impl TraceState {
    /// The most list members a `tracestate` may hold.
    pub const MAX_MEMBERS: usize = 32;

    /// The empty trace state.
    pub const NONE: TraceState = TraceState(None);

    fn from_members<'a>(members: impl Iterator<Item = (&'a str, &'a str)>) -> TraceState {
        let mut out = String::new();
        for (k, v) in members {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(k);
            out.push('=');
            out.push_str(v);
        }
        if out.is_empty() {
            TraceState::NONE
        } else {
            TraceState(Some(out.into()))
        }
    }

    /// Whether the list has no member.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// Number of list members.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// The value for `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The members in order, leftmost first.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .as_deref()
            .into_iter()
            .flat_map(|h| h.split(','))
            .filter_map(|m| m.split_once('='))
    }

    /// A new state with `key=value` at the front (replacing an earlier entry for
    /// `key`). If that makes more than 32 members, the rightmost is removed.
    pub fn insert(&self, key: &str, value: &str) -> Result<TraceState, TraceStateError> {
        if !valid_key(key) {
            return Err(TraceStateError::InvalidKey);
        }
        if !valid_value(value) {
            return Err(TraceStateError::InvalidValue);
        }
        let rest = self.iter().filter(|(k, _)| *k != key);
        Ok(Self::from_members(
            std::iter::once((key, value))
                .chain(rest)
                .take(Self::MAX_MEMBERS),
        ))
    }

    /// A new state without `key`.
    pub fn remove(&self, key: &str) -> TraceState {
        Self::from_members(self.iter().filter(|(k, _)| *k != key))
    }

    /// Parses one or more `tracestate` header values, combined in order (several
    /// headers are one list joined with `,`). Empty and whitespace-only members are
    /// skipped. Of members with the same key the first is kept and the others are
    /// discarded (the processing model lets a vendor discard duplicates; the rest
    /// of the list is still inherited). Any invalid member or more than 32 members
    /// (duplicates not counted) makes the whole value invalid.
    pub fn from_headers<'a, I>(values: I) -> Result<TraceState, TraceStateError>
    where
        I: IntoIterator<Item = &'a str>,
    {
        let mut it = values.into_iter();
        match (it.next(), it.next()) {
            (None, _) => Ok(TraceState::NONE),
            (Some(one), None) => Self::parse(&[one]),
            (Some(a), Some(b)) => {
                let all: Vec<&str> = [a, b].into_iter().chain(it).collect();
                Self::parse(&all)
            }
        }
    }

    /// The usual case, one header already in normal form (no empty or padded
    /// members, no repeated key, at most 32 members, every key and value valid),
    /// checked in one pass over its bytes; `None` for anything else, which
    /// [`parse`](Self::parse)'s general path then normalizes or refuses.
    #[inline]
    fn parse_normal(header: &str) -> Option<TraceState> {
        let b = header.as_bytes();
        let mut i = 0;
        let mut n = 0;
        loop {
            let key = i;
            if !matches!(b.get(i), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit()) {
                return None;
            }
            i += span(&b[i..], &KEY_CHAR);
            if i - key > 256 || b.get(i) != Some(&b'=') {
                return None;
            }
            let k = &b[key..i];
            i += 1;
            let value = i;
            i += span(&b[i..], &VALUE_CHAR);
            if i == value || i - value > 256 || b[i - 1] == b' ' {
                return None;
            }
            n += 1;
            if n > Self::MAX_MEMBERS || (n > 1 && has_key(&b[..key], k)) {
                return None;
            }
            match b.get(i) {
                None => break,
                Some(b',') => i += 1,
                Some(_) => return None,
            }
        }
        Some(TraceState(Some(Arc::from(header))))
    }

    fn parse(values: &[&str]) -> Result<TraceState, TraceStateError> {
        if let [only] = values {
            if let Some(state) = Self::parse_normal(only) {
                return Ok(state);
            }
        }
        Self::parse_general(values)
    }

    /// Any headers: normalized (empty members and repeats of a key dropped, the
    /// first kept) or refused.
    fn parse_general(values: &[&str]) -> Result<TraceState, TraceStateError> {
        // Validate first, on the headers as received.
        let members = || {
            values
                .iter()
                .flat_map(|v| v.split(','))
                .map(|m| m.trim_matches(|c| c == ' ' || c == '\t'))
        };
        // Whether the member at `i`, with key `k`, repeats an earlier member's key.
        let repeats = |i: usize, k: &str| {
            members()
                .take(i)
                .filter_map(|m| m.split_once('='))
                .any(|(ek, _)| ek == k)
        };
        let mut n = 0;
        // One header with no empty, padded or repeated member: kept as it is.
        let mut normalized = values.len() == 1;
        for (i, (raw, member)) in values
            .iter()
            .flat_map(|v| v.split(','))
            .zip(members())
            .enumerate()
        {
            if member.is_empty() {
                normalized = false;
                continue;
            }
            normalized &= raw.len() == member.len();
            let (k, v) = member
                .split_once('=')
                .ok_or(TraceStateError::InvalidMember)?;
            if !valid_key(k) {
                return Err(TraceStateError::InvalidKey);
            }
            if !valid_value(v) {
                return Err(TraceStateError::InvalidValue);
            }
            if repeats(i, k) {
                normalized = false;
                continue;
            }
            if n == Self::MAX_MEMBERS {
                return Err(TraceStateError::TooManyMembers);
            }
            n += 1;
        }
        if n == 0 {
            return Ok(TraceState::NONE);
        }
        if let ([only], true) = (values, normalized) {
            // The usual case: one header, already in normal form. One allocation.
            return Ok(TraceState(Some(Arc::from(*only))));
        }
        Ok(Self::from_members(
            members()
                .enumerate()
                .filter_map(|(i, m)| Some((i, m.split_once('=')?)))
                .filter(|&(i, (k, _))| !repeats(i, k))
                .map(|(_, kv)| kv),
        ))
    }

    /// The header value: members joined with `,`.
    pub fn header(&self) -> String {
        self.0.as_deref().unwrap_or("").to_owned()
    }

    /// The header value, borrowed.
    pub fn as_str(&self) -> &str {
        self.0.as_deref().unwrap_or("")
    }
}

impl std::str::FromStr for TraceState {
    type Err = TraceStateError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TraceState::from_headers([s])
    }
}

impl fmt::Debug for TraceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceState({:?})", self.header())
    }
}

/// Whether the members of `list` (in normal form) include key `k`.
fn has_key(list: &[u8], k: &[u8]) -> bool {
    list.split(|&c| c == b',')
        .any(|m| m.len() > k.len() && m[k.len()] == b'=' && m.starts_with(k))
}

/// [`is_keychar`] by table.
static KEY_CHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = is_keychar(c as u8);
        c += 1;
    }
    t
};

/// A tracestate value's `chr`: `SP` or an `nblk-chr` (printable ASCII but `,`
/// and `=`).
static VALUE_CHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = c == b' ' as usize || is_nblk_chr(c as u8);
        c += 1;
    }
    t
};

/// How many of the first bytes of `b` are in `table`.
#[inline]
fn span(b: &[u8], table: &[bool; 256]) -> usize {
    b.iter()
        .position(|&c| !table[usize::from(c)])
        .unwrap_or(b.len())
}

const fn is_nblk_chr(c: u8) -> bool {
    matches!(c, 0x21..=0x2b | 0x2d..=0x3c | 0x3e..=0x7e)
}

const fn is_keychar(c: u8) -> bool {
    matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'*' | b'/' | b'@')
}

/// W3C key: `(lcalpha / DIGIT) 0*255(keychar)`, where keychar is lcalpha, DIGIT,
/// `_`, `-`, `*`, `/` or `@`: 1 to 256 characters. An `@` may appear anywhere but
/// first, any number of times (`tenant@system` is a convention, not a grammar).
fn valid_key(k: &str) -> bool {
    let b = k.as_bytes();
    matches!(b.first(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && b.len() <= 256
        && b.iter().all(|&c| is_keychar(c))
}

/// W3C value: `0*255(chr) nblk-chr`, chr = SP / nblk-chr; nblk-chr excludes `,` and `=`.
fn valid_value(v: &str) -> bool {
    let b = v.as_bytes();
    let nblk = is_nblk_chr;
    !b.is_empty()
        && b.len() <= 256
        && nblk(b[b.len() - 1])
        && b.iter().all(|&c| c == b' ' || nblk(c))
}

/// A span context's sampling state, in the four states of the B3 specification.
///
/// Two of them are the W3C `sampled` flag ([`TraceFlags::is_sampled`]):
/// [`NotSampled`](Self::NotSampled) and [`Sampled`](Self::Sampled). The other two
/// refine it, and no W3C flag carries them (the `traceparent` written for them
/// has the flag they imply):
/// - [`Deferred`](Self::Deferred): the caller sent trace ids but no decision
///   (B3 ids without `X-B3-Sampled`); the sampled flag is clear. A span started
///   with such a parent stays in the caller's trace and its sampling is decided
///   by the local sampler ([`ParentBased`](super::ParentBased) asks its root
///   sampler, as for a new trace).
/// - [`Debug`](Self::Debug): B3's "force trace" (`b3: ...-d`, `X-B3-Flags: 1`); the
///   sampled flag is set. Every span started under it is sampled whatever the
///   sampler says and is itself `Debug`, so B3 injection passes `d` on and the
///   Zipkin exporter writes `"debug": true`.
///
/// Spans a tracer starts are never `Deferred`: they carry the decision made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SamplingState {
    /// No sampling decision yet: the receiver decides (B3 "defer").
    Deferred,
    /// Not sampled (B3 "deny").
    NotSampled,
    /// Sampled (B3 "accept").
    Sampled,
    /// Sampled and forced (B3 "debug"): implies `Sampled`.
    Debug,
}

/// What [`SamplingState`] adds to the sampled flag (see there).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
enum Refinement {
    /// The sampled flag says it all.
    #[default]
    None,
    /// No decision yet; the sampled flag is clear.
    Deferred,
    /// Forced sampling; the sampled flag is set.
    Debug,
}

/// The part of a span that is propagated: ids, flags and trace state, and the
/// sampling state beyond the sampled flag ([`SamplingState`]).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SpanContext {
    trace_id: TraceId,
    span_id: SpanId,
    flags: TraceFlags,
    is_remote: bool,
    refinement: Refinement,
    state: TraceState,
}

impl SpanContext {
    /// The invalid span context (no trace).
    pub const INVALID: SpanContext = SpanContext {
        trace_id: TraceId::INVALID,
        span_id: SpanId::INVALID,
        flags: TraceFlags::NONE,
        is_remote: false,
        refinement: Refinement::None,
        state: TraceState::NONE,
    };

    /// A span context from its parts. Its sampling state is
    /// [`Sampled`](SamplingState::Sampled) or [`NotSampled`](SamplingState::NotSampled)
    /// as `flags` say; see [`with_sampling_state`](Self::with_sampling_state).
    pub fn new(
        trace_id: TraceId,
        span_id: SpanId,
        flags: TraceFlags,
        is_remote: bool,
        state: TraceState,
    ) -> Self {
        SpanContext {
            trace_id,
            span_id,
            flags,
            is_remote,
            refinement: Refinement::None,
            state,
        }
    }

    /// A remote sampling decision that came without trace ids (B3 `b3: 0`,
    /// `X-B3-Sampled: 0` or `X-B3-Flags: 1` alone).
    ///
    /// It is not [valid](Self::is_valid) and formats with ids inject nothing for
    /// it (B3 writes the decision alone). A span started with it as parent starts
    /// a new trace whose sampling follows the decision: the sampler sees it as a
    /// remote parent ([`ParentBased`](super::ParentBased): not sampled for a deny,
    /// sampled for an accept), and a debug decision forces sampling. `Deferred`
    /// is no decision at all and gives [`SpanContext::INVALID`].
    pub fn sampling_only(decision: SamplingState) -> Self {
        if decision == SamplingState::Deferred {
            return SpanContext::INVALID;
        }
        SpanContext {
            is_remote: true,
            ..SpanContext::INVALID
        }
        .with_sampling_state(decision)
    }

    /// Whether this is a [sampling decision without ids](Self::sampling_only).
    pub fn is_sampling_only(&self) -> bool {
        self.is_remote && !self.is_valid() && self.sampling_state() != SamplingState::Deferred
    }

    /// The sampling state: the sampled flag, refined by the B3 states "deferred"
    /// and "debug".
    pub fn sampling_state(&self) -> SamplingState {
        match (self.refinement, self.flags.is_sampled()) {
            (Refinement::Deferred, _) => SamplingState::Deferred,
            (Refinement::Debug, _) => SamplingState::Debug,
            (Refinement::None, true) => SamplingState::Sampled,
            (Refinement::None, false) => SamplingState::NotSampled,
        }
    }

    /// This context with sampling state `sampling`: the sampled flag is set for
    /// `Sampled` and `Debug`, cleared for `NotSampled` and `Deferred`.
    pub fn with_sampling_state(&self, sampling: SamplingState) -> SpanContext {
        let (refinement, sampled) = match sampling {
            SamplingState::Deferred => (Refinement::Deferred, false),
            SamplingState::NotSampled => (Refinement::None, false),
            SamplingState::Sampled => (Refinement::None, true),
            SamplingState::Debug => (Refinement::Debug, true),
        };
        SpanContext {
            flags: self.flags.with_sampled(sampled),
            refinement,
            ..self.clone()
        }
    }

    /// Whether the sampling state is [`Debug`](SamplingState::Debug).
    pub fn is_debug(&self) -> bool {
        self.refinement == Refinement::Debug
    }
    /// The trace id.
    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }
    /// The span id.
    pub fn span_id(&self) -> SpanId {
        self.span_id
    }
    /// The trace flags.
    pub fn flags(&self) -> TraceFlags {
        self.flags
    }
    /// Whether the sampled flag is set.
    pub fn is_sampled(&self) -> bool {
        self.flags.is_sampled()
    }
    /// Whether this context was received from another process.
    pub fn is_remote(&self) -> bool {
        self.is_remote
    }
    /// The trace state.
    pub fn trace_state(&self) -> &TraceState {
        &self.state
    }
    /// Whether both ids are valid.
    pub fn is_valid(&self) -> bool {
        self.trace_id.is_valid() && self.span_id.is_valid()
    }
    /// This context with another trace state (e.g. after a vendor updated its entry).
    pub fn with_trace_state(&self, state: TraceState) -> SpanContext {
        SpanContext {
            state,
            ..self.clone()
        }
    }
}

impl fmt::Debug for SpanContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpanContext")
            .field("trace_id", &format_args!("{}", self.trace_id))
            .field("span_id", &format_args!("{}", self.span_id))
            .field("flags", &self.flags)
            .field("is_remote", &self.is_remote)
            .field("sampling", &self.sampling_state())
            .field("state", &self.state)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The one-pass path for a header in normal form agrees with the
        /// general one wherever it answers, on headers made of valid and
        /// invalid members, padding, repeats and empty members.
        #[test]
        fn the_fast_path_agrees_with_the_general_one(
            members in proptest::collection::vec(
                (
                    prop_oneof![Just("a"), Just("b"), Just("t@s"), Just("B"), Just(""), Just("k_1-*/")],
                    prop_oneof![Just("1"), Just("x y"), Just(" v"), Just("v "), Just(""), Just("a=b"), Just("~!")],
                    prop_oneof![Just(""), Just(" "), Just("\t")],
                ),
                0..40,
            ),
        ) {
            let header = members
                .iter()
                .map(|(k, v, pad)| format!("{pad}{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            let general = TraceState::parse_general(&[&header]);
            if let Some(fast) = TraceState::parse_normal(&header) {
                prop_assert_eq!(Ok(fast), general.clone());
            }
            prop_assert_eq!(TraceState::from_headers([header.as_str()]), general);
        }
    }

    #[test]
    fn tracestate_parses_members_in_order_across_headers() {
        let ts = TraceState::from_headers(["a=1, b=2", "", " ,c=3 "]).unwrap();
        assert_eq!(ts.header(), "a=1,b=2,c=3");
        assert_eq!(ts.get("b"), Some("2"));
    }

    #[test]
    fn tracestate_rejects_bad_grammar_and_33_members() {
        for bad in [
            "@foo=1",
            "A=1",
            "a=",
            "a",
            "a=b=c",
            "_a=1",
            "a=1 ,b=\t2",
            "a=x\u{7f}",
        ] {
            assert!(TraceState::from_headers([bad]).is_err(), "{bad:?} accepted");
        }
        let ok32: Vec<String> = (0..32).map(|i| format!("k{i}=v")).collect();
        assert_eq!(
            TraceState::from_headers([ok32.join(",").as_str()])
                .unwrap()
                .len(),
            32
        );
        let bad33: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        assert_eq!(
            TraceState::from_headers([bad33.join(",").as_str()]),
            Err(TraceStateError::TooManyMembers)
        );
    }

    #[test]
    fn tracestate_accepts_multi_tenant_keys_and_inner_spaces() {
        let ts: TraceState = "tenant@vendor=  a b,0x=1".parse().unwrap();
        assert_eq!(ts.get("tenant@vendor"), Some("  a b"));
        assert_eq!(ts.get("0x"), Some("1"));
    }

    #[test]
    fn tracestate_insert_moves_key_to_front_and_caps_at_32() {
        let ts: TraceState = "a=1,b=2,c=3".parse().unwrap();
        assert_eq!(ts.insert("b", "9").unwrap().header(), "b=9,a=1,c=3");
        let full: Vec<String> = (0..32).map(|i| format!("k{i}=v")).collect();
        let full: TraceState = full.join(",").parse().unwrap();
        let more = full.insert("new", "x").unwrap();
        assert_eq!(more.len(), 32);
        assert_eq!(more.iter().next(), Some(("new", "x")));
        assert_eq!(more.get("k31"), None, "rightmost member is removed");
        assert_eq!(ts.remove("a").header(), "b=2,c=3");
        assert!(ts.insert("B", "1").is_err());
    }

    #[test]
    fn tracestate_with_a_duplicated_key_keeps_the_inherited_members() {
        // The W3C suite's test_tracestate_duplicated_keys: vendors MAY discard
        // duplicate keys; the rest of the list is kept. The first member wins.
        for (headers, expected) in [
            (&["foo=1,foo=1"][..], "foo=1"),
            (&["foo=1,foo=2"], "foo=1"),
            (&["foo=1", "foo=1"], "foo=1"),
            (&["foo=1", "foo=2"], "foo=1"),
            (&["a=1,foo=1,b=2,foo=3,c=4"], "a=1,foo=1,b=2,c=4"),
        ] {
            let ts = TraceState::from_headers(headers.iter().copied());
            assert_eq!(
                ts.as_ref().map(TraceState::as_str),
                Ok(expected),
                "{headers:?}"
            );
        }
    }

    #[test]
    fn tracestate_keys_may_hold_at_signs_anywhere_but_first() {
        // The W3C suite's test_tracestate_key_illegal_vendor_format, with the
        // current key grammar: key = (lcalpha / DIGIT) 0*255(keychar), keychar
        // includes "@".
        for (header, key) in [
            ("foo@=1,bar=2", "foo@"),
            ("foo@@bar=1,bar=2", "foo@@bar"),
            ("foo@bar@baz=1,bar=2", "foo@bar@baz"),
            ("0@=1,bar=2", "0@"),
        ] {
            let ts: TraceState = header.parse().unwrap_or_else(|e| panic!("{header:?}: {e}"));
            assert_eq!(ts.get(key), Some("1"), "{header:?}");
            assert_eq!(ts.get("bar"), Some("2"), "{header:?}");
        }
        assert!("@foo=1,bar=2".parse::<TraceState>().is_err());
        assert!(TraceState::NONE.insert("a@b@", "1").is_ok());
        assert!(TraceState::NONE.insert("@a", "1").is_err());
    }

    #[test]
    fn tracestate_keys_are_limited_to_256_characters_at_signs_included() {
        // The W3C suite's test_tracestate_key_length_limit.
        let cases = [
            ("z".repeat(256), true),
            ("z".repeat(257), false),
            (format!("{}@{}", "t".repeat(241), "v".repeat(14)), true),
            (format!("{}@v", "t".repeat(242)), true),
            (format!("t@{}", "v".repeat(15)), true),
            (format!("{}@{}", "t".repeat(100), "v".repeat(155)), true),
            (format!("{}@{}", "t".repeat(100), "v".repeat(156)), false),
        ];
        for (key, legal) in cases {
            let ts = TraceState::from_headers(["foo=1", &format!("{key}=1")]);
            match ts {
                Ok(ts) if legal => {
                    assert_eq!(ts.get("foo"), Some("1"), "{} chars", key.len());
                    assert_eq!(ts.get(&key), Some("1"), "{} chars", key.len());
                }
                Err(e) if !legal => assert_eq!(e, TraceStateError::InvalidKey),
                other => panic!("key of {} chars: {other:?}", key.len()),
            }
        }
    }

    #[test]
    fn sampling_state_refines_the_sampled_flag() {
        let sc = SpanContext::new(
            TraceId::from_u128(1),
            SpanId::from_u64(2),
            TraceFlags::RANDOM,
            true,
            TraceState::NONE,
        );
        for (state, sampled) in [
            (SamplingState::Deferred, false),
            (SamplingState::NotSampled, false),
            (SamplingState::Sampled, true),
            (SamplingState::Debug, true),
        ] {
            let with = sc.with_sampling_state(state);
            assert_eq!(with.sampling_state(), state);
            assert_eq!(with.is_sampled(), sampled, "{state:?}");
            assert!(with.flags().is_random(), "other flags are kept");
            assert_eq!(with.is_debug(), state == SamplingState::Debug);
            assert!(with.is_valid() && !with.is_sampling_only());
        }
        assert_eq!(sc.sampling_state(), SamplingState::NotSampled);
        let decided = sc
            .with_sampling_state(SamplingState::Debug)
            .with_sampling_state(SamplingState::Sampled);
        assert_eq!(decided, sc.with_sampling_state(SamplingState::Sampled));
    }

    #[test]
    fn sampling_only_contexts_have_no_ids_and_keep_the_decision() {
        for state in [
            SamplingState::NotSampled,
            SamplingState::Sampled,
            SamplingState::Debug,
        ] {
            let sc = SpanContext::sampling_only(state);
            assert!(!sc.is_valid() && sc.is_remote() && sc.is_sampling_only());
            assert_eq!(sc.sampling_state(), state);
        }
        assert_eq!(
            SpanContext::sampling_only(SamplingState::Deferred),
            SpanContext::INVALID
        );
        assert!(!SpanContext::INVALID.is_sampling_only());
    }

    #[test]
    fn flags_keep_unknown_bits() {
        let f = TraceFlags::new(0xff);
        assert!(f.is_sampled() && f.is_random());
        assert_eq!(f.with_sampled(false).bits(), 0xfe);
    }
}
