//! An axum service traced with `tracewire-http`'s `axum` and `reqwest`
//! features: server spans named by the route axum matched (`GET /users/{id}`,
//! with the caller's address), a reqwest call from one handler to another
//! carrying the trace, the `http-path` label on every CPU sample taken in a
//! handler, and `/debug/pprof` to profile it.
//!
//! ```text
//! cargo run -p examples --bin axum -- --addr 127.0.0.1:8080
//! curl localhost:8080/users/7    # one trace: GET /users/{id} -> GET (reqwest) -> GET /profiles/{id}
//! curl localhost:8080/nope       # 404: a span named GET, no http.route
//! go tool pprof -tags http://127.0.0.1:8080/debug/pprof/profile?seconds=5
//! ```
//!
//! Spans go to standard output as JSON lines, or where the exporter flags
//! (`--zipkin URL`, `--stackdriver-project P`) or the `OTEL_*` variables say
//! (`OTEL_TRACES_EXPORTER`, `OTEL_PROPAGATORS` for what the reqwest client
//! injects, ...; see the README). It prints `listening on http://ADDR` once bound
//! (`--addr 127.0.0.1:0` picks a free port) and stops on Ctrl-C, letting open
//! requests finish.

use std::hint::black_box;
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use examples::Flags;
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use tracewire::Tracer;
use tracewire_http::axum::TraceLayer;
use tracewire_http::debug::PprofService;
use tracewire_http::reqwest::TraceMiddleware;

/// Hash rounds of the work `/users/{id}` does itself.
const ROUNDS: u64 = 200_000;

fn main() {
    let flags = match Flags::parse(std::env::args().skip(1), "127.0.0.1:8080") {
        Ok(flags) => flags,
        Err(e) => usage(&e),
    };
    let addr = flags.socket_addr().unwrap_or_else(|e| usage(&e));
    // Registered with the profiler: their samples have full stacks.
    let runtime = examples::profiled_runtime_or_exit("axum");
    let provider = match examples::install_pipeline("axum", &flags.pipeline) {
        Ok(provider) => provider,
        Err(e) => {
            eprintln!("axum: {e}");
            std::process::exit(2);
        }
    };
    let result = runtime.block_on(serve(addr, provider.tracer("axum")));
    // Export what is pending before exiting.
    let _ = tracewire::global::shutdown_tracer_provider(Duration::from_secs(5));
    if let Err(e) = result {
        eprintln!("axum: {e}");
        std::process::exit(1);
    }
}

fn usage(error: &str) -> ! {
    eprintln!(
        "{error}\nusage: axum [--addr HOST:PORT] [--zipkin URL | --stackdriver-project P [--stackdriver-endpoint URL]]   (default 127.0.0.1:8080)"
    );
    std::process::exit(2);
}

/// What the handlers share: a traced reqwest client and this server's URL.
#[derive(Clone)]
struct App {
    client: ClientWithMiddleware,
    base: String,
}

async fn serve(addr: SocketAddr, tracer: Tracer) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    println!("listening on http://{local}");
    std::io::stdout().flush()?;

    // Client spans for the calls the handlers make, the context injected as
    // OTEL_PROPAGATORS says (W3C trace context and baggage without it).
    let mut middleware = TraceMiddleware::new(tracer.clone());
    if let Some(propagator) = tracewire::env::propagators() {
        middleware = middleware.with_propagator(propagator);
    }
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(std::io::Error::other)?;
    let client = ClientBuilder::new(http).with(middleware).build();

    let app = Router::new()
        .route("/users/{id}", get(user))
        .route("/profiles/{id}", get(user_profile))
        .route("/health", get(|| async { "ok\n" }))
        // After the routes it traces: axum runs it once the route is known.
        .layer(TraceLayer::new(tracer))
        // Added after the layer, so not traced. `nest_service` strips the
        // prefix, hence `.prefix("/")`.
        .nest_service("/debug/pprof", PprofService::new().with_prefix("/"))
        .with_state(App {
            client,
            base: format!("http://{local}"),
        });
    // ConnectInfo gives the server spans the caller's address.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("axum: shutting down");
    })
    .await
}

/// Does some work of its own (CPU samples labelled `http-path=/users/{id}`),
/// then asks `/profiles/{id}` over HTTP, in the same trace.
async fn user(State(app): State<App>, Path(id): Path<u64>) -> Result<String, StatusCode> {
    let digest = lookup_user(id);
    let url = format!("{}/profiles/{id}", app.base);
    let response = app.client.get(url).send().await.map_err(bad_gateway)?;
    let profile = response
        .error_for_status()
        .map_err(bad_gateway)?
        .text()
        .await
        .map_err(bad_gateway)?;
    Ok(format!("user {id} ({digest:016x}): {profile}\n"))
}

fn bad_gateway<E>(_: E) -> StatusCode {
    StatusCode::BAD_GATEWAY
}

async fn user_profile(Path(id): Path<u64>) -> String {
    format!("profile {id}")
}

/// The handler's work: `ROUNDS` dependent multiply-xorshift steps.
#[inline(never)]
fn lookup_user(seed: u64) -> u64 {
    let mut x = seed ^ 0x7573_6572;
    for i in 0..ROUNDS {
        x = black_box(
            (x ^ (x >> 29))
                .wrapping_mul(0xbf58_476d_1ce4_e5b9)
                .wrapping_add(i),
        );
    }
    x
}
