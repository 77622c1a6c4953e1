//! `/debug/tracez` served by a real hyper server on loopback beside a `TraceLayer`
//! app, fetched by a real client: the summary's counts and buckets, samples,
//! the waterfall's nesting, running spans, the CPU and flame graph of one span,
//! hostile names and attributes escaped, bad requests, and the memory bound under
//! a cardinality attack.
#![cfg(target_os = "linux")]

mod support;

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tracewire::export::InMemoryExporter;
use tracewire::profile::{self, Profiler, SpanIds};
use tracewire::trace::{KeyValue, SpanKind, Status};
use tracewire::{Context, TracerProvider};
use tracewire_http::debug::{Tracez, TracezConfig, TracezService};
use tracewire_http::trace::TraceLayer;

async fn get(url: &str) -> (StatusCode, http::HeaderMap, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let response = client.get(url.parse().unwrap()).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// The `href`s in `html` whose class is `class`, unescaped (`&amp;` -> `&`).
fn links(html: &str, class: &str) -> Vec<String> {
    let needle = format!("class={class} ");
    html.match_indices(&needle)
        .filter_map(|(i, _)| {
            let rest = &html[i..];
            let start = rest.find("href=\"")? + 6;
            let end = rest[start..].find('"')? + start;
            Some(rest[start..end].replace("&amp;", "&"))
        })
        .collect()
}

fn provider(tracez: &Tracez, exporter: &InMemoryExporter, service: &str) -> TracerProvider {
    TracerProvider::builder()
        .with_service_name(service.to_owned())
        .with_observer(tracez.observer())
        .with_simple_exporter(tracez.wrap(exporter.clone()))
        .build()
}

/// An app behind `TraceLayer` (`/fast`, `/slow` ~20 ms with a child span, `/fail`
/// 500) and the tracez pages under `/debug/tracez`, on one loopback server.
async fn app(tracez: &Tracez, provider: &TracerProvider) -> SocketAddr {
    let tracer = provider.tracer("app");
    let inner = tracer.clone();
    let layer = TraceLayer::new(tracer);
    let app = tower::ServiceBuilder::new()
        .layer(layer)
        .service(tower::service_fn(
            move |r: Request<hyper::body::Incoming>| {
                let inner = inner.clone();
                async move {
                    let mut response = Response::new(Full::new(Bytes::from_static(b"ok\n")));
                    match r.uri().path() {
                        "/slow" => {
                            let child = inner
                                .span_builder("load user")
                                .with_kind(SpanKind::Client)
                                .start();
                            child.add_event("cache miss", vec![KeyValue::new("key", "u1")]);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            child.end();
                        }
                        "/fail" => *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR,
                        _ => {}
                    }
                    Ok::<_, std::convert::Infallible>(response)
                }
            },
        ));
    let pages = TracezService::new(tracez.clone());
    support::serve(tower::service_fn(
        move |r: Request<hyper::body::Incoming>| {
            let (mut app, mut pages) = (app.clone(), pages.clone());
            async move {
                use tower_service::Service;
                if r.uri().path().starts_with("/debug/tracez") {
                    let r = pages.call(r).await.unwrap();
                    return Ok::<_, std::convert::Infallible>(r.map(|b| b.boxed_unsync()));
                }
                let r = app.call(r).await.unwrap();
                Ok(r.map(|b| b.map_err(|e| match e {}).boxed_unsync()))
            }
        },
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_summary_leads_to_samples_and_to_a_waterfall_of_the_trace() {
    let tracez = Tracez::default();
    let exporter = InMemoryExporter::new();
    let provider = provider(&tracez, &exporter, "shop");
    let addr = app(&tracez, &provider).await;
    for path in ["/fast", "/fast", "/slow", "/fail"] {
        get(&format!("http://{addr}{path}")).await;
    }

    let (status, headers, summary) = get(&format!("http://{addr}/debug/tracez")).await;
    assert_eq!(status, 200);
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert!(headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .starts_with("default-src 'none'"));
    // One row per name; `/slow` (20 ms) sits in the <100ms bucket (index 4).
    let row = |name: &str| {
        let start = summary
            .find(&format!("data-name=\"{name}\""))
            .unwrap_or_else(|| panic!("no row {name} in {summary}"));
        summary[start..summary[start..].find("</tr>").unwrap() + start].to_owned()
    };
    let slow = row("GET /slow");
    assert!(slow.contains("<td>server<td>0"), "{slow}");
    let slow_links = links(&slow, "bucket");
    assert_eq!(
        slow_links,
        ["/debug/tracez/spans?name=GET%20%2Fslow&kind=server&bucket=4"]
    );
    assert!(
        row("GET /fast").contains("data-bucket=2")
            || row("GET /fast").contains("data-bucket=1")
            || row("GET /fast").contains("data-bucket=3")
    );
    assert_eq!(
        links(&row("GET /fail"), "errors").len(),
        1,
        "{}",
        row("GET /fail")
    );
    assert!(row("load user").contains("<td>client"));

    // Bucket -> samples -> trace.
    let (status, _, samples) = get(&format!("http://{addr}{}", slow_links[0])).await;
    assert_eq!(status, 200, "{samples}");
    let traces = links(&samples, "sample");
    assert_eq!(traces.len(), 1, "{samples}");
    let (status, _, trace) = get(&format!("http://{addr}{}", traces[0])).await;
    assert_eq!(status, 200, "{trace}");
    // The sample that led here is highlighted, and the page opens at its top.
    assert!(traces[0].contains("&span="), "{}", traces[0]);
    assert!(!traces[0].contains('#'));
    assert_eq!(trace.matches("class=selected").count(), 1);
    assert_eq!(trace.matches("class=\"span-detail selected\"").count(), 1);
    // The waterfall comes first, server span at depth 0, its child at depth 1.
    let svg = trace.find("<svg class=waterfall").expect("a waterfall");
    assert!(svg < trace.find("<section").unwrap());
    let server = trace.find("data-depth=\"0\" data-span-id").unwrap();
    let child = trace.find("data-depth=\"1\" data-span-id").unwrap();
    assert!(server < child);
    assert!(trace[child..].starts_with("data-depth=\"1\""));
    assert!(trace.contains("data-name=\"load user\""));
    assert!(trace.contains("cache miss"), "events are shown");
    assert!(
        trace.contains("<dt>http.route<dd>/slow"),
        "attributes are shown"
    );
    assert!(trace.contains("<dt>service<dd>shop"));
    // Without a profile, the page says how to get one instead of linking flame graphs.
    assert!(trace.contains("profile?seconds=10"));
    assert!(links(&trace, "flamegraph").is_empty());

    let stats = tracez.stats();
    assert_eq!(stats.running, 0);
    assert_eq!(stats.spans, 5, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_spans_are_counted_until_they_end() {
    let tracez = Tracez::default();
    let provider = provider(&tracez, &InMemoryExporter::new(), "svc");
    let addr = app(&tracez, &provider).await;
    let span = provider.tracer("t").start("long job");
    let (_, _, summary) = get(&format!("http://{addr}/debug/tracez/")).await;
    assert!(
        summary.contains("data-name=\"long job\"><td class=name>long job<td>internal<td>1"),
        "{summary}"
    );
    span.end();
    let (_, _, summary) = get(&format!("http://{addr}/debug/tracez")).await;
    assert!(summary.contains("long job<td>internal<td>0"), "{summary}");
}

const HOSTILE: &str =
    "<script>window.pwned=1</script>\"'><img src=x onerror=alert(1)>\u{1}\u{7f}\u{9b}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_attributes_and_events_are_escaped_on_every_page() {
    let tracez = Tracez::default();
    let provider = provider(&tracez, &InMemoryExporter::new(), HOSTILE);
    let addr = app(&tracez, &provider).await;
    let tracer = provider.tracer(HOSTILE);
    let root = tracer.start(HOSTILE);
    let cx = Context::new().with_span(root.clone());
    let child = tracer.span_builder(HOSTILE).with_parent(&cx).start();
    child.set_attribute(HOSTILE, HOSTILE);
    child.add_event(HOSTILE, vec![KeyValue::new(HOSTILE, HOSTILE)]);
    child.set_status(Status::error(HOSTILE));
    child.add_link(root.span_context().clone(), vec![KeyValue::new(HOSTILE, 1)]);
    child.end();
    root.end();

    let (_, _, summary) = get(&format!("http://{addr}/debug/tracez")).await;
    let buckets = links(&summary, "bucket");
    let errors = links(&summary, "errors");
    assert!(!buckets.is_empty() && errors.len() == 1, "{summary}");
    let (_, _, samples) = get(&format!("http://{addr}{}", errors[0])).await;
    let trace_link = links(&samples, "sample");
    assert_eq!(trace_link.len(), 1, "{samples}");
    let (_, _, trace) = get(&format!("http://{addr}{}", trace_link[0])).await;
    for (page, html) in [
        ("summary", &summary),
        ("samples", &samples),
        ("trace", &trace),
    ] {
        let lower = html.to_ascii_lowercase();
        assert!(!lower.contains("<script"), "{page}: raw <script> in {html}");
        assert!(!lower.contains("<img"), "{page}: raw <img> in {html}");
        assert!(!html.contains('\u{1}') && !html.contains('\u{7f}') && !html.contains('\u{9b}'));
        assert!(
            html.contains("&lt;script&gt;window.pwned=1&lt;/script&gt;&quot;&#39;&gt;&lt;img"),
            "{page}: the name is not shown escaped"
        );
    }
    assert!(
        trace.contains("\\u{1}\\u{7f}\\u{9b}"),
        "control characters are shown"
    );
    // Event, attribute and status all made it, escaped.
    assert!(trace.matches("&lt;script&gt;").count() >= 8, "{trace}");
}

#[test]
fn a_cardinality_attack_stays_within_the_configured_bounds() {
    let config = TracezConfig::default()
        .with_max_names(100)
        .with_max_traces(64)
        .with_max_spans_per_trace(32)
        .with_samples_per_bucket(2);
    let tracez = Tracez::new(config);
    let provider = TracerProvider::builder()
        .with_observer(tracez.observer())
        .with_simple_exporter(tracez.exporter())
        .build();
    let tracer = provider.tracer("attack");
    let rss = || {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        pages * 4096
    };
    let names: Vec<String> = (0..10_000)
        .map(|i| format!("GET /item/{i}/{}", "x".repeat(64)))
        .collect();
    let spans = 1_000_000;
    let mut rss_at_100k = 0;
    let mut i = 0;
    while i < spans {
        // A trace of 50 spans (more than a trace keeps), each with a new name.
        tracer.in_span(names[i % names.len()].clone(), |cx| {
            for _ in 0..49 {
                i += 1;
                let s = tracer
                    .span_builder(names[i % names.len()].clone())
                    .with_parent(cx)
                    .start();
                s.set_attribute("user_agent.original", "y".repeat(200));
                s.end();
            }
        });
        i += 1;
        if rss_at_100k == 0 && i >= 100_000 {
            rss_at_100k = rss();
        }
    }
    let stats = tracez.stats();
    assert_eq!(stats.names, 100, "{stats:?}");
    assert!(stats.spans_of_other_names > 980_000, "{stats:?}");
    assert!(stats.traces <= 64, "{stats:?}");
    assert!(stats.spans <= 64 * 32, "{stats:?}");
    assert!(stats.spans_not_kept > 0, "{stats:?}");
    assert!(stats.samples <= 100 * 10 * 2, "{stats:?}");
    assert_eq!(stats.running, 0);
    assert_eq!(provider.stats().ended, spans as u64);
    let growth = rss().saturating_sub(rss_at_100k);
    assert!(
        growth < 8 << 20,
        "RSS grew by {growth} bytes between 100,000 and 1,000,000 spans"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_defined_answers() {
    let tracez = Tracez::default();
    let provider = provider(&tracez, &InMemoryExporter::new(), "svc");
    let addr = app(&tracez, &provider).await;
    for (path, want) in [
        ("/debug/tracez/spans", 400),
        ("/debug/tracez/spans?name=nope&bucket=1", 404),
        ("/debug/tracez/spans?name=nope&kind=server&bucket=1", 404),
        ("/debug/tracez/spans?name=x&kind=bogus&bucket=1", 400),
        ("/debug/tracez/spans?name=x&bucket=9", 400),
        ("/debug/tracez/spans?name=x&bucket=-1", 400),
        ("/debug/tracez/trace", 400),
        ("/debug/tracez/trace?id=zz", 400),
        (
            "/debug/tracez/trace?id=0af7651916cd43dd8448eb211c80319c&span=xyz",
            400,
        ),
        (
            "/debug/tracez/trace?id=0af7651916cd43dd8448eb211c80319c",
            404,
        ),
        (
            "/debug/tracez/flamegraph?tagfocus=span_id:00f067aa0ba902b7",
            404,
        ),
        ("/debug/tracez/flamegraph?tagfocus=nocolon", 400),
        ("/debug/tracez/profile?seconds=abc", 400),
        ("/debug/tracez/other", 404),
        ("/debug/tracez/spans?name=%zz", 400),
    ] {
        let (status, _, body) = get(&format!("http://{addr}{path}")).await;
        assert_eq!(status.as_u16(), want, "{path}: {body}");
    }
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let post = Request::post(format!("http://{addr}/debug/tracez"))
        .body(Empty::new())
        .unwrap();
    assert_eq!(client.request(post).await.unwrap().status(), 405);
}

#[inline(never)]
fn burn(until: Instant) -> u64 {
    let mut x = 1u64;
    while Instant::now() < until {
        for i in 0..10_000 {
            x = black_box(x.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i);
        }
    }
    x
}

#[test]
fn a_span_shows_the_cpu_sampled_under_it_and_its_flame_graph() {
    let runtime = support::profiled_runtime();
    profile::register_current_thread().unwrap();
    let tracez = Tracez::default();
    let provider = provider(&tracez, &InMemoryExporter::new(), "cpu");
    let tracer = provider.tracer("t");
    let profiler = Profiler::builder()
        .with_frequency(200)
        .with_span_ids(SpanIds::Every)
        .start()
        .unwrap();
    let (trace_id, span_id) = tracer.in_span("request", |cx| {
        let inner = tracer.span_builder("hot loop").with_parent(cx).start();
        let ids = (
            inner.span_context().trace_id(),
            inner.span_context().span_id(),
        );
        let _g = Context::current_with_span(inner.clone()).attach();
        black_box(burn(Instant::now() + Duration::from_millis(400)));
        inner.end();
        ids
    });
    let profile = profiler.stop().unwrap();
    tracez.set_profile(&profile);
    runtime.block_on(async {
        let addr = app(&tracez, &provider).await;
        let (_, _, trace) = get(&format!("http://{addr}/debug/tracez/trace?id={trace_id}")).await;
        let flame = links(&trace, "flamegraph");
        let own = format!("/debug/tracez/flamegraph?tagfocus=span_id:{span_id}");
        assert!(flame.contains(&own), "{flame:?} in {trace}");
        assert!(links(&trace, "flamegraph-trace")[0].ends_with(&format!("trace_id:{trace_id}")));
        // The hot span's CPU is shown in its row of the waterfall.
        let row = &trace[trace.find(&format!("data-span-id=\"{span_id}\"")).unwrap()..];
        let row = &row[..row.find("</g>").unwrap()];
        assert!(row.contains("cpu "), "{row}");
        let (status, headers, svg) = get(&format!("http://{addr}{own}")).await;
        assert_eq!(status, 200, "{svg}");
        assert_eq!(headers[header::CONTENT_TYPE], "image/svg+xml");
        assert!(
            svg.contains("burn"),
            "the span's flame graph names its hot function"
        );
        // `/profile` takes a new one and sends the browser back to the summary.
        let (status, headers, _) =
            get(&format!("http://{addr}/debug/tracez/profile?seconds=1")).await;
        assert_eq!(status, 303);
        assert_eq!(headers[header::LOCATION], "/debug/tracez/");
    });
}
