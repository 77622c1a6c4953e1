//! Generates the Zipkin proto3 types from the vendored `proto/zipkin.proto`, with
//! `protox` (a protobuf compiler written in Rust) instead of a system `protoc`, so
//! the crate builds anywhere `cargo` does.

use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("proto");
    println!("cargo:rerun-if-changed={}", root.display());
    println!("cargo:rerun-if-changed=build.rs");
    let fds = protox::compile(["zipkin.proto"], [&root])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
