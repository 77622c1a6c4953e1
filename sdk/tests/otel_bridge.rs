//! The OpenTelemetry bridge: span contexts convert both ways without loss, spans
//! map field by field into `opentelemetry_sdk`'s model, and reach an OTLP/gRPC
//! receiver on loopback through the real OTLP exporter.
#![cfg(feature = "opentelemetry")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::trace as ot;
use opentelemetry_proto::tonic::collector::trace::v1::{
    trace_service_server::{TraceService, TraceServiceServer},
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_sdk::trace::InMemorySpanExporter;
use tracewire::bridge::opentelemetry::OtelExporter;
use tracewire::trace::Link;
use tracewire::{
    Context, KeyValue, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
    TracerProvider,
};

#[test]
fn span_contexts_convert_both_ways_without_loss() {
    let sc = SpanContext::new(
        TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
        SpanId::from_hex("00f067aa0ba902b7").unwrap(),
        TraceFlags::SAMPLED.with_random(true),
        true,
        "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
            .parse::<TraceState>()
            .unwrap(),
    );
    let o: ot::SpanContext = (&sc).into();
    assert_eq!(o.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(o.span_id().to_string(), "00f067aa0ba902b7");
    assert!(o.is_sampled() && o.is_remote());
    assert_eq!(o.trace_flags().to_u8(), 0x03);
    assert_eq!(o.trace_state().get("rojo"), Some("00f067aa0ba902b7"));
    let back: SpanContext = (&o).into();
    assert_eq!(back, sc);
}

#[test]
fn spans_map_field_by_field_into_the_opentelemetry_model() {
    let otel = InMemorySpanExporter::default();
    let provider = TracerProvider::builder()
        .with_service_name("checkout")
        .with_simple_exporter(OtelExporter::new(otel.clone()))
        .build();
    let t = provider.tracer("bridge-test");
    let linked = t.start("other").span_context().clone();
    let parent = t.start("parent");
    let ctx = Context::new().with_span(parent);
    let s = t
        .span_builder("GET /cart")
        .with_kind(SpanKind::Server)
        .with_parent(&ctx)
        .with_attribute(KeyValue::new("http.route", "/cart"))
        .with_attribute(KeyValue::new("items", vec![1i64, 2]))
        .with_link(Link::new(
            linked.clone(),
            vec![KeyValue::new("why", "batch")],
        ))
        .start();
    s.add_event("cache miss", vec![KeyValue::new("key", "cart:1")]);
    s.set_status(Status::error("db down"));
    s.end();
    let spans = otel.get_finished_spans().unwrap();
    let d = spans.iter().find(|d| d.name == "GET /cart").unwrap();
    assert_eq!(d.span_kind, ot::SpanKind::Server);
    assert_eq!(
        d.parent_span_id.to_string(),
        ctx.span().span_context().span_id().to_string()
    );
    assert!(!d.parent_span_is_remote);
    assert!(d
        .attributes
        .contains(&opentelemetry::KeyValue::new("http.route", "/cart")));
    assert_eq!(d.events.events[0].name, "cache miss");
    assert_eq!(
        d.links.links[0].span_context.span_id().to_string(),
        linked.span_id().to_string()
    );
    assert_eq!(
        d.status,
        ot::Status::Error {
            description: "db down".into()
        }
    );
    assert_eq!(d.instrumentation_scope.name(), "bridge-test");
}

#[derive(Clone, Default)]
struct Receiver {
    requests: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.requests.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_otlp_grpc_receiver_through_the_otlp_exporter() {
    use opentelemetry_otlp::WithExportConfig;
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let otlp = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(format!("http://{addr}"))
        .with_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let provider = TracerProvider::builder()
        .with_service_name("frontend")
        .with_batch_exporter(OtelExporter::new(otlp))
        .build();
    let t = provider.tracer("otlp-test");
    let root = t.start("request");
    let root_sc = root.span_context().clone();
    let ctx = Context::new().with_span(root);
    t.start_with_context("child", &ctx).end();
    drop(ctx);
    let p = provider.clone();
    tokio::task::spawn_blocking(move || p.shutdown(Duration::from_secs(10)).unwrap())
        .await
        .unwrap();
    let s = provider.stats();
    assert_eq!((s.exported, s.dropped), (2, 0));
    let requests = receiver.requests.lock().unwrap().clone();
    let spans: Vec<_> = requests
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .collect();
    assert_eq!(spans.len(), 2);
    let child = spans.iter().find(|s| s.name == "child").unwrap();
    assert_eq!(child.trace_id, root_sc.trace_id().to_bytes().to_vec());
    assert_eq!(child.parent_span_id, root_sc.span_id().to_bytes().to_vec());
    let service = requests[0].resource_spans[0]
        .resource
        .as_ref()
        .unwrap()
        .attributes
        .iter()
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| kv.value.as_ref())
        .map(|v| format!("{:?}", v.value));
    assert!(service.unwrap().contains("frontend"));
    server.abort();
}
