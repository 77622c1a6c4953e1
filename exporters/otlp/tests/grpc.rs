//! OTLP/gRPC against a real tonic `TraceService` server on loopback, built from
//! the same protos: every field, gzip, headers, retries (codes and `RetryInfo`),
//! permanent errors, partial success, request splitting, a collector that is down
//! or hangs, and what the official `opentelemetry-proto` types make of a request.

mod support;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message as _;
use tonic::codec::CompressionEncoding;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Response, Status};
use tracewire::export::SpanExporter;
use tracewire::TracerProvider;
use tracewire_otlp::proto::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use tracewire_otlp::proto::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tracewire_otlp::{Compression, OtlpExporter, OtlpExporterBuilder, Protocol};

use support::*;

// ---------------------------------------------------------------------------
// A stand-in for a collector.

/// What one call brought.
#[derive(Clone, Debug)]
struct Call {
    at: Instant,
    encoding: Option<String>,
    metadata: tonic::metadata::MetadataMap,
    request: ExportTraceServiceRequest,
}

/// Records each call; answers scripted errors first, then OK (with a partial
/// success if one is set); or hangs.
#[derive(Clone, Default)]
struct Collector {
    calls: Arc<Mutex<Vec<Call>>>,
    script: Arc<Mutex<VecDeque<Status>>>,
    partial: Option<ExportTracePartialSuccess>,
    hang: bool,
}

impl Collector {
    fn answering(statuses: impl IntoIterator<Item = Status>) -> Self {
        let c = Collector::default();
        c.script.lock().unwrap().extend(statuses);
        c
    }
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
    fn requests(&self) -> Vec<ExportTraceServiceRequest> {
        self.calls().into_iter().map(|c| c.request).collect()
    }
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let metadata = request.metadata().clone();
        let encoding = metadata
            .get("grpc-encoding")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        self.calls.lock().unwrap().push(Call {
            at: Instant::now(),
            encoding,
            metadata,
            request: request.into_inner(),
        });
        if self.hang {
            std::future::pending::<()>().await;
        }
        if let Some(status) = self.script.lock().unwrap().pop_front() {
            return Err(status);
        }
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: self.partial.clone(),
        }))
    }
}

async fn start(collector: Collector) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let service = TraceServiceServer::new(collector).accept_compressed(CompressionEncoding::Gzip);
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpIncoming::from(listener))
            .await;
    });
    Server::new(url, task)
}

fn exporter_for(url: &str) -> OtlpExporterBuilder {
    support::exporter_for(Protocol::Grpc, url)
}

fn retry_info(code: Code, delay: Duration) -> Status {
    let details = status_with_retry_info(code as i32, "slow down", delay);
    Status::with_details(code, "slow down", details.into())
}

