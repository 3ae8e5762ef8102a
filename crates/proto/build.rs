use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Vendored protoc: a fresh machine needs no system protobuf-compiler.
    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    // Read at run time, not baked in with env!: cargo reuses a compiled build script across
    // checkouts of the same sources (a second worktree sharing target/), and a baked-in path
    // would point at the first checkout.
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files: Vec<PathBuf> = ["common", "delegator", "detector", "results"]
        .iter()
        .map(|f| root.join(format!("facesweep/v1/{f}.proto")))
        .collect();
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("facesweep_descriptor.bin"))
        // Tensor payloads stay zero-copy on both sides of the wire.
        .bytes(".facesweep.v1.DetectRequest.data")
        .compile_protos(&files, &[root])?;
    Ok(())
}
