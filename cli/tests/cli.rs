//! The `facesweep` binary exactly as users run it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use facesweep_cli::httpserve::{serve, Routes};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_facesweep"));
    c.env("RUST_LOG", "warn").env("FACESWEEP_MODEL", model());
    c
}

fn model() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    root.join("models/retinaface_mnet025.pt").display().to_string()
}

fn ok(c: &mut Command) -> String {
    let out = c.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{c:?} failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
    text
}

/// Four consecutive free ports for `up --port`.
fn free_base() -> u16 {
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = l.local_addr().unwrap().port();
        drop(l);
        if base < 60000 && (0..4).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
}

struct Up(Child);
impl Drop for Up {
    fn drop(&mut self) {
        let _ = nix_kill(self.0.id());
        let _ = self.0.wait();
    }
}
fn nix_kill(pid: u32) -> std::io::Result<()> {
    Command::new("kill").arg("-INT").arg(pid.to_string()).status().map(|_| ())
}

async fn photo_server() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let mut routes = Routes::default();
    let dir = facesweep_cli::default_samples_dir();
    routes.add("/astronaut.png", 200, "image/png", std::fs::read(dir.join("astronaut.png")).unwrap());
    routes.add("/hopper.jpg", 200, "image/jpeg", std::fs::read(dir.join("grace_hopper.jpg")).unwrap());
    serve(routes).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn up_import_progress_export() {
    let (addr, _srv) = photo_server().await;
    let tmp = tempfile::Builder::new().prefix("facesweep-cli").tempdir_in("/tmp").unwrap();
    let list = tmp.path().join("urls.csv");
    std::fs::write(
        &list,
        format!(
            "id,url\n1,http://{addr}/astronaut.png\n2,http://{addr}/hopper.jpg\n3,http://{addr}/nope.jpg\n"
        ),
    )
    .unwrap();
    let base = free_base();
    let up = bin()
        .args(["up", "--port", &base.to_string(), "--data-dir"])
        .arg(tmp.path().join("data"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _up = Up(up);
    let delegator = format!("127.0.0.1:{base}");
    let results = format!("127.0.0.1:{}", base + 2);
    // `up` is ready when import succeeds.
    let deadline = Instant::now() + Duration::from_secs(120);
    let imported = loop {
        let out =
            bin().args(["import", "--job", "cli", "--delegator", &delegator]).arg(&list).output().unwrap();
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).to_string();
        }
        assert!(Instant::now() < deadline, "up never became ready");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(imported.contains("received 3 URLs, 3 new"), "{imported}");
    let again = ok(bin().args(["import", "--job", "cli", "--delegator", &delegator]).arg(&list));
    assert!(again.contains("received 3 URLs, 0 new"), "{again}");
    let p = ok(bin().args(["progress", "--job", "cli", "--wait", "--delegator", &delegator]));
    assert!(p.contains("3/3 URLs done"), "{p}");
    assert!(p.contains("http_error=1") && p.contains("ok=2"), "{p}");
    let out = tmp.path().join("out.jsonl");
    ok(bin().args(["export", "--job", "cli", "--results", &results, "--out"]).arg(&out));
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["faces"].as_array().unwrap().len(), 1);
    assert_eq!(lines[2]["status"], "http_error");
}

