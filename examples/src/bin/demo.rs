//! tracewire, all of it, on one machine in about a minute:
//!
//! ```text
//! cargo run --release -p examples --bin demo [-- --out DIR] [--seconds N] [--serve]
//!                                              [--zipkin URL | --stackdriver-project P [--stackdriver-endpoint URL]]
//!                                              [--pyroscope URL] [--cloud-profiler-project P [--cloud-profiler-endpoint URL]] [--upload-every SECONDS]
//! ```
//!
//! An HTTP frontend (hyper + `TraceLayer`) calls a `tracing`-instrumented function
//! that calls a gRPC backend (tonic + `GrpcTraceLayer`), all on loopback, while the
//! label-aware CPU profiler runs. A mixed load (`/messages` is about ten times the
//! work of `/user`) runs for 10 s. Spans go to JSON lines under `./tracewire-demo/`
//! (and to Zipkin or Cloud Trace with the same flags as the other examples); then
//! the demo prints one trace as a tree, the CPU share of every `http-path` and
//! `grpc-method`, and the `go tool pprof` commands that show the same labels.
//! `--serve` keeps everything (and `/debug/pprof`, `/debug/tracez`) up afterwards.
//! The profiling flags upload continuous profiles (Pyroscope, Cloud Profiler); they
//! start after the demo's own profile, and skip the periods it holds the profiler.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::hint::black_box;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use examples::helloworld::greeter_client::GreeterClient;
use examples::helloworld::greeter_server::{Greeter, GreeterServer};
use examples::helloworld::{HelloReply, HelloRequest};
use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tower::{Service, ServiceBuilder};
use tracewire::bridge::tracing::TracewireLayer;
use tracewire::export::{InMemoryExporter, JsonLinesExporter};
use tracewire::profile::{Profiler, SpanIds};
use tracewire::trace::SpanData;
use tracewire::TracerProvider;
use tracewire_grpc::{GrpcClientLayer, GrpcTraceLayer};
use tracewire_http::debug::{PprofService, Tracez, TracezService};
use tracewire_http::trace::{ResponseBody, TraceLayer};
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::prelude::*;

/// The heap profiler wraps the system allocator: `/debug/pprof/heap` and
/// `/debug/pprof/allocs` show the memory each route holds and allocates.
#[global_allocator]
static ALLOC: tracewire::alloc::Profiled<std::alloc::System> =
    tracewire::alloc::Profiled::new(std::alloc::System);

/// The unit of work: `/user` costs one, `/messages` ten, on each side.
const ROUNDS: u64 = 150_000;

#[inline(never)]
fn hash_rounds(seed: u64, rounds: u64) -> u64 {
    let mut x = seed;
    for i in 0..rounds {
        x = black_box(x.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(i) ^ (x >> 29));
    }
    x
}

// ----------------------------------------------------------------------------
// The gRPC backend.

struct Backend;

#[tonic::async_trait]
impl Greeter for Backend {
    async fn say_hello(
        &self,
        request: tonic::Request<HelloRequest>,
    ) -> Result<tonic::Response<HelloReply>, tonic::Status> {
        let name = request.into_inner().name;
        let rounds = if name == "messages" {
            10 * ROUNDS
        } else {
            ROUNDS
        };
        let span = tracewire::global::tracer("backend").start("score");
        let digest = hash_rounds(rounds, rounds);
        span.set_attribute("rounds", rounds as i64);
        span.end();
        Ok(tonic::Response::new(HelloReply {
            message: format!("{name} {digest:016x}"),
        }))
    }
}

// ----------------------------------------------------------------------------
// The HTTP frontend.

