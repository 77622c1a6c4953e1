//! OTLP/gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export` with
//! tonic.

use std::time::Duration;

use bytes::Bytes;
use prost::Message as _;
use tonic::codec::CompressionEncoding;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::{Code, GrpcMethod};
use tracewire::export::ExportError;
use tracewire_transport::grpc::{GrpcEndpoint, PreEncoded};
use tracewire_transport::TlsConfig;

use crate::proto::collector::trace::v1::ExportTraceServiceResponse;
use crate::{Compression, Config, Error, Failure};

const SERVICE: &str = "opentelemetry.proto.collector.trace.v1.TraceService";
const METHOD: &str = "Export";
const PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

pub(crate) struct Grpc {
    url: String,
    endpoint: GrpcEndpoint,
    metadata: MetadataMap,
    gzip: bool,
    /// Made on the first export, on the runtime that runs the exporter.
    client: Option<tonic::client::Grpc<Channel>>,
}

impl Grpc {
    pub(crate) fn new(config: &Config) -> Result<Grpc, Error> {
        let url = &config.url;
        let endpoint = GrpcEndpoint::new("OTLP endpoint", url, &TlsConfig::new())
            .and_then(|e| {
                e.with_connect_timeout(config.timeout)
                    .with_user_agent(crate::USER_AGENT)
            })
            .map_err(|e| Error(e.to_string()))?;
        let headers = config.header_map()?;
        Ok(Grpc {
            url: url.clone(),
            endpoint,
            metadata: MetadataMap::from_headers(headers),
            gzip: config.compression == Compression::Gzip,
            client: None,
        })
    }

    /// Makes the client on first use, so that its background task runs on the
    /// runtime that runs the exporter.
    pub(crate) fn prepare(&mut self) -> Result<(), ExportError> {
        if self.client.is_some() {
            return Ok(());
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ExportError::new(
                "the OTLP exporter needs a tokio runtime: use it behind the batch processor",
            ));
        }
        let mut client = tonic::client::Grpc::new(self.endpoint.connect_lazy())
            .accept_compressed(CompressionEncoding::Gzip);
        if self.gzip {
            client = client.send_compressed(CompressionEncoding::Gzip);
        }
        self.client = Some(client);
        Ok(())
    }

    pub(crate) fn shutdown(&mut self) {
        self.client = None;
    }

    /// One attempt; `remaining` is sent as the call's deadline (`grpc-timeout`).
    pub(crate) async fn send(
        &self,
        body: Bytes,
        remaining: Duration,
    ) -> Result<ExportTraceServiceResponse, Failure> {
        let Some(mut grpc) = self.client.clone() else {
            return Err(Failure::Fail(ExportError::new(
                "the OTLP exporter is shut down",
            )));
        };
        let mut request = tonic::Request::new(body);
        *request.metadata_mut() = self.metadata.clone();
        request.set_timeout(remaining);
        request
            .extensions_mut()
            .insert(GrpcMethod::new(SERVICE, METHOD));
        grpc.ready().await.map_err(|e| Failure::Retry {
            error: ExportError::new(format!("OTLP endpoint {}: {e}", self.url)),
            after: None,
        })?;
        // Sends the bytes encoded by `OtlpExporter::encode` (so retries resend
        // them, and what was checked against `max_request_bytes` goes out).
        let codec = PreEncoded::<ExportTraceServiceResponse>::new();
        grpc.unary(request, PathAndQuery::from_static(PATH), codec)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| self.classify(&status))
    }

    /// The OTLP specification's retryable codes; `RESOURCE_EXHAUSTED` only with
    /// a `RetryInfo` (the server can recover); connection errors, which tonic
    /// reports as `UNAVAILABLE` or as `UNKNOWN` carrying the transport error.
    fn classify(&self, status: &tonic::Status) -> Failure {
        let after = retry_delay(status);
        let retry = match status.code() {
            Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::OutOfRange
            | Code::Unavailable
            | Code::DataLoss => true,
            Code::ResourceExhausted => after.is_some(),
            Code::Unknown => std::error::Error::source(status).is_some(),
            _ => false,
        };
        let error = ExportError::new(format!(
            "OTLP endpoint {} answered {:?}: {}",
            self.url,
            status.code(),
            status.message()
        ));
        if retry {
            Failure::Retry { error, after }
        } else {
            Failure::Fail(error)
        }
    }
}

/// The delay of the `google.rpc.RetryInfo` in a status' details
/// (`grpc-status-details-bin`), if there is one.
fn retry_delay(status: &tonic::Status) -> Option<Duration> {
    if status.details().is_empty() {
        return None;
    }
    let details = crate::proto::rpc::Status::decode(status.details()).ok()?;
    crate::proto::retry_delay(&details)
}
