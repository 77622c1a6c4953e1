//! OTLP/HTTP against a real hyper server on loopback: every field, gzip,
//! headers, retries (`Retry-After`, `RetryInfo` in the `Status` body), permanent
//! errors, partial success, a collector that is down or hangs.

mod support;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::Read as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prost::Message as _;
use tokio::net::TcpListener;
use tracewire::export::SpanExporter;
use tracewire_otlp::proto::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tracewire_otlp::proto::rpc;
use tracewire_otlp::{Compression, OtlpExporterBuilder, Protocol};

use support::*;

// ---------------------------------------------------------------------------
// A stand-in for a collector.

/// What one request brought.
#[derive(Clone, Debug)]
struct Received {
    at: Instant,
    method: http::Method,
    path: String,
    headers: http::HeaderMap,
    /// The body as sent (compressed if it was).
    raw: Bytes,
    /// The request, gunzipped first when `Content-Encoding: gzip` says so.
    request: ExportTraceServiceRequest,
}

/// One scripted answer.
#[derive(Clone, Debug)]
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn status(status: u16) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
    fn with_header(mut self, name: &'static str, value: &str) -> Answer {
        self.headers.push((name, value.to_owned()));
        self
    }
    fn with_protobuf(mut self, body: Vec<u8>) -> Answer {
        self.body = body;
        self.with_header("content-type", "application/x-protobuf")
    }
}

/// Records each request; answers from the script, then 200 with `ok_body`.
#[derive(Clone, Default)]
struct Collector {
    received: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<Answer>>>,
    ok_body: Vec<u8>,
}

impl Collector {
    /// How long the exporter waited between the two requests it made.
    fn wait_between_attempts(&self) -> Duration {
        let received = self.received();
        assert_eq!(received.len(), 2, "one retry");
        received[1].at - received[0].at
    }

    fn answering(answers: impl IntoIterator<Item = Answer>) -> Self {
        let c = Collector::default();
        c.script.lock().unwrap().extend(answers);
        c
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    fn requests(&self) -> Vec<ExportTraceServiceRequest> {
        self.received().into_iter().map(|r| r.request).collect()
    }

    async fn start(self) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let this = self.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let this = this.clone();
                        async move { Ok::<_, Infallible>(this.handle(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Server::new(url, task)
    }

    async fn handle(
        &self,
        req: hyper::Request<hyper::body::Incoming>,
    ) -> hyper::Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        let raw = body.collect().await.unwrap().to_bytes();
        let gzip = parts
            .headers
            .get("content-encoding")
            .is_some_and(|v| v == "gzip");
        let plain = if gzip {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&raw[..])
                .read_to_end(&mut out)
                .unwrap();
            Bytes::from(out)
        } else {
            raw.clone()
        };
        self.received.lock().unwrap().push(Received {
            at: Instant::now(),
            method: parts.method,
            path: parts.uri.path().to_owned(),
            headers: parts.headers,
            raw,
            request: ExportTraceServiceRequest::decode(plain).unwrap(),
        });
        let answer = self.script.lock().unwrap().pop_front();
        let answer =
            answer.unwrap_or_else(|| Answer::status(200).with_protobuf(self.ok_body.clone()));
        let mut response = hyper::Response::builder().status(answer.status);
        for (name, value) in &answer.headers {
            response = response.header(*name, value);
        }
        response.body(Full::new(Bytes::from(answer.body))).unwrap()
    }
}

fn exporter_for(url: &str) -> OtlpExporterBuilder {
    support::exporter_for(Protocol::HttpProtobuf, url)
}

// ---------------------------------------------------------------------------
// Mapping and transport.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_field_arrives_as_it_was_sent() {
    let collector = Collector::default();
    let server = collector.clone().start().await;
    let mut exporter = exporter_for(&server.url()).build().unwrap();
    exporter.set_resource(&resource());
    let sent = vec![full_span(), root_span("root")];

    exporter.export(&sent).await.unwrap();