type Backend_ = GreeterClient<tracewire_grpc::GrpcClient<tonic::transport::Channel>>;
type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Between the HTTP handler and the gRPC call: an ordinary `tracing`-instrumented
/// function, which the bridge turns into a tracewire span in the same trace.
#[tracing::instrument(skip(backend), fields(kind = %kind))]
async fn render(kind: &'static str, mut backend: Backend_) -> Result<String, tonic::Status> {
    let local = hash_rounds(
        7,
        if kind == "messages" {
            10 * ROUNDS
        } else {
            ROUNDS
        },
    );
    let reply = backend
        .say_hello(HelloRequest { name: kind.into() })
        .await?
        .into_inner();
    Ok(format!("{} {local:016x}\n", reply.message))
}

async fn frontend(
    request: Request<Incoming>,
    backend: Backend_,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let kind = match request.uri().path() {
        "/messages" => "messages",
        "/user" => "user",
        _ => {
            let mut r = Response::new(Full::from("not found\n"));
            *r.status_mut() = StatusCode::NOT_FOUND;
            return Ok(r);
        }
    };
    Ok(match render(kind, backend).await {
        Ok(body) => Response::new(Full::from(body)),
        Err(status) => {
            let mut r = Response::new(Full::from(format!("backend: {status}\n")));
            *r.status_mut() = StatusCode::BAD_GATEWAY;
            r
        }
    })
}

