//! Generates the gRPC code from proto/ with protox, a protobuf compiler written in Rust, so a
//! fresh machine needs no protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/bulwark/discovery/v1/discovery.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
