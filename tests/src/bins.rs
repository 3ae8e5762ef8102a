//! The workspace's binaries for tests that run them as processes, built for this test
//! process's profile before first use: a test never runs a stale `target/debug` binary left
//! by an earlier build.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::repo_root;

/// The path of workspace binary `name` (`facesweep`, `facesweep-delegator`, ...), fresh.
pub fn bin(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let p = DIR.get_or_init(build).join(name);
    assert!(p.exists(), "{} missing after cargo build --workspace --bins", p.display());
    p
}

/// One `cargo build --workspace --bins` per test process (what `make` runs, so its features
/// match and it is a no-op there); the profile directory it wrote to.
fn build() -> PathBuf {
    // This test binary is <target>/<profile>/deps/<name>-<hash>.
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps").to_path_buf();
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo.current_dir(repo_root()).args(["build", "-q", "--workspace", "--bins", "--target-dir"]);
    cargo.arg(profile_dir.parent().unwrap());
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => {}
        Some("release") => {
            cargo.arg("--release");
        }
        Some(other) => {
            cargo.args(["--profile", other]);
        }
        None => panic!("no profile directory above {}", exe.display()),
    }
    let status = cargo.status().expect("run cargo");
    assert!(status.success(), "cargo build --workspace --bins failed: {status}");
    profile_dir
}
