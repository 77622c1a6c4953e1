//! One request through every interceptor, in one process on loopback:
//!
//! ```text
//! HTTP client (ClientTraceLayer)
//!   → HTTP server (TraceLayer), whose handler calls, inside the request's context,
//!     → gRPC client (GrpcClientLayer)
//!       → gRPC Greeter server (GrpcTraceLayer)
//! ```
//!
//! Four spans, one trace, each the parent of the next, with the right kinds and
//! statuses; the trace also continues from B3 and `X-Cloud-Trace-Context` headers,
//! and a public endpoint (`TrustPolicy::LinkOnly`) starts a new trace linked to
//! the caller.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use examples::helloworld::greeter_client::GreeterClient;
use examples::helloworld::greeter_server::{Greeter, GreeterServer};
use examples::helloworld::{HelloReply, HelloRequest};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Channel;
use tower::{service_fn, ServiceBuilder, ServiceExt};
use tracewire::export::InMemoryExporter;
use tracewire::propagation::{
    B3Propagator, CloudTraceContextPropagator, CompositePropagator, TraceContextPropagator,
    TrustPolicy,
};
use tracewire::trace::SpanData;
use tracewire::{SpanId, SpanKind, TraceId, Tracer, TracerProvider, Value};
use tracewire_grpc::{GrpcClient, GrpcClientLayer, GrpcTraceLayer};
use tracewire_http::trace::{ClientTraceLayer, TraceLayer};

/// The RPC span name (OpenTelemetry: `package.Service/Method`).
const METHOD: &str = "helloworld.Greeter/SayHello";

// ---------------------------------------------------------------------------
// The chain.

/// The gRPC backend: greets, or fails with UNAVAILABLE for the name `fail`.
struct Backend;

#[tonic::async_trait]
impl Greeter for Backend {
    async fn say_hello(
        &self,
        request: tonic::Request<HelloRequest>,
    ) -> Result<tonic::Response<HelloReply>, tonic::Status> {
        let name = request.into_inner().name;
        if name == "fail" {
            return Err(tonic::Status::unavailable("backend is down"));
        }
        Ok(tonic::Response::new(HelloReply {
            message: format!("Hello {name}!"),
        }))
    }
}

type Backend_ = GreeterClient<GrpcClient<Channel>>;

/// The HTTP frontend's handler: `/hello?NAME` calls the backend with `NAME`.
/// `TraceLayer` has made the request's context current here, so the gRPC client
/// span is a child of the HTTP server span.
async fn frontend(
    mut backend: Backend_,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let name = request.uri().query().unwrap_or("world").to_owned();
    let response = match backend.say_hello(HelloRequest { name }).await {
        Ok(reply) => Response::new(Full::from(reply.into_inner().message)),
        Err(status) => {
            let mut response = Response::new(Full::from(status.message().to_owned()));
            *response.status_mut() = StatusCode::BAD_GATEWAY;
            response
        }
    };
    Ok(response)
}

/// Both servers running, and the pipeline that records their spans.
struct Chain {
    http: SocketAddr,
    provider: TracerProvider,
    exporter: InMemoryExporter,
}

