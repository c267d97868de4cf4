//! Compiles `proto/` with the pure-Rust `protox` (no protoc needed) and generates the tonic code.
//! The descriptor set, with comments, is also written to OUT_DIR for gRPC reflection.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "proto/synclab/time/v1/time.proto",
    "proto/synclab/time/v1/baseline.proto",
    "proto/synclab/clock/v1/clock.proto",
    "proto/synclab/berkeley/v1/berkeley.proto",
    "proto/synclab/election/v1/election.proto",
    "proto/synclab/lab/v1/lab.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_source_info(true).include_imports(true);
    compiler.open_files(PROTOS)?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("synclab_descriptor.bin"), compiler.encode_file_descriptor_set())?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
