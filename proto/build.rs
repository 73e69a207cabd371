//! Generates the gRPC code of `latentsweep.v1` with protox (pure Rust; no `protoc` needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/latentsweep/v1/coordinator.proto"];
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Maps of metrics keep a stable order on both sides.
        .btree_map(".")
        .compile_fds(fds)?;
    Ok(())
}