impl Chain {
    /// Starts the gRPC backend and the HTTP frontend, whose `TraceLayer` is made by
    /// `layer` from the frontend's tracer.
    async fn start(layer: impl FnOnce(Tracer) -> TraceLayer) -> Chain {
        let exporter = InMemoryExporter::new();
        let provider = TracerProvider::builder()
            .with_service_name("chain")
            .with_simple_exporter(exporter.clone())
            .build();

        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc_addr = grpc.local_addr().unwrap();
        let backend_layer = GrpcTraceLayer::new(provider.tracer("backend"));
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .layer(backend_layer)
                .add_service(GreeterServer::new(Backend))
                .serve_with_incoming(TcpIncoming::from(grpc))
                .await
                .unwrap();
        });

        let channel = Channel::from_shared(format!("http://{grpc_addr}"))
            .unwrap()
            .connect_lazy();
        let backend: Backend_ = GreeterClient::new(
            ServiceBuilder::new()
                .layer(GrpcClientLayer::new(provider.tracer("frontend-client")))
                .service(channel),
        );
        let app = ServiceBuilder::new()
            .layer(layer(provider.tracer("frontend")))
            .service(service_fn(move |request| {
                frontend(backend.clone(), request)
            }));

        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_addr = http.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = http.accept().await {
                let service = TowerToHyperService::new(app.clone());
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Chain {
            http: http_addr,
            provider,
            exporter,
        }
    }

    fn url(&self, query: &str) -> String {
        format!("http://{}/hello?{query}", self.http)
    }

    /// `GET /hello?name` through a client wrapped in `ClientTraceLayer`.
    async fn traced_get(&self, name: &str) -> (StatusCode, String) {
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let client = ServiceBuilder::new()
            .layer(ClientTraceLayer::new(self.provider.tracer("http-client")))
            .service(client);
        let request = Request::get(self.url(name)).body(Empty::new()).unwrap();
        let response = client.oneshot(request).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    /// `GET /hello?name` with `header` set by hand, through a plain client.
    async fn get_with_header(&self, name: &str, header: (&str, &str)) -> String {
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let request = Request::get(self.url(name))
            .header(header.0, header.1)
            .body(Empty::new())
            .unwrap();
        let response = client.request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    }

    /// The spans recorded once `n` have ended (server spans end after their
    /// response has been sent, so they can lag the client by a moment).
    async fn spans(&self, n: usize) -> Spans {
        for _ in 0..500 {
            if self.exporter.len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let spans = self.exporter.spans();
        assert_eq!(spans.len(), n, "{spans:#?}");
        Spans(spans)
    }
}

struct Spans(Vec<SpanData>);

impl Spans {
    /// The one span of `kind` recorded by the tracer `scope`.
    fn get(&self, scope: &str, kind: SpanKind) -> &SpanData {
        let found: Vec<&SpanData> = self
            .0
            .iter()
            .filter(|s| s.scope == scope && s.kind == kind)
            .collect();
        assert_eq!(found.len(), 1, "{scope} {kind:?} spans in {:#?}", self.0);
        found[0]
    }

    /// The three spans after the HTTP client: HTTP server, gRPC client, gRPC
    /// server, each checked to be the parent of the next and in one trace.
    fn server_side(&self) -> [&SpanData; 3] {
        let http = self.get("frontend", SpanKind::Server);
        let call = self.get("frontend-client", SpanKind::Client);
        let served = self.get("backend", SpanKind::Server);
        assert_eq!(http.name, "GET /hello");
        assert_eq!(call.name, METHOD);
        assert_eq!(served.name, METHOD);
        assert_eq!(call.parent_span_id, http.span_context.span_id());
        assert!(
            !call.parent_is_remote,
            "same process as the HTTP server span"
        );
        assert_eq!(served.parent_span_id, call.span_context.span_id());
        assert!(served.parent_is_remote, "reached over gRPC");
        for s in [call, served] {
            assert_eq!(
                s.span_context.trace_id(),
                http.span_context.trace_id(),
                "{:#?}",
                self.0
            );
        }
        [http, call, served]
    }
}

fn i64_attr(s: &SpanData, key: &str) -> Option<i64> {
    match s.attribute(key) {
        Some(Value::I64(v)) => Some(*v),
        _ => None,
    }
}

/// W3C, B3 and `X-Cloud-Trace-Context`: what a frontend behind Google's load
/// balancer or a Zipkin-instrumented proxy reads.
fn every_format(tracer: Tracer) -> TraceLayer {
    TraceLayer::new(tracer).with_propagator(
        CompositePropagator::new()
            .with(TraceContextPropagator::new())
            .with(B3Propagator::default())
            .with(CloudTraceContextPropagator::new()),
    )
}

// ---------------------------------------------------------------------------
// Tests.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_makes_one_trace_through_http_and_grpc() {
    let chain = Chain::start(TraceLayer::new).await;
    let (status, body) = chain.traced_get("chain").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "Hello chain!"));

    let spans = chain.spans(4).await;
    let client = spans.get("http-client", SpanKind::Client);
    let [http, call, served] = spans.server_side();
    assert_eq!(
        client.parent_span_id,
        SpanId::INVALID,
        "the client starts the trace"
    );
    assert_eq!(http.parent_span_id, client.span_context.span_id());
    assert!(http.parent_is_remote);
    assert_eq!(http.span_context.trace_id(), client.span_context.trace_id());
    for s in [client, http] {
        assert_eq!(i64_attr(s, "http.response.status_code"), Some(200));
    }
    for s in [call, served] {
        assert_eq!(i64_attr(s, "rpc.grpc.status_code"), Some(0));
    }
    for s in [client, http, call, served] {
        assert!(!s.status.is_error(), "{s:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_backend_marks_every_span_of_the_chain_as_an_error() {
    let chain = Chain::start(TraceLayer::new).await;
    let (status, body) = chain.traced_get("fail").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::BAD_GATEWAY, "backend is down")
    );

    let spans = chain.spans(4).await;
    let client = spans.get("http-client", SpanKind::Client);
    let [http, call, served] = spans.server_side();
    assert_eq!(http.parent_span_id, client.span_context.span_id());
    for s in [client, http] {
        assert_eq!(i64_attr(s, "http.response.status_code"), Some(502));
    }
    for s in [call, served] {
        assert_eq!(i64_attr(s, "rpc.grpc.status_code"), Some(14));
    }
    for s in [client, http, call, served] {
        assert!(s.status.is_error(), "{s:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_b3_single_header_is_continued_through_every_hop() {
    let chain = Chain::start(every_format).await;
    let b3 = "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1";
    let body = chain.get_with_header("b3", ("b3", b3)).await;
    assert_eq!(body, "Hello b3!");

    let spans = chain.spans(3).await;
    let [http, ..] = spans.server_side();
    assert_eq!(
        http.span_context.trace_id(),
        TraceId::from_u128(0x80f1_98ee_5634_3ba8_64fe_8b2a_57d3_eff7)
    );
    assert_eq!(http.parent_span_id, SpanId::from_u64(0xe457_b5a2_e4d8_6bd1));
    assert!(http.parent_is_remote);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_x_cloud_trace_context_header_is_continued_through_every_hop() {
    let chain = Chain::start(every_format).await;
    // The span id is decimal in this format.
    let header = "105445aa7843bc8bf206b12000100000/12345678901234567;o=1";
    let body = chain
        .get_with_header("gcp", ("X-Cloud-Trace-Context", header))
        .await;
    assert_eq!(body, "Hello gcp!");

    let spans = chain.spans(3).await;
    let [http, ..] = spans.server_side();
    assert_eq!(
        http.span_context.trace_id(),
        TraceId::from_u128(0x1054_45aa_7843_bc8b_f206_b120_0010_0000)
    );
    assert_eq!(
        http.parent_span_id,
        SpanId::from_u64(12_345_678_901_234_567)
    );
    assert!(http.parent_is_remote);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_endpoint_starts_a_new_trace_linked_to_the_caller() {
    let chain = Chain::start(|t| TraceLayer::new(t).with_trust(TrustPolicy::LinkOnly)).await;
    let (status, _) = chain.traced_get("public").await;
    assert_eq!(status, StatusCode::OK);

    let spans = chain.spans(4).await;
    let client = spans.get("http-client", SpanKind::Client);
    // server_side() checks that the gRPC spans follow the new root.
    let [http, ..] = spans.server_side();
    assert_eq!(http.parent_span_id, SpanId::INVALID, "a new root");
    assert_ne!(
        http.span_context.trace_id(),
        client.span_context.trace_id(),
        "a new trace"
    );
    assert_eq!(http.links.len(), 1, "{http:#?}");
    assert_eq!(
        http.links[0].span_context.trace_id(),
        client.span_context.trace_id()
    );
    assert_eq!(
        http.links[0].span_context.span_id(),
        client.span_context.span_id()
    );
}
