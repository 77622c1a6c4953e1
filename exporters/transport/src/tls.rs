//! HTTPS: rustls (with the `ring` provider), its trust roots, the hyper connector
//! over it, and telling a certificate the client refuses from a connection that
//! may work on a second try.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

use crate::Error;

/// Which certificate authorities an `https://` endpoint's certificate may chain
/// to, besides the CA certificates given with
/// [`TlsConfig::with_ca_certificate`] (each exporter's `with_ca_certificate`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsRoots {
    /// Mozilla's root program, compiled in (`webpki-roots`): the same on every
    /// machine, nothing read from the system.
    #[default]
    WebPki,
    /// The operating system's trust store (`rustls-native-certs`: on Linux the
    /// distribution's CA bundle, `SSL_CERT_FILE` / `SSL_CERT_DIR` honoured), read
    /// once when the exporter is built: where a company adds its own CA.
    Native,
    /// Only the CA certificates given with [`TlsConfig::with_ca_certificate`].
    None,
}

/// What an exporter's `https://` connections trust: a [`TlsRoots`] and any
/// number of extra CA certificates (PEM). `Default` is the webpki roots alone.
///
/// The PEM is kept as given and parsed by [`check`](Self::check) and
/// [`client_config`](Self::client_config), so that builders can take it without
/// returning a `Result` and fail in their `build`.
///
/// ```
/// use tracewire_transport::{TlsConfig, TlsRoots};
///
/// assert!(TlsConfig::new().client_config().is_ok(), "webpki roots");
/// assert!(TlsConfig::new().with_ca_certificate("not PEM").check().is_err());
/// assert!(TlsConfig::new().with_roots(TlsRoots::None).client_config().is_err(), "trusts nothing");
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    roots: TlsRoots,
    ca_certificates: Vec<Vec<u8>>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("roots", &self.roots)
            .field("ca_certificates", &self.ca_certificates.len())
            .finish()
    }
}

impl TlsConfig {
    /// The webpki roots, no extra CA.
    pub fn new() -> Self {
        TlsConfig::default()
    }

    /// Trusts `roots` (default [`TlsRoots::WebPki`]), on top of any
    /// [`with_ca_certificate`](Self::with_ca_certificate).
    pub fn with_roots(mut self, roots: TlsRoots) -> Self {
        self.roots = roots;
        self
    }

    /// Also trusts the CA certificate(s) in `pem` (one or more `BEGIN
    /// CERTIFICATE` blocks): a private CA, or a server's self-signed
    /// certificate.
    pub fn with_ca_certificate(mut self, pem: impl AsRef<[u8]>) -> Self {
        self.ca_certificates.push(pem.as_ref().to_vec());
        self
    }

    /// The roots trusted.
    pub fn trusted_roots(&self) -> TlsRoots {
        self.roots
    }

    /// How many PEM blobs were given with [`with_ca_certificate`](Self::with_ca_certificate).
    pub fn ca_certificate_count(&self) -> usize {
        self.ca_certificates.len()
    }

    /// Fails unless every PEM given holds at least one certificate, all
    /// well-formed: for a builder to fail at once rather than on the first
    /// connection. Does not read the system store.
    pub fn check(&self) -> Result<(), Error> {
        self.extra().map(drop)
    }

