//! Interceptor overhead: requests/s of a hello-world hyper server and of a tonic
//! unary service (the standard health check), each with and without the tracewire
//! server layer (100% sampling, batch export to a discarding exporter, profiler
//! labels on), loaded from another process on loopback. The hyper server is
//! also measured behind hyper-util's tower adapter alone, which any tower layer
//! needs, so that the layer's own share shows.
//!
//! `cargo bench -p tracewire-grpc --bench overhead`. HTTP load comes from Debian's
//! `wrk` when installed, else from this binary's own load generator (re-executed
//! as a child process); gRPC load always from the latter. Configurations
//! alternate, `ROUNDS` times each; the medians of the requests/s are
//! reported, and the median (and range) of each round's ratio.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tower::ServiceBuilder;
use tracewire::export::{ExportError, SpanExporter};
use tracewire::tower::TraceLayer;
use tracewire::trace::SpanData;
use tracewire::TracerProvider;
use tracewire_grpc::GrpcTraceLayer;

const ROUNDS: usize = 5;
const SECONDS: u64 = 4;
const CONNECTIONS: usize = 32;

#[derive(Clone)]
struct Discard(Arc<AtomicU64>);
impl SpanExporter for Discard {
    async fn export(&mut self, batch: &[SpanData]) -> Result<(), ExportError> {
        self.0.fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

async fn hello(
    _: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<Full<Bytes>>, Infallible> {
    Ok(http::Response::new(Full::from("hello world\n")))
}

/// How the hello-world HTTP server serves: hyper's own service, the same
/// function behind hyper-util's tower adapter (what any tower layer needs), or
/// behind the adapter and tracewire's layer.
#[derive(Clone)]
enum Http {
    Bare,
    Tower,
    Traced(TracerProvider),
}

fn http_server(rt: &tokio::runtime::Runtime, setup: Http) -> SocketAddr {
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let setup = setup.clone();
                tokio::spawn(async move {
                    let io = TokioIo::new(stream);
                    let conn = hyper::server::conn::http1::Builder::new();
                    let _ = match setup {
                        Http::Traced(p) => {
                            let svc = ServiceBuilder::new()
                                .layer(TraceLayer::new(p.tracer("bench")))
                                .service(tower::service_fn(hello));
                            conn.serve_connection(
                                io,
                                hyper_util::service::TowerToHyperService::new(svc),
                            )
                            .await
                        }
                        Http::Tower => {
                            let svc = tower::service_fn(hello);
                            conn.serve_connection(
                                io,
                                hyper_util::service::TowerToHyperService::new(svc),
                            )
                            .await
                        }
                        Http::Bare => {
                            conn.serve_connection(io, hyper::service::service_fn(hello))
                                .await
                        }
                    };
                });
            }
        });
        addr
    })
}

fn grpc_server(rt: &tokio::runtime::Runtime, traced: Option<TracerProvider>) -> SocketAddr {
    rt.block_on(async move {
        let (_reporter, health) = tonic_health::server::health_reporter();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        tokio::spawn(async move {
            let _reporter = _reporter;
            let mut builder = tonic::transport::Server::builder();
            match traced {
                Some(p) => {
                    let _ = builder
                        .layer(GrpcTraceLayer::new(p.tracer("bench")))
                        .add_service(health)
                        .serve_with_incoming(incoming)
                        .await;
                }
                None => {
                    let _ = builder
                        .add_service(health)
                        .serve_with_incoming(incoming)
                        .await;
                }
            }
        });
        addr
    })
}