// ---------------------------------------------------------------------------
// Mapping.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_field_arrives_as_it_was_sent() {
    let collector = Collector::default();
    let server = start(collector.clone()).await;
    let mut exporter = exporter_for(&server.url()).build().unwrap();
    exporter.set_resource(&resource());
    let sent = vec![full_span(), root_span("root")];

    exporter.export(&sent).await.unwrap();

    assert_round_trip(&collector.requests(), &sent);
    let scopes: Vec<_> = collector.requests()[0].resource_spans[0]
        .scope_spans
        .iter()
        .map(|s| s.scope.as_ref().unwrap().name.clone())
        .collect();
    assert_eq!(scopes, ["tracewire-http", "app"]);
    assert_eq!(exporter.counters().snapshot().exported, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_from_a_provider_carry_its_service_name() {
    let collector = Collector::default();
    let server = start(collector.clone()).await;
    let exporter = exporter_for(&server.url()).build().unwrap();
    let provider = TracerProvider::builder()
        .with_service_name("frontend")
        .with_batch_exporter(exporter)
        .build();
    provider.tracer("app").start("GET /user").end();
    provider.shutdown(Duration::from_secs(5)).unwrap();

    let requests = collector.requests();
    let resource = received_resource(&requests[0]);
    assert_eq!(
        resource[0],
        tracewire::KeyValue::new("service.name", "frontend")
    );
    let spans = received_spans(&requests);
    assert_eq!(
        (spans[0].name.as_ref(), spans[0].scope.as_ref()),
        ("GET /user", "app")
    );
}

#[test]
fn encoded_requests_decode_with_the_official_opentelemetry_proto_types() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest as Official;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;

    let mut exporter = OtlpExporter::builder().build().unwrap();
    exporter.set_resource(&resource());
    let sd = full_span();
    let requests = exporter.encode(std::slice::from_ref(&sd));

    let official = Official::decode(requests[0].body.clone()).unwrap();
    let rs = &official.resource_spans[0];
    let service = &rs.resource.as_ref().unwrap().attributes[0];
    assert_eq!(service.key, "service.name");
    assert_eq!(
        service.value.as_ref().unwrap().value,
        Some(Value::StringValue("checkout".into()))
    );
    let ss = &rs.scope_spans[0];
    assert_eq!(ss.scope.as_ref().unwrap().name, "tracewire-http");
    let span = &ss.spans[0];
    assert_eq!(span.trace_id, sd.span_context.trace_id().to_bytes());
    assert_eq!(span.span_id, sd.span_context.span_id().to_bytes());
    assert_eq!(span.parent_span_id, sd.parent_span_id.to_bytes());
    assert_eq!(span.trace_state, "vendor=a1,other=b@2");
    assert_eq!(span.flags, 0x303);
    assert_eq!(span.name, "GET /cart/{id}");
    assert_eq!(
        span.kind,
        opentelemetry_proto::tonic::trace::v1::span::SpanKind::Server as i32
    );
    assert_eq!(span.start_time_unix_nano, 1_700_000_000_123_456_789);
    assert_eq!(span.end_time_unix_nano, 1_700_000_001_987_654_321);
    assert_eq!(span.attributes.len(), sd.attributes.len());
    assert_eq!(span.events.len(), 2);
    assert_eq!(span.links[0].flags, 0x301);
    assert_eq!(span.links[1].flags, 0x100);
    let status = span.status.as_ref().unwrap();
    assert_eq!(
        status.code,
        opentelemetry_proto::tonic::trace::v1::status::StatusCode::Error as i32
    );
    assert_eq!(status.message, "upstream unavailable");
    assert_eq!(
        (
            span.dropped_attributes_count,
            span.dropped_events_count,
            span.dropped_links_count
        ),
        (3, 4, 5)
    );
}

