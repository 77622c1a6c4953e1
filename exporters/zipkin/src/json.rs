//! Zipkin v2 JSON (`application/json`), written by hand: a span in well under a
//! microsecond, with the field rules of `zipkin2-api.yaml` (absent rather than
//! empty or false).

use std::fmt::Write as _;

use tracewire::Value;

use crate::model::{Endpoint, Tag, ZSpan};

/// Appends `s` as a JSON string literal.
pub(crate) fn string(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if esc.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(esc);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Appends `v` as lowercase hex, `digits` wide.
fn hex(out: &mut String, v: u128, digits: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 32];
    for (i, b) in buf[..digits as usize].iter_mut().enumerate() {
        *b = HEX[((v >> ((digits as usize - 1 - i) * 4)) & 0xf) as usize];
    }
    // The buffer holds ASCII hex digits only.
    out.push_str(std::str::from_utf8(&buf[..digits as usize]).unwrap_or_default());
}

/// Appends a tag value as a JSON string (Zipkin tags are strings).
fn tag(out: &mut String, t: &Tag<'_>) {
    match t {
        Tag::Value(Value::String(s)) => string(out, s),
        Tag::Value(Value::Bool(b)) => out.push_str(if *b { "\"true\"" } else { "\"false\"" }),
        Tag::Value(Value::I64(i)) => {
            let _ = write!(out, "\"{i}\"");
        }
        Tag::Text(t) => string(out, t),
        other => string(out, &other.to_text()),
    }
}

fn endpoint(out: &mut String, key: &str, e: &Endpoint) {
    if e.is_empty() {
        return;
    }
    let _ = write!(out, ",\"{key}\":{{");
    let mut first = true;
    let mut sep = |out: &mut String| {
        if !first {
            out.push(',');
        }
        first = false;
    };
    if let Some(s) = &e.service_name {
        sep(out);
        out.push_str("\"serviceName\":");
        string(out, s);
    }
    if let Some(ip) = e.ip {
        sep(out);
        let k = if ip.is_ipv4() { "ipv4" } else { "ipv6" };
        let _ = write!(out, "\"{k}\":\"{ip}\"");
    }
    if let Some(p) = e.port {
        sep(out);
        let _ = write!(out, "\"port\":{p}");
    }
    out.push('}');
}

/// Appends one span as a JSON object.
pub(crate) fn span(out: &mut String, s: &ZSpan<'_>, local: &Endpoint) {
    out.push_str("{\"traceId\":\"");
    hex(out, s.trace_id, if s.short_trace_id() { 16 } else { 32 });
    out.push_str("\",\"id\":\"");
    hex(out, u128::from(s.id), 16);
    out.push('"');
    if let Some(p) = s.parent_id {
        out.push_str(",\"parentId\":\"");
        hex(out, u128::from(p), 16);
        out.push('"');
    }
    if let Some(k) = s.kind {
        let _ = write!(out, ",\"kind\":\"{k}\"");
    }
    if !s.name.is_empty() {
        out.push_str(",\"name\":");
        string(out, s.name);
    }
    let _ = write!(
        out,
        ",\"timestamp\":{},\"duration\":{}",
        s.timestamp_us, s.duration_us
    );
    endpoint(out, "localEndpoint", local);
    endpoint(out, "remoteEndpoint", &s.remote);
    if !s.annotations.is_empty() {
        out.push_str(",\"annotations\":[");
        for (i, (ts, value)) in s.annotations.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{{\"timestamp\":{ts},\"value\":");
            string(out, value);
            out.push('}');
        }
        out.push(']');
    }
    if !s.tags.is_empty() {
        out.push_str(",\"tags\":{");
        for (i, (k, v)) in s.tags.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            string(out, k);
            out.push(':');
            tag(out, v);
        }
        out.push('}');
    }
    if s.debug {
        out.push_str(",\"debug\":true");
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_escape_quotes_backslashes_and_control_characters() {
        let mut out = String::new();
        string(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(out, r#""a\"b\\c\nd\u0001é""#);
        let v: String = serde_json::from_str(&out).unwrap();
        assert_eq!(v, "a\"b\\c\nd\u{1}é");
    }
}
