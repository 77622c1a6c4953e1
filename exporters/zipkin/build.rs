//! Generates the Zipkin proto3 types from the vendored `proto/zipkin.proto`, with
//! `protox` (a protobuf compiler written in Rust) instead of a system `protoc`, so
//! the crate builds anywhere `cargo` does.

use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read when the script runs (not `env!`, fixed when it was compiled): a build
    // script built once may run for another checkout sharing the target dir.
    let root = Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").ok_or("no CARGO_MANIFEST_DIR")?)
        .join("proto");
    println!("cargo:rerun-if-changed={}", root.display());
    println!("cargo:rerun-if-changed=build.rs");
    let fds = protox::compile(["zipkin.proto"], [&root])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