// ---------------------------------------------------------------------------
// Transport.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_is_sent_as_grpc_encoding_and_the_server_decodes_it() {
    let collector = Collector::default();
    let server = start(collector.clone()).await;
    let mut exporter = exporter_for(&server.url())
        .with_compression(Compression::Gzip)
        .build()
        .unwrap();
    exporter.set_resource(&resource());
    let sent = vec![full_span()];

    exporter.export(&sent).await.unwrap();

    let calls = collector.calls();
    assert_eq!(calls[0].encoding.as_deref(), Some("gzip"));
    assert_round_trip(&collector.requests(), &sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_compression_no_grpc_encoding_is_sent() {
    let collector = Collector::default();
    let server = start(collector.clone()).await;
    let mut exporter = exporter_for(&server.url()).build().unwrap();
    exporter.export(&spans(1)).await.unwrap();
    assert_eq!(collector.calls()[0].encoding, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_are_sent_as_metadata_with_a_user_agent_and_a_deadline() {
    let collector = Collector::default();
    let server = start(collector.clone()).await;
    let mut exporter = exporter_for(&server.url())
        .with_header("X-Api-Key", "secret")
        .build()
        .unwrap();
    assert_eq!(exporter.header_names().collect::<Vec<_>>(), ["x-api-key"]);
    assert!(!format!("{exporter:?}").contains("secret"));

    exporter.export(&spans(1)).await.unwrap();

    let metadata = &collector.calls()[0].metadata;
    assert_eq!(metadata.get("x-api-key").unwrap(), "secret");
    let ua = metadata.get("user-agent").unwrap().to_str().unwrap();
    assert!(ua.starts_with("tracewire-otlp/"), "{ua}");
    assert!(metadata.get("grpc-timeout").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_batch_is_split_into_requests_within_the_limit() {
    let collector = Collector::default();
    let server = start(collector.clone()).await;
    let mut exporter = exporter_for(&server.url())
        .with_max_request_bytes(2_000)
        .build()
        .unwrap();
    let sent = spans(100);

    exporter.export(&sent).await.unwrap();

    let requests = collector.requests();
    assert!(requests.len() > 1);
    assert!(requests.iter().all(|r| r.encoded_len() <= 2_000));
    assert_eq!(received_spans(&requests), sent);
    assert_eq!(exporter.counters().snapshot().exported, 100);
}

// ---------------------------------------------------------------------------
// Retries.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_is_retried_until_the_collector_accepts() {
    let collector = Collector::answering([
        Status::unavailable("starting"),
        Status::unavailable("starting"),
    ]);
    let server = start(collector.clone()).await;
    let mut exporter = exporter_for(&server.url()).build().unwrap();

    exporter.export(&spans(3)).await.unwrap();

    assert_eq!(collector.calls().len(), 3);
    let stats = exporter.counters().snapshot();
    assert_eq!((stats.exported, stats.dropped, stats.retried), (3, 0, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_retryable_code_of_the_specification_is_retried() {
    for code in [
        Code::Cancelled,
        Code::DeadlineExceeded,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unavailable,
        Code::DataLoss,
    ] {
        let collector = Collector::answering([Status::new(code, "transient")]);
        let server = start(collector.clone()).await;
        let mut exporter = exporter_for(&server.url()).build().unwrap();
        exporter.export(&spans(1)).await.unwrap();
        assert_eq!(collector.calls().len(), 2, "{code:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_info_delay_is_waited_before_the_next_attempt() {
    let delay = Duration::from_millis(400);
    let collector = Collector::answering([retry_info(Code::ResourceExhausted, delay)]);
    let server = start(collector.clone()).await;
    let mut exporter = exporter_for(&server.url()).build().unwrap();

    exporter.export(&spans(1)).await.unwrap();

    let calls = collector.calls();
    assert_eq!(calls.len(), 2);
    let waited = calls[1].at - calls[0].at;
    assert!(waited >= delay, "retried after {waited:?}, asked {delay:?}");
    assert_eq!(exporter.counters().snapshot().retried, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_exhausted_without_retry_info_is_not_retried() {
    let collector = Collector::answering([Status::resource_exhausted("quota")]);
    let server = start(collector.clone()).await;
    let mut exporter = exporter_for(&server.url()).build().unwrap();

    let err = exporter.export(&spans(2)).await.unwrap_err();

    assert!(err.to_string().contains("quota"), "{err}");
    assert_eq!(collector.calls().len(), 1);
    let stats = exporter.counters().snapshot();
    assert_eq!((stats.dropped, stats.failed, stats.retried), (2, 1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_argument_is_not_retried_and_the_spans_are_counted_as_dropped() {
    let collector = Collector::answering([Status::invalid_argument("bad span")]);
    let server = start(collector.clone()).await;
    let mut exporter = exporter_for(&server.url()).build().unwrap();

    let err = exporter.export(&spans(4)).await.unwrap_err();

    assert!(err.to_string().contains("InvalidArgument"), "{err}");
    assert_eq!(collector.calls().len(), 1);
    let stats = exporter.counters().snapshot();
    assert_eq!(
        (stats.exported, stats.dropped, stats.failed, stats.retried),
        (0, 4, 1, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_delay_longer_than_the_time_left_fails_at_once() {
    let collector = Collector::answering([retry_info(Code::Unavailable, Duration::from_secs(60))]);
    let server = start(collector.clone()).await;
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
    assert_eq!(collector.calls().len(), 1);
    assert_eq!(exporter.counters().snapshot().dropped, 1);
}

// ---------------------------------------------------------------------------
// Partial success.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_spans_of_a_partial_success_are_counted_as_dropped() {
    let collector = Collector {
        partial: Some(ExportTracePartialSuccess {
            rejected_spans: 2,
            error_message: "2 spans too old".into(),
        }),
        ..Collector::default()
    };
    let server = start(collector.clone()).await;
    let mut exporter = exporter_for(&server.url()).build().unwrap();
    let rejected = exporter.rejected();

    exporter.export(&spans(5)).await.unwrap();

    let stats = exporter.counters().snapshot();
    assert_eq!((stats.exported, stats.dropped, stats.failed), (3, 2, 0));
    assert_eq!(rejected.get(), 2);
    assert_eq!(
        collector.calls().len(),
        1,
        "a partial success is not retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_success_with_only_a_warning_drops_nothing() {
    let collector = Collector {
        partial: Some(ExportTracePartialSuccess {
            rejected_spans: 0,
            error_message: "attribute names should be lowercase".into(),
        }),
        ..Collector::default()
    };
    let server = start(collector.clone()).await;
    let mut exporter = exporter_for(&server.url()).build().unwrap();
    exporter.export(&spans(3)).await.unwrap();
    let stats = exporter.counters().snapshot();
    assert_eq!((stats.exported, stats.dropped), (3, 0));
    assert_eq!(exporter.rejected().get(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_success_cannot_reject_more_spans_than_were_sent() {
    let collector = Collector {
        partial: Some(ExportTracePartialSuccess {
            rejected_spans: 99,
            error_message: String::new(),
        }),
        ..Collector::default()
    };
    let server = start(collector.clone()).await;
    let mut exporter = exporter_for(&server.url()).build().unwrap();
    exporter.export(&spans(3)).await.unwrap();
    let stats = exporter.counters().snapshot();
    assert_eq!((stats.exported, stats.dropped), (0, 3));
}

// ---------------------------------------------------------------------------
// A collector that is down or hangs.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_fails_the_export_within_the_timeout() {
    let port = closed_port().await;
    let mut exporter = exporter_for(&format!("http://127.0.0.1:{port}"))
        .with_timeout(SHORT_TIMEOUT)
        .build()
        .unwrap();

    export_fails_in_time(&mut exporter, 3).await;

    let retried = exporter.counters().snapshot().retried;
    assert!(retried > 0, "connection errors are retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_collector_fails_the_export_within_the_timeout() {
    let collector = Collector {
        hang: true,
        ..Collector::default()
    };
    let server = start(collector.clone()).await;
    let mut exporter = exporter_for(&server.url())
        .with_timeout(SHORT_TIMEOUT)
        .build()
        .unwrap();

    export_fails_in_time(&mut exporter, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_listener_fails_the_export_within_the_timeout() {
    let (port, task) = silent_listener().await;
    let mut exporter = exporter_for(&format!("http://127.0.0.1:{port}"))
        .with_timeout(SHORT_TIMEOUT)
        .build()
        .unwrap();

    export_fails_in_time(&mut exporter, 1).await;
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_cut_off_by_its_caller_counts_its_spans_as_dropped() {
    let collector = Collector {
        hang: true,
        ..Collector::default()
    };
    let server = start(collector.clone()).await;
    let mut exporter = exporter_for(&server.url()).build().unwrap();
    let counters = exporter.counters();
    let batch = spans(4);

    let cut = tokio::time::timeout(Duration::from_millis(200), exporter.export(&batch)).await;

    assert!(cut.is_err());
    let stats = counters.snapshot();
    assert_eq!((stats.exported, stats.dropped, stats.failed), (0, 4, 1));
}

#[test]
fn without_a_runtime_the_export_fails_and_counts_its_spans() {
    let mut exporter = exporter_for("http://127.0.0.1:1").build().unwrap();
    let result = futures_executor::block_on(exporter.export(&spans(2)));
    assert!(result.unwrap_err().to_string().contains("tokio runtime"));
    assert_eq!(exporter.counters().snapshot().dropped, 2);
}
