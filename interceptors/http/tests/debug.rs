//! `/debug/pprof` served by a real hyper server on loopback and fetched by a real
//! client: the index, CPU profiles with labels, one profile at a time, the
//! flame graph's label focus, custom profiles, and bad requests.
#![cfg(target_os = "linux")]

mod support;

use support::serve;

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tracewire::labels::{self, LabelSet};
use tracewire::profile::{self, pprof, CustomProfile};
use tracewire_http::debug::PprofService;

/// CPU profiles are process-wide: the tests that take one take turns.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

async fn request(method: Method, addr: SocketAddr, path: &str) -> Reply {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let request = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .body(Empty::new())
        .unwrap();
    let response = client.request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

async fn get(addr: SocketAddr, path: &str) -> Reply {
    request(Method::GET, addr, path).await
}

/// Threads burning CPU until dropped, each under its own labels.
/// A burning thread: label key, label value, the work loop.
type Burner = (&'static str, &'static str, fn(&AtomicBool));

struct Burners {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Burners {
    fn start(work: &[Burner]) -> Burners {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = work
            .iter()
            .map(|&(key, value, burn)| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    profile::register_current_thread().unwrap();
                    labels::with_labels(LabelSet::new([(key, value)]), || burn(&stop));
                })
            })
            .collect();
        Burners { stop, threads }
    }
}

impl Drop for Burners {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[inline(never)]
fn burn_focused_work(stop: &AtomicBool) {
    let mut x = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for i in 0..10_000u64 {
            x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
        }
    }
    black_box(x);
}

#[inline(never)]
fn burn_unfocused_work(stop: &AtomicBool) {
    let mut x = 1u64;
    while !stop.load(Ordering::Relaxed) {
        for i in 0..10_000u64 {
            x = black_box(x.wrapping_mul(2862933555777941757).wrapping_add(i));
        }
    }
    black_box(x);
}

/// A custom profile with 3 live entries (names are unique per process).
fn conns() -> &'static CustomProfile {
    static CONNS: OnceLock<CustomProfile> = OnceLock::new();
    CONNS.get_or_init(|| {
        let p = CustomProfile::new("debugtest.Conns").unwrap();
        for id in 0..4u32 {
            p.add(&id, 0);
        }
        p.remove(&0u32);
        p
    })
}

#[test]
fn index_lists_the_cpu_profile_the_flamegraph_and_custom_profiles_with_counts() {
    conns();
    support::profiled_runtime().block_on(async {
        let addr = serve(PprofService::new()).await;
        let r = get(addr, "/debug/pprof/").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        let html = r.text();
        assert!(
            html.contains("<a href=\"profile?seconds=30\">profile</a>"),
            "{html}"
        );
        assert!(
            html.contains("<a href=\"flamegraph?seconds=30\">flamegraph</a>"),
            "{html}"
        );
        assert!(
            html.contains(
                "<tr><td>3</td><td><a href=\"debugtest.Conns\">debugtest.Conns</a></td></tr>"
            ),
            "{html}"
        );
    });
}

#[test]
fn the_prefix_without_slash_redirects_to_the_index() {
    support::profiled_runtime().block_on(async {
        let addr = serve(PprofService::new()).await;
        let r = get(addr, "/debug/pprof").await;
        assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);
        assert_eq!(r.headers[header::LOCATION], "pprof/");
    });
}

