//! Application latency while the Zipkin collector hangs vs while it is healthy:
//! the time to start and end one span (6 attributes, 1 event) on the application
//! thread, as percentiles over 200,000 spans, with the batch pipeline exporting to
//! a collector on loopback that answers 202 at once, or accepts connections and
//! never answers. `cargo bench -p tracewire-zipkin --bench collector_down`.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tracewire::export::{Backoff, BatchConfig};
use tracewire::{KeyValue, SpanKind, TracerProvider};
use tracewire_zipkin::ZipkinExporter;

const SPANS: usize = 200_000;

fn collector(rt: &tokio::runtime::Runtime, hang: bool) -> String {
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| async move {
                            let _ = req.into_body().collect().await;
                            if hang {
                                std::future::pending::<()>().await;
                            }
                            Ok::<_, Infallible>(
                                http::Response::builder()
                                    .status(202)
                                    .body(Full::new(Bytes::new()))
                                    .unwrap(),
                            )
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        format!("http://{addr}/api/v2/spans")
    })
}

fn run(url: &str) -> (Vec<u64>, tracewire::export::Stats) {
    let exporter = ZipkinExporter::builder()
        .with_endpoint(url)
        .with_timeout(Duration::from_millis(500))
        .with_backoff(Backoff {
            initial: Duration::from_millis(50),
            max_delay: Duration::from_millis(200),
            max_elapsed: Duration::from_secs(2),
        })
        .build()
        .unwrap();
    let provider = TracerProvider::builder()
        .with_batch_exporter_config(
            exporter,
            BatchConfig {
                scheduled_delay: Duration::from_millis(100),
                export_timeout: Duration::from_secs(5),
                ..BatchConfig::default()
            },
        )
        .build();
    let tracer = provider.tracer("bench");
    let mut nanos = Vec::with_capacity(SPANS);
    for i in 0..SPANS {
        let t = Instant::now();
        let s = tracer
            .span_builder("GET /api/users/{id}")
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("http.request.method", "GET"),
                KeyValue::new("http.route", "/api/users/{id}"),
                KeyValue::new("http.response.status_code", 200),
                KeyValue::new("network.peer.address", "10.0.0.7"),
                KeyValue::new("user_agent.original", "curl/8.5.0"),
                KeyValue::new("request.id", i as i64),
            ])
            .start();
        s.add_event("cache miss", vec![]);
        s.end();
        nanos.push(t.elapsed().as_nanos() as u64);
        // An application does other work between requests: about 10k spans/s.
        if i % 100 == 99 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let _ = provider.shutdown(Duration::from_secs(3));
    nanos.sort_unstable();
    (nanos, provider.stats())
}

fn pct(v: &[u64], p: f64) -> u64 {
    v[((v.len() - 1) as f64 * p) as usize]
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("run with `cargo bench -p tracewire-zipkin --bench collector_down`");
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    println!("| collector | p50 | p99 | p99.9 | max | exported | dropped |");
    println!("|---|---|---|---|---|---|---|");
    for (name, hang) in [("healthy (202)", false), ("hanging (never answers)", true)] {
        let url = collector(&rt, hang);
        let (n, s) = run(&url);
        println!(
            "| {name} | {} ns | {} ns | {} ns | {} µs | {} | {} |",
            pct(&n, 0.5),
            pct(&n, 0.99),
            pct(&n, 0.999),
            n[n.len() - 1] / 1000,
            s.exported,
            s.dropped
        );
    }
}
