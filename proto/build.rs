fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-env-changed=PROTOC");
    println!("cargo:rerun-if-changed=proto");
    // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    tonic_prost_build::configure()
        // Redo travels as `Bytes` so a batch is shared, not copied, on its way to six segments.
        .bytes(".")
        .compile_protos(
            &["proto/log.proto", "proto/meta.proto", "proto/page.proto"],
            &["proto"],
        )?;
    Ok(())
}
