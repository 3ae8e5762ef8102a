//! What the CLI's tests share: the binary as users run it, the repository's model, a run's
//! outcome, a loopback server of the sample photos, and `facesweep up` as a guard.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use facesweep_cli::httpserve::{serve, Routes};

/// The binary with the repository's model and warnings only.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_facesweep"));
    c.env("RUST_LOG", "warn").env("FACESWEEP_MODEL", model());
    c
}

/// The repository's default model.
pub fn model() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    root.join("models/retinaface_mnet025.pt").display().to_string()
}

/// Runs `c`, asserts it succeeded; its stdout.
pub fn ok(c: &mut Command) -> String {
    let out = c.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{c:?} failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
    text
}

/// Runs `c`; its exit code, stdout and stderr.
pub fn outcome(c: &mut Command) -> (Option<i32>, String, String) {
    let out = c.output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

/// Each line of a JSON-lines output, parsed.
pub fn jsonl(text: &str) -> Vec<serde_json::Value> {
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

/// Two sample photos on a loopback HTTP server: /astronaut.png and /hopper.jpg.
pub async fn photo_server() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let mut routes = Routes::default();
    let dir = facesweep_cli::default_samples_dir();
    routes.add("/astronaut.png", 200, "image/png", std::fs::read(dir.join("astronaut.png")).unwrap());
    routes.add("/hopper.jpg", 200, "image/jpeg", std::fs::read(dir.join("grace_hopper.jpg")).unwrap());
    serve(routes).await.unwrap()
}

/// Free ports for `up --port` (its services and their /metrics), below Linux's ephemeral
/// range (32768+) so that no outgoing connection of another test takes one meanwhile.
pub fn free_base() -> u16 {
    loop {
        let base = 20_000 + (rand_u16() % 12_000);
        // `up` binds base..base+3 and its /metrics on base+10..base+13.
        let ports = (0..4).chain(10..14);
        if ports.into_iter().all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
}

fn rand_u16() -> u16 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    (t.subsec_nanos() ^ std::process::id().wrapping_mul(2_654_435_761)) as u16
}

/// `Up::start` with no arguments after `up --port P`.
pub const NO_ARGS: [&str; 0] = [];

/// A running `facesweep up` on free ports, interrupted and reaped when dropped.
pub struct Up {
    child: Option<Child>,
    pub delegator: String,
    pub results: String,
}

impl Up {
    /// `cmd up --port P ARGS…` (cmd: `bin()` or one made like it, with any global flags), once
    /// it says it is up (its first line, printed when the mesh has started; at most 120 s).
    pub async fn start<S: AsRef<OsStr>>(cmd: &mut Command, args: impl IntoIterator<Item = S>) -> Up {
        let base = free_base();
        cmd.args(["up", "--port", &base.to_string()]).args(args);
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
        let (said, first) = std::sync::mpsc::channel();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        // Reads to the end, so that `up` never writes into a closed pipe.
        std::thread::spawn(move || stdout.lines().map_while(Result::ok).for_each(|l| drop(said.send(l))));
        let delegator = format!("127.0.0.1:{base}");
        let up = Up { child: Some(child), results: format!("127.0.0.1:{}", base + 2), delegator };
        let line = tokio::task::spawn_blocking(move || first.recv_timeout(Duration::from_secs(120)));
        let line = line.await.unwrap().unwrap_or_else(|e| panic!("up never said it was up: {e}"));
        assert!(line.starts_with("facesweep up:") && line.contains(&up.delegator), "{line}");
        up
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Ctrl-C, then how it ended; panics (after SIGKILL) if it runs on `secs` later.
    pub async fn interrupt(mut self, secs: u64) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        let _ = nix_kill(child.id());
        let ended = tokio::task::spawn_blocking(move || wait_at_most(&mut child, secs)).await.unwrap();
        ended.unwrap_or_else(|| panic!("up still running {secs} s after SIGINT"))
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix_kill(child.id());
            let _ = wait_at_most(&mut child, 60);
        }
    }
}

/// The child's exit status within `secs`, or None after killing it.
pub fn wait_at_most(child: &mut Child, secs: u64) -> Option<ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// SIGINT, as a user's Ctrl-C.
pub fn nix_kill(pid: u32) -> std::io::Result<()> {
    Command::new("kill").arg("-INT").arg(pid.to_string()).status().map(|_| ())
}
