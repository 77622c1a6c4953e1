//! What the tests of this crate share: a real hyper server on loopback.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;

use bytes::Bytes;
use futures_util::FutureExt;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A boxed response body.
pub type BoxBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// What tower-http's `CatchPanicLayer` does: a panic in `fut` becomes a 500.
pub async fn catch_panic<F, B>(fut: F) -> Result<Response<BoxBody>, Infallible>
where
    F: Future<Output = Result<Response<B>, Infallible>>,
    B: http_body::Body<Data = Bytes, Error = Infallible> + Send + Sync + 'static,
{
    match AssertUnwindSafe(fut).catch_unwind().await {
        Ok(result) => result.map(|r| r.map(BodyExt::boxed)),
        Err(_) => Ok(Response::builder()
            .status(StatusCode::INTERNAL_SERVER_ERROR)
            .body(Full::from("panicked").boxed())
            .unwrap()),
    }
}

/// A provider that hands every span to the returned exporter as it ends.
pub fn pipeline() -> (
    tracewire::TracerProvider,
    tracewire::export::InMemoryExporter,
) {
    let exporter = tracewire::export::InMemoryExporter::new();
    let provider = tracewire::TracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    (provider, exporter)
}

/// A 2-worker runtime whose workers the profiler samples with full stacks.
pub fn profiled_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(|| tracewire::profile::register_current_thread().unwrap())
        .on_thread_stop(tracewire::profile::unregister_current_thread)
        .build()
        .unwrap()
}

/// Serves HTTP/1 on `127.0.0.1:0`, until the runtime shuts down, with the service
/// `app` makes for each connection (given the peer's address).
pub async fn serve_app<S, B>(app: impl Fn(SocketAddr) -> S + Send + 'static) -> SocketAddr
where
    S: tower_service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            let service = TowerToHyperService::new(app(peer));
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// Serves `service` over HTTP/1 on `127.0.0.1:0` until the runtime shuts down.
pub async fn serve<S, B>(service: S) -> SocketAddr
where
    S: tower_service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    serve_app(move |_| service.clone()).await
}
