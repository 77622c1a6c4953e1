//! The demo's `/debug/tracez`, looked at in a real browser: headless Chromium
//! (Debian's `chromium` and `chromium-driver`) driven over WebDriver. It opens
//! the summary, follows a latency bucket to a sample and the sample to its trace,
//! checks the waterfall's nesting (HTTP frontend -> `#[instrument]` fn -> gRPC
//! client -> gRPC backend -> backend span), follows a span's flame-graph link, and
//! checks that a `<script>` sent in a request header was shown as text and did not
//! run. Screenshots of each page are saved (see `screenshot_dir`).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use integration_tests::Proc;
use serde_json::json;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A User-Agent a hostile client sends: it ends up in a span attribute.
const HOSTILE_UA: &str =
    "<script>window.pwned=1</script>\"'><img src=x onerror=\"window.pwned=2\">";

/// Where the screenshots go: `$TRACEZ_SCREENSHOTS`, else `target/tracez-screenshots`.
fn screenshot_dir() -> PathBuf {
    let dir = match std::env::var_os("TRACEZ_SCREENSHOTS") {
        Some(d) => PathBuf::from(d),
        None => {
            let exe = std::env::current_exe().expect("test executable path");
            // target/<profile>/deps/<test> -> target
            exe.ancestors()
                .nth(3)
                .expect("target/")
                .join("tracez-screenshots")
        }
    };
    std::fs::create_dir_all(&dir).expect("create the screenshot directory");
    dir
}

/// chromedriver on a free loopback port, killed when dropped.
struct Driver(Child, u16);

impl Driver {
    fn start() -> Driver {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(CHROMEDRIVER)
            .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".into()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Driver(child, port)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--disable-dev-shm-usage",
                "--window-size=1300,900",
            ],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.1))
        .await
        .expect("a WebDriver session with chromium")
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("screenshot");
    let path = screenshot_dir().join(format!("{name}.png"));
    std::fs::write(&path, png).expect("save the screenshot");
    eprintln!("screenshot: {}", path.display());
}

/// `GET url` with extra headers, answering the status.
async fn get_with(url: &str, headers: &[(&str, &str)]) -> u16 {
    use http_body_util::Empty;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<bytes::Bytes>>();
    let mut request = http::Request::get(url);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = client
        .request(request.body(Empty::new()).unwrap())
        .await
        .expect("the request");
    response.status().as_u16()
}

