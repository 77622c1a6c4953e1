//! Attribute keys and values.

use std::borrow::Cow;
use std::fmt;

/// A string that is either `'static` (free to copy) or owned.
pub type Str = Cow<'static, str>;

/// An attribute value: string, bool, i64, f64, or a homogeneous array of those.
#[derive(Clone, PartialEq)]
pub enum Value {
    /// A string.
    String(Str),
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    I64(i64),
    /// A float.
    F64(f64),
    /// An array of values of one type.
    Array(Array),
}

/// A homogeneous array attribute value.
#[derive(Clone, PartialEq, Debug)]
pub enum Array {
    /// Strings.
    String(Vec<Str>),
    /// Booleans.
    Bool(Vec<bool>),
    /// Signed integers.
    I64(Vec<i64>),
    /// Floats.
    F64(Vec<f64>),
}

/// A key/value attribute.
#[derive(Clone, PartialEq, Debug)]
pub struct KeyValue {
    /// The key.
    pub key: Str,
    /// The value.
    pub value: Value,
}

impl KeyValue {
    /// A key/value pair.
    pub fn new(key: impl Into<Str>, value: impl Into<Value>) -> Self {
        KeyValue {
            key: key.into(),
            value: value.into(),
        }
    }
}

impl Value {
    /// The string, if this is a string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// Truncates string values (and strings in arrays) to at most `max` bytes, on a
    /// UTF-8 character boundary. Returns whether anything was cut.
    #[inline]
    pub(crate) fn truncate(&mut self, max: usize) -> bool {
        match self {
            Value::String(s) if s.len() <= max => false,
            Value::String(s) => truncate_str(s, max),
            Value::Array(Array::String(v)) => {
                let mut cut = false;
                for s in v {
                    cut |= truncate_str(s, max);
                }
                cut
            }
            _ => false,
        }
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary. Returns whether it cut.
pub(crate) fn truncate_str(s: &mut Str, max: usize) -> bool {
    if s.len() <= max {
        return false;
    }
    let end = floor_char_boundary(s, max);
    match s {
        Cow::Borrowed(b) => *b = &b[..end],
        Cow::Owned(o) => o.truncate(end),
    }
    true
}

/// The largest index `<= max` that is a char boundary of `s`.
pub(crate) fn floor_char_boundary(s: &str, max: usize) -> usize {
    if max >= s.len() {
        return s.len();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    end
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::String(s) => fmt::Debug::fmt(s, f),
            Value::Bool(b) => fmt::Debug::fmt(b, f),
            Value::I64(i) => fmt::Debug::fmt(i, f),
            Value::F64(x) => fmt::Debug::fmt(x, f),
            Value::Array(a) => fmt::Debug::fmt(a, f),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn list<T: fmt::Display>(f: &mut fmt::Formatter<'_>, v: &[T]) -> fmt::Result {
            f.write_str("[")?;
            for (i, x) in v.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                x.fmt(f)?;
            }
            f.write_str("]")
        }
        match self {
            Value::String(s) => f.write_str(s),
            Value::Bool(b) => b.fmt(f),
            Value::I64(i) => i.fmt(f),
            Value::F64(x) => x.fmt(f),
            Value::Array(Array::String(v)) => list(f, v),
            Value::Array(Array::Bool(v)) => list(f, v),
            Value::Array(Array::I64(v)) => list(f, v),
            Value::Array(Array::F64(v)) => list(f, v),
        }
    }
}

impl From<&'static str> for Value {
    fn from(s: &'static str) -> Self {
        Value::String(Cow::Borrowed(s))
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(Cow::Owned(s))
    }
}
impl From<Str> for Value {
    fn from(s: Str) -> Self {
        Value::String(s)
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}
impl From<f64> for Value {
    fn from(x: f64) -> Self {
        Value::F64(x)
    }
}
macro_rules! int_value {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(i: $t) -> Self {
                Value::I64(i as i64)
            }
        }
    )*};
}
int_value!(i8, i16, i32, i64, u8, u16, u32, isize);
impl From<u64> for Value {
    /// Values above `i64::MAX` saturate.
    fn from(i: u64) -> Self {
        Value::I64(i64::try_from(i).unwrap_or(i64::MAX))
    }
}
impl From<Array> for Value {
    fn from(a: Array) -> Self {
        Value::Array(a)
    }
}
impl From<Vec<Str>> for Value {
    fn from(v: Vec<Str>) -> Self {
        Value::Array(Array::String(v))
    }
}
impl From<Vec<&'static str>> for Value {
    fn from(v: Vec<&'static str>) -> Self {
        Value::Array(Array::String(v.into_iter().map(Cow::Borrowed).collect()))
    }
}
impl From<Vec<bool>> for Value {
    fn from(v: Vec<bool>) -> Self {
        Value::Array(Array::Bool(v))
    }
}
impl From<Vec<i64>> for Value {
    fn from(v: Vec<i64>) -> Self {
        Value::Array(Array::I64(v))
    }
}
impl From<Vec<f64>> for Value {
    fn from(v: Vec<f64>) -> Self {
        Value::Array(Array::F64(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_respects_utf8_boundaries() {
        let mut v = Value::from(String::from("héllo"));
        assert!(v.truncate(2));
        assert_eq!(v.as_str(), Some("h"));
        let mut a = Value::from(vec!["abc", "de"]);
        assert!(a.truncate(2));
        assert_eq!(a, Value::from(vec!["ab", "de"]));
        assert!(!Value::from(5i64).truncate(0));
    }

    #[test]
    fn display_formats_arrays() {
        assert_eq!(Value::from(vec![1i64, 2]).to_string(), "[1,2]");
        assert_eq!(Value::from(u64::MAX), Value::I64(i64::MAX));
    }
}
