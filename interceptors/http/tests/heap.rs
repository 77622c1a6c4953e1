//! `/debug/pprof/heap` and `/debug/pprof/allocs` of a real hyper server whose
//! global allocator is tracewire's heap profiler: the memory a handler keeps is
//! in the profile under the layer's `http-path` label, as pprof that our decoder
//! and `go tool pprof` read; `?seconds=N` deltas; the index lists both.
#![cfg(target_os = "linux")]

mod support;

use std::alloc::System;
use std::hint::black_box;
use std::sync::Mutex;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tracewire::alloc::Profiled;
use tracewire::profile::pprof;
use tracewire::TracerProvider;
use tracewire_http::debug::PprofService;
use tracewire_http::trace::TraceLayer;

#[global_allocator]
static ALLOC: Profiled<System> = Profiled::new(System);

/// What `/hold` keeps alive, as a cache would.
static HELD: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

#[inline(never)]
fn hold_blocks() {
    let mut held = HELD.lock().unwrap();
    for i in 0..1024 {
        held.push(black_box(vec![i as u8; 4096]));
    }
}

async fn get(url: String) -> (StatusCode, Bytes) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let r = client.get(url.parse().unwrap()).await.unwrap();
    let status = r.status();
    (status, r.into_body().collect().await.unwrap().to_bytes())
}

fn decode(body: &[u8]) -> pprof::Profile {
    pprof::decode(body).expect("valid gzip'd pprof")
}

/// Bytes in use (`inuse_space`, value 3) of the samples labelled `path`.
fn inuse_under(p: &pprof::Profile, path: &str) -> i64 {
    p.sample
        .iter()
        .filter(|s| p.labels(s).any(|(k, v)| k == "http-path" && v == path))
        .map(|s| s.value[3])
        .sum()
}

#[test]
fn the_memory_a_handler_keeps_is_in_the_heap_profile_under_its_route() {
    tracewire::alloc::set_sample_rate(64 * 1024);
    let runtime = support::profiled_runtime();
    runtime.block_on(async {
        let provider = TracerProvider::builder().build();
        let app = tower::ServiceBuilder::new()
            .layer(TraceLayer::new(provider.tracer("app")))
            .service(tower::service_fn(
                |r: Request<hyper::body::Incoming>| async move {
                    if r.uri().path() == "/hold" {
                        hold_blocks();
                    }
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(
                        b"ok",
                    ))))
                },
            ));
        let pprof = PprofService::new();
        let addr = support::serve(tower::service_fn(
            move |r: Request<hyper::body::Incoming>| {
                let (mut app, mut pprof) = (app.clone(), pprof.clone());
                async move {
                    use tower_service::Service;
                    if r.uri().path().starts_with("/debug/pprof") {
                        return Ok::<_, std::convert::Infallible>(
                            pprof.call(r).await.unwrap().map(|b| b.boxed_unsync()),
                        );
                    }
                    Ok(app
                        .call(r)
                        .await
                        .unwrap()
                        .map(|b| b.map_err(|e| match e {}).boxed_unsync()))
                }
            },
        ))
        .await;
        let base = format!("http://{addr}");

        let (_, index) = get(format!("{base}/debug/pprof/")).await;
        let index = String::from_utf8_lossy(&index);
        assert!(
            index.contains("href=\"heap\"") && index.contains("href=\"allocs\""),
            "{index}"
        );

        for _ in 0..4 {
            assert_eq!(get(format!("{base}/hold")).await.0, 200);
        }
        // 4 x 1024 x 4 KiB = 16 MiB kept under /hold.
        let (status, body) = get(format!("{base}/debug/pprof/heap")).await;
        assert_eq!(status, 200);
        let heap = decode(&body);
        let types: Vec<&str> = heap
            .sample_type
            .iter()
            .map(|t| heap.string(t.r#type))
            .collect();
        assert_eq!(
            types,
            [
                "alloc_objects",
                "alloc_space",
                "inuse_objects",
                "inuse_space"
            ]
        );
        assert_eq!(heap.string(heap.default_sample_type), "inuse_space");
        let held = inuse_under(&heap, "/hold");
        assert!(
            (12 << 20..20 << 20).contains(&held),
            "{held} bytes under /hold"
        );
        assert!(heap
            .sample
            .iter()
            .filter(|s| s.value[3] > 0 && heap.labels(s).any(|(_, v)| v == "/hold"))
            .any(|s| heap.stack(s).iter().any(|f| f.contains("hold_blocks"))));

        let (_, body) = get(format!("{base}/debug/pprof/allocs")).await;
        let allocs = decode(&body);
        assert_eq!(allocs.string(allocs.default_sample_type), "alloc_space");

        // A delta over the next second: what /hold adds meanwhile, nothing older.
        let delta = tokio::spawn(get(format!("{base}/debug/pprof/heap?seconds=1")));
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert_eq!(get(format!("{base}/hold")).await.0, 200);
        let (status, body) = delta.await.unwrap();
        assert_eq!(status, 200);
        let added = inuse_under(&decode(&body), "/hold");
        assert!(
            (2 << 20..6 << 20).contains(&added),
            "{added} bytes added under /hold"
        );
        assert_eq!(
            get(format!("{base}/debug/pprof/heap?seconds=x")).await.0,
            400
        );

        if let Some(top) = go_top(&base) {
            assert!(top.contains("hold_blocks"), "{top}");
        }
    });
    HELD.lock().unwrap().clear();
}

/// `go tool pprof -top` of the heap profile focused on /hold, if go is here
/// (under CI=true it must be).
fn go_top(base: &str) -> Option<String> {
    let found = std::process::Command::new("go")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but go is missing"
        );
        return None;
    }
    let url = format!("{base}/debug/pprof/heap");
    let out = std::process::Command::new("go")
        .args([
            "tool",
            "pprof",
            "-top",
            "-sample_index=inuse_space",
            "-tagfocus",
            "http-path=/hold",
            &url,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}
