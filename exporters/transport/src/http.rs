//! Endpoints and headers as the exporters take them: an `http://` or `https://`
//! URL with a host, and custom headers checked once, when the exporter is built.

use crate::Error;

/// `url` parsed, if it is an `http://` or `https://` URL with a host. `what`
/// names it in the error ("Zipkin endpoint", "Pyroscope URL").
///
/// ```
/// use tracewire_transport::http::parse_uri;
///
/// let uri = parse_uri("Zipkin endpoint", "https://zipkin.internal/api/v2/spans").unwrap();
/// assert_eq!(uri.scheme_str(), Some("https"));
/// for bad in ["zipkin:9411/api", "ftp://zipkin/api", "http:///api", "not a url"] {
///     assert!(parse_uri("Zipkin endpoint", bad).is_err(), "{bad}");
/// }
/// ```
pub fn parse_uri(what: &str, url: &str) -> Result<::http::Uri, Error> {
    let uri: ::http::Uri = url
        .parse()
        .map_err(|e| Error::with_source(format!("invalid {what} {url:?}: {e}"), e))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(Error::new(format!(
            "the {what} must be an http:// or https:// URL, got {url:?}"
        )));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(Error::new(format!("the {what} {url:?} has no host")));
    }
    Ok(uri)
}

/// Whether `uri` asks for TLS.
pub fn is_https(uri: &::http::Uri) -> bool {
    uri.scheme_str() == Some("https")
}

/// `headers` (name, value) as a header map, each value marked sensitive (so
/// that it is never printed: they often hold credentials); a later header
/// replaces an earlier one of the same name, whatever its case. Fails on a name
/// or a value HTTP does not allow, naming the header but not its value.
///
/// ```
/// use tracewire_transport::http::header_map;
///
/// let map = header_map(&[
///     ("X-Tenant".to_owned(), "first".to_owned()),
///     ("x-tenant".to_owned(), "checkout".to_owned()),
/// ])
/// .unwrap();
/// assert_eq!(map.get_all("x-tenant").iter().count(), 1);
/// assert_eq!(map["x-tenant"], "checkout");
/// assert!(header_map(&[("x tenant".to_owned(), "a".to_owned())]).is_err());
/// assert!(header_map(&[("x-tenant".to_owned(), "a\nb".to_owned())]).is_err());
/// ```
pub fn header_map(headers: &[(String, String)]) -> Result<::http::HeaderMap, Error> {
    let mut map = ::http::HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let name = ::http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| Error::new(format!("{name:?} is not a valid header name")))?;
        let mut value = ::http::HeaderValue::from_str(value)
            .map_err(|_| Error::new(format!("the value of header {name:?} is not valid")))?;
        value.set_sensitive(true);
        map.insert(name, value);
    }
    Ok(map)
}
