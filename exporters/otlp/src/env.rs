//! Configuration from the `OTEL_EXPORTER_OTLP_*` and `OTEL_EXPORTER_OTLP_TRACES_*`
//! variables.

use std::time::Duration;

use tracewire::env::{get, warn_invalid};

use crate::{Compression, Error, OtlpExporter, OtlpExporterBuilder, Protocol};

type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// What the environment said; `build` uses each value the code left unset.
#[derive(Clone, Debug, Default)]
pub(crate) struct EnvConfig {
    pub(crate) protocol: Option<Protocol>,
    pub(crate) endpoint: Option<EnvEndpoint>,
    pub(crate) headers: Option<Vec<(String, String)>>,
    pub(crate) compression: Option<Compression>,
    pub(crate) timeout: Option<Duration>,
}

/// An endpoint from the environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum EnvEndpoint {
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`: used as it is.
    Traces(String),
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: a base URL; OTLP/HTTP appends `v1/traces`.
    Base(String),
}

impl EnvEndpoint {
    /// The URL to send to with `protocol`.
    pub(crate) fn url(&self, protocol: Protocol) -> String {
        match (self, protocol) {
            (EnvEndpoint::Traces(url), _) | (EnvEndpoint::Base(url), Protocol::Grpc) => url.clone(),
            (EnvEndpoint::Base(url), Protocol::HttpProtobuf) => {
                let sep = if url.ends_with('/') { "" } else { "/" };
                format!("{url}{sep}v1/traces")
            }
        }
    }
}

/// Reads the traces form of variable `suffix` (`OTEL_EXPORTER_OTLP_TRACES_{suffix}`),
/// then the generic one (`OTEL_EXPORTER_OTLP_{suffix}`), with `parse`; the first
/// that is set and valid wins, and says whether it was the traces form. A value
/// `parse` rejects is reported (a `HEADERS` value without showing it: it often
/// holds credentials) and the next form, in the end the default, is used.
fn either<T>(
    lookup: Lookup<'_>,
    suffix: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Option<(T, bool)> {
    let generic = format!("OTEL_EXPORTER_OTLP_{suffix}");
    let traces = format!("OTEL_EXPORTER_OTLP_TRACES_{suffix}");
    let fallback = format!("{generic} or the default");
    let found = [(&traces, fallback.as_str()), (&generic, "the default")]
        .into_iter()
        .find_map(|(name, instead)| {
            let value = get(lookup, name)?;
            match parse(&value) {
                Ok(t) => Some((t, name == &traces)),
                Err(why) => {
                    let shown = if suffix == "HEADERS" {
                        "<not shown>"
                    } else {
                        &value
                    };
                    warn_invalid(name, shown, why, instead);
                    None
                }
            }
        });
    found
}

/// `value` as one of `choices` (in any case).
fn one_of<T: Copy>(value: &str, choices: &[(&str, T)]) -> Result<T, String> {
    if let Some((_, t)) = choices.iter().find(|(n, _)| n.eq_ignore_ascii_case(value)) {
        return Ok(*t);
    }
    let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
    Err(format!("expected {}", names.join(" or ")))
}

/// A positive number of milliseconds.
fn millis(value: &str) -> Result<Duration, String> {
    match value.parse::<u64>() {
        Ok(0) => Err("it must be positive".to_owned()),
        Ok(n) => Ok(Duration::from_millis(n)),
        Err(e) => Err(format!("not a number of milliseconds: {e}")),
    }
}

/// Reads every variable with `lookup`.
pub(crate) fn read(lookup: Lookup<'_>) -> EnvConfig {
    let protocols = [
        ("grpc", Protocol::Grpc),
        ("http/protobuf", Protocol::HttpProtobuf),
    ];
    let compressions = [("gzip", Compression::Gzip), ("none", Compression::None)];
    let endpoint = either(lookup, "ENDPOINT", |v| {
        crate::check_url(v).map(|()| v.to_owned())
    });
    EnvConfig {
        protocol: either(lookup, "PROTOCOL", |v| one_of(v, &protocols)).map(|(p, _)| p),
        endpoint: endpoint.map(|(url, traces)| {
            if traces {
                EnvEndpoint::Traces(url)
            } else {
                EnvEndpoint::Base(url)
            }
        }),
        headers: either(lookup, "HEADERS", parse_headers).map(|(h, _)| h),
        compression: either(lookup, "COMPRESSION", |v| one_of(v, &compressions)).map(|(c, _)| c),
        timeout: either(lookup, "TIMEOUT", millis).map(|(t, _)| t),
    }
}

/// `key1=value1,key2=value2`, values percent-decoded (the W3C baggage octet
/// encoding; a `%` not followed by two hex digits stays as it is); a member
/// without `=`, an empty key, an escape that does not decode to UTF-8, or a name
/// or value HTTP does not allow makes the whole value invalid.
pub(crate) fn parse_headers(value: &str) -> Result<Vec<(String, String)>, String> {
    let mut headers = Vec::new();
    for member in value.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        let Some((key, value)) = member.split_once('=') else {
            return Err(format!("member {} has no `=`", headers.len() + 1));
        };
        let key = key.trim();
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|s| s.trim().to_owned())
        };
        let (Ok(key), Ok(value)) = (decode(key), decode(value)) else {
            return Err(format!(
                "member {} is not valid percent-encoded UTF-8",
                headers.len() + 1
            ));
        };
        crate::check_header(&key, &value)?;
        headers.push((key, value));
    }
    Ok(headers)
}

impl OtlpExporter {
    /// An exporter configured by the `OTEL_EXPORTER_OTLP_*` variables; see
    /// [`OtlpExporterBuilder::from_env`].
    pub fn from_env() -> Result<OtlpExporter, Error> {
        OtlpExporter::builder().from_env().build()
    }
}

impl OtlpExporterBuilder {
    /// Takes the protocol, endpoint, headers, compression and timeout from the
    /// OpenTelemetry variables, each `OTEL_EXPORTER_OTLP_TRACES_X` winning over
    /// `OTEL_EXPORTER_OTLP_X`; what the code sets, before or after this call,
    /// wins over both.
    ///
    /// | variable (`OTEL_EXPORTER_OTLP_` or `OTEL_EXPORTER_OTLP_TRACES_`) | value | default |
    /// |---|---|---|
    /// | `PROTOCOL` | `grpc` or `http/protobuf` | `http/protobuf` |
    /// | `ENDPOINT` | an `http://` or `https://` URL. For OTLP/HTTP the generic form is a base URL and gets `v1/traces` appended; the `TRACES_` form is used as it is | `http://localhost:4318/v1/traces` (gRPC: `http://localhost:4317`) |
    /// | `HEADERS` | `key=value,...`, percent-decoded, sent with every request | none |
    /// | `COMPRESSION` | `gzip` or `none` | `none` |
    /// | `TIMEOUT` | milliseconds for one export, retries included | 10000 |
    ///
    /// An invalid value is reported on standard error (`tracewire: ignoring
    /// OTEL_...`, with the value of a `HEADERS` variable not shown, since it
    /// often holds credentials) and ignored: the generic form, or else the
    /// default, is used. Nothing here panics or fails. `http/json`, the
    /// `CERTIFICATE`, `CLIENT_KEY`, `CLIENT_CERTIFICATE` and `INSECURE` variables
    /// are not supported.
    pub fn from_env(self) -> Self {
        self.from_env_with(tracewire::env::system)
    }

    /// Like [`from_env`](Self::from_env), reading each variable with `lookup`.
    ///
    /// ```
    /// use tracewire_otlp::{OtlpExporter, Protocol};
    ///
    /// let env = tracewire::env::lookup_in(&[
    ///     ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
    ///     ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
    ///     ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
    /// ]);
    /// let exporter = OtlpExporter::builder().from_env_with(env).build().unwrap();
    /// assert_eq!(exporter.protocol(), Protocol::HttpProtobuf);
    /// assert_eq!(exporter.endpoint(), "http://collector:4318/v1/traces");
    /// ```
    pub fn from_env_with(mut self, lookup: impl Fn(&str) -> Option<String>) -> Self {
        self.env = read(&lookup);
        self
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tracewire::env::lookup_in as env;

    use super::*;

    fn built(vars: &[(&str, &str)]) -> OtlpExporter {
        OtlpExporter::builder()
            .from_env_with(env(vars))
            .build()
            .unwrap()
    }

    #[test]
    fn each_variable_and_its_traces_form() {
        struct Case {
            vars: &'static [(&'static str, &'static str)],
            protocol: Protocol,
            endpoint: &'static str,
            compression: Compression,
            timeout_ms: u64,
        }
        let cases = [
            Case {
                vars: &[],
                protocol: Protocol::HttpProtobuf,
                endpoint: "http://localhost:4318/v1/traces",
                compression: Compression::None,
                timeout_ms: 10_000,
            },
            Case {
                vars: &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")],
                protocol: Protocol::Grpc,
                endpoint: "http://localhost:4317",
                compression: Compression::None,
                timeout_ms: 10_000,
            },
            Case {
                vars: &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")],
                protocol: Protocol::HttpProtobuf,
                endpoint: "http://c:4318/v1/traces",
                compression: Compression::None,
                timeout_ms: 10_000,
            },
            Case {
                vars: &[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c/otlp/")],
                protocol: Protocol::HttpProtobuf,
                endpoint: "https://c/otlp/v1/traces",
                compression: Compression::None,
                timeout_ms: 10_000,
            },
            Case {
                vars: &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                    ("OTEL_EXPORTER_OTLP_PROTOCOL", "GRPC"),
                ],
                protocol: Protocol::Grpc,
                endpoint: "http://c:4317",
                compression: Compression::None,
                timeout_ms: 10_000,
            },
            Case {
                vars: &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4318"),
                    (
                        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                        "http://traces:9/custom",
                    ),
                ],
                protocol: Protocol::HttpProtobuf,
                endpoint: "http://traces:9/custom",
                compression: Compression::None,
                timeout_ms: 10_000,
            },
            Case {
                vars: &[
                    ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                    ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
                    ("OTEL_EXPORTER_OTLP_COMPRESSION", "none"),
                    ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip"),
                    ("OTEL_EXPORTER_OTLP_TIMEOUT", "3000"),
                    ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "1500"),
                ],
                protocol: Protocol::Grpc,
                endpoint: "http://localhost:4317",
                compression: Compression::Gzip,
                timeout_ms: 1500,
            },
            Case {
                vars: &[
                    ("OTEL_EXPORTER_OTLP_COMPRESSION", "GZIP"),
                    ("OTEL_EXPORTER_OTLP_TIMEOUT", "250"),
                ],
                protocol: Protocol::HttpProtobuf,
                endpoint: "http://localhost:4318/v1/traces",
                compression: Compression::Gzip,
                timeout_ms: 250,
            },
            // Invalid values: reported, then the generic form or the default.
            Case {
                vars: &[
                    ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
                    ("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd"),
                    ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s"),
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
                ],
                protocol: Protocol::HttpProtobuf,
                endpoint: "http://localhost:4318/v1/traces",
                compression: Compression::None,
                timeout_ms: 10_000,
            },
            Case {
                vars: &[
                    ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "thrift"),
                    ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                    ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "0"),
                    ("OTEL_EXPORTER_OTLP_TIMEOUT", "700"),
                    ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "ftp://c/"),
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4317"),
                ],
                protocol: Protocol::Grpc,
                endpoint: "http://generic:4317",
                compression: Compression::None,
                timeout_ms: 700,
            },
            // Empty counts as unset.
            Case {
                vars: &[
                    ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", " "),
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://base"),
                ],
                protocol: Protocol::HttpProtobuf,
                endpoint: "http://base/v1/traces",
                compression: Compression::None,
                timeout_ms: 10_000,
            },
        ];
        for case in cases {
            let e = built(case.vars);
            let what = format!("{:?}", case.vars);
            assert_eq!(e.protocol(), case.protocol, "{what}");
            assert_eq!(e.endpoint(), case.endpoint, "{what}");
            assert_eq!(e.compression(), case.compression, "{what}");
            assert_eq!(
                e.timeout(),
                Duration::from_millis(case.timeout_ms),
                "{what}"
            );
        }
    }

    #[test]
    fn headers_are_percent_decoded_and_the_traces_form_replaces_the_generic_one() {
        let e = built(&[(
            "OTEL_EXPORTER_OTLP_HEADERS",
            "api-key=secret%20value, x-tenant = a%2Cb ,",
        )]);
        assert_eq!(
            e.headers(),
            [("api-key", "secret value"), ("x-tenant", "a,b")]
        );
        let e = built(&[
            ("OTEL_EXPORTER_OTLP_HEADERS", "a=1,b=2"),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "b=3"),
        ]);
        assert_eq!(e.headers(), [("b", "3")]);
    }

    #[test]
    fn malformed_headers_are_ignored_whole() {
        for bad in ["novalue", "=x", "a=%ff", "bad key=1", "a=line\nbreak"] {
            let e = built(&[("OTEL_EXPORTER_OTLP_HEADERS", bad)]);
            assert!(e.headers().is_empty(), "{bad:?}: {:?}", e.headers());
        }
        // A malformed traces form falls back to the generic one.
        let e = built(&[
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "oops"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "a=1"),
        ]);
        assert_eq!(e.headers(), [("a", "1")]);
    }

    #[test]
    fn values_set_in_code_win_before_or_after_from_env() {
        let vars = [
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://env:1/v1/traces",
            ),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "1"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "a=env,b=env"),
        ];
        let code = |b: OtlpExporterBuilder| {
            b.with_endpoint("http://code:2/traces")
                .with_protocol(Protocol::HttpProtobuf)
                .with_compression(Compression::None)
                .with_timeout(Duration::from_secs(3))
                .with_header("a", "code")
        };
        let before = code(OtlpExporter::builder()).from_env_with(env(&vars));
        let after = code(OtlpExporter::builder().from_env_with(env(&vars)));
        for b in [before, after] {
            let e = b.build().unwrap();
            assert_eq!(e.endpoint(), "http://code:2/traces");
            assert_eq!(e.protocol(), Protocol::HttpProtobuf);
            assert_eq!(e.compression(), Compression::None);
            assert_eq!(e.timeout(), Duration::from_secs(3));
            assert_eq!(e.headers(), [("a", "code"), ("b", "env")]);
        }
    }

    #[test]
    fn the_generic_endpoint_gets_the_path_only_for_http() {
        let base = EnvEndpoint::Base("http://c:4318".into());
        assert_eq!(base.url(Protocol::HttpProtobuf), "http://c:4318/v1/traces");
        assert_eq!(base.url(Protocol::Grpc), "http://c:4318");
        let traces = EnvEndpoint::Traces("http://c:4318".into());
        assert_eq!(traces.url(Protocol::HttpProtobuf), "http://c:4318");
    }
}
