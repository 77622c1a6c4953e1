//! tracewire across processes: the example binaries, started as child processes,
//! export to a Zipkin-compatible collector run by the test; one trace spans the
//! helloworld client and server; CPU profiles fetched over `/debug/pprof` carry
//! the layers' `http-path` and `grpc-method` labels, read by our decoder and by
//! `go tool pprof`.

use std::collections::BTreeSet;
use std::time::Duration;

use integration_tests::{get, go, Proc, Zipkin};
use serde_json::Value;
use tracewire::profile::pprof;

fn service(span: &Value) -> &str {
    span["localEndpoint"]["serviceName"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_across_helloworld_processes_and_http_labels_spans_in_zipkin() {
    let zipkin = Zipkin::default();
    let url = zipkin.start().await;

    let mut labels = Proc::start("http-labels", &["--addr", "127.0.0.1:0", "--zipkin", &url]);
    let labels_addr = labels.wait_for_addr("listening on");
    for path in ["/messages", "/user", "/user"] {
        let (status, _) = get(&format!("http://{labels_addr}{path}")).await;
        assert_eq!(status, 200);
    }

    let mut server = Proc::start(
        "helloworld-server",
        &["--addr", "127.0.0.1:0", "--zipkin", &url],
    );
    let server_addr = server.wait_for_addr("listening on");
    let client_addr = format!("http://{server_addr}");
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new(integration_tests::example_bin("helloworld-client"))
            .args(["--addr", &client_addr, "--name", "world", "--zipkin", &url])
            .status()
            .expect("run helloworld-client")
    })
    .await
    .unwrap();
    assert!(status.success(), "helloworld-client: {status}");

    // Graceful shutdowns flush what the servers still hold.
    tokio::task::spawn_blocking(move || {
        server.stop("TERM");
        labels.stop("INT");
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let spans = zipkin.spans();
    let services: BTreeSet<&str> = spans.iter().map(service).collect();
    assert!(
        services.is_superset(&BTreeSet::from([
            "helloworld-client",
            "helloworld-server",
            "http-labels"
        ])),
        "{services:?}"
    );
    // http-labels: three server spans from the layer, with their routes.
    let routes: Vec<&str> = spans
        .iter()
        .filter(|s| service(s) == "http-labels" && s["kind"] == "SERVER")
        .filter_map(|s| s["tags"]["http.route"].as_str())
        .collect();
    assert_eq!(
        routes.iter().filter(|r| **r == "/user").count(),
        2,
        "{routes:?}"
    );
    assert!(routes.contains(&"/messages"));
    // helloworld: the server span's parent is the client's span, in one trace.
    let client_span = spans
        .iter()
        .find(|s| service(s) == "helloworld-client" && s["kind"] == "CLIENT")
        .expect("client span");
    let server_span = spans
        .iter()
        .find(|s| service(s) == "helloworld-server" && s["kind"] == "SERVER")
        .expect("server span");
    assert_eq!(server_span["traceId"], client_span["traceId"]);
    assert_eq!(server_span["parentId"], client_span["id"]);
    let trace = client_span["traceId"].clone();
    let in_trace: BTreeSet<&str> = spans
        .iter()
        .filter(|s| s["traceId"] == trace)
        .map(service)
        .collect();
    assert_eq!(
        in_trace,
        BTreeSet::from(["helloworld-client", "helloworld-server"])
    );
    // Every span of that trace has its parent in the trace, except one root.
    let ids: BTreeSet<&str> = spans
        .iter()
        .filter(|s| s["traceId"] == trace)
        .filter_map(|s| s["id"].as_str())
        .collect();
    let roots = spans
        .iter()
        .filter(|s| s["traceId"] == trace)
        .filter(|s| s["parentId"].as_str().is_none_or(|p| !ids.contains(p)))
        .count();
    assert_eq!(roots, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_profile_labels_http_paths_and_grpc_methods() {
    let out = std::env::temp_dir().join(format!("tracewire-demo-test-{}", std::process::id()));
    let out_s = out.to_str().unwrap().to_owned();
    let mut demo = Proc::start("demo", &["--serve", "--seconds", "2", "--out", &out_s]);
    let frontend = demo.wait_for_addr("HTTP frontend");
    demo.wait_for_line("serving until Ctrl-C");
    // Load both paths while a 3 s CPU profile is taken over /debug/pprof.
    let load = tokio::spawn(async move {
        let stop = std::time::Instant::now() + Duration::from_secs(4);
        while std::time::Instant::now() < stop {
            for path in ["/messages", "/user"] {
                let _ = get(&format!("http://{frontend}{path}")).await;
            }
        }
    });
    let (status, body) = get(&format!("http://{frontend}/debug/pprof/profile?seconds=3")).await;
    assert_eq!(status, 200);
    load.await.unwrap();
    let profile = pprof::decode(&body).unwrap();
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    for s in &profile.sample {
        for (k, v) in profile.labels(s) {
            seen.insert((k.to_owned(), v.to_owned()));
        }
    }
    for want in [
        ("http-path", "/messages"),
        ("http-path", "/user"),
        ("grpc-method", "/helloworld.Greeter/SayHello"),
    ] {
        assert!(
            seen.contains(&(want.0.to_owned(), want.1.to_owned())),
            "{want:?} missing from {seen:?}"
        );
    }
    let file = out.join("fetched.pb.gz");
    std::fs::write(&file, &body).unwrap();
    if let Some(tags) = go(&["tool", "pprof", "-tags", file.to_str().unwrap()]) {
        for word in [
            "http-path",
            "/messages",
            "grpc-method",
            "/helloworld.Greeter/SayHello",
        ] {
            assert!(
                tags.contains(word),
                "{word} not in go tool pprof -tags:\n{tags}"
            );
        }
    }
    // The demo's own files exist: spans as JSON lines, the profile, the flame graph.
    for f in [
        "frontend.spans.jsonl",
        "backend.spans.jsonl",
        "profile.pb.gz",
        "flamegraph.svg",
    ] {
        assert!(out.join(f).metadata().is_ok_and(|m| m.len() > 0), "{f}");
    }
    tokio::task::spawn_blocking(move || demo.stop("INT"))
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&out);
}
