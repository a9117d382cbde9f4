//! Compiles agent/proto with a vendored protoc, so a fresh machine builds without a protobuf-compiler package.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure().build_client(true).build_server(true).compile_with_config(
        config,
        &["proto/infergate/v1/inference.proto"],
        &["proto"],
    )?;
    Ok(())
}
