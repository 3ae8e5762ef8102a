//! What the CLI's tests share: the binary as users run it, the repository's model, a run's
//! outcome, and a loopback server of the sample photos.

use std::path::Path;
use std::process::{Child, Command};

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

/// A running `facesweep up`, interrupted and reaped when dropped.
pub struct Up(pub Child);
impl Drop for Up {
    fn drop(&mut self) {
        let _ = nix_kill(self.0.id());
        let _ = self.0.wait();
    }
}
/// SIGINT, as a user's Ctrl-C.
pub fn nix_kill(pid: u32) -> std::io::Result<()> {
    Command::new("kill").arg("-INT").arg(pid.to_string()).status().map(|_| ())
}
