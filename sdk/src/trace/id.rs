//! Trace and span identifiers, and the generator that makes them.

use std::cell::Cell;
use std::fmt;

/// A 128-bit W3C trace id. The all-zero value is invalid.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TraceId(u128);

/// A 64-bit W3C span (parent) id. The all-zero value is invalid.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SpanId(u64);

impl TraceId {
    /// The invalid, all-zero trace id.
    pub const INVALID: TraceId = TraceId(0);

    /// A trace id from its 16 big-endian bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        TraceId(u128::from_be_bytes(bytes))
    }
    /// The 16 big-endian bytes of this id.
    pub const fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }
    /// A trace id from its numeric value.
    pub const fn from_u128(v: u128) -> Self {
        TraceId(v)
    }
    /// The numeric value of this id.
    pub const fn to_u128(self) -> u128 {
        self.0
    }
    /// Whether the id is not all zeros.
    pub const fn is_valid(self) -> bool {
        self.0 != 0
    }
    /// Parses exactly 32 lowercase hex digits (W3C rules: uppercase is invalid).
    /// Returns `None` for any other input, including the all-zero id.
    pub fn from_hex(s: &str) -> Option<Self> {
        parse_lower_hex(s.as_bytes(), 32)
            .map(TraceId)
            .filter(|id| id.is_valid())
    }
}

impl SpanId {
    /// The invalid, all-zero span id.
    pub const INVALID: SpanId = SpanId(0);

    /// A span id from its 8 big-endian bytes.
    pub const fn from_bytes(bytes: [u8; 8]) -> Self {
        SpanId(u64::from_be_bytes(bytes))
    }
    /// The 8 big-endian bytes of this id.
    pub const fn to_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }
    /// A span id from its numeric value.
    pub const fn from_u64(v: u64) -> Self {
        SpanId(v)
    }
    /// The numeric value of this id.
    pub const fn to_u64(self) -> u64 {
        self.0
    }
    /// Whether the id is not all zeros.
    pub const fn is_valid(self) -> bool {
        self.0 != 0
    }
    /// Parses exactly 16 lowercase hex digits; `None` otherwise or for the zero id.
    pub fn from_hex(s: &str) -> Option<Self> {
        parse_lower_hex(s.as_bytes(), 16)
            .map(|v| SpanId(v as u64))
            .filter(|id| id.is_valid())
    }
}

/// Parses exactly `len` (at most 32) lowercase hex digits into an integer, with
/// the propagators' codec (measured against the `hex` and `const-hex` crates:
/// BENCHMARKS.md, "Propagation").
fn parse_lower_hex(s: &[u8], len: usize) -> Option<u128> {
    if s.len() != len {
        return None;
    }
    crate::propagation::lower_hex(s)
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}
impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({:032x})", self.0)
    }
}
impl fmt::LowerHex for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.0, f)
    }
}
impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}
impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({:016x})", self.0)
    }
}
impl fmt::LowerHex for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.0, f)
    }
}

thread_local! {
    // wyrand state, seeded once per thread from the OS. 0 means "not seeded yet".
    static RNG: Cell<u64> = const { Cell::new(0) };
}

#[cold]
fn seed() -> u64 {
    let mut buf = [0u8; 8];
    if getrandom::fill(&mut buf).is_err() {
        // No OS randomness: fall back to the address of a stack value and the clock,
        // which still differs between threads and processes.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let local = 0u8;
        return t ^ (&local as *const u8 as u64).rotate_left(32) | 1;
    }
    u64::from_ne_bytes(buf) | 1
}

/// Next random 64-bit value from the calling thread's generator (wyrand):
/// no lock, no syscall after the thread's first call.
#[inline]
pub(crate) fn random_u64() -> u64 {
    RNG.with(|s| {
        let mut state = s.get();
        if state == 0 {
            state = seed();
        }
        state = state.wrapping_add(0xa076_1d64_78bd_642f);
        s.set(state);
        let t = u128::from(state) * u128::from(state ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    })
}

impl TraceId {
    /// A new random, valid trace id. All 128 bits are random, so traces it starts
    /// carry the W3C level-2 `random` flag.
    #[inline]
    pub fn random() -> Self {
        loop {
            let v = (u128::from(random_u64()) << 64) | u128::from(random_u64());
            if v != 0 {
                return TraceId(v);
            }
        }
    }
}

impl SpanId {
    /// A new random, valid span id.
    #[inline]
    pub fn random() -> Self {
        loop {
            let v = random_u64();
            if v != 0 {
                return SpanId(v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn hex_round_trip_is_lowercase_and_fixed_width() {
        let t = TraceId::from_u128(0xab);
        assert_eq!(t.to_string(), "000000000000000000000000000000ab");
        assert_eq!(TraceId::from_hex(&t.to_string()), Some(t));
        let s = SpanId::from_u64(0xcd);
        assert_eq!(s.to_string(), "00000000000000cd");
        assert_eq!(SpanId::from_hex(&s.to_string()), Some(s));
    }

    #[test]
    fn parsing_rejects_uppercase_zero_and_wrong_length() {
        assert_eq!(TraceId::from_hex("0AF7651916CD43DD8448EB211C80319C"), None);
        assert_eq!(TraceId::from_hex(&"0".repeat(32)), None);
        assert_eq!(TraceId::from_hex(&"a".repeat(31)), None);
        assert_eq!(SpanId::from_hex("00f067aa0ba902b"), None);
        assert_eq!(SpanId::from_hex("00f067aa0ba902bz"), None);
        assert_eq!(SpanId::from_hex("0000000000000000"), None);
    }

    #[test]
    fn random_ids_are_valid_and_distinct_across_threads() {
        let ids: Vec<u64> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    (0..10_000)
                        .map(|_| SpanId::random().to_u64())
                        .collect::<Vec<_>>()
                })
            })
            .flat_map(|h| h.join().unwrap())
            .collect();
        assert!(ids.iter().all(|&v| v != 0));
        let unique: HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
        assert!(TraceId::random().is_valid());
    }
}
