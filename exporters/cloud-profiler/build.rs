//! Generates the Cloud Profiler v2 types, client and server from the vendored
//! protos in `proto/`, with `protox` (a protobuf compiler written in Rust)
//! instead of a system `protoc`, so the crate builds anywhere `cargo` does.

use std::path::Path;

/// The packages kept in the descriptor set handed to the code generator: the
/// `google.api` files are only needed to compile the HTTP options in
/// `profiler.proto`; the `google.protobuf` types map to `prost-types` (their
/// descriptors stay because the generator inspects them).
const PACKAGES: [&str; 3] = [
    "google.devtools.cloudprofiler.v2",
    "google.rpc",
    "google.protobuf",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read when the script runs, not when it is compiled: a script built once may
    // run for another checkout sharing the target directory.
    let root = Path::new(&std::env::var("CARGO_MANIFEST_DIR")?).join("proto");
    println!("cargo:rerun-if-changed={}", root.display());
    println!("cargo:rerun-if-changed=build.rs");

    let mut fds = protox::compile(
        [
            "google/devtools/cloudprofiler/v2/profiler.proto",
            "google/rpc/error_details.proto",
        ],
        [&root],
    )?;
    fds.file
        .retain(|f| PACKAGES.contains(&f.package.as_deref().unwrap_or_default()));

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(false)
        // Deterministic label order on the wire (and in tests).
        .btree_map(".")
        .include_file("cloudprofiler.rs")
        .emit_rerun_if_changed(false)
        .compile_fds(fds)?;
    Ok(())
}
