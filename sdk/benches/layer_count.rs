//! N requests through a hello-world tower service, bare or behind tracewire's
//! server layer (`TraceLayer`, every span sampled and delivered), for
//! instruction counts under `valgrind --tool=callgrind` (see
//! benches/layer-callgrind.sh):
//!
//! ```text
//! TRACEWIRE_LAYER_COUNT_MODE=bare|layer|bare_traceparent|layer_traceparent \
//!     TRACEWIRE_LAYER_COUNT_REQUESTS=N \
//!     target/release/deps/layer_count-<hash>
//! ```
//!
//! Each request is what `wrk` sends (`GET /`, a `Host` header), in the
//! `_traceparent` modes with a W3C parent too, and is served to the end of its
//! body, in process: what the layer adds per request, without
//! the sockets and the HTTP parsing that `benches/overhead.rs` of
//! tracewire-grpc also measures. The provider exports to a counting exporter,
//! flushed every 256 requests, and the run fails unless every span arrived. It
//! is built and shut down in both modes, so the two runs differ only by the
//! layer. Without the variables (as under `cargo bench`) it runs the layer with
//! 1000 requests.

mod common;
use common::CountingExporter;

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tower::{Service, ServiceExt};
use tracewire::tower::TraceLayer;

/// Requests between two flushes: well under the queue (2048).
const FLUSH_EVERY: u64 = 256;

async fn hello(_: http::Request<Full<Bytes>>) -> Result<http::Response<Full<Bytes>>, Infallible> {
    Ok(http::Response::new(Full::from("hello world\n")))
}

/// What `wrk` sends; with `traceparent`, also a W3C parent, as a request from
/// another traced service has.
fn request(traceparent: bool) -> http::Request<Full<Bytes>> {
    let mut b = http::Request::get("/").header(http::header::HOST, "127.0.0.1:8080");
    if traceparent {
        b = b.header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        );
    }
    b.body(Full::default()).expect("request")
}

/// Serves one request to the end of its response body.
async fn serve<S, B>(svc: &mut S, traceparent: bool)
where
    S: Service<http::Request<Full<Bytes>>, Response = http::Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let response = svc
        .ready()
        .await
        .expect("ready")
        .call(request(traceparent))
        .await;
    let body = response.expect("response").into_body();
    let bytes = body.collect().await.expect("body").to_bytes();
    assert_eq!(bytes.len(), 12);
}

fn main() {
    let mode = std::env::var("TRACEWIRE_LAYER_COUNT_MODE").unwrap_or_else(|_| "layer".into());
    let n: u64 = std::env::var("TRACEWIRE_LAYER_COUNT_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let exporter = CountingExporter::default();
    let provider = tracewire::TracerProvider::builder()
        .with_service_name("bench")
        .with_batch_exporter(exporter.clone())
        .build();
    futures_executor::block_on(async {
        match mode.as_str() {
            "bare" => {
                let mut svc = tower::service_fn(hello);
                for _ in 0..n {
                    serve(&mut svc, false).await;
                }
            }
            "bare_traceparent" => {
                let mut svc = tower::service_fn(hello);
                for _ in 0..n {
                    serve(&mut svc, true).await;
                }
            }
            "layer" | "layer_traceparent" => {
                let traceparent = mode == "layer_traceparent";
                let mut svc = tower::ServiceBuilder::new()
                    .layer(TraceLayer::new(provider.tracer("bench")))
                    .service(tower::service_fn(hello));
                for i in 1..=n {
                    serve(&mut svc, traceparent).await;
                    if i % FLUSH_EVERY == 0 {
                        provider
                            .force_flush(Duration::from_secs(30))
                            .expect("flush");
                    }
                }
            }
            other => panic!(
                "TRACEWIRE_LAYER_COUNT_MODE={other}: bare, layer, bare_traceparent or \
                 layer_traceparent"
            ),
        }
    });
    let report = provider
        .shutdown(Duration::from_secs(30))
        .expect("shutdown (an error means spans were dropped)");
    let seen = exporter.count.load(Ordering::Relaxed);
    eprintln!(
        "{mode}: {n} requests; exporter saw {seen}; shutdown report: exported {} dropped {}",
        report.exported, report.dropped
    );
    let want = if mode.starts_with("layer") { n } else { 0 };
    assert_eq!(seen, want, "spans delivered");
}
