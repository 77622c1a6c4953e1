//! Configuration from `OTEL_EXPORTER_ZIPKIN_ENDPOINT` and `OTEL_EXPORTER_ZIPKIN_TIMEOUT`.

use crate::{Error, ZipkinExporter, ZipkinExporterBuilder};

const ENDPOINT: &str = "OTEL_EXPORTER_ZIPKIN_ENDPOINT";
const TIMEOUT: &str = "OTEL_EXPORTER_ZIPKIN_TIMEOUT";

impl ZipkinExporter {
    /// An exporter configured by `OTEL_EXPORTER_ZIPKIN_ENDPOINT` and
    /// `OTEL_EXPORTER_ZIPKIN_TIMEOUT` (milliseconds); the defaults where they are
    /// unset. Fails, like [`ZipkinExporterBuilder::build`], on an endpoint that is
    /// not an `http://` or `https://` URL. An invalid timeout is reported on standard error and
    /// the default (10 s) is kept.
    pub fn from_env() -> Result<ZipkinExporter, Error> {
        ZipkinExporter::builder().from_env().build()
    }
}

impl ZipkinExporterBuilder {
    /// Takes the endpoint and the timeout from `OTEL_EXPORTER_ZIPKIN_ENDPOINT` and
    /// `OTEL_EXPORTER_ZIPKIN_TIMEOUT` (milliseconds), except those set in code with
    /// [`with_endpoint`](Self::with_endpoint) and [`with_timeout`](Self::with_timeout), before or after
    /// this call: code wins.
    pub fn from_env(self) -> Self {
        self.from_env_with(tracewire::env::system)
    }

    /// Like [`from_env`](Self::from_env), reading each variable with `lookup`.
    ///
    /// ```
    /// use tracewire_zipkin::ZipkinExporter;
    ///
    /// let env = |name: &str| match name {
    ///     "OTEL_EXPORTER_ZIPKIN_ENDPOINT" => Some("http://127.0.0.1:1/env".to_owned()),
    ///     _ => None,
    /// };
    /// let builder = ZipkinExporter::builder()
    ///     .with_endpoint("http://127.0.0.1:1/code")
    ///     .from_env_with(env);
    /// assert!(format!("{builder:?}").contains("/code"));
    /// ```
    pub fn from_env_with(mut self, lookup: impl Fn(&str) -> Option<String>) -> Self {
        let lookup: &dyn Fn(&str) -> Option<String> = &lookup;
        if !self.endpoint_set {
            if let Some(url) = tracewire::env::get(lookup, ENDPOINT) {
                self.endpoint = url;
            }
        }
        if !self.timeout_set {
            if let Some(timeout) = tracewire::env::millis(lookup, TIMEOUT) {
                self.timeout = timeout;
            }
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    use tracewire::env::lookup_in as env;

    #[test]
    fn without_variables_the_defaults_hold() {
        let b = ZipkinExporter::builder().from_env_with(env(&[]));
        assert_eq!(b.endpoint, "http://localhost:9411/api/v2/spans");
        assert_eq!(b.timeout, Duration::from_secs(10));
    }

    #[test]
    fn the_variables_set_the_endpoint_and_the_timeout_in_milliseconds() {
        let b = ZipkinExporter::builder().from_env_with(env(&[
            (ENDPOINT, "http://zipkin.internal:9411/api/v2/spans"),
            (TIMEOUT, "2500"),
        ]));
        assert_eq!(b.endpoint, "http://zipkin.internal:9411/api/v2/spans");
        assert_eq!(b.timeout, Duration::from_millis(2500));
    }

    #[test]
    fn an_invalid_timeout_is_reported_and_keeps_the_default() {
        for value in ["0", "-1", "2s", "soon"] {
            let b = ZipkinExporter::builder().from_env_with(env(&[(TIMEOUT, value)]));
            assert_eq!(b.timeout, Duration::from_secs(10), "{value:?}");
        }
    }

    #[test]
    fn an_endpoint_that_is_not_http_or_https_fails_the_build() {
        for url in ["ftp://z/api", "z:9411/api", "not a url", "http:///api"] {
            let b = ZipkinExporter::builder().from_env_with(env(&[(ENDPOINT, url)]));
            assert!(b.build().is_err(), "{url:?}");
        }
        for url in ["http://z:9411/api/v2/spans", "https://z/api/v2/spans"] {
            let b = ZipkinExporter::builder().from_env_with(env(&[(ENDPOINT, url)]));
            assert!(b.build().is_ok(), "{url:?}");
        }
    }

    #[test]
    fn values_set_in_code_win_before_or_after_from_env() {
        let vars = [(ENDPOINT, "http://env:1/"), (TIMEOUT, "1")];
        let before = ZipkinExporter::builder()
            .with_endpoint("http://code:1/")
            .with_timeout(Duration::from_secs(3))
            .from_env_with(env(&vars));
        let after = ZipkinExporter::builder()
            .from_env_with(env(&vars))
            .with_endpoint("http://code:1/")
            .with_timeout(Duration::from_secs(3));
        for b in [before, after] {
            assert_eq!(b.endpoint, "http://code:1/");
            assert_eq!(b.timeout, Duration::from_secs(3));
        }
    }
}
