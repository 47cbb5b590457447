//! Compiles `proto/sotto.proto` with the pure-Rust `protox`, so building needs
//! no system `protoc`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/sotto.proto");
    let descriptors = protox::compile(["proto/sotto.proto"], ["proto"])?;
    prost_build::Config::new()
        // Hold an identity secret: `Debug` is written by hand, redacted.
        .skip_debug([".sotto.v1.IdentityHandover", ".sotto.v1.LinkBundle"])
        .compile_fds(descriptors)?;
    Ok(())
}
