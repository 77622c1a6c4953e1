//! What the exporter's tests share: a Zipkin-compatible collector on loopback,
//! over HTTP or HTTPS (tokio-rustls, with a self-signed certificate made by
//! `rcgen` for each test), and the check of JSON bodies against `zipkin2-api.yaml`.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value as Json;
use tokio::io::{AsyncRead, AsyncWrite};
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
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)
        .unwrap();
        SelfSigned {
            pem: cert.pem(),
            config: Arc::new(config),
        }
    }

    /// For `127.0.0.1` and `localhost`.
    pub fn loopback() -> SelfSigned {
        SelfSigned::new(&["127.0.0.1", "localhost"])
    }

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.clone())
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Behaviour {
    Status(u16),
    Hang,
}

#[derive(Clone, Debug)]
pub struct Received {
    pub content_type: String,
    pub content_encoding: Option<String>,
    /// Every header of the request.
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

/// A Zipkin-compatible collector: records requests, answers from a script (then 202).
#[derive(Clone, Default)]
pub struct Collector {
    pub received: Arc<Mutex<Vec<Received>>>,
    pub script: Arc<Mutex<VecDeque<Behaviour>>>,
    pub always: Arc<Mutex<Option<Behaviour>>>,
}

impl Collector {
    /// Serves plain HTTP on `addr` (port 0: any free port).
    pub async fn start(self, addr: SocketAddr) -> SocketAddr {
        self.serve(addr, None).await
    }

    /// Serves HTTPS on a free loopback port with `tls`'s certificate. A handshake
    /// the client breaks off (it refused the certificate) just ends the connection.
    pub async fn start_tls(self, tls: &SelfSigned) -> SocketAddr {
        self.serve("127.0.0.1:0".parse().unwrap(), Some(tls.acceptor()))
            .await
    }

    async fn serve(self, addr: SocketAddr, tls: Option<TlsAcceptor>) -> SocketAddr {
        let listener = TcpListener::bind(addr).await.unwrap();
        let local = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let this = self.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        None => this.serve_connection(stream).await,
                        Some(tls) => {
                            if let Ok(stream) = tls.accept(stream).await {
                                this.serve_connection(stream).await;
                            }
                        }
                    }
                });
            }
        });
        local
    }

    async fn serve_connection(self, io: impl AsyncRead + AsyncWrite + Unpin + Send + 'static) {
        let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let this = self.clone();
            async move { Ok::<_, Infallible>(this.handle(req).await) }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(io), svc)
            .await;
    }

    async fn handle(
        &self,
        req: hyper::Request<hyper::body::Incoming>,
    ) -> hyper::Response<Full<Bytes>> {
        let header = |n: &str| {
            req.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_type = header("content-type").unwrap_or_default();
        let content_encoding = header("content-encoding");
        let headers = req.headers().clone();
        let body = req.into_body().collect().await.unwrap().to_bytes().to_vec();
        let behaviour = self
            .script
            .lock()
            .unwrap()
            .pop_front()
            .or(*self.always.lock().unwrap())
            .unwrap_or(Behaviour::Status(202));
        match behaviour {
            Behaviour::Hang => {
                std::future::pending::<()>().await;
                unreachable!()
            }
            Behaviour::Status(code) => {
                if (200..300).contains(&code) {
                    self.received.lock().unwrap().push(Received {
                        content_type,
                        content_encoding,
                        headers,
                        body,
                    });
                }
                hyper::Response::builder()
                    .status(code)
                    .body(Full::new(Bytes::new()))
                    .unwrap()
            }
        }
    }

    pub fn bodies(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Every JSON span received so far, each body checked against the schema.
    pub fn json_spans(&self) -> Vec<Json> {
        let mut out = Vec::new();
        for r in self.bodies() {
            let body = if r.content_encoding.as_deref() == Some("gzip") {
                let mut s = Vec::new();
                flate2::read::GzDecoder::new(&r.body[..])
                    .read_to_end(&mut s)
                    .unwrap();
                s
            } else {
                r.body
            };
            assert_eq!(r.content_type, "application/json");
            let v: Json = serde_json::from_slice(&body).unwrap();
            validate(&v);
            out.extend(v.as_array().unwrap().iter().cloned());
        }
        out
    }
}

/// Validates a body against `ListOfSpans` from zipkin2-api.yaml, plus the exact id
/// lengths the schema's min/max lengths leave open (16 or 32 for traceId).
pub fn validate(body: &Json) {
    static SCHEMA: std::sync::OnceLock<jsonschema::Validator> = std::sync::OnceLock::new();
    let validator = SCHEMA.get_or_init(|| {
        // Vendored (see schema/README.md), so a plain clone's tests need nothing else.
        let yaml = include_str!("../schema/zipkin2-api.yaml");
        let api: Json = serde_yaml::from_str(yaml).unwrap();
        let schema = serde_json::json!({
            "definitions": api["definitions"],
            "$ref": "#/definitions/ListOfSpans",
        });
        jsonschema::validator_for(&schema).unwrap()
    });
    let errors: Vec<String> = validator.iter_errors(body).map(|e| e.to_string()).collect();
    assert!(
        errors.is_empty(),
        "body does not match zipkin2-api.yaml: {errors:?}\n{body}"
    );
    for span in body.as_array().unwrap() {
        let len = span["traceId"].as_str().unwrap().len();
        assert!(len == 16 || len == 32, "traceId of length {len}");
        assert_eq!(span["id"].as_str().unwrap().len(), 16);
        if let Some(p) = span.get("parentId") {
            assert_eq!(p.as_str().unwrap().len(), 16);
        }
        assert!(span["duration"].as_u64().unwrap() >= 1);
    }
}
