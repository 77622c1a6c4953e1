//! The gRPC `helloworld.Greeter` client: one `SayHello` call inside a root span
//! `helloworld-client`, through a channel wrapped in `tracewire-grpc`'s
//! `GrpcClientLayer`, which records a client span and sends its context
//! (`traceparent`, `grpc-trace-bin`) to the server. With `helloworld-server`
//! exporting to the same place, one run gives one trace:
//!
//! ```text
//! helloworld-client                       (client, internal)
//! └── helloworld.Greeter/SayHello         (client, client)
//!     └── helloworld.Greeter/SayHello     (server, server)
//!         └── compose greeting            (server, internal)
//! ```
//!
//! ```text
//! cargo run -p examples --bin helloworld-server -- --addr 127.0.0.1:50051 [exporter flags]
//! cargo run -p examples --bin helloworld-client -- --addr http://127.0.0.1:50051 --name world [exporter flags]
//! ```
//!
//! Exporter flags as for the server: `--zipkin URL`, or `--stackdriver-project P`
//! [`--stackdriver-endpoint URL`]; without either, the exporters
//! `OTEL_TRACES_EXPORTER` names, else JSON lines on standard output. The
//! `OTEL_*` variables configure the rest (`OTEL_SERVICE_NAME` replaces the
//! service name `helloworld-client`; `OTEL_PROPAGATORS` chooses what the client
//! sends); flags win over them. The reply goes to standard error. The client waits for
//! its spans to be exported (at most 5 s) before it exits: with status 0 if the
//! call succeeded, 1 if it failed.

use std::time::Duration;

use examples::helloworld::greeter_client::GreeterClient;
use examples::helloworld::HelloRequest;
use examples::{flag_value, install_pipeline, Flags};
use tonic::transport::Endpoint;
use tower::ServiceBuilder;
use tracewire::{Context, ContextExt, KeyValue, Status};
use tracewire_grpc::GrpcClientLayer;

const USAGE: &str = "usage: helloworld-client [--addr URL] [--name NAME] [--zipkin URL | --stackdriver-project P [--stackdriver-endpoint URL]]   (default http://127.0.0.1:50051, name world)";

/// How long queued spans may take to export at exit.
const FLUSH: Duration = Duration::from_secs(5);

fn main() {
    let (flags, name) = match parse_args(std::env::args().skip(1)) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let runtime = examples::runtime_or_exit("helloworld-client");
    if let Err(e) = install_pipeline("helloworld-client", &flags.pipeline) {
        eprintln!("helloworld-client: {e}");
        std::process::exit(2);
    }
    let result = runtime.block_on(say_hello(&flags.addr, name));
    if let Err(e) = tracewire::global::shutdown_tracer_provider(FLUSH) {
        eprintln!("helloworld-client: exporting the last spans: {e}");
    }
    match result {
        Ok(message) => eprintln!("{message}"),
        Err(e) => {
            eprintln!("helloworld-client: {e}");
            std::process::exit(1);
        }
    }
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<(Flags, String), String> {
    let mut name = "world".to_owned();
    let flags = Flags::parse_with_extra(args, "http://127.0.0.1:50051", |arg, rest| {
        Ok(match flag_value(arg, "--name", rest)? {
            Some(value) => {
                name = value;
                true
            }
            None => false,
        })
    })?;
    let uri: http::Uri = flags
        .addr
        .parse()
        .map_err(|e| format!("bad --addr {:?}: {e}", flags.addr))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(format!(
            "--addr must be an http://HOST:PORT URL, got {:?}",
            flags.addr
        ));
    }
    Ok((flags, name))
}

/// Calls `SayHello` inside the root span and returns the greeting.
async fn say_hello(addr: &str, name: String) -> Result<String, String> {
    let endpoint = Endpoint::from_shared(addr.to_owned())
        .map_err(|e| format!("bad --addr {addr:?}: {e}"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10));
    let tracer = tracewire::global::tracer("helloworld-client");
    // Every call through this channel gets a client span and carries its context,
    // in the formats OTEL_PROPAGATORS names (default: W3C, grpc-trace-bin, baggage).
    let mut layer = GrpcClientLayer::new(tracer.clone());
    if let Some(propagator) = tracewire::env::propagators() {
        layer = layer.with_propagator(propagator);
    }
    let channel = ServiceBuilder::new()
        .layer(layer)
        .service(endpoint.connect_lazy());
    let mut client = GreeterClient::new(channel);

    let root = tracer
        .span_builder("helloworld-client")
        .with_attribute(KeyValue::new("greeter.addr", addr.to_owned()))
        .start();
    let ctx = Context::new().with_span(root.clone());
    // The client span starts when the call is first polled: poll it inside the
    // root's context so that the root is its parent.
    let reply = client
        .say_hello(HelloRequest { name })
        .in_context(ctx)
        .await;
    let result = match reply {
        Ok(reply) => Ok(reply.into_inner().message),
        Err(status) => {
            root.set_status(Status::error(format!("SayHello: {status}")));
            Err(format!("SayHello failed: {status}"))
        }
    };
    // End the root and wait until every span of this run is with the exporter.
    if let Err(e) = root.end_and_flush().await {
        eprintln!("helloworld-client: flushing spans: {e}");
    }
    result
}
