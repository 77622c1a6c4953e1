//! Generates the `helloworld.Greeter` types, client and server from
//! `proto/helloworld.proto` with `protox` (a protobuf compiler written in Rust)
//! feeding `tonic-prost-build`, so no system `protoc` is needed.

use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read when the script runs, not when it is compiled: a script built once may
    // run for another checkout sharing the target directory.
    let root = Path::new(&std::env::var("CARGO_MANIFEST_DIR")?).join("proto");
    println!("cargo:rerun-if-changed={}", root.display());
    println!("cargo:rerun-if-changed=build.rs");

    let fds = protox::compile(["helloworld.proto"], [&root])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Clients are built on a (traced) `Channel` the examples make themselves.
        .build_transport(false)
        .emit_rerun_if_changed(false)
        .compile_fds(fds)?;
    Ok(())
}