/// The flame-graph link of the span with the most CPU on the current trace page,
/// with that CPU in nanoseconds; `None` if no span of it has any.
async fn best_flamegraph(client: &Client) -> Option<(u128, String)> {
    let mut best = None;
    for a in client.find_all(Locator::Css("a.flamegraph")).await.unwrap() {
        let cpu: u128 = a.attr("data-cpu-ns").await.unwrap()?.parse().unwrap();
        let href = a.attr("href").await.unwrap()?;
        if cpu > 0 && best.as_ref().is_none_or(|(c, _)| cpu > *c) {
            best = Some((cpu, href));
        }
    }
    best
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_tracez_leads_from_a_bucket_to_a_trace_and_a_span_flame_graph_in_chromium() {
    let missing =
        !std::path::Path::new(CHROMIUM).exists() || !std::path::Path::new(CHROMEDRIVER).exists();
    if !integration_tests::available(missing, "chromium and chromium-driver", "the browser test") {
        return;
    }
    let out = std::env::temp_dir().join(format!("tracez-browser-{}", std::process::id()));
    let out_arg = out.display().to_string();
    let mut demo = Proc::start("demo", &["--serve", "--seconds", "3", "--out", &out_arg]);
    let summary_url = demo.wait_for_line("  tracez ");
    let summary_url = summary_url.split_whitespace().last().unwrap().to_owned();
    let base = summary_url.trim_end_matches("/debug/tracez/").to_owned();
    demo.wait_for_line("serving until Ctrl-C");

    // A request carrying a script in a header, in a trace whose id we know.
    let hostile_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let status = get_with(
        &format!("{base}/user"),
        &[
            ("user-agent", HOSTILE_UA),
            (
                "traceparent",
                &format!("00-{hostile_trace}-00f067aa0ba902b7-01"),
            ),
        ],
    )
    .await;
    assert_eq!(status, 200);

    let driver = tokio::task::spawn_blocking(Driver::start).await.unwrap();
    let client = browser(&driver).await;

    // 1. The summary: GET /messages (server) has a latency bucket with samples.
    client.goto(&summary_url).await.unwrap();
    assert_eq!(client.title().await.unwrap(), "tracez");
    screenshot(&client, "tracez-summary").await;
    let row = client
        .find(Locator::Css(r#"tr.kind-server[data-name="GET /messages"]"#))
        .await
        .expect("a GET /messages row");
    let bucket = row
        .find(Locator::Css("a.bucket"))
        .await
        .expect("a bucket with samples");
    bucket.click().await.unwrap();

    // 2. The samples of that bucket -> one sample's trace.
    assert!(client
        .current_url()
        .await
        .unwrap()
        .as_str()
        .contains("/debug/tracez/spans?"));
    let sample = client
        .find(Locator::Css("a.sample"))
        .await
        .expect("a sample");
    sample.click().await.unwrap();

    // 3. The waterfall: the whole in-process trace, nested.
    assert!(client
        .current_url()
        .await
        .unwrap()
        .as_str()
        .contains("/debug/tracez/trace?id="));
    let rows = client
        .find_all(Locator::Css("svg.waterfall g.span"))
        .await
        .unwrap();
    let mut nesting = Vec::new();
    for r in &rows {
        let depth = r.attr("data-depth").await.unwrap().unwrap();
        let name = r.attr("data-name").await.unwrap().unwrap();
        nesting.push(format!("{depth} {name}"));
    }
    assert_eq!(
        nesting,
        [
            "0 GET /messages",
            "1 render",
            "2 helloworld.Greeter/SayHello",
            "3 helloworld.Greeter/SayHello",
            "4 score",
        ],
        "frontend -> #[instrument] fn -> gRPC client -> gRPC backend -> backend span"
    );
    let waterfall = client.find(Locator::Css("svg.waterfall")).await.unwrap();
    let top = waterfall.rectangle().await.unwrap().1;
    let scrolled = client
        .execute("return window.scrollY;", vec![])
        .await
        .unwrap();
    assert_eq!(scrolled, json!(0), "the trace page opens at its top");
    assert!(
        top < 300.0,
        "the waterfall is the first thing one sees (top at {top}px)"
    );
    screenshot(&client, "tracez-waterfall").await;

    // 4. A span's flame graph: the span of this trace whose CPU the profiler caught
    // most (sampling misses some requests: then the kept trace with the most CPU,
    // from the summary's slowest traces).
    let mut best = best_flamegraph(&client).await;
    if best.is_none() {
        client.goto(&summary_url).await.unwrap();
        let mut traces = Vec::new();
        for a in client.find_all(Locator::Css("a.trace")).await.unwrap() {
            let cpu: u128 = a
                .attr("data-cpu-ns")
                .await
                .unwrap()
                .unwrap()
                .parse()
                .unwrap();
            traces.push((cpu, a.attr("href").await.unwrap().unwrap()));
        }
        let (_, href) = traces
            .into_iter()
            .max()
            .filter(|(cpu, _)| *cpu > 0)
            .expect("a kept trace with CPU");
        client
            .find(Locator::Css(&format!(r#"a.trace[href="{href}"]"#)))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        best = best_flamegraph(&client).await;
    }
    let (cpu_ns, href) = best.expect("a span with CPU samples");
    screenshot(&client, "tracez-trace-cpu").await;
    let span_id = href.rsplit(':').next().unwrap().to_owned();
    client
        .find(Locator::Css(&format!(r#"a.flamegraph[href="{href}"]"#)))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let url = client.current_url().await.unwrap();
    assert!(
        url.as_str().ends_with(&format!(
            "/debug/tracez/flamegraph?tagfocus=span_id:{span_id}"
        )),
        "{url}"
    );
    // The flame graph holds exactly the samples the trace page counted for the
    // span (the demo profiles at 100 Hz: 10 ms a sample).
    let svg = client.source().await.unwrap();
    assert!(
        svg.contains(&format!("tagfocus span_id:{span_id}")),
        "{svg}"
    );
    let samples = cpu_ns / 10_000_000;
    assert!(
        svg.contains(&format!(">{samples} samples at 100 Hz")),
        "want {samples} samples: {svg}"
    );
    screenshot(&client, "tracez-span-flamegraph").await;

    // 5. The hostile request: its User-Agent is text on the page; nothing ran.
    client
        .goto(&format!("{base}/debug/tracez/trace?id={hostile_trace}"))
        .await
        .unwrap();
    let shown = client
        .execute(
            "for (const dt of document.querySelectorAll('dt')) { \
               if (dt.textContent === 'user_agent.original') return dt.nextElementSibling.textContent; } \
             return null;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        shown,
        json!(HOSTILE_UA),
        "the header is shown as it was sent"
    );
    let ran = client
        .execute(
            "return [typeof window.pwned, document.querySelectorAll('script, img').length];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        ran,
        json!(["undefined", 0]),
        "the injected markup did not run"
    );
    screenshot(&client, "tracez-hostile").await;

    client.close().await.unwrap();
    drop(driver);
    tokio::task::spawn_blocking(move || demo.stop("INT"))
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(out);
}
