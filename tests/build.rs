// The binary has no rpath to LibTorch otherwise; LIBTORCH is set by the Makefile.
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Ok(lt) = std::env::var("LIBTORCH") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lt}/lib");
    }
}