async fn serve_frontend(
    listener: tokio::net::TcpListener,
    frontend_provider: TracerProvider,
    backend_addr: SocketAddr,
    tracez: Tracez,
) {
    let channel = tonic::transport::Channel::from_shared(format!("http://{backend_addr}"))
        .expect("a valid URI")
        .connect_lazy();
    let channel = ServiceBuilder::new()
        .layer(GrpcClientLayer::new(frontend_provider.tracer("frontend")))
        .service(channel);
    let backend = GreeterClient::new(channel);
    let app = ServiceBuilder::new()
        .layer(TraceLayer::new(frontend_provider.tracer("frontend")))
        .service(tower::service_fn(move |r| frontend(r, backend.clone())));
    let pprof = PprofService::new();
    let tracez = TracezService::new(tracez);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let (app, pprof, tracez) = (app.clone(), pprof.clone(), tracez.clone());
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let (mut app, mut pprof, mut tracez) = (app.clone(), pprof.clone(), tracez.clone());
            async move {
                if req.uri().path().starts_with("/debug/pprof") {
                    return Ok::<Response<Body>, Infallible>(
                        pprof.call(req).await?.map(BodyExt::boxed_unsync),
                    );
                }
                if req.uri().path().starts_with("/debug/tracez") {
                    return Ok(tracez.call(req).await?.map(BodyExt::boxed_unsync));
                }
                let r: Response<ResponseBody<Full<Bytes>>> = app.call(req).await?;
                Ok(r.map(BodyExt::boxed_unsync))
            }
        });
        tokio::spawn(async move {
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

// ----------------------------------------------------------------------------
// Load, results.

async fn drive_load(addr: SocketAddr, seconds: u64) -> (u64, u64) {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (client, done, failed) = (client.clone(), done.clone(), failed.clone());
            tokio::spawn(async move {
                let mut i = w;
                while Instant::now() < deadline {
                    // One /messages for every three /user.
                    let path = if i % 4 == 0 { "/messages" } else { "/user" };
                    let uri: http::Uri = format!("http://{addr}{path}").parse().expect("uri");
                    match client.get(uri).await {
                        Ok(r) if r.status().is_success() => {
                            let _ = r.into_body().collect().await;
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    i += 1;
                }
            })
        })
        .collect();
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    while start.elapsed() < Duration::from_secs(seconds) {
        tick.tick().await;
        let frac = (start.elapsed().as_secs_f64() / seconds as f64).min(1.0);
        let filled = (frac * 30.0) as usize;
        eprint!(
            "\r  load [{}{}] {:>3.0}%  {} requests",
            "#".repeat(filled),
            " ".repeat(30 - filled),
            frac * 100.0,
            done.load(Ordering::Relaxed)
        );
        let _ = std::io::stderr().flush();
    }
    for w in workers {
        let _ = w.await;
    }
    eprintln!();
    (done.load(Ordering::Relaxed), failed.load(Ordering::Relaxed))
}

fn print_trace(spans: &[SpanData], trace_id: Option<tracewire::trace::TraceId>) {
    let Some(root) = spans.iter().find(|s| {
        s.is_root()
            && s.name == "GET /messages"
            && !s.parent_is_remote
            && trace_id.is_none_or(|t| t == s.span_context.trace_id())
    }) else {
        println!("  (no complete /messages trace was exported)");
        return;
    };
    let trace: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.span_context.trace_id() == root.span_context.trace_id())
        .collect();
    fn walk(trace: &[&SpanData], s: &SpanData, depth: usize) {
        let status = match &s.status {
            tracewire::Status::Error { message } => format!("error: {message}"),
            tracewire::Status::Ok => "ok".into(),
            tracewire::Status::Unset => "-".into(),
        };
        println!(
            "  {:indent$}{:<w$} {:<10} {:>9.2} ms  {}",
            "",
            s.name,
            s.scope,
            s.duration().as_secs_f64() * 1e3,
            status,
            indent = depth * 2,
            w = 44 - depth * 2,
        );
        let mut children: Vec<&&SpanData> = trace
            .iter()
            .filter(|c| c.parent_span_id == s.span_context.span_id())
            .collect();
        children.sort_by_key(|c| c.start_time);
        for c in children {
            walk(trace, c, depth + 1);
        }
    }
    println!("  trace {}", root.span_context.trace_id());
    println!(
        "  {:<44} {:<10} {:>12}  status",
        "span", "service", "duration"
    );
    walk(&trace, root, 0);
}

fn print_cpu(profile: &tracewire::profile::Profile) {
    let total = profile.total_cpu().as_secs_f64();
    println!(
        "  {:<14} {:<36} {:>9} {:>7}",
        "label", "value", "CPU", "share"
    );
    for key in ["http-path", "grpc-method"] {
        let by: BTreeMap<String, Duration> = profile.cpu_by_label(key);
        for (value, cpu) in by {
            println!(
                "  {:<14} {:<36} {:>7.2} s {:>6.1}%",
                key,
                value,
                cpu.as_secs_f64(),
                cpu.as_secs_f64() / total * 100.0
            );
        }
    }
    println!(
        "  {:<14} {:<36} {:>7.2} s {:>6.1}%",
        "(all)", "", total, 100.0
    );
}

struct Flags {
    out: PathBuf,
    seconds: u64,
    serve: bool,
    pipeline: examples::PipelineFlags,
    profiling: examples::ProfilingFlags,
}

fn parse(args: impl Iterator<Item = String>) -> Result<Flags, String> {
    let mut flags = Flags {
        out: PathBuf::from("tracewire-demo"),
        seconds: 10,
        serve: false,
        pipeline: examples::PipelineFlags::default(),
        profiling: examples::ProfilingFlags::default(),
    };
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--out" => flags.out = args.next().ok_or("--out needs a directory")?.into(),
            "--seconds" => {
                flags.seconds = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .filter(|s| *s > 0)
                    .ok_or("--seconds needs a positive number")?
            }
            "--serve" => flags.serve = true,
            other => {
                if !flags.pipeline.parse_one(other, &mut args)?
                    && !flags.profiling.parse_one(other, &mut args)?
                {
                    return Err(format!("unknown argument {other:?}"));
                }
            }
        }
    }
    Ok(flags)
}