/// Requests/s against `addr`, measured by a separate process.
fn load(kind: &str, addr: SocketAddr) -> f64 {
    if kind == "http" {
        if let Ok(out) = Command::new("wrk")
            .args(["-t1", &format!("-c{CONNECTIONS}"), &format!("-d{SECONDS}s")])
            .arg(format!("http://{addr}/"))
            .output()
        {
            let text = String::from_utf8_lossy(&out.stdout);
            if let Some(line) = text.lines().find(|l| l.starts_with("Requests/sec:")) {
                return line[13..].trim().parse().unwrap_or(0.0);
            }
        }
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args(["--load", kind, &addr.to_string()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0.0)
}

/// The child process: `CONNECTIONS` concurrent request loops for `SECONDS`.
fn load_generator(kind: &str, addr: SocketAddr) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let done = Arc::new(AtomicU64::new(0));
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(SECONDS);
        let mut tasks = Vec::new();
        for _ in 0..CONNECTIONS {
            let done = done.clone();
            let kind = kind.to_owned();
            tasks.push(tokio::spawn(async move {
                if kind == "http" {
                    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
                        .build_http::<Full<Bytes>>();
                    let uri: http::Uri = format!("http://{addr}/").parse().unwrap();
                    while Instant::now() < deadline {
                        if let Ok(r) = client.get(uri.clone()).await {
                            let _ = http_body_util::BodyExt::collect(r.into_body()).await;
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                } else {
                    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
                        .unwrap()
                        .connect()
                        .await
                        .unwrap();
                    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
                    while Instant::now() < deadline {
                        let req = tonic_health::pb::HealthCheckRequest {
                            service: String::new(),
                        };
                        if client.check(req).await.is_ok() {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    println!("{}", done.load(Ordering::Relaxed) as f64 / SECONDS as f64);
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--load") {
        load_generator(&args[i + 1], args[i + 2].parse().unwrap());
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        println!("overhead bench: run with `cargo bench -p tracewire-grpc --bench overhead`");
        return;
    }
    // The server gets one worker thread; the load generator the other core.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .on_thread_start(|| {
            let _ = tracewire::profile::register_current_thread();
        })
        .build()
        .unwrap();
    let exported = Arc::new(AtomicU64::new(0));
    let provider = TracerProvider::builder()
        .with_batch_exporter(Discard(exported.clone()))
        .build();
    let http_tool = if Command::new("wrk").arg("--version").output().is_ok() {
        "wrk"
    } else {
        "rust load generator"
    };
    println!(
        "| service | without layer (req/s) | tower adapter, no layer (req/s) | with layer (req/s) \
         | ratio (median of rounds, range) | ratio to the adapter | load |"
    );
    println!("|---|---|---|---|---|---|---|");
    for kind in ["http", "grpc"] {
        let (mut plain, mut adapter, mut traced) = (Vec::new(), Vec::new(), Vec::new());
        let (mut ratios, mut adapter_ratios) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            // One round measures each configuration once, back to back: the
            // ratio within a round is what a slow drift of the host's load
            // disturbs least.
            let (bare, with) = if kind == "http" {
                let bare = load(kind, http_server(&rt, Http::Bare));
                let tower = load(kind, http_server(&rt, Http::Tower));
                let with = load(kind, http_server(&rt, Http::Traced(provider.clone())));
                adapter.push(tower);
                adapter_ratios.push(with / tower);
                (bare, with)
            } else {
                let bare = load(kind, grpc_server(&rt, None));
                (bare, load(kind, grpc_server(&rt, Some(provider.clone()))))
            };
            plain.push(bare);
            traced.push(with);
            ratios.push(with / bare);
        }
        let (a, b) = (median(plain), median(traced));
        // tonic serves through tower anyway: no separate adapter figure.
        let (adapter, to_adapter) = if adapter.is_empty() {
            ("-".to_owned(), "-".to_owned())
        } else {
            (
                format!("{:.0}", median(adapter)),
                format!("{:.3}", median(adapter_ratios)),
            )
        };
        let spread = |v: &[f64]| {
            let (lo, hi) = v
                .iter()
                .fold((f64::MAX, f64::MIN), |(l, h), &x| (l.min(x), h.max(x)));
            format!("{lo:.3}-{hi:.3}")
        };
        println!(
            "| {} | {a:.0} | {adapter} | {b:.0} | {:.3} ({}) | {to_adapter} | {} |",
            if kind == "http" {
                "hyper hello world"
            } else {
                "tonic unary (health Check)"
            },
            median(ratios.clone()),
            spread(&ratios),
            if kind == "http" {
                http_tool
            } else {
                "rust load generator"
            }
        );
    }
    if let Err(e) = provider.shutdown(Duration::from_secs(5)) {
        println!("\nshutdown: {e}");
    }
    let s = provider.stats();
    println!(
        "\nspans: ended {} exported {} dropped {}",
        s.ended, s.exported, s.dropped
    );
}