#[test]
fn cpu_profile_is_gzipped_pprof_with_the_labels_of_the_samples() {
    let _serial = serial();
    let _burners = Burners::start(&[("k", "v", burn_focused_work)]);
    support::profiled_runtime().block_on(async {
        let addr = serve(PprofService::new()).await;
        let r = get(addr, "/debug/pprof/profile?seconds=1").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_eq!(r.headers[header::CONTENT_TYPE], "application/octet-stream");
        assert_eq!(
            r.headers[header::CONTENT_DISPOSITION],
            "attachment; filename=\"profile\""
        );
        assert!(r.body.starts_with(&[0x1f, 0x8b]), "not gzip'd");
        let p = pprof::decode(&r.body).unwrap();
        assert_eq!(p.string(p.sample_type[1].r#type), "cpu");
        let labelled: i64 = p
            .sample
            .iter()
            .filter(|s| p.labels(s).any(|l| l == ("k", "v")))
            .map(|s| s.value[0])
            .sum();
        // One second of one busy thread at 100 Hz: about 100 samples.
        assert!(labelled >= 50, "{labelled} samples labelled k=v");
        assert!(p
            .sample
            .iter()
            .filter(|s| p.labels(s).any(|l| l == ("k", "v")))
            .any(|s| p.stack(s).iter().any(|f| f.contains("burn_focused_work"))));
    });
}

#[test]
fn hz_sets_the_sampling_period() {
    let _serial = serial();
    support::profiled_runtime().block_on(async {
        let addr = serve(PprofService::new()).await;
        let r = get(addr, "/debug/pprof/profile?seconds=1&hz=250").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let p = pprof::decode(&r.body).unwrap();
        assert_eq!(p.period, 4_000_000);
    });
}

#[test]
fn a_second_cpu_profile_while_one_runs_gets_409() {
    let _serial = serial();
    support::profiled_runtime().block_on(async {
        let addr = serve(PprofService::new()).await;
        let first = tokio::spawn(get(addr, "/debug/pprof/profile?seconds=2"));
        tokio::time::sleep(Duration::from_millis(500)).await;
        for path in [
            "/debug/pprof/profile?seconds=1",
            "/debug/pprof/flamegraph?seconds=1",
        ] {
            let second = get(addr, path).await;
            assert_eq!(second.status, StatusCode::CONFLICT, "{path}");
            assert_eq!(
                second.text(),
                "a CPU profile is already running: try again when it ends\n"
            );
        }
        let first = first.await.unwrap();
        assert_eq!(first.status, StatusCode::OK, "{}", first.text());
        pprof::decode(&first.body).unwrap();
        // Once it ended, the next one runs.
        let third = get(addr, "/debug/pprof/profile?seconds=1").await;
        assert_eq!(third.status, StatusCode::OK);
    });
}

#[test]
fn flamegraph_keeps_only_the_samples_with_the_tagfocus_labels() {
    let _serial = serial();
    let _burners = Burners::start(&[
        ("k", "v", burn_focused_work),
        ("k", "other", burn_unfocused_work),
    ]);
    support::profiled_runtime().block_on(async {
        let addr = serve(PprofService::new()).await;
        let r = get(addr, "/debug/pprof/flamegraph?seconds=1&tagfocus=k:v").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_eq!(r.headers[header::CONTENT_TYPE], "image/svg+xml");
        let svg = r.text();
        assert!(svg.contains("<svg"), "{svg}");
        assert!(
            svg.contains("CPU flame graph, tagfocus k:v"),
            "title: {svg}"
        );
        assert!(svg.contains("burn_focused_work"), "{svg}");
        assert!(!svg.contains("burn_unfocused_work"), "{svg}");
        // Frames read as paths without generic arguments.
        assert!(
            svg.contains("debug::burn_focused_work"),
            "path-qualified: {svg}"
        );
        let titles: Vec<&str> = svg
            .split("<title>")
            .skip(1)
            .filter_map(|t| t.split(" (").next())
            .collect();
        let generic = titles.iter().find(|t| {
            t.match_indices("&lt;")
                .any(|(i, _)| i > 0 && t.as_bytes()[i - 1].is_ascii_alphanumeric())
        });
        assert!(
            generic.is_none(),
            "a frame with generic arguments: {generic:?}"
        );

        // Without tagfocus, both threads are there.
        let all = get(addr, "/debug/pprof/flamegraph?seconds=1").await.text();
        assert!(all.contains("burn_focused_work"));
        assert!(all.contains("burn_unfocused_work"));
    });
}

#[test]
fn flamegraph_with_no_matching_sample_is_still_an_svg() {
    let _serial = serial();
    support::profiled_runtime().block_on(async {
        let addr = serve(PprofService::new()).await;
        let r = get(addr, "/debug/pprof/flamegraph?seconds=1&tagfocus=no:such").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_eq!(r.headers[header::CONTENT_TYPE], "image/svg+xml");
        assert!(r.text().contains("<svg"));
    });
}

#[test]
fn custom_profile_is_served_as_gzipped_pprof() {
    conns();
    support::profiled_runtime().block_on(async {
        let addr = serve(PprofService::new()).await;
        let r = get(addr, "/debug/pprof/debugtest.Conns").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_eq!(
            r.headers[header::CONTENT_DISPOSITION],
            "attachment; filename=\"debugtest.Conns\""
        );
        let p = pprof::decode(&r.body).unwrap();
        assert_eq!(p.sample.iter().map(|s| s.value[0]).sum::<i64>(), 3);
        assert_eq!(p.string(p.sample_type[0].r#type), "debugtest.Conns");
    });
}

#[test]
fn unknown_custom_profile_is_404_with_a_message() {
    support::profiled_runtime().block_on(async {
        let addr = serve(PprofService::new()).await;
        let r = get(addr, "/debug/pprof/no.Such").await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert!(
            r.text().contains("unknown profile \"no.Such\""),
            "{}",
            r.text()
        );
        let r = get(addr, "/elsewhere").await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        // This binary's allocator is not tracewire's: no heap profile, and why.
        for path in ["/debug/pprof/heap", "/debug/pprof/allocs?seconds=1"] {
            let r = get(addr, path).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND);
            assert!(
                r.text().contains("tracewire::alloc::Profiled"),
                "{}",
                r.text()
            );
        }
        let index = get(addr, "/debug/pprof/").await.text();
        assert!(!index.contains("href=\"heap\""));
    });
}

#[test]
fn bad_queries_are_400_and_start_no_profile() {
    support::profiled_runtime().block_on(async {
        let addr = serve(PprofService::new()).await;
        for path in [
            "/debug/pprof/profile?seconds=abc",
            "/debug/pprof/profile?seconds=0",
            "/debug/pprof/profile?hz=fast",
            "/debug/pprof/flamegraph?seconds=-3",
            "/debug/pprof/flamegraph?tagfocus=nocolon",
            "/debug/pprof/profile?seconds=%zz",
        ] {
            let r = get(addr, path).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}");
            assert_eq!(r.headers[header::CONTENT_TYPE], "text/plain; charset=utf-8");
            assert!(r.text().starts_with("bad "), "{path}: {}", r.text());
        }
    });
}

#[test]
fn methods_other_than_get_are_405() {
    support::profiled_runtime().block_on(async {
        let addr = serve(PprofService::new()).await;
        let r = request(Method::POST, addr, "/debug/pprof/profile?seconds=1").await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers[header::ALLOW], "GET");
    });
}

#[test]
fn a_custom_prefix_moves_every_endpoint() {
    conns();
    support::profiled_runtime().block_on(async {
        let addr = serve(PprofService::new().with_prefix("/admin/pprof/")).await;
        assert_eq!(
            get(addr, "/admin/pprof/debugtest.Conns").await.status,
            StatusCode::OK
        );
        assert_eq!(
            get(addr, "/debug/pprof/debugtest.Conns").await.status,
            StatusCode::NOT_FOUND
        );
    });
}