fn provider(
    service: &'static str,
    flags: &Flags,
    memory: &InMemoryExporter,
    tracez: &Tracez,
) -> Result<TracerProvider, String> {
    let file = flags.out.join(format!("{service}.spans.jsonl"));
    let json = JsonLinesExporter::file(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    // The demo's two services keep their names (code wins over
    // OTEL_SERVICE_NAME); the other OTEL_* variables apply. Its own JSON file and
    // in-memory exporters always run; exporter flags, else OTEL_TRACES_EXPORTER,
    // add more. The tracez page counts spans as they start and end (observer) and
    // keeps recent traces from the JSON exporter's batches (no further copy).
    let builder = TracerProvider::builder()
        .with_service_name(service)
        .from_env()
        .with_observer(tracez.observer())
        .with_batch_exporter(tracez.wrap(json))
        .with_batch_exporter(memory.clone());
    let (builder, _) = flags
        .pipeline
        .add_exporters_or_env(builder, &tracewire::env::system)?;
    Ok(builder.build())
}

fn main() {
    let flags = match parse(std::env::args().skip(1)) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{e}\nusage: demo [--out DIR] [--seconds N] [--serve] [--zipkin URL | --stackdriver-project P [--stackdriver-endpoint URL]] [--pyroscope URL] [--cloud-profiler-project P [--cloud-profiler-endpoint URL]] [--upload-every SECONDS]");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(flags) {
        eprintln!("demo: {e}");
        std::process::exit(1);
    }
}

