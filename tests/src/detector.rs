//! A detector as its own process (its own metrics), registered in a test Consul agent.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::{bin, free_port, http_get, ConsulAgent};

pub struct DetectorProcess {
    child: Child,
    metrics: String,
}

impl DetectorProcess {
    /// Serves `model` (a `.pt` with its contract beside it) on CPU; logs to `dir/name.log`.
    pub fn start(agent: &ConsulAgent, dir: &Path, name: &str, model: &Path) -> DetectorProcess {
        let metrics = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
        let child = Command::new(bin("facesweep-detector"))
            .arg("--model")
            .arg(model)
            .args(["--device", "cpu", "--threads", "1", "--max-batch", "8", "--listen", "127.0.0.1:0"])
            .args(["--metrics-listen", &metrics, "--consul-addr", &agent.http])
            .args(["--consul-check-interval-secs", "1"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn facesweep-detector");
        DetectorProcess { child, metrics }
    }

    /// Images this detector has run through its model.
    pub async fn images(&self) -> u64 {
        let text = http_get(&self.metrics, "/metrics").await.unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix("facesweep_detector_images_total "))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0)
    }

    /// SIGKILL, and reaped.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn signal(&self, sig: &str) {
        Command::new("kill").arg(sig).arg(self.child.id().to_string()).status().unwrap();
    }
}

impl Drop for DetectorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
