//! Where the project id comes from. In its own test binary because it changes the
//! process environment.

use tracewire_stackdriver::{StackdriverExporter, PROJECT_ENV};

#[test]
fn build_fails_without_a_project_id_and_takes_it_from_google_cloud_project() {
    std::env::remove_var(PROJECT_ENV);
    let err = StackdriverExporter::builder().build().unwrap_err();
    assert!(err.to_string().contains("GOOGLE_CLOUD_PROJECT"), "{err}");
    let err = StackdriverExporter::builder()
        .with_endpoint("http://127.0.0.1:9")
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("project"), "{err}");

    std::env::set_var(PROJECT_ENV, "from-env");
    // The default endpoint (TLS, credentials) builds without any I/O.
    let exporter = StackdriverExporter::builder().build().unwrap();
    assert_eq!(exporter.project_id(), "from-env");
    let exporter = StackdriverExporter::builder()
        .with_project_id("given")
        .build()
        .unwrap();
    assert_eq!(exporter.project_id(), "given", "an explicit id wins");
    std::env::remove_var(PROJECT_ENV);
}

#[test]
fn build_rejects_endpoints_that_are_not_http_urls() {
    for url in ["ftp://example.com", "not a url", "unix:/tmp/socket"] {
        let result = StackdriverExporter::builder()
            .with_project_id("p")
            .with_endpoint(url)
            .build();
        assert!(result.is_err(), "{url}");
    }
    assert!(StackdriverExporter::builder()
        .with_project_id("p")
        .with_endpoint("https://localhost:8443")
        .build()
        .is_ok());
}
