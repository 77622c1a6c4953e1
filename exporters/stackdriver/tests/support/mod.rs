//! What the exporter's tests share: a stand-in for Cloud Trace (a tonic
//! `TraceService` built from the same protos) on loopback, over plain HTTP/2 or
//! TLS with a self-signed certificate made by `rcgen`, and a token provider.
#![allow(dead_code)]

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::metadata::MetadataMap;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, ServerTlsConfig};
use tonic::{Code, Request, Response, Status};
use tracewire_stackdriver::proto::v2::trace_service_server::{TraceService, TraceServiceServer};
use tracewire_stackdriver::proto::v2::{BatchWriteSpansRequest, Span};

/// A self-signed server certificate and its key, PEM.
pub struct SelfSigned {
    /// What a client is told to trust.
    pub pem: String,
    pub key_pem: String,
}

impl SelfSigned {
    /// For `127.0.0.1` and `localhost`.
    pub fn loopback() -> SelfSigned {
        let names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(names).unwrap();
        SelfSigned {
            pem: cert.pem(),
            key_pem: signing_key.serialize_pem(),
        }
    }
}

/// Hands out one fixed token (as a metadata server or a key file would a real
/// one), counting the requests for it.
#[derive(Debug, Default)]
pub struct FixedToken {
    pub asked: AtomicUsize,
    pub scopes: Mutex<Vec<String>>,
}

pub const FIXED_TOKEN: &str = "ya29.fixed-test-token";

#[tonic::async_trait]
impl gcp_auth::TokenProvider for FixedToken {
    async fn token(&self, scopes: &[&str]) -> Result<Arc<gcp_auth::Token>, gcp_auth::Error> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        self.scopes
            .lock()
            .unwrap()
            .extend(scopes.iter().map(|s| (*s).to_owned()));
        let json = format!(r#"{{"access_token":"{FIXED_TOKEN}","expires_in":3600}}"#);
        Ok(Arc::new(serde_json::from_str(&json).unwrap()))
    }

    async fn project_id(&self) -> Result<Arc<str>, gcp_auth::Error> {
        Ok(Arc::from("token-project"))
    }
}

/// Records what it receives; can answer scripted errors first, or hang.
#[derive(Clone, Default)]
pub struct Collector {
    pub requests: Arc<Mutex<Vec<BatchWriteSpansRequest>>>,
    /// Spans received (also when requests are not kept).
    pub spans: Arc<AtomicU64>,
    pub calls: Arc<AtomicUsize>,
    /// Whether any request carried an `authorization` header.
    pub saw_authorization: Arc<Mutex<bool>>,
    pub user_agents: Arc<Mutex<HashSet<String>>>,
    /// The metadata of every call, in order.
    pub metadata: Arc<Mutex<Vec<MetadataMap>>>,
    /// Codes to answer before answering OK.
    pub script: Arc<Mutex<VecDeque<Code>>>,
    pub hang: bool,
    /// Keep whole requests (off for the large tests: count only).
    pub keep: bool,
}

impl Collector {
    pub fn new() -> Self {
        Collector {
            keep: true,
            ..Collector::default()
        }
    }
    pub fn answering(codes: &[Code]) -> Self {
        let c = Collector::new();
        c.script.lock().unwrap().extend(codes.iter().copied());
        c
    }
    pub fn hanging() -> Self {
        Collector {
            hang: true,
            ..Collector::default()
        }
    }
    pub fn counting() -> Self {
        Collector::default()
    }
    pub fn requests(&self) -> Vec<BatchWriteSpansRequest> {
        self.requests.lock().unwrap().clone()
    }
    pub fn spans(&self) -> Vec<Span> {
        self.requests().into_iter().flat_map(|r| r.spans).collect()
    }
    pub fn span_count(&self) -> u64 {
        self.spans.load(Ordering::SeqCst)
    }
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
    /// `name` in each call's metadata (`None` where it was absent).
    pub fn metadata_values(&self, name: &str) -> Vec<Option<String>> {
        self.metadata
            .lock()
            .unwrap()
            .iter()
            .map(|m| m.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned))
            .collect()
    }
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn batch_write_spans(
        &self,
        request: Request<BatchWriteSpansRequest>,
    ) -> Result<Response<()>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.metadata
            .lock()
            .unwrap()
            .push(request.metadata().clone());
        if request.metadata().get("authorization").is_some() {
            *self.saw_authorization.lock().unwrap() = true;
        }
        if let Some(ua) = request.metadata().get("user-agent") {
            if let Ok(ua) = ua.to_str() {
                self.user_agents.lock().unwrap().insert(ua.to_owned());
            }
        }
        if self.hang {
            std::future::pending::<()>().await;
        }
        let scripted = self.script.lock().unwrap().pop_front();
        if let Some(code) = scripted {
            return Err(Status::new(code, "scripted answer"));
        }
        let request = request.into_inner();
        self.spans
            .fetch_add(request.spans.len() as u64, Ordering::SeqCst);
        if self.keep {
            self.requests.lock().unwrap().push(request);
        }
        Ok(Response::new(()))
    }

    async fn create_span(&self, _request: Request<Span>) -> Result<Response<Span>, Status> {
        Err(Status::unimplemented("not used by the exporter"))
    }
}

/// A running server; stopped (or aborted, when a request hangs) on drop.
pub struct Server {
    pub addr: SocketAddr,
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<()>,
    pub tls: bool,
}

impl Server {
    pub async fn start(collector: Collector) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Server::start_on(collector, listener)
    }

    pub fn start_on(collector: Collector, listener: tokio::net::TcpListener) -> Server {
        Server::serve(collector, listener, None)
    }

    /// Serves over TLS on a free loopback port, with `cert`.
    pub async fn start_tls(collector: Collector, cert: &SelfSigned) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let identity = Identity::from_pem(&cert.pem, &cert.key_pem);
        Server::serve(
            collector,
            listener,
            Some(ServerTlsConfig::new().identity(identity)),
        )
    }

    fn serve(
        collector: Collector,
        listener: tokio::net::TcpListener,
        tls: Option<ServerTlsConfig>,
    ) -> Server {
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let with_tls = tls.is_some();
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            builder = builder.tls_config(tls).unwrap();
        }
        let task = tokio::spawn(async move {
            let _ = builder
                .add_service(TraceServiceServer::new(collector))
                .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                    let _ = rx.await;
                })
                .await;
        });
        Server {
            addr,
            stop: Some(tx),
            task,
            tls: with_tls,
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Graceful stop, bounded: a hanging request is cut off.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let task = &mut self.task;
        if tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}