fn run(flags: Flags) -> Result<(), String> {
    std::fs::create_dir_all(&flags.out).map_err(|e| format!("{}: {e}", flags.out.display()))?;
    for f in ["frontend.spans.jsonl", "backend.spans.jsonl"] {
        let _ = std::fs::remove_file(flags.out.join(f));
    }
    let memory = InMemoryExporter::new();
    let tracez = Tracez::default();
    let frontend_provider = provider("frontend", &flags, &memory, &tracez)?;
    let backend_provider = provider("backend", &flags, &memory, &tracez)?;
    // A binary may install global state: the backend's tracer, and the `tracing`
    // bridge (the frontend's `#[instrument]` spans).
    tracewire::global::set_tracer_provider(backend_provider.clone());
    // Only this program's `tracing` spans: the libraries underneath (h2, hyper,
    // tonic) have `tracing` spans of their own on every frame.
    let subscriber = tracing_subscriber::registry().with(
        TracewireLayer::new(frontend_provider.tracer("frontend"))
            .with_filter(filter_fn(|meta| meta.target().starts_with("demo"))),
    );
    tracing::subscriber::set_global_default(subscriber)
        .map_err(|e| format!("installing the tracing subscriber: {e}"))?;

    let runtime = examples::profiled_runtime().map_err(|e| e.to_string())?;

    runtime.block_on(async {
        let backend_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let backend_addr = backend_listener.local_addr().map_err(|e| e.to_string())?;
        let backend_tracer = backend_provider.tracer("backend");
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .layer(GrpcTraceLayer::new(backend_tracer))
                .add_service(GreeterServer::new(Backend))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(
                    backend_listener,
                ))
                .await;
        });
        let frontend_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let frontend_addr = frontend_listener.local_addr().map_err(|e| e.to_string())?;
        tokio::spawn(serve_frontend(
            frontend_listener,
            frontend_provider.clone(),
            backend_addr,
            tracez.clone(),
        ));

        println!("tracewire demo");
        println!("  HTTP frontend  http://{frontend_addr}  (/user, /messages, /debug/pprof/)");
        println!("  gRPC backend   http://{backend_addr}  (helloworld.Greeter)");
        println!("  profiling at 100 Hz while {} s of mixed load run", flags.seconds);
        let profiler = Profiler::builder()
            .with_frequency(100)
            // Each sample names the innermost span: tracez shows every span's CPU.
            .with_span_ids(SpanIds::Every)
            .start()
            .map_err(|e| e.to_string())?;
        // Started after the demo's profile: they skip the periods it holds.
        let uploaders = flags.profiling.start("tracewire-demo")?;
        for line in uploaders.describe() {
            println!("  {line}");
        }
        let (done, failed) = drive_load(frontend_addr, flags.seconds).await;
        let cpu = profiler.stop().map_err(|e| e.to_string())?;
        tracez.set_profile(&cpu);
        println!("  {done} requests served, {failed} failed\n");

        // Everything that ended is exported before it is printed.
        let p = frontend_provider.clone();
        let b = backend_provider.clone();
        tokio::task::spawn_blocking(move || {
            let _ = p.force_flush(Duration::from_secs(10));
            let _ = b.force_flush(Duration::from_secs(10));
        })
        .await
        .map_err(|e| e.to_string())?;

        // The slowest /messages request the tracez page keeps, among those the
        // profiler caught burning CPU (at 100 Hz, a request of a few ms of CPU
        // gets a sample or none).
        let slow = tracez
            .slowest_traces(usize::MAX)
            .into_iter()
            .filter(|t| t.root_name == "GET /messages")
            .max_by_key(|t| (!t.cpu.is_zero(), t.duration));
        println!("the slowest /messages trace (HTTP frontend -> #[instrument] fn -> gRPC client -> gRPC backend):");
        print_trace(&memory.spans(), slow.as_ref().map(|t| t.trace_id));
        println!("\nCPU by label (from {} of samples):", fmt_secs(cpu.total_cpu()));
        print_cpu(&cpu);
        println!(
            "\nin a browser{}: each span beside the CPU it burned, and its flame graph",
            if flags.serve { "" } else { " (add --serve to keep these up)" }
        );
        println!("  tracez       http://{frontend_addr}/debug/tracez/");
        if let Some(t) = &slow {
            println!(
                "  that trace   http://{frontend_addr}/debug/tracez/trace?id={}",
                t.trace_id
            );
        }

        let pb = flags.out.join("profile.pb.gz");
        let svg = flags.out.join("flamegraph.svg");
        let mut f = std::fs::File::create(&pb).map_err(|e| format!("{}: {e}", pb.display()))?;
        cpu.write_pprof(&mut f).map_err(|e| e.to_string())?;
        let (graph, _) = tracewire_http::debug::flamegraph_svg(&cpu, &[])?;
        std::fs::write(&svg, graph).map_err(|e| format!("{}: {e}", svg.display()))?;
        let stats = [frontend_provider.stats(), backend_provider.stats()];
        println!("\nfiles:");
        println!("  spans        {}/{{frontend,backend}}.spans.jsonl", flags.out.display());
        println!("  CPU profile  {}", pb.display());
        println!("  flame graph  {}", svg.display());
        println!(
            "  span pipeline: {} spans ended, {} exported (to {} exporters), {} dropped",
            stats.iter().map(|s| s.ended).sum::<u64>(),
            stats.iter().map(|s| s.exported).sum::<u64>(),
            2 + flags.pipeline.exporter_count(),
            stats.iter().map(|s| s.dropped).sum::<u64>(),
        );
        println!("\nthe same labels in go tool pprof:");
        println!("  go tool pprof -tags {}", pb.display());
        println!("  go tool pprof -top -tagfocus http-path:/messages {}", pb.display());
        println!("  go tool pprof -top -tagfocus grpc-method:/helloworld.Greeter/SayHello {}", pb.display());

        if flags.serve {
            println!("\nserving until Ctrl-C:");
            println!("  curl http://{frontend_addr}/user");
            println!("  go tool pprof -tags http://{frontend_addr}/debug/pprof/profile?seconds=5");
            println!("  http://{frontend_addr}/debug/pprof/flamegraph?seconds=5&tagfocus=http-path:/messages");
            println!("  http://{frontend_addr}/debug/tracez/  (spans by latency -> a trace's waterfall -> a span's CPU)");
            let _ = tokio::signal::ctrl_c().await;
        }
        uploaders.shutdown("demo", Duration::from_secs(5));
        Ok::<(), String>(())
    })?;
    drop(runtime);
    let _ = frontend_provider.shutdown(Duration::from_secs(5));
    let _ = backend_provider.shutdown(Duration::from_secs(5));
    Ok(())
}

fn fmt_secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}
