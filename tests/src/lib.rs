//! Shared helpers for the end-to-end tests: paths, fixtures, an ephemeral Postgres.

pub mod bins;
pub mod check;
pub mod detector;
pub mod hostile;
pub mod netmesh;
pub mod netns;
pub mod netsite;
pub mod operator;
pub mod rogue;
pub mod services;
pub mod site;
pub mod wait;

pub use bins::bin;
pub use wait::*;

use std::path::PathBuf;

use facesweep_pgembed::{Durability, PgEmbed};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The exported model; set-up (`make test`) creates it.
pub fn model_path() -> PathBuf {
    let p = repo_root().join("models/retinaface_mnet025.pt");
    assert!(p.exists(), "{} missing: run scripts/setup.sh (make test does)", p.display());
    p
}

/// The set-up venv's Python (PyTorch for reference runs and test models).
pub fn python() -> String {
    let venv = std::env::var("FACESWEEP_VENV")
        .unwrap_or_else(|_| facesweep_cli::cache_dir().join("venv").display().to_string());
    format!("{venv}/bin/python")
}

pub fn samples_dir() -> PathBuf {
    let d = facesweep_cli::default_samples_dir();
    assert!(d.join(".done").exists(), "{} missing: run scripts/setup.sh (make test does)", d.display());
    d
}

/// A throwaway Postgres in /tmp (readable by the unprivileged user when we are root).
pub struct TestDb {
    pub pg: PgEmbed,
    _dir: tempfile::TempDir,
}

impl TestDb {
    pub fn start() -> TestDb {
        let dir = tempfile::Builder::new().prefix("facesweep-test").tempdir_in("/tmp").unwrap();
        let pg = PgEmbed::start(dir.path(), Durability::Ephemeral).expect("start embedded postgres");
        TestDb { pg, _dir: dir }
    }

    pub async fn pool(&self) -> sqlx::PgPool {
        facesweep_store::connect(&self.pg.url(), 8).await.expect("connect and migrate")
    }
}

/// Intersection over union of two x1,y1,x2,y2 boxes.
pub fn iou(a: &[f64], b: &[f64]) -> f64 {
    let ix = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let iy = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = ix * iy;
    let area = |r: &[f64]| (r[2] - r[0]) * (r[3] - r[1]);
    inter / (area(a) + area(b) - inter)
}

/// The lines of a JSON Lines file.
pub fn read_jsonl(path: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

pub fn tmp_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("facesweep-e2e").tempdir_in("/tmp").unwrap()
}

/// GET `path` from `addr` (host:port) over HTTP/1.0: the body when the answer is 200, `None`
/// when the server is unreachable, slow (5 s) or answers anything else.
pub use facesweep_cli::httpserve::get_text as http_get;

/// The real model at 256×256 input, in `dir`: the same network, several times faster on a
/// CPU (the chaos tests' detector).
pub fn small_model(dir: &std::path::Path) -> PathBuf {
    let model = dir.join("small.pt");
    std::fs::copy(model_path(), &model).unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model_path().with_extension("json")).unwrap()).unwrap();
    cfg["input_height"] = 256.into();
    cfg["input_width"] = 256.into();
    std::fs::write(dir.join("small.json"), cfg.to_string()).unwrap();
    model
}

/// A port that was free a moment ago, for an external process that must be told a number
/// (Consul, Postgres, podman): another may take it before the process binds, so a user
/// retries with a new one when its process exits. In-process servers bind `:0` instead.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Whether process `pid` has exited (a zombie not yet waited for counts).
pub fn exited(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z "))
}

/// A real `consul agent -dev` on loopback with its own ports; killed on drop.
pub struct ConsulAgent {
    child: std::process::Child,
    pub http: String,
    _dir: tempfile::TempDir,
}

impl ConsulAgent {
    pub async fn start() -> ConsulAgent {
        Self::start_with(&[]).await
    }

    /// With extra agent flags, e.g. `-hcl` for an ACL set-up. Its four ports are picked
    /// free; when one was taken before the agent bound it, the agent exits and we retry.
    pub async fn start_with(extra: &[&str]) -> ConsulAgent {
        for _ in 0..3 {
            if let Some(agent) = Self::try_start(extra).await {
                return agent;
            }
        }
        panic!("consul agent exited three times on start (see its consul.log)");
    }

    async fn try_start(extra: &[&str]) -> Option<ConsulAgent> {
        let dir = tmp_dir();
        let http = free_port();
        let port = |flag: &str| format!("-{flag}={}", free_port());
        let log = std::fs::File::create(dir.path().join("consul.log")).unwrap();
        let child = std::process::Command::new("consul")
            .args(["agent", "-dev", "-bind=127.0.0.1", "-client=127.0.0.1", "-dns-port=-1", "-grpc-port=-1"])
            .args([
                format!("-http-port={http}"),
                port("serf-lan-port"),
                port("serf-wan-port"),
                port("server-port"),
            ])
            .arg(format!("-node=facesweep-test-{http}"))
            .args(extra)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("consul on PATH (scripts/setup.sh installs it)");
        let (pid, addr) = (child.id(), format!("127.0.0.1:{http}"));
        let agent = ConsulAgent { child, http: addr.clone(), _dir: dir };
        // Ready once a leader is elected: registration and health queries work from then on.
        let ready = wait_for("consul agent elects itself leader", 20, || async {
            if exited(pid) {
                return Some(false);
            }
            let leader = http_get(&addr, "/v1/status/leader").await.unwrap_or_default();
            leader.contains(':').then_some(true)
        })
        .await;
        ready.then_some(agent)
    }
}

impl Drop for ConsulAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
