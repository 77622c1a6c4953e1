//! What the tests share: a self-signed certificate made by `rcgen` for each test,
//! and an HTTPS server on loopback (hyper behind tokio-rustls, HTTP/1.1 and
//! HTTP/2 by ALPN) that records the requests it answers.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;

/// A self-signed server certificate and its key.
pub struct SelfSigned {
    /// The certificate, PEM: what a client is told to trust.
    pub pem: String,
    config: Arc<rustls::ServerConfig>,
}

impl SelfSigned {
    /// A certificate for `names` (DNS names or IP addresses).
    pub fn new(names: &[&str]) -> SelfSigned {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(names).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(signing_key.serialize_der().into());
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)
        .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        SelfSigned {
            pem: cert.pem(),
            config: Arc::new(config),
        }
    }

    /// For `127.0.0.1` and `localhost`.
    pub fn loopback() -> SelfSigned {
        SelfSigned::new(&["127.0.0.1", "localhost"])
    }
}

/// A request the server answered.
#[derive(Clone, Debug)]
pub struct Received {
    pub version: http::Version,
    pub path: String,
    pub headers: http::HeaderMap,
}

/// An HTTPS server on a free loopback port, answering 200 to everything; a
/// handshake the client breaks off (it refused the certificate) just ends the
/// connection. Stops with the test's runtime.
#[derive(Clone)]
pub struct Server {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Server {
    pub async fn start(cert: &SelfSigned) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let acceptor = TlsAcceptor::from(cert.config.clone());
        let rec = Arc::clone(&received);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, rec) = (acceptor.clone(), Arc::clone(&rec));
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let rec = Arc::clone(&rec);
                        async move {
                            let (parts, body) = req.into_parts();
                            let _ = body.collect().await;
                            rec.lock().unwrap().push(Received {
                                version: parts.version,
                                path: parts.uri.path().to_owned(),
                                headers: parts.headers,
                            });
                            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::new())))
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Server { addr, received }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

/// A free loopback address nothing listens on.
pub fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}
