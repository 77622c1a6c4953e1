//! What the uploader's tests share: a Pyroscope stand-in on loopback that
//! decodes `push.v1.PushRequest`s, over HTTP or HTTPS (tokio-rustls, with a
//! self-signed certificate made by `rcgen` for each test), and a way to run one
//! test in a child process to read what the uploader logs on standard error.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prost::Message as _;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;
use tracewire::export::Backoff;
use tracewire::profile::pprof;
use tracewire_pyroscope::proto::push::PushRequest;

/// CPU profiles are process-wide: one test at a time.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A self-signed server certificate and its key.
pub struct SelfSigned {
    /// The certificate, PEM: what a client is told to trust.
    pub pem: String,
    /// Its key, PEM.
    pub key_pem: String,
    config: Arc<rustls::ServerConfig>,
}

impl SelfSigned {
    /// For `127.0.0.1` and `localhost`.
    pub fn loopback() -> SelfSigned {
        let names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(names).unwrap();
        SelfSigned::from_pems(&cert.pem(), &signing_key.serialize_pem())
    }

    /// The certificate `pem` with its key `key_pem` (as a parent process made
    /// them).
    pub fn from_pems(pem: &str, key_pem: &str) -> SelfSigned {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let cert = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
        SelfSigned {
            pem: pem.to_owned(),
            key_pem: key_pem.to_owned(),
            config: Arc::new(config),
        }
    }
}

/// A request the server received.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub headers: http::HeaderMap,
    pub request: PushRequest,
    /// The status it answered.
    pub status: u16,
}

/// One profile of a request, decoded.
#[derive(Debug)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    pub id: String,
    pub pprof: pprof::Profile,
}

impl Received {
    pub fn series(&self) -> Vec<Series> {
        self.request
            .series
            .iter()
            .map(|s| {
                assert_eq!(s.samples.len(), 1);
                Series {
                    labels: s
                        .labels
                        .iter()
                        .map(|l| (l.name.clone(), l.value.clone()))
                        .collect(),
                    id: s.samples[0].id.clone(),
                    pprof: pprof::decode(&s.samples[0].raw_profile).expect("a gzip'd pprof"),
                }
            })
            .collect()
    }
}

/// A Pyroscope stand-in on loopback: records every push; the n-th request
/// (from 0) is answered `status(n)`. A TLS handshake the client breaks off (it
/// refused the certificate) just ends the connection.
pub struct Server {
    pub addr: SocketAddr,
    tls: bool,
    received: Arc<Mutex<Vec<Received>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Server {
    pub fn start(status: fn(usize) -> u16) -> Server {
        Self::on(SocketAddr::from(([127, 0, 0, 1], 0)), status)
    }

    pub fn on(addr: SocketAddr, status: fn(usize) -> u16) -> Server {
        Self::serve(addr, None, status)
    }

    /// Serves HTTPS with `cert` on a free loopback port.
    pub fn start_tls(cert: &SelfSigned, status: fn(usize) -> u16) -> Server {
        let acceptor = TlsAcceptor::from(cert.config.clone());
        Self::serve(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            Some(acceptor),
            status,
        )
    }

    fn serve(addr: SocketAddr, tls: Option<TlsAcceptor>, status: fn(usize) -> u16) -> Server {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(addr))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let rec = Arc::clone(&received);
        let with_tls = tls.is_some();
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (rec, count, tls) = (Arc::clone(&rec), Arc::clone(&count), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        None => serve_connection(stream, rec, count, status).await,
                        Some(tls) => {
                            if let Ok(stream) = tls.accept(stream).await {
                                serve_connection(stream, rec, count, status).await;
                            }
                        }
                    }
                });
            }
        });
        Server {
            addr,
            tls: with_tls,
            received,
            runtime: Some(runtime),
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// The accepted profiles so far.
    pub fn accepted(&self) -> Vec<Series> {
        self.received()
            .iter()
            .filter(|r| r.status == 200)
            .flat_map(Received::series)
            .collect()
    }

    /// Waits (at most `limit`) until an accepted profile satisfies `f`.
    pub fn wait_for(&self, limit: Duration, f: impl Fn(&Series) -> bool) -> Option<Series> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(s) = self.accepted().into_iter().find(|s| f(s)) {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

async fn serve_connection(
    io: impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
    rec: Arc<Mutex<Vec<Received>>>,
    count: Arc<AtomicUsize>,
    status: fn(usize) -> u16,
) {
    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let (rec, count) = (Arc::clone(&rec), Arc::clone(&count));
        async move {
            let (parts, body) = req.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            let status = status(count.fetch_add(1, Ordering::SeqCst));
            let request = PushRequest::decode(&body[..]).expect("a PushRequest");
            rec.lock().unwrap().push(Received {
                path: parts.uri.path().to_owned(),
                headers: parts.headers,
                request,
                status,
            });
            let mut response = http::Response::new(Full::new(Bytes::new()));
            *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
            Ok::<_, Infallible>(response)
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), svc)
        .await;
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

pub fn ok(_: usize) -> u16 {
    200
}

pub fn quick_backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(50),
        max_delay: Duration::from_millis(300),
        max_elapsed: Duration::from_secs(20),
    }
}

/// A free loopback address nothing listens on (for now).
/// Polls `get` until `until` holds or 30 s pass, and returns the last value:
/// periods end after their profile is symbolized, which takes seconds on a
/// loaded machine, so tests wait for the state instead of sleeping.
pub fn when<S>(get: impl Fn() -> S, until: impl Fn(&S) -> bool) -> S {
    let start = std::time::Instant::now();
    loop {
        let s = get();
        if until(&s) || start.elapsed() > Duration::from_secs(30) {
            return s;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

pub fn name(s: &Series) -> &str {
    s.labels.get("__name__").map_or("", String::as_str)
}

/// Set in the child process [`in_child`] starts.
pub const CHILD_ENV: &str = "TRACEWIRE_TEST_CHILD";

/// Whether this process is the child [`in_child`] started.
pub fn is_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

/// Runs test `name` of this test binary alone in a child process, with `env`
/// set (and [`CHILD_ENV`]), its output not captured: what it printed on
/// standard error, once it passed.
pub fn in_child(name: &str, env: &[(&str, &std::ffi::OsStr)]) -> String {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "the child failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("1 passed"),
        "the child ran the test:\n{stdout}"
    );
    stderr
}
