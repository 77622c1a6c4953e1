//! Application Default Credentials on a custom `https://` endpoint, for real: a
//! service-account credentials file (`GOOGLE_APPLICATION_CREDENTIALS`) whose
//! `token_uri` is a token server on loopback, so `gcp_auth` signs a JWT with the
//! file's key and exchanges it for a token; the exporter sends that token and the
//! quota project to a TLS stand-in for Cloud Trace. In its own test binary because
//! it changes the process environment; the tests take turns through `ENV`.

mod support;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use tracewire::export::{Backoff, InMemoryExporter, SpanExporter};
use tracewire::trace::SpanData;
use tracewire::TracerProvider;
use tracewire_stackdriver::{StackdriverExporter, QUOTA_PROJECT_ENV};

use support::{Collector, SelfSigned, Server};

static ENV: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const TOKEN: &str = "ya29.from-the-loopback-token-server";

/// An OAuth token endpoint: answers every POST with [`TOKEN`] and keeps the
/// form bodies it was sent.
async fn token_server() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    let forms = Arc::new(Mutex::new(Vec::new()));
    let seen = forms.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let seen = seen.clone();
                        async move {
                            let form = req.into_body().collect().await.unwrap().to_bytes();
                            seen.lock()
                                .unwrap()
                                .push(String::from_utf8_lossy(&form).into_owned());
                            let json = format!(
                                r#"{{"access_token":"{TOKEN}","expires_in":3600,"token_type":"Bearer"}}"#
                            );
                            Ok::<_, Infallible>(
                                hyper::Response::builder()
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(json)))
                                    .unwrap(),
                            )
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (url, forms)
}

/// A service-account credentials file for `token_uri`, with `quota_project_id`
/// when given; the variable ADC reads points at it.
fn credentials_file(token_uri: &str, quota_project_id: Option<&str>) -> std::path::PathBuf {
    let mut json = serde_json::json!({
        "type": "service_account",
        "project_id": "adc-project",
        "private_key_id": "test",
        "private_key": include_str!("fixtures/service-account-key.pem"),
        "client_email": "exporter@adc-project.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": token_uri,
    });
    if let Some(q) = quota_project_id {
        json["quota_project_id"] = q.into();
    }
    static FILES: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "tracewire-adc-{}-{}.json",
        std::process::id(),
        FILES.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
    std::env::set_var("GOOGLE_APPLICATION_CREDENTIALS", &path);
    path
}

fn one_span() -> Vec<SpanData> {
    let memory = InMemoryExporter::new();
    let provider = TracerProvider::builder()
        .with_simple_exporter(memory.clone())
        .build();
    provider.tracer("adc").start("authenticated").end();
    memory.spans()
}

fn https_exporter(
    server: &Server,
    cert: &SelfSigned,
) -> tracewire_stackdriver::StackdriverExporterBuilder {
    StackdriverExporter::builder()
        .with_project_id("p")
        .with_endpoint(server.url())
        .with_ca_certificate(&cert.pem)
        .with_timeout(Duration::from_secs(5))
        .with_backoff(Backoff {
            initial: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
            max_elapsed: Duration::from_secs(2),
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_https_endpoint_is_authenticated_with_adc_and_the_files_quota_project() {
    let _env = ENV.lock().await;
    std::env::remove_var(QUOTA_PROJECT_ENV);
    let (token_uri, forms) = token_server().await;
    let file = credentials_file(&token_uri, Some("billing-from-adc"));
    let cert = SelfSigned::loopback();
    let collector = Collector::new();
    let server = Server::start_tls(collector.clone(), &cert).await;

    let mut exporter = https_exporter(&server, &cert).build().unwrap();
    exporter.export(&one_span()).await.unwrap();
    exporter.export(&one_span()).await.unwrap();

    let bearer = format!("Bearer {TOKEN}");
    assert_eq!(
        collector.metadata_values("authorization"),
        [Some(bearer.clone()), Some(bearer)]
    );
    assert_eq!(
        collector.metadata_values("x-goog-user-project"),
        [
            Some("billing-from-adc".into()),
            Some("billing-from-adc".into())
        ]
    );
    let forms = forms.lock().unwrap().clone();
    assert_eq!(forms.len(), 1, "the token is cached: {forms:?}");
    assert!(
        forms[0].contains("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"),
        "a signed JWT was exchanged: {forms:?}"
    );
    std::fs::remove_file(file).unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quota_project_in_code_beats_the_environment_which_beats_the_credentials_file() {
    let _env = ENV.lock().await;
    let (token_uri, _) = token_server().await;
    let file = credentials_file(&token_uri, Some("from-file"));
    let cert = SelfSigned::loopback();
    let collector = Collector::new();
    let server = Server::start_tls(collector.clone(), &cert).await;

    std::env::set_var(QUOTA_PROJECT_ENV, "from-env");
    let mut from_env = https_exporter(&server, &cert).build().unwrap();
    let mut from_code = https_exporter(&server, &cert)
        .with_quota_project("from-code")
        .build()
        .unwrap();
    std::env::remove_var(QUOTA_PROJECT_ENV);
    let mut from_file = https_exporter(&server, &cert).build().unwrap();
    for exporter in [&mut from_env, &mut from_code, &mut from_file] {
        exporter.export(&one_span()).await.unwrap();
    }
    assert_eq!(
        collector.metadata_values("x-goog-user-project"),
        [
            Some("from-env".into()),
            Some("from-code".into()),
            Some("from-file".into())
        ]
    );

    // A file without one and no variable: no header.
    std::fs::remove_file(file).unwrap();
    let file = credentials_file(&token_uri, None);
    let mut none = https_exporter(&server, &cert).build().unwrap();
    none.export(&one_span()).await.unwrap();
    assert_eq!(collector.metadata_values("x-goog-user-project")[3], None);
    assert!(collector.metadata_values("authorization")[3].is_some());
    std::fs::remove_file(file).unwrap();
    server.stop().await;
}
