//! Query strings and path segments: percent-decoding and the CPU profile
//! parameters. Every error is a message for a `400 Bad Request`.

/// Bounds and defaults the parameters are checked against.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) default_seconds: u64,
    pub(crate) max_seconds: u64,
    pub(crate) default_hz: u32,
}

/// What a `/profile` or `/flamegraph` request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CpuRequest {
    /// How long to profile, within the limits.
    pub(crate) seconds: u64,
    /// Sampling frequency.
    pub(crate) hz: u32,
    /// `(key, value)` pairs every kept sample must carry.
    pub(crate) tagfocus: Vec<(String, String)>,
}

impl CpuRequest {
    /// The request in `params`: `seconds` (the first one given), `hz`, and every
    /// `tagfocus=key:value`. Other parameters are ignored, as Go does.
    pub(crate) fn new(params: &[(String, String)], limits: Limits) -> Result<Self, String> {
        let first = |key: &str| params.iter().find(|(k, _)| k == key).map(|(_, v)| v);
        let seconds = match first("seconds") {
            None => limits.default_seconds,
            Some(v) => match v.trim().parse::<u64>() {
                Ok(s) if s > 0 => s.min(limits.max_seconds),
                _ => {
                    return Err(format!(
                        "bad seconds {v:?}: want a whole number of seconds, 1 or more\n"
                    ))
                }
            },
        };
        let hz = match first("hz") {
            None => limits.default_hz,
            Some(v) => match v.trim().parse::<u32>() {
                Ok(hz) if hz > 0 => hz,
                _ => {
                    return Err(format!(
                        "bad hz {v:?}: want a sampling frequency in Hz, 1 or more\n"
                    ))
                }
            },
        };
        let tagfocus = params
            .iter()
            .filter(|(k, _)| k == "tagfocus")
            .map(|(_, v)| match v.split_once(':') {
                Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
                _ => Err(format!("bad tagfocus {v:?}: want key:value\n")),
            })
            .collect::<Result<_, _>>()?;
        Ok(CpuRequest {
            seconds,
            hz,
            tagfocus,
        })
    }
}

/// The `key=value` pairs of a query string, percent-decoded (`+` is a space).
pub(crate) fn parse(query: Option<&str>) -> Result<Vec<(String, String)>, String> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match (decode(k, true), decode(v, true)) {
                (Some(k), Some(v)) => Ok((k, v)),
                _ => Err(format!(
                    "bad query parameter {pair:?}: invalid percent-encoding\n"
                )),
            }
        })
        .collect()
}

/// A percent-decoded path segment (the segment itself if it does not decode).
pub(crate) fn decode_path(segment: &str) -> String {
    decode(segment, false).unwrap_or_else(|| segment.to_owned())
}

/// Percent-decodes `s`; `None` on a bad escape or bytes that are not UTF-8.
fn decode(s: &str, plus_is_space: bool) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let hi = hex(bytes.next()?)?;
                let lo = hex(bytes.next()?)?;
                out.push(hi << 4 | lo);
            }
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

fn hex(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).map(|d| d as u8)
}

/// `s` with every byte outside the URL-unreserved set percent-encoded.
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        default_seconds: 30,
        max_seconds: 60,
        default_hz: 100,
    };

    fn request(query: &str) -> Result<CpuRequest, String> {
        CpuRequest::new(&parse(Some(query))?, LIMITS)
    }

    #[test]
    fn defaults_apply_when_the_query_is_empty() {
        assert_eq!(
            request(""),
            Ok(CpuRequest {
                seconds: 30,
                hz: 100,
                tagfocus: vec![]
            })
        );
    }

    #[test]
    fn seconds_above_the_maximum_are_capped() {
        assert_eq!(request("seconds=3600").map(|r| r.seconds), Ok(60));
    }

    #[test]
    fn bad_numbers_are_rejected() {
        for q in [
            "seconds=abc",
            "seconds=0",
            "seconds=-1",
            "seconds=1.5",
            "seconds=",
            "hz=0",
            "hz=x",
            "seconds=99999999999999999999999",
        ] {
            assert!(request(q).is_err(), "{q}");
        }
    }

    #[test]
    fn every_tagfocus_is_kept_and_decoded() {
        assert_eq!(
            request("tagfocus=http-path%3A%2Fmessages&tagfocus=worker:purge&seconds=2&hz=250"),
            Ok(CpuRequest {
                seconds: 2,
                hz: 250,
                tagfocus: vec![
                    ("http-path".to_owned(), "/messages".to_owned()),
                    ("worker".to_owned(), "purge".to_owned())
                ]
            })
        );
    }

    #[test]
    fn tagfocus_without_key_is_rejected() {
        assert!(request("tagfocus=purge").is_err());
        assert!(request("tagfocus=:purge").is_err());
        assert_eq!(
            request("tagfocus=k:a:b").map(|r| r.tagfocus),
            Ok(vec![("k".to_owned(), "a:b".to_owned())])
        );
    }

    #[test]
    fn bad_percent_encoding_is_an_error_not_a_panic() {
        for q in ["a=%", "a=%4", "a=%zz", "a=%ff%fe", "%=1"] {
            assert!(parse(Some(q)).is_err(), "{q}");
        }
        assert_eq!(
            parse(Some("a+b=c+d&flag")),
            Ok(vec![
                ("a b".to_owned(), "c d".to_owned()),
                ("flag".to_owned(), String::new())
            ])
        );
    }

    #[test]
    fn encode_and_decode_round_trip() {
        for s in ["blobstore.Open", "a b/c?d&e", "naïve", "100%"] {
            assert_eq!(decode_path(&encode(s)), s);
        }
        assert_eq!(encode("blobstore.Open"), "blobstore.Open");
    }
}
