//! An HTTP server whose requests are traced by `tracewire-http`'s `TraceLayer`,
//! which also labels every CPU sample taken in a handler with `http-path` (the
//! handlers do nothing for it), a background worker labelled `worker=purge`, and
//! `/debug/pprof` to profile it all, as in Go's "profiler labels" article.
//!
//! Spans go to a Zipkin collector with `--zipkin http://HOST:9411/api/v2/spans`,
//! to Google Cloud Trace with `--stackdriver-project P` (and, for an emulator,
//! `--stackdriver-endpoint URL`), or nowhere. Continuous CPU and heap profiles go
//! to Grafana Pyroscope with `--pyroscope URL [--upload-every SECONDS]` and to
//! Google Cloud Profiler with `--cloud-profiler-project P [--cloud-profiler-endpoint URL]`.
//!
//! ```text
//! cargo run --release -p examples --bin http-labels -- --addr 127.0.0.1:8080
//! # load it (each /messages costs about 10x a /user):
//! while true; do curl -s localhost:8080/messages >/dev/null; curl -s localhost:8080/user >/dev/null; done
//! # then, elsewhere:
//! go tool pprof -tags http://127.0.0.1:8080/debug/pprof/profile?seconds=5
//! go tool pprof -top -tagfocus http-path:/messages http://127.0.0.1:8080/debug/pprof/profile?seconds=5
//! # or open http://127.0.0.1:8080/debug/pprof/flamegraph?seconds=5&tagfocus=http-path:/user
//! # memory in use per route (the heap profiler is this binary's allocator):
//! # /user keeps the records it looked up in a cache, /messages frees its pages
//! go tool pprof -sample_index=inuse_space -tagfocus http-path=/user http://127.0.0.1:8080/debug/pprof/heap
//! go tool pprof -sample_index=alloc_space -tagfocus http-path=/messages http://127.0.0.1:8080/debug/pprof/heap
//! ```
//!
//! It prints `listening on http://ADDR` once bound (`--addr 127.0.0.1:0` picks a free
//! port) and stops on Ctrl-C, letting open requests finish.

use std::convert::Infallible;
use std::hint::black_box;
use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use examples::{Flags, ProfilingFlags};
use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn as hyper_service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tower::{service_fn, ServiceBuilder};
use tower_service::Service;
use tracewire::labels::LabelSet;
use tracewire::ContextExt;
use tracewire_http::debug::PprofService;
use tracewire_http::trace::{ResponseBody, TraceLayer};

/// The heap profiler wraps the system allocator: `/debug/pprof/heap` and
/// `/debug/pprof/allocs` show the memory each route holds and allocates.
#[global_allocator]
static ALLOC: tracewire::alloc::Profiled<std::alloc::System> =
    tracewire::alloc::Profiled::new(std::alloc::System);

/// Hash rounds of one `/user` request; `/messages` does ten times as many.
const USER_ROUNDS: u64 = 200_000;

fn main() {
    let (addr, flags, profiling) = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!(
                "{e}\nusage: http-labels [--addr HOST:PORT] [--zipkin URL | --stackdriver-project P [--stackdriver-endpoint URL]] [--pyroscope URL] [--cloud-profiler-project P [--cloud-profiler-endpoint URL]] [--upload-every SECONDS]   (default 127.0.0.1:8080)"
            );
            std::process::exit(2);
        }
    };
    // Two workers, registered with the profiler so their samples have full stacks
    // (the blocking pool's threads run these hooks too).
    let runtime = examples::profiled_runtime_or_exit("http-labels");
    // A binary installs the pipeline; the layer takes its tracer from it.
    // Spans go where the exporter flags say, else where OTEL_TRACES_EXPORTER
    // says, or nowhere; the OTEL_* variables configure the rest (code wins).
    let builder = tracewire::TracerProvider::builder()
        .with_fallback_service_name("http-labels")
        .from_env();
    match flags
        .pipeline
        .add_exporters_or_env(builder, &tracewire::env::system)
    {
        Ok((builder, _)) => {
            tracewire::global::set_tracer_provider(builder.build());
        }
        Err(e) => {
            eprintln!("http-labels: {e}");
            std::process::exit(2);
        }
    }
    let uploaders = profiling.start("http-labels").unwrap_or_else(|e| {
        eprintln!("http-labels: {e}");
        std::process::exit(2);
    });
    for line in uploaders.describe() {
        eprintln!("http-labels: {line}");
    }
    let result = runtime.block_on(serve(addr));
    uploaders.shutdown("http-labels", Duration::from_secs(5));
    // Export what is pending before exiting.
    let _ = tracewire::global::shutdown_tracer_provider(Duration::from_secs(5));
    if let Err(e) = result {
        eprintln!("http-labels: {e}");
        std::process::exit(1);
    }
}

