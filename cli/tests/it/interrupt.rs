//! Ctrl-C during a `run` or an `up` whose detector is busy: the process ends as a shell expects.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use facesweep_cli::httpserve::{serve, Routes};

use crate::harness::{bin, nix_kill, ok, Up, NO_ARGS};

/// SIGINT while the model thread runs batches: exit 130 and the resume line, not a death by
/// SIGSEGV (the model thread ran on while exit() ran LibTorch's static destructors).
#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_during_a_busy_run_exits_130_with_the_resume_line() {
    let (_srv, tmp) = photos_to_fetch().await;
    let c = Command::new(env!("CARGO_BIN_EXE_facesweep"))
        .args(["run", "urls.txt", "--out", "r.jsonl"])
        .env("RUST_LOG", "error")
        .env_remove("FACESWEEP_DATA_DIR")
        .current_dir(tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let data = tmp.path().join(".facesweep");
    let deadline = Instant::now() + Duration::from_secs(120);
    let delegator = loop {
        match facesweep_cli::datadir::read_owner(&data) {
            Some(o) if o.pid == c.id() && o.delegator.is_some() => break o.delegator.unwrap(),
            _ => assert!(Instant::now() < deadline, "run never published its services"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    busy(&delegator, "urls").await;
    nix_kill(c.id()).unwrap();
    let pid = c.id();
    let waited = tokio::task::spawn_blocking(move || c.wait_with_output());
    let out = tokio::time::timeout(Duration::from_secs(60), waited)
        .await
        .unwrap_or_else(|_| panic!("run pid {pid} still running 60 s after SIGINT"))
        .unwrap()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.signal(), None, "run died of a signal: {err}");
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted — run the same command again to resume"), "{err}");
}

/// `up` stopped by Ctrl-C while a job keeps its detector busy: a clean exit 0 once the mesh
/// has stopped, not a death by signal (the same race as `run`'s, on the graceful path).
#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_on_a_busy_up_stops_it_cleanly() {
    let (_srv, tmp) = photos_to_fetch().await;
    let up = Up::start(bin().arg("--data-dir").arg(tmp.path().join("data")), NO_ARGS).await;
    let list = tmp.path().join("urls.txt");
    ok(bin().args(["import", "--job", "busy", "--delegator", &up.delegator]).arg(&list));
    busy(&up.delegator, "busy").await;
    let status = up.interrupt(90).await;
    assert_eq!(status.signal(), None, "up died of a signal");
    assert_eq!(status.code(), Some(0));
}

/// A loopback server of the sample photos and a folder with `urls.txt`: 300 distinct URLs of
/// face photos, more than a run finishes before the signal.
async fn photos_to_fetch() -> (tokio::task::JoinHandle<()>, tempfile::TempDir) {
    let mut routes = Routes::default();
    let names = routes.add_dir(&facesweep_cli::default_samples_dir()).unwrap();
    let (addr, srv) = serve(routes).await.unwrap();
    let tmp = tempfile::Builder::new().prefix("facesweep-int").tempdir_in("/tmp").unwrap();
    let urls: Vec<String> =
        (0..300).map(|i| format!("http://{addr}/{}?i={i}", names[i % names.len()])).collect();
    std::fs::write(tmp.path().join("urls.txt"), urls.join("\n")).unwrap();
    (srv, tmp)
}

/// Returns once 30 URLs of `job` are done (at most 120 s): batches are on the model thread
/// (the crash needed one mid-forward).
async fn busy(delegator: &str, job: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = facesweep_cli::client::progress(delegator, job).await.map_or(0, |p| p.done_urls);
        if done >= 30 {
            return;
        }
        assert!(Instant::now() < deadline, "fewer than 30 URLs of {job} done in 120 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
