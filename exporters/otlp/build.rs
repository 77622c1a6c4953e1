//! Generates the OTLP trace types, client and server (and the `google.rpc`
//! status and error details that carry `RetryInfo`) from the vendored protos in
//! `proto/`, with `protox` (a protobuf compiler written in Rust) instead of a
//! system `protoc`, so the crate builds anywhere `cargo` does.

use std::path::Path;

/// The files compiled; their imports (`common`, `resource`, `trace`, and the
/// `google.protobuf` well-known types that come with `protox`) follow.
const FILES: [&str; 3] = [
    "opentelemetry/proto/collector/trace/v1/trace_service.proto",
    "google/rpc/status.proto",
    "google/rpc/error_details.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read when the script runs, not when it is compiled: a script built once may
    // run for another checkout sharing the target directory.
    let root = Path::new(&std::env::var("CARGO_MANIFEST_DIR")?).join("proto");
    println!("cargo:rerun-if-changed={}", root.display());
    println!("cargo:rerun-if-changed=build.rs");

    // The `google.protobuf` types map to `prost-types`; their descriptors stay
    // because the generator inspects them.
    let fds = protox::compile(FILES, [&root])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(false)
        .include_file("otlp.rs")
        .emit_rerun_if_changed(false)
        .compile_fds(fds)?;
    Ok(())
}
