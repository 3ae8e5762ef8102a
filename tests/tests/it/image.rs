//! The mesh as real containers (`make image-test`): PostgreSQL, delegator, results, detector
//! and fetcher each in its own podman container from the image `make image` built, on the
//! host network, running a job over the end-to-end site; the detector is SIGKILLed mid-job
//! and restarted, the fetcher stopped (SIGTERM through tini) and restarted; then the CLI in
//! the image runs a job as the README says. Ignored by plain `cargo test`: it needs the image.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use facesweep_cli::client;
use facesweep_tests::site::Site;
use facesweep_tests::*;

const PG_PASSWORD: &str = "image-test-password";

fn image() -> String {
    std::env::var("FACESWEEP_IMAGE").unwrap_or_else(|_| "localhost/facesweep:latest".into())
}

fn podman(args: &[&str]) -> String {
    let out = Command::new("podman").args(args).output().expect("podman (make image installs it)");
    assert!(out.status.success(), "podman {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Containers of one test run, removed on drop whatever happened.
struct Containers {
    prefix: String,
    names: Vec<String>,
}

impl Containers {
    fn name(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    /// Starts `cmd` in a detached container named after `role` (host network, so loopback
    /// reaches the site and the other containers).
    fn run(&mut self, role: &str, env: &[(&str, &str)], cmd: &[&str]) {
        let name = self.name(role);
        let mut args = vec!["run", "-d", "--network", "host", "--name", &name];
        let env: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        for e in &env {
            args.extend(["-e", e]);
        }
        let image = image();
        args.push(&image);
        args.extend(cmd);
        podman(&args);
        self.names.push(name);
    }

    /// `podman stop` (SIGTERM, then SIGKILL after `grace`): the exit code and the time taken.
    fn stop(&self, role: &str, grace: u64) -> (i64, Duration) {
        let start = Instant::now();
        podman(&["stop", "-t", &grace.to_string(), &self.name(role)]);
        let code = podman(&["inspect", "--format", "{{.State.ExitCode}}", &self.name(role)]);
        (code.parse().unwrap(), start.elapsed())
    }

    fn logs(&self, role: &str) -> String {
        let out = Command::new("podman").args(["logs", &self.name(role)]).output().unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout)
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("podman").args(["rm", "-f", "-t", "0", n]).output();
        }
    }
}

/// Waits (bounded) until the gRPC health service at `addr` answers SERVING.
async fn wait_serving(addr: &str, what: &str, c: &Containers) {
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(ch) = facesweep_common::grpc::channel(addr) {
            let r = HealthClient::new(ch).check(HealthCheckRequest { service: String::new() }).await;
            if r.map(|r| r.into_inner().status == 1).unwrap_or(false) {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{what} not serving in 120 s:\n{}", c.logs(what));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits (bounded) until at least `at` URLs of `job` are done; the progress then.
async fn wait_done(addr: &str, job: &str, at: i64, c: &Containers) -> facesweep_proto::GetProgressResponse {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Ok(p) = client::progress(addr, job).await {
            if p.done_urls >= at && (p.done_urls < p.total_urls || p.chunks_pending + p.chunks_leased == 0) {
                return p;
            }
        }
        let logs = || ["fetcher", "detector", "delegator"].map(|r| c.logs(r)).join("\n");
        assert!(Instant::now() < deadline, "job {job} stuck before {at} URLs done:\n{}", logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the container image: make image-test"]
async fn the_mesh_as_containers_survives_a_killed_detector_and_drains_on_stop() {
    let site = Site::start(25).await;
    let urls = site.urls();
    let port = |_| free_port().to_string();
    let [pg, del, det, res, fet]: [String; 5] = [0, 1, 2, 3, 4].map(port);
    let addr = |p: &str| format!("127.0.0.1:{p}");
    let mut c = Containers { prefix: format!("facesweep-it-{pg}"), names: vec![] };

    // PostgreSQL with password authentication only (no trust), from the same image.
    let init = format!(
        "set -e; B=$(ls -d /usr/lib/postgresql/*/bin); echo \"$PGPASSWORD\" > /tmp/pw; \
         $B/initdb -D /tmp/pg -U facesweep --auth=scram-sha-256 --pwfile=/tmp/pw >/dev/null; \
         exec $B/postgres -D /tmp/pg -p {pg} -c listen_addresses=127.0.0.1 -c unix_socket_directories=/tmp"
    );
    c.run("postgres", &[("PGPASSWORD", PG_PASSWORD)], &["bash", "-c", &init]);
    let db = format!("postgres://facesweep:{PG_PASSWORD}@127.0.0.1:{pg}/postgres");
    let env = [("DATABASE_URL", db.as_str()), ("RUST_LOG", "info")];
    let listen = |p: &str| format!("127.0.0.1:{p}");
    let (ld, lr, lt, lf) = (listen(&del), listen(&res), listen(&det), listen(&fet));
    c.run("delegator", &env, &["facesweep-delegator", "--listen", &ld, "--default-chunk-size", "10"]);
    c.run("results", &env, &["facesweep-results", "--listen", &lr]);
    c.run("detector", &env, &["facesweep-detector", "--listen", &lt, "--device", "cpu", "--max-batch", "8"]);
    wait_serving(&addr(&del), "delegator", &c).await;
    wait_serving(&addr(&res), "results", &c).await;
    wait_serving(&addr(&det), "detector", &c).await;
    let fetcher = [
        "facesweep-fetcher",
        "--id",
        "fetcher-0",
        "--listen",
        &lf,
        "--delegator",
        &ld,
        "--detector",
        &lt,
        "--results",
        &lr,
        "--allow-networks",
        "127.0.0.0/8",
        "--idle-poll-ms",
        "100",
        "--drain-grace-secs",
        "10",
        "--timeout-ms",
        "10000",
    ];
    c.run("fetcher", &env, &fetcher);

    let dir = tmp_dir();
    let list = dir.path().join("urls.txt");
    std::fs::write(&list, urls.join("\n")).unwrap();
    let input = client::UrlInput::File(list);
    client::import(&addr(&del), "image", &input, client::ImportOptions { quiet: true, ..Default::default() })
        .await
        .unwrap();
    let total = urls.len() as i64;

    // SIGKILL the detector mid-job, then start the same container again.
    wait_done(&addr(&del), "image", total / 5, &c).await;
    podman(&["kill", "--signal", "KILL", &c.name("detector")]);
    let at_kill = client::progress(&addr(&del), "image").await.unwrap().done_urls;
    assert!(at_kill < total, "the job finished before the detector was killed: make it longer");
    podman(&["start", &c.name("detector")]);

    // Stop the fetcher mid-job: it drains (exit 0, leases handed back) well before SIGKILL.
    wait_done(&addr(&del), "image", at_kill + total / 5, &c).await;
    let (code, took) = c.stop("fetcher", 30);
    assert_eq!(code, 0, "fetcher after SIGTERM (took {took:?}):\n{}", c.logs("fetcher"));
    assert!(took < Duration::from_secs(25), "fetcher took {took:?} to drain");
    let pool = facesweep_store::connect(&db, 2).await.unwrap();
    let held: i64 = sqlx::query_scalar("SELECT count(*) FROM chunks WHERE state = 'leased'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(held, 0, "a drained fetcher leaves no lease behind to expire");
    let stopped_at = client::progress(&addr(&del), "image").await.unwrap().done_urls;
    assert!(stopped_at < total, "the job finished before the fetcher was stopped: make it longer");
    podman(&["start", &c.name("fetcher")]);

    let p = wait_done(&addr(&del), "image", total, &c).await;
    assert_eq!(p.done_urls, total);
    let out = dir.path().join("out.jsonl");
    client::export(&addr(&res), "image", &out).await.unwrap();
    let lines = read_jsonl(&out);
    site.check_export(&lines);
    let faces: usize = lines.iter().map(|l| l["faces"].as_array().unwrap().len()).sum();
    let rows: (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM urls), (SELECT count(*) FROM url_results), (SELECT count(*) FROM faces)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(rows, (total, total, faces as i64), "exactly one result per URL, no duplicate faces");
    pool.close().await;

    // Every service drains on SIGTERM as PID 1's child: exit 0, not SIGKILL's 137.
    for role in ["fetcher", "detector", "results", "delegator"] {
        let (code, took) = c.stop(role, 30);
        assert_eq!(code, 0, "{role} after SIGTERM (took {took:?}):\n{}", c.logs(role));
    }
    eprintln!("image test: {total} URLs; detector killed at {at_kill}, fetcher stopped at {stopped_at}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the container image: make image-test"]
async fn the_cli_in_the_image_runs_a_job_as_the_readme_says() {
    let site = Site::start(1).await;
    let dir = tmp_dir();
    std::fs::write(dir.path().join("urls.txt"), site.urls().join("\n")).unwrap();
    // The image runs as uid 10001; the mounted folder holds its embedded database and output.
    Command::new("chown").args(["-R", "10001:10001"]).arg(dir.path()).status().unwrap();
    let mount = format!("{}:/work", dir.path().display());
    // The README's line as written: no CONTAINERS_CONF, limits the nested sandbox accepts.
    let out = Command::new("podman")
        .env_remove("CONTAINERS_CONF")
        .args(["run", "--rm", "--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"])
        .args(["--network", "host", "-v", &mount, &image()])
        .args(["facesweep", "run", "urls.txt", "--out", "results.jsonl", "--allow-networks", "127.0.0.0/8"])
        .output()
        .unwrap();
    assert!(out.status.success(), "facesweep run in the image: {}", String::from_utf8_lossy(&out.stderr));
    site.check_export(&read_jsonl(&Path::new(dir.path()).join("results.jsonl")));
}