#[tokio::test(flavor = "multi_thread")]
async fn run_twice_on_the_same_data_dir_resumes_without_duplicates() {
    let (addr, _srv) = photo_server().await;
    let tmp = tempfile::Builder::new().prefix("facesweep-cli").tempdir_in("/tmp").unwrap();
    let list = tmp.path().join("photos.txt");
    std::fs::write(&list, format!("http://{addr}/astronaut.png\nhttp://{addr}/hopper.jpg\n")).unwrap();
    let run = |out: &str| {
        let mut c = bin();
        c.arg("run")
            .arg(&list)
            .arg("--out")
            .arg(tmp.path().join(out))
            .arg("--data-dir")
            .arg(tmp.path().join("data"));
        ok(&mut c)
    };
    let first = run("a.jsonl");
    assert!(first.contains("job photos: 2 URLs, 2 faces"), "{first}");
    let second = run("b.jsonl");
    assert!(second.contains("job photos: 2 URLs, 2 faces"), "{second}");
    let a = std::fs::read_to_string(tmp.path().join("a.jsonl")).unwrap();
    let b = std::fs::read_to_string(tmp.path().join("b.jsonl")).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.lines().count(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_run_at_any_moment_then_rerunning_loses_and_duplicates_nothing() {
    let mut routes = Routes::default();
    let dir = facesweep_cli::default_samples_dir();
    let photos: Vec<String> = routes.add_dir(&dir).unwrap();
    let (addr, _srv) = serve(routes).await.unwrap();
    let tmp = tempfile::Builder::new().prefix("facesweep-cli").tempdir_in("/tmp").unwrap();
    let list = tmp.path().join("resume.txt");
    let n = 120;
    let urls: Vec<String> =
        (0..n).map(|i| format!("http://{addr}/{}?i={i}", photos[i % photos.len()])).collect();
    std::fs::write(&list, urls.join("\n")).unwrap();
    let out = tmp.path().join("out.jsonl");
    let data = tmp.path().join("data");
    let run = || {
        let mut c = bin();
        c.arg("run").arg(&list).arg("--out").arg(&out).arg("--data-dir").arg(&data);
        c.stdout(Stdio::null()).stderr(Stdio::null());
        c
    };
    // Three kill -9s at different moments: during start-up/import, early, and mid-run.
    for wait_ms in [700u64, 2500, 5000] {
        let mut child = run().spawn().unwrap();
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        let _ = child.kill();
        let _ = child.wait();
    }
    let mut c = run();
    c.stdout(Stdio::piped());
    let summary = ok(&mut c);
    assert!(summary.contains(&format!("{n} URLs")), "{summary}");
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), n);
    let ids: std::collections::HashSet<i64> = lines.iter().map(|l| l["url_id"].as_i64().unwrap()).collect();
    assert_eq!(ids.len(), n, "duplicate URL ids in export");
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["url"], urls[i].as_str());
        assert_eq!(l["status"], "ok", "{l}");
        assert!(!l["faces"].as_array().unwrap().is_empty(), "{l}");
    }
}

/// Waits (bounded) for `c` to exit; kills it if it does not. Its exit status, stdout, stderr.
fn finish_within(mut c: Child, secs: u64) -> (Option<std::process::ExitStatus>, String, String) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let status = loop {
        if let Some(s) = c.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = c.kill();
            let _ = c.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let read = |r: Option<&mut dyn std::io::Read>| {
        let mut s = String::new();
        if let Some(r) = r {
            let _ = r.read_to_string(&mut s);
        }
        s
    };
    let out = read(c.stdout.as_mut().map(|r| r as &mut dyn std::io::Read));
    let err = read(c.stderr.as_mut().map(|r| r as &mut dyn std::io::Read));
    (status, out, err)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_process_on_a_data_dir_in_use_attaches_or_is_refused_and_stops_nothing() {
    let (addr, _srv) = photo_server().await;
    let tmp = tempfile::Builder::new().prefix("facesweep-cli").tempdir_in("/tmp").unwrap();
    let data = tmp.path().join("data");
    let list = tmp.path().join("shared.txt");
    std::fs::write(&list, format!("http://{addr}/astronaut.png\nhttp://{addr}/hopper.jpg\n")).unwrap();
    let base = free_base();
    let mut up = bin();
    up.args(["up", "--port", &base.to_string(), "--data-dir"]).arg(&data);
    let up = up.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let up_pid = up.id();
    let _up = Up(up);
    let delegator = format!("127.0.0.1:{base}");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !bin().args(["jobs", "--delegator", &delegator]).output().unwrap().status.success() {
        assert!(Instant::now() < deadline, "up never became ready");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // `run` on the same dir goes through up's services, and leaves its database running.
    let out = tmp.path().join("out.jsonl");
    let mut run = bin();
    run.arg("run").arg(&list).arg("--out").arg(&out).arg("--data-dir").arg(&data);
    let run = run.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let (status, stdout, stderr) = finish_within(run, 180);
    assert!(status.is_some_and(|s| s.success()), "run failed: {stdout}\n{stderr}");
    assert!(stdout.contains("job shared: 2 URLs, 2 faces"), "{stdout}");
    assert!(stderr.contains(&format!("facesweep pid {up_pid} (`up`)")), "{stderr}");
    let p = ok(bin().args(["progress", "--job", "shared", "--delegator", &delegator]));
    assert!(p.contains("2/2 URLs done"), "up's database must survive the second process: {p}");
    // A second `up` is refused, saying who holds the dir and what to do.
    let mut second = bin();
    second.args(["up", "--port", &free_base().to_string(), "--data-dir"]).arg(&data);
    let second = second.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let (status, _, stderr) = finish_within(second, 60);
    assert!(status.is_some_and(|s| !s.success()), "a second up must be refused: {stderr}");
    let said = format!("is in use by facesweep pid {up_pid} (`up`, delegator {delegator}");
    assert!(stderr.contains(&said), "{stderr}");
    let p = ok(bin().args(["progress", "--job", "shared", "--delegator", &delegator]));
    assert!(p.contains("2/2 URLs done"), "{p}");
}
