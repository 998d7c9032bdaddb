//! Generates the gRPC code from proto/ with protox, a protobuf compiler written in Rust, so a
//! fresh machine needs no protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/bulwark/discovery/v1/discovery.proto",
        "proto/bulwark/identity/v1/identity.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    // The services' buffers start small: see src/codec.rs.
    tonic_prost_build::configure()
        .codec_path("crate::codec::Lean")
        .compile_fds(fds)?;
    Ok(())
}