    /// The rustls client configuration: the roots, plus the extra certificates.
    /// Fails on a PEM that holds no certificate or a malformed one, on a
    /// certificate rustls cannot use as a trust anchor, and when nothing is
    /// trusted ([`TlsRoots::Native`] on a system without a CA bundle and no
    /// extra CA, or [`TlsRoots::None`] without one).
    pub fn client_config(&self) -> Result<ClientConfig, Error> {
        let extra = self.extra()?;
        let mut store = RootCertStore::empty();
        match self.roots {
            TlsRoots::WebPki => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            TlsRoots::Native => {
                let found = rustls_native_certs::load_native_certs();
                store.add_parsable_certificates(found.certs);
                if store.is_empty() && extra.is_empty() {
                    let why = found
                        .errors
                        .first()
                        .map_or_else(|| "none found".to_owned(), ToString::to_string);
                    return Err(Error::new(format!(
                        "no usable certificate in the system trust store ({why})"
                    )));
                }
            }
            TlsRoots::None => {}
        }
        for cert in extra {
            store
                .add(cert)
                .map_err(|e| Error::new(format!("unusable CA certificate: {e}")))?;
        }
        if store.is_empty() {
            return Err(Error::new(
                "TlsRoots::None without a ca_certificate trusts nothing",
            ));
        }
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::new(format!("TLS setup: {e}")))
            .map(|b| b.with_root_certificates(store).with_no_client_auth())
    }

    /// The configuration for connections to `uri`: [`client_config`](Self::client_config)
    /// for `https://`; for `http://`, which needs none but gets a connector
    /// that could do TLS, the webpki roots alone (so that the roots are not
    /// read, nor `TlsRoots::None` refused, for nothing), after checking the PEM
    /// given all the same: a bad one is a mistake whatever the scheme.
    ///
    /// ```
    /// use tracewire_transport::{TlsConfig, TlsRoots};
    ///
    /// let nothing = TlsConfig::new().with_roots(TlsRoots::None);
    /// assert!(nothing.client_config_for(&"http://h:1".parse().unwrap()).is_ok());
    /// assert!(nothing.client_config_for(&"https://h:1".parse().unwrap()).is_err());
    /// ```
    pub fn client_config_for(&self, uri: &::http::Uri) -> Result<ClientConfig, Error> {
        self.check()?;
        if crate::http::is_https(uri) {
            self.client_config()
        } else {
            TlsConfig::new().client_config()
        }
    }

    /// Every certificate of every PEM given.
    fn extra(&self) -> Result<Vec<CertificateDer<'static>>, Error> {
        let mut out = Vec::new();
        for pem in &self.ca_certificates {
            let certs = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Error::new(format!("invalid CA certificate PEM: {e}")))?;
            if certs.is_empty() {
                return Err(Error::new("the CA certificate PEM holds no certificate"));
            }
            out.extend(certs);
        }
        Ok(out)
    }
}

/// A hyper connector for `http://` and `https://` (HTTP/1.1) with `tls`: TCP
/// with `TCP_NODELAY` and `connect_timeout`, then TLS for `https://`.
pub fn https_connector(
    tls: ClientConfig,
    connect_timeout: Duration,
) -> HttpsConnector<HttpConnector> {
    HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(tcp_connector(Some(connect_timeout)))
}

/// TCP for the connectors: any scheme (TLS is the next layer's), no delay.
pub(crate) fn tcp_connector(connect_timeout: Option<Duration>) -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.enforce_http(false);
    connector.set_connect_timeout(connect_timeout);
    connector.set_nodelay(true);
    connector
}

/// Whether `err` (a request's error and its sources) is a server certificate the
/// client refused, or a server that shares no protocol version or cipher suite
/// with it: trying again cannot succeed.
///
/// ```
/// use tracewire_transport::is_refused_handshake;
///
/// let refused = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
/// // As tokio-rustls and hyper wrap it.
/// let io = std::io::Error::other(std::io::Error::new(std::io::ErrorKind::InvalidData, refused));
/// assert!(is_refused_handshake(&io));
/// assert!(!is_refused_handshake(&std::io::Error::from(std::io::ErrorKind::ConnectionRefused)));
/// ```
pub fn is_refused_handshake(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(mut e) = next {
        next = e.source();
        // An `io::Error`'s `source` is the source of the error it wraps, not that
        // error (and hyper-rustls wraps tokio-rustls' `io::Error` in another one):
        // look inside, or the rustls error is skipped.
        while let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            e = inner;
        }
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return matches!(
                tls,
                rustls::Error::InvalidCertificate(_)
                    | rustls::Error::NoCertificatesPresented
                    | rustls::Error::UnsupportedNameType
                    | rustls::Error::PeerIncompatible(_)
            );
        }
    }
    false
}
