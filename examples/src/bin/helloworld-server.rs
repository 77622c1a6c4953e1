//! The gRPC `helloworld.Greeter` server, traced by `tracewire-grpc`'s
//! `GrpcTraceLayer`: each `SayHello` gets a server span (continuing the caller's
//! trace from `traceparent` or `grpc-trace-bin`) with a child span
//! `compose greeting`, and CPU samples taken in it carry the label
//! `grpc-method=/helloworld.Greeter/SayHello`.
//!
//! ```text
//! cargo run -p examples --bin helloworld-server -- --addr 127.0.0.1:50051 [exporter flags]
//! cargo run -p examples --bin helloworld-client -- --addr http://127.0.0.1:50051 --name world [exporter flags]
//! ```
//!
//! Exporter flags: `--zipkin http://HOST:9411/api/v2/spans`, or
//! `--stackdriver-project P` (Google Cloud Trace with Application Default
//! Credentials; add `--stackdriver-endpoint URL` for an emulator, without
//! credentials). Without either, the exporters `OTEL_TRACES_EXPORTER` names, else
//! JSON lines on standard output. The `OTEL_*` variables configure the rest
//! (`OTEL_SERVICE_NAME` replaces the service name `helloworld-server`); flags win
//! over them.
//!
//! It prints `listening on http://ADDR` as its first line of standard output once
//! bound (`--addr 127.0.0.1:0` picks a free port); logs go to standard error. On
//! SIGTERM or Ctrl-C it stops accepting requests, lets open ones finish (at most
//! 10 s), exports the spans still queued (at most 5 s) and exits with status 0.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use examples::helloworld::greeter_server::{Greeter, GreeterServer};
use examples::helloworld::{HelloReply, HelloRequest};
use examples::{install_pipeline, Flags};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};
use tracewire::{KeyValue, Tracer};
use tracewire_grpc::GrpcTraceLayer;

const USAGE: &str = "usage: helloworld-server [--addr HOST:PORT] [--zipkin URL | --stackdriver-project P [--stackdriver-endpoint URL]]   (default 127.0.0.1:50051)";

/// How long open requests may run on after a shutdown signal.
const DRAIN: Duration = Duration::from_secs(10);
/// How long queued spans may take to export at exit.
const FLUSH: Duration = Duration::from_secs(5);

fn main() {
    let (addr, flags) = match parse_args(std::env::args().skip(1)) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let runtime = examples::runtime_or_exit("helloworld-server");
    if let Err(e) = install_pipeline("helloworld-server", &flags.pipeline) {
        eprintln!("helloworld-server: {e}");
        std::process::exit(2);
    }
    let result = runtime.block_on(serve(addr));
    // Requests are over: export what is still queued.
    if let Err(e) = tracewire::global::shutdown_tracer_provider(FLUSH) {
        eprintln!("helloworld-server: exporting the last spans: {e}");
    }
    if let Err(e) = result {
        eprintln!("helloworld-server: {e}");
        std::process::exit(1);
    }
    eprintln!("helloworld-server: stopped");
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<(SocketAddr, Flags), String> {
    let flags = Flags::parse(args, "127.0.0.1:50051")?;
    Ok((flags.socket_addr()?, flags))
}

/// Serves until SIGTERM or SIGINT, then drains open requests.
async fn serve(addr: SocketAddr) -> Result<(), String> {
    // Handlers first, so a signal sent as soon as the address is printed is caught.
    let term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM handler: {e}"))?;
    let int = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT handler: {e}"))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    println!("listening on http://{local}");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    eprintln!("helloworld-server: listening on http://{local}");

    let tracer = tracewire::global::tracer("helloworld-server");
    let greeter = HelloGreeter {
        tracer: tracer.clone(),
    };
    let (stopping_tx, stopping) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        let signal = wait_for_signal(term, int).await;
        eprintln!("helloworld-server: {signal}: shutting down");
        let _ = stopping_tx.send(());
    };
    let server = tonic::transport::Server::builder()
        .layer(GrpcTraceLayer::new(tracer))
        .add_service(GreeterServer::new(greeter))
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown);
    // After the signal the server accepts nothing new and returns once the open
    // requests are done; give up on them after DRAIN.
    let deadline = async move {
        if stopping.await.is_ok() {
            tokio::time::sleep(DRAIN).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = server => result.map_err(|e| format!("server: {e}")),
        _ = deadline => {
            eprintln!("helloworld-server: gave up waiting for open requests");
            Ok(())
        }
    }
}

async fn wait_for_signal(mut term: Signal, mut int: Signal) -> &'static str {
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// The service. `GrpcTraceLayer` has made the request's context (its server span
/// and the `grpc-method` label) current while `say_hello` runs.
struct HelloGreeter {
    tracer: Tracer,
}

#[tonic::async_trait]
impl Greeter for HelloGreeter {
    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        let name = request.into_inner().name;
        // A child of the server span, which is current here.
        let span = self
            .tracer
            .span_builder("compose greeting")
            .with_attribute(KeyValue::new("greeting.name_length", name.len() as i64))
            .start();
        let message = if name.is_empty() {
            "Hello!".to_owned()
        } else {
            format!("Hello {name}!")
        };
        span.set_attribute("greeting.message", message.clone());
        span.end();
        Ok(Response::new(HelloReply { message }))
    }
}
