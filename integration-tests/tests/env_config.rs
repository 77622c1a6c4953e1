//! The example binaries configured the way operators do it: with the OpenTelemetry
//! `OTEL_*` variables, not flags. The spans reach a Zipkin-compatible collector run
//! by the test, under the service names the environment gives.

use std::collections::BTreeSet;
use std::time::Duration;

use integration_tests::{Proc, Zipkin};
use serde_json::Value;

fn service(span: &Value) -> &str {
    span["localEndpoint"]["serviceName"].as_str().unwrap_or("")
}

/// A loopback port nothing listens on (bound, then released).
fn dead_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}/api/v2/spans")
}

/// Runs `helloworld-client` against `server` with `args` and `env`, then stops the
/// server (which flushes its spans) and gives the collector a moment.
async fn call_then_stop(mut server: Proc, args: Vec<String>, env: Vec<(&'static str, String)>) {
    let server_addr = server.wait_for_addr("listening on");
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new(integration_tests::example_bin("helloworld-client"))
            .args(["--addr".to_owned(), format!("http://{server_addr}")])
            .args(args)
            .envs(env)
            .status()
            .expect("run helloworld-client")
    })
    .await
    .unwrap();
    assert!(status.success(), "helloworld-client: {status}");
    tokio::task::spawn_blocking(move || server.stop("TERM"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otel_variables_choose_the_service_name_and_the_zipkin_exporter_and_flags_win() {
    let zipkin = Zipkin::default();
    let url = zipkin.start().await;

    // The server is configured by the environment alone.
    let server = Proc::start_with_env(
        "helloworld-server",
        &["--addr", "127.0.0.1:0"],
        &[
            ("OTEL_SERVICE_NAME", "greeter-from-env"),
            ("OTEL_TRACES_EXPORTER", "zipkin"),
            ("OTEL_EXPORTER_ZIPKIN_ENDPOINT", &url),
        ],
    );

    // The client's `--zipkin` flag wins over OTEL_EXPORTER_ZIPKIN_ENDPOINT, which
    // points at a port nothing listens on; its service name comes from the
    // environment.
    call_then_stop(
        server,
        vec!["--zipkin".into(), url.clone()],
        vec![
            ("OTEL_SERVICE_NAME", "client-from-env".into()),
            ("OTEL_TRACES_EXPORTER", "zipkin".into()),
            ("OTEL_EXPORTER_ZIPKIN_ENDPOINT", dead_endpoint()),
        ],
    )
    .await;

    let spans = zipkin.spans();
    let services: BTreeSet<&str> = spans.iter().map(service).collect();
    assert_eq!(
        services,
        BTreeSet::from(["client-from-env", "greeter-from-env"]),
        "{spans:#?}"
    );
    let server_span = spans
        .iter()
        .find(|s| service(s) == "greeter-from-env" && s["kind"] == "SERVER")
        .expect("a server span");
    let client_span = spans
        .iter()
        .find(|s| service(s) == "client-from-env" && s["kind"] == "CLIENT")
        .expect("a client span");
    assert_eq!(server_span["traceId"], client_span["traceId"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otel_sdk_disabled_exports_nothing() {
    let zipkin = Zipkin::default();
    let url = zipkin.start().await;
    let server = Proc::start_with_env(
        "helloworld-server",
        &["--addr", "127.0.0.1:0", "--zipkin", &url],
        &[("OTEL_SDK_DISABLED", "true")],
    );
    call_then_stop(
        server,
        vec!["--zipkin".into(), url.clone()],
        vec![("OTEL_SDK_DISABLED", "true".into())],
    )
    .await;
    assert_eq!(zipkin.spans(), Vec::<Value>::new());
}