fn parse_args(
    args: impl Iterator<Item = String>,
) -> Result<(SocketAddr, Flags, ProfilingFlags), String> {
    let mut profiling = ProfilingFlags::default();
    let flags = Flags::parse_with_extra(args, "127.0.0.1:8080", |arg, rest| {
        profiling.parse_one(arg, rest)
    })?;
    Ok((flags.socket_addr()?, flags, profiling))
}

async fn serve(addr: SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    std::io::stdout().flush()?;

    tokio::spawn(purge().with_labels(LabelSet::new([("worker", "purge")])));

    let pprof = PprofService::new();
    let app = ServiceBuilder::new()
        .layer(TraceLayer::new(tracewire::global::tracer("http-labels")))
        .service(service_fn(app));
    let server = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let (pprof, app) = (pprof.clone(), app.clone());
                let service = hyper_service_fn(move |request| route(request, pprof.clone(), app.clone()));
                let connection = server.serve_connection(TokioIo::new(stream), service);
                tokio::spawn(graceful.watch(connection.into_owned()));
            }
            _ = &mut ctrl_c => break,
        }
    }
    eprintln!("http-labels: shutting down");
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(5)) => eprintln!("http-labels: gave up waiting for open connections"),
    }
    Ok(())
}

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Sends `/debug/pprof/...` to the pprof service and the rest to the traced app.
async fn route<A>(
    request: Request<Incoming>,
    mut pprof: PprofService,
    mut app: A,
) -> Result<Response<Body>, Infallible>
where
    A: Service<
        Request<Incoming>,
        Response = Response<ResponseBody<Full<Bytes>>>,
        Error = Infallible,
    >,
{
    if request.uri().path().starts_with("/debug/pprof") {
        return Ok(pprof.call(request).await?.map(BodyExt::boxed_unsync));
    }
    Ok(app.call(request).await?.map(BodyExt::boxed_unsync))
}

/// The application. The `TraceLayer` in front of it has already made the
/// request's context (span and `http-path` label) current while this runs.
async fn app(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (path, rounds): (&'static str, u64) = match request.uri().path() {
        "/messages" => ("/messages", 10 * USER_ROUNDS),
        "/user" => ("/user", USER_ROUNDS),
        _ => {
            let mut response = Response::new(Full::new(Bytes::from_static(b"not found\n")));
            *response.status_mut() = StatusCode::NOT_FOUND;
            return Ok(response);
        }
    };
    Ok(handle(path, rounds).await)
}

async fn handle(path: &'static str, rounds: u64) -> Response<Full<Bytes>> {
    let digest = if path == "/messages" {
        render_messages(rounds)
    } else {
        lookup_user(rounds)
    };
    Response::new(Full::new(Bytes::from(format!("{path} {digest:016x}\n"))))
}

/// The expensive handler's work: a page of 64 messages, rendered and dropped
/// (memory it allocates, `-sample_index=alloc_space`).
#[inline(never)]
fn render_messages(rounds: u64) -> u64 {
    let digest = hash_rounds(0x6d65_7373_6167_6573, rounds);
    let page: Vec<String> = (0..64)
        .map(|i| format!("message {i}: {digest:016x}"))
        .collect();
    digest ^ black_box(page).len() as u64
}

/// Records of the users `/user` looked up last: 64 KiB each, at most
/// [`USER_CACHE_ENTRIES`] (8 MiB), allocated under `/user`'s label, so the heap
/// profile shows the memory that route holds (`-sample_index=inuse_space`).
static USER_CACHE: std::sync::Mutex<std::collections::VecDeque<Vec<u8>>> =
    std::sync::Mutex::new(std::collections::VecDeque::new());
const USER_CACHE_ENTRIES: usize = 128;

/// The cheap handler's work: a lookup, whose record is kept in the cache.
#[inline(never)]
fn lookup_user(rounds: u64) -> u64 {
    let digest = hash_rounds(0x7573_6572, rounds);
    let record = vec![digest as u8 | 1; 64 * 1024];
    let mut cache = USER_CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if cache.len() == USER_CACHE_ENTRIES {
        cache.pop_front();
    }
    cache.push_back(record);
    digest
}

/// A deterministic hash loop: `rounds` dependent multiply-xorshift steps.
#[inline(never)]
fn hash_rounds(seed: u64, rounds: u64) -> u64 {
    let mut x = seed;
    for i in 0..rounds {
        x = black_box(
            (x ^ (x >> 29))
                .wrapping_mul(0xbf58_476d_1ce4_e5b9)
                .wrapping_add(i),
        );
    }
    x
}

/// A background worker that burns about 5 ms of CPU every 25 ms, on the blocking
/// pool (`tracewire::spawn_blocking` carries the task's labels there).
async fn purge() {
    loop {
        let _ = tracewire::spawn_blocking(|| purge_expired(Duration::from_millis(5))).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[inline(never)]
fn purge_expired(budget: Duration) -> u64 {
    let start = Instant::now();
    let mut x = 0x0070_7572_6765;
    while start.elapsed() < budget {
        x = hash_rounds(x, 10_000);
    }
    x
}