    assert_round_trip(&collector.requests(), &sent);
    let r = &collector.received()[0];
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/v1/traces"));
    assert_eq!(r.headers["content-type"], "application/x-protobuf");
    assert!(r.headers.get("content-encoding").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_is_sent_with_content_encoding_and_decodes() {
    let collector = Collector::default();
    let server = collector.clone().start().await;
    let mut exporter = exporter_for(&server.url())
        .with_compression(Compression::Gzip)
        .build()
        .unwrap();
    exporter.set_resource(&resource());
    let sent = vec![full_span()];

    exporter.export(&sent).await.unwrap();

    let r = &collector.received()[0];
    assert_eq!(r.headers["content-encoding"], "gzip");
    assert_eq!(&r.raw[..2], [0x1f, 0x8b], "a gzip stream");
    assert_round_trip(&collector.requests(), &sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_are_sent_with_a_user_agent() {
    let collector = Collector::default();
    let server = collector.clone().start().await;
    let mut exporter = exporter_for(&server.url())
        .with_header("Authorization", "Bearer t0ken")
        .build()
        .unwrap();
    assert!(!format!("{exporter:?}").contains("t0ken"));

    exporter.export(&spans(1)).await.unwrap();

    let r = &collector.received()[0];
    assert_eq!(r.headers["authorization"], "Bearer t0ken");
    let ua = r.headers["user-agent"].to_str().unwrap();
    assert!(ua.starts_with("tracewire-otlp/"), "{ua}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_batch_is_split_into_requests_within_the_limit() {
    let collector = Collector::default();
    let server = collector.clone().start().await;
    let mut exporter = exporter_for(&server.url())
        .with_max_request_bytes(1_500)
        .build()
        .unwrap();
    let sent = spans(60);

    exporter.export(&sent).await.unwrap();

    let received = collector.received();
    assert!(received.len() > 1);
    assert!(received.iter().all(|r| r.raw.len() <= 1_500));
    assert_eq!(received_spans(&collector.requests()), sent);
}

// ---------------------------------------------------------------------------
// Retries.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_unavailable_with_retry_after_is_retried_after_that_many_seconds() {
    let collector = Collector::answering([Answer::status(503).with_header("retry-after", "1")]);
    let server = collector.clone().start().await;
    let mut exporter = exporter_for(&server.url()).build().unwrap();

    exporter.export(&spans(2)).await.unwrap();

    let waited = collector.wait_between_attempts();
    assert!(waited >= Duration::from_secs(1), "retried after {waited:?}");
    let stats = exporter.counters().snapshot();
    assert_eq!((stats.exported, stats.retried), (2, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_requests_with_retry_info_in_the_status_body_waits_its_delay() {
    let delay = Duration::from_millis(300);
    let body = status_with_retry_info(8, "throttled", delay);
    let collector = Collector::answering([Answer::status(429).with_protobuf(body)]);
    let server = collector.clone().start().await;
    let mut exporter = exporter_for(&server.url()).build().unwrap();

    exporter.export(&spans(1)).await.unwrap();

    let waited = collector.wait_between_attempts();
    assert!(waited >= delay, "retried after {waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_retryable_status_of_the_specification_is_retried() {
    for status in [429, 502, 503, 504] {
        let collector = Collector::answering([Answer::status(status)]);
        let server = collector.clone().start().await;
        let mut exporter = exporter_for(&server.url()).build().unwrap();
        exporter.export(&spans(1)).await.unwrap();
        assert_eq!(collector.received().len(), 2, "{status}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_request_is_not_retried_and_its_status_message_is_reported() {
    let body = rpc::Status {
        code: 3,
        message: "span name missing".into(),
        details: Vec::new(),
    }
    .encode_to_vec();
    let collector = Collector::answering([Answer::status(400).with_protobuf(body)]);
    let server = collector.clone().start().await;
    let mut exporter = exporter_for(&server.url()).build().unwrap();

    let err = exporter.export(&spans(3)).await.unwrap_err();

    assert!(err.to_string().contains("400"), "{err}");
    assert!(err.to_string().contains("span name missing"), "{err}");
    assert_eq!(collector.received().len(), 1);
    let stats = exporter.counters().snapshot();
    assert_eq!(
        (stats.exported, stats.dropped, stats.failed, stats.retried),
        (0, 3, 1, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_server_errors_are_not_retried() {
    for status in [401, 404, 413, 500] {
        let collector = Collector::answering([Answer::status(status)]);
        let server = collector.clone().start().await;
        let mut exporter = exporter_for(&server.url()).build().unwrap();
        assert!(exporter.export(&spans(1)).await.is_err(), "{status}");
        assert_eq!(collector.received().len(), 1, "{status}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_longer_than_the_time_left_fails_at_once() {
    let collector = Collector::answering([Answer::status(503).with_header("retry-after", "120")]);
    let server = collector.clone().start().await;
    let mut exporter = exporter_for(&server.url())
        .with_timeout(Duration::from_secs(2))
        .build()
        .unwrap();

    let start = Instant::now();
    let err = exporter.export(&spans(1)).await.unwrap_err();

    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert!(err.to_string().contains("no retry"), "{err}");
    assert_eq!(collector.received().len(), 1);
}

// ---------------------------------------------------------------------------
// Partial success.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_spans_of_a_partial_success_are_counted_as_dropped() {
    let collector = Collector {
        ok_body: ExportTraceServiceResponse {
            partial_success: Some(ExportTracePartialSuccess {
                rejected_spans: 1,
                error_message: "1 span without a name".into(),
            }),
        }
        .encode_to_vec(),
        ..Collector::default()
    };
    let server = collector.clone().start().await;
    let mut exporter = exporter_for(&server.url()).build().unwrap();
    let rejected = exporter.rejected();

    exporter.export(&spans(4)).await.unwrap();

    let stats = exporter.counters().snapshot();
    assert_eq!((stats.exported, stats.dropped, stats.failed), (3, 1, 0));
    assert_eq!(rejected.get(), 1);
    assert_eq!(
        collector.received().len(),
        1,
        "a partial success is not retried"
    );
}

// ---------------------------------------------------------------------------
// A collector that is down or hangs.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_fails_the_export_within_the_timeout() {
    let port = closed_port().await;
    let mut exporter = exporter_for(&format!("http://127.0.0.1:{port}/v1/traces"))
        .with_timeout(SHORT_TIMEOUT)
        .build()
        .unwrap();

    export_fails_in_time(&mut exporter, 3).await;

    let retried = exporter.counters().snapshot().retried;
    assert!(retried > 0, "connection errors are retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_collector_fails_the_export_within_the_timeout() {
    let (port, task) = silent_listener().await;
    let mut exporter = exporter_for(&format!("http://127.0.0.1:{port}/v1/traces"))
        .with_timeout(SHORT_TIMEOUT)
        .build()
        .unwrap();

    let err = export_fails_in_time(&mut exporter, 2).await;

    assert!(err.to_string().contains("did not answer"), "{err}");
    task.abort();
}

#[test]
fn endpoints_that_are_not_http_urls_fail_the_build() {
    for url in [
        "localhost:4318",
        "ftp://c/v1/traces",
        "http://",
        "not a url",
    ] {
        assert!(exporter_for(url).build().is_err(), "{url:?}");
    }
    assert!(exporter_for("http://c/")
        .with_header("bad name", "v")
        .build()
        .is_err());
    assert!(exporter_for("https://collector.example/v1/traces")
        .build()
        .is_ok());
}
