//! HTTPS to the collector: rustls (with the `ring` provider), its trust roots, and
//! telling a certificate the client refuses from a connection that may work on a
//! second try.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

use crate::Error;

/// Which certificate authorities an `https://` collector's certificate may chain to,
/// besides those given with
/// [`ca_certificate`](crate::ZipkinExporterBuilder::ca_certificate).
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
    /// Only the certificates given with
    /// [`ca_certificate`](crate::ZipkinExporterBuilder::ca_certificate).
    None,
}

/// Every certificate in `pem` (one or more `BEGIN CERTIFICATE` blocks).
pub(crate) fn parse_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error(format!("invalid CA certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Error("the CA certificate PEM holds no certificate".into()));
    }
    Ok(certs)
}

/// The client configuration for `roots` plus `extra` trusted certificates.
pub(crate) fn client_config(
    roots: TlsRoots,
    extra: &[CertificateDer<'static>],
) -> Result<ClientConfig, Error> {
    let mut store = RootCertStore::empty();
    match roots {
        TlsRoots::WebPki => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        TlsRoots::Native => {
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() && extra.is_empty() {
                let why = found
                    .errors
                    .first()
                    .map_or_else(|| "none found".to_owned(), ToString::to_string);
                return Err(Error(format!(
                    "no usable certificate in the system trust store ({why})"
                )));
            }
        }
        TlsRoots::None => {}
    }
    for cert in extra {
        store
            .add(cert.clone())
            .map_err(|e| Error(format!("unusable CA certificate: {e}")))?;
    }
    if store.is_empty() {
        return Err(Error(
            "TlsRoots::None without a ca_certificate trusts nothing".into(),
        ));
    }
    ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error(format!("TLS setup: {e}")))
        .map(|b| b.with_root_certificates(store).with_no_client_auth())
}

/// Whether `err` (a request's error and its sources) is a server certificate the
/// client refused, or a server that shares no protocol version or cipher suite
/// with it: trying again cannot succeed.
pub(crate) fn is_refused_handshake(err: &(dyn std::error::Error + 'static)) -> bool {
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
