//! What a newcomer meets around a `run`: quiet logs, a paused job, Ctrl-C, `| head`.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use facesweep_cli::httpserve::{serve, Routes};

use crate::harness::{model, outcome};

/// The binary in `dir` with the repository's model and the default log level.
fn bin_in(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_facesweep"));
    c.env_remove("RUST_LOG")
        .env("FACESWEEP_MODEL", model())
        .env_remove("FACESWEEP_DATA_DIR")
        .env_remove("FACESWEEP_DELEGATOR")
        .env_remove("FACESWEEP_RESULTS")
        .current_dir(dir);
    c
}

/// Waits (bounded) for `done`.
fn within(secs: u64, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {secs} s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_is_quiet_paused_jobs_say_so_ctrl_c_says_how_to_resume_and_head_ends_cleanly() {
    let mut routes = Routes::default();
    let photo = std::fs::read(facesweep_cli::default_samples_dir().join("astronaut.png")).unwrap();
    routes.add("/astronaut.png", 200, "image/png", photo);
    let (addr, _srv) = serve(routes).await.unwrap();
    let tmp = tempfile::Builder::new().prefix("facesweep-ux").tempdir_in("/tmp").unwrap();
    // Enough lines (404s but one) that an export overflows a pipe's buffer.
    let mut list = format!("http://{addr}/astronaut.png\n");
    (0..1500).for_each(|i| list += &format!("http://{addr}/missing-{i}.jpg\n"));
    std::fs::write(tmp.path().join("many.txt"), list).unwrap();
    let (code, out, err) = outcome(bin_in(tmp.path()).args(["run", "many.txt", "--out", "many.jsonl"]));
    assert_eq!(code, Some(0), "{out}\n{err}");
    // Default log level, stderr not a terminal: no service internals, no colour codes.
    assert!(!err.contains("WARN") && !err.contains("INFO") && !err.contains('\x1b'), "{err}");

    // `export --out - | head -c 10`: a quiet, normal end.
    let mut c = bin_in(tmp.path())
        .args(["export", "--job", "many", "--out", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut head = [0u8; 10];
    c.stdout.take().unwrap().read_exact(&mut head).unwrap();
    let status = c.wait().unwrap();
    let mut err = String::new();
    c.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(!err.contains("error") && !err.contains("Broken pipe"), "{err}");

    // A paused job: `run` says what to do instead of waiting forever.
    std::fs::write(tmp.path().join("later.txt"), format!("http://{addr}/astronaut.png?later\n")).unwrap();
    let (code, _, err) = outcome(bin_in(tmp.path()).args(["import", "--job", "later", "later.txt"]));
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = outcome(bin_in(tmp.path()).args(["pause", "--job", "later"]));
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = outcome(bin_in(tmp.path()).args(["run", "later.txt", "--job", "later"]));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("job later is paused — `facesweep resume --job later`"), "{err}");
    // `progress` says so too: its rate and ETA are those of the past.
    let (code, out, err) = outcome(bin_in(tmp.path()).args(["progress", "--job", "later"]));
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("job later is paused — `facesweep resume --job later`"), "{out}");

    // Ctrl-C during a run (the mesh is up: its services are published): a line, exit 130.
    // Its URL is on a listener that never answers: the run cannot end by itself meanwhile.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let slow = format!("http://{}/never.jpg\n", silent.local_addr().unwrap());
    std::fs::write(tmp.path().join("slow.txt"), slow).unwrap();
    let c = bin_in(tmp.path())
        .args(["run", "slow.txt", "--out", "slow.jsonl"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let data = tmp.path().join(".facesweep");
    within(120, "run publishes its services", || {
        facesweep_cli::datadir::read_owner(&data).is_some_and(|o| o.pid == c.id() && o.delegator.is_some())
    });
    Command::new("kill").args(["-INT", &c.id().to_string()]).status().unwrap();
    let out = c.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted — run the same command again to resume"), "{err}");
    assert!(!tmp.path().join("slow.jsonl").exists(), "an interrupted run wrote its --out");
}
