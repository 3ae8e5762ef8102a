//! The workspace's binaries for tests that run them as processes, built for this test
//! process's profile before first use: a test never runs a stale `target/debug` binary left
//! by an earlier build.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

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

/// A copy of workspace binary `name` in `dir` (made once): a rebuild during a long run cannot
/// swap the binary under the processes it starts.
pub fn copy_into(dir: &Path, name: &str) -> PathBuf {
    let copy = dir.join(name);
    if !copy.exists() {
        std::fs::copy(bin(name), &copy).unwrap();
    }
    copy
}

/// `cmd.spawn()`, tried again while the binary is "text file busy". Writing a copy leaves
/// a write descriptor that a process forked meanwhile by another test thread holds until its
/// exec; exec of the copy fails with ETXTBSY for that moment (CI saw it once in chaos.rs).
pub fn spawn(cmd: &mut Command) -> std::io::Result<Child> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match cmd.spawn() {
            Err(e) if e.kind() == ErrorKind::ExecutableFileBusy && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            r => return r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// While another process holds the binary open for writing, a plain spawn fails with
    /// ETXTBSY and `spawn` starts it once the writer is gone.
    #[test]
    fn a_binary_busy_for_a_moment_still_starts() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("true");
        std::fs::copy("/bin/true", &exe).unwrap();
        let mut holder =
            Command::new("sh").args(["-c", "exec 3>>\"$0\"; sleep 0.5"]).arg(&exe).spawn().unwrap();
        // Bounded: until the holder's descriptor 3 is the binary.
        let fd = PathBuf::from(format!("/proc/{}/fd/3", holder.id()));
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_link(&fd).ok().as_deref() != Some(exe.as_path()) {
            assert!(Instant::now() < deadline, "the holder never opened the binary");
            std::thread::sleep(Duration::from_millis(5));
        }
        let busy = Command::new(&exe).spawn().map(|mut c| c.wait());
        assert_eq!(busy.err().map(|e| e.kind()), Some(ErrorKind::ExecutableFileBusy));
        let status = spawn(&mut Command::new(&exe)).unwrap().wait().unwrap();
        assert!(status.success());
        holder.wait().unwrap();
    }
}
