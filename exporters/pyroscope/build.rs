//! Generates the Pyroscope push API types from the vendored protos in `proto/`
//! (`push/v1/push.proto`, `types/v1/types.proto`), with `protox` (a protobuf
//! compiler written in Rust) instead of a system `protoc`, so the crate builds
//! anywhere `cargo` does.

use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read when the script runs, not when it is compiled: a script built once may
    // run for another checkout sharing the target directory.
    let root = Path::new(&std::env::var("CARGO_MANIFEST_DIR")?).join("proto");
    println!("cargo:rerun-if-changed={}", root.display());
    println!("cargo:rerun-if-changed=build.rs");
    let fds = protox::compile(["push/v1/push.proto"], [&root])?;
    prost_build::Config::new()
        .include_file("pyroscope.rs")
        .compile_fds(fds)?;
    Ok(())
}
