//! The `facesweep` binary exactly as users run it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use facesweep_cli::httpserve::{serve, Routes};

use crate::harness::{bin, free_base, ok, outcome, photo_server, wait_at_most, Up, NO_ARGS};

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
    let up = Up::start(bin().arg("--data-dir").arg(tmp.path().join("data")), NO_ARGS).await;
    let (delegator, results) = (up.delegator.clone(), up.results.clone());
    let imported = ok(bin().args(["import", "--job", "cli", "--delegator", &delegator]).arg(&list));
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
    let mut again = bin();
    again.arg("run").arg(&list).arg("--out").arg(tmp.path().join("c.jsonl"));
    let (_, _, err) = outcome(again.arg("--data-dir").arg(tmp.path().join("data")));
    assert!(err.contains("job photos: resuming — 2 of 2 URLs already done"), "{err}");
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
        // A URL's 20 s decode deadline counts its wait in the decode queue: 64 URLs in flight
        // (the default) queued on two decode threads of a starved 2-core CI machine past it,
        // and a good photo ended decode_error. Eight in flight keep that queue short.
        c.args(["--concurrency", "8"]);
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
    let status = wait_at_most(&mut c, secs);
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
    let up = Up::start(bin().arg("--data-dir").arg(&data), NO_ARGS).await;
    let (up_pid, delegator) = (up.pid(), up.delegator.clone());
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

/// The binary with no model path given, run from `dir` (outside the checkout).
fn bin_in(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_facesweep"));
    c.env("RUST_LOG", "error")
        .env_remove("FACESWEEP_MODEL")
        .env_remove("FACESWEEP_DATA_DIR")
        .current_dir(dir);
    c.env_remove("FACESWEEP_DELEGATOR").env_remove("FACESWEEP_RESULTS");
    c
}

fn assert_plain(stderr: &str) {
    assert!(!stderr.contains("Status {") && !stderr.contains("tonic"), "tonic text for a user: {stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn run_works_from_any_folder_and_fails_when_every_url_failed() {
    let (addr, _srv) = photo_server().await;
    let tmp = tempfile::Builder::new().prefix("facesweep-anywhere").tempdir_in("/tmp").unwrap();
    std::fs::write(tmp.path().join("one.txt"), format!("http://{addr}/astronaut.png\n")).unwrap();
    let (code, out, err) = outcome(bin_in(tmp.path()).args(["run", "one.txt", "--out", "one.jsonl"]));
    assert_eq!(code, Some(0), "run from {}: {out}\n{err}", tmp.path().display());
    assert!(out.contains("job one: 1 URL, 1 face"), "{out}");
    // stderr is a pipe here, where the bar draws nothing: progress comes as plain lines.
    assert!(err.contains("detect 1/1 URLs"), "{err}");
    // Every URL failed: the summary, then a line saying so, and exit status 3.
    std::fs::write(tmp.path().join("bad.txt"), format!("http://{addr}/a.jpg\nhttp://{addr}/b.jpg\n"))
        .unwrap();
    let (code, out, err) = outcome(bin_in(tmp.path()).args(["run", "bad.txt", "--out", "bad.jsonl"]));
    assert_eq!(code, Some(3), "{out}\n{err}");
    assert!(out.contains("job bad: 2 URLs"), "{out}");
    assert!(err.contains("all 2 URLs failed (http_error=2); each line of bad.jsonl says why"), "{err}");
    assert_eq!(std::fs::read_to_string(tmp.path().join("bad.jsonl")).unwrap().lines().count(), 2);
    // A model path that does not exist is named, with what to pass.
    let (code, _, err) = outcome(bin_in(tmp.path()).args(["run", "one.txt", "--model", "no/such.pt"]));
    assert_eq!(code, Some(1));
    assert!(err.contains("model no/such.pt not found (--model / FACESWEEP_MODEL)"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn after_run_client_commands_start_the_data_dir_on_demand() {
    let (addr, _srv) = photo_server().await;
    let tmp = tempfile::Builder::new().prefix("facesweep-ondemand").tempdir_in("/tmp").unwrap();
    let list = format!("http://{addr}/astronaut.png\nhttp://{addr}/nope.jpg\n");
    std::fs::write(tmp.path().join("mixed.txt"), list).unwrap();
    let (code, out, err) = outcome(bin_in(tmp.path()).args(["run", "mixed.txt", "--out", "run.jsonl"]));
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(
        std::net::TcpStream::connect("127.0.0.1:50051").is_err(),
        "something listens on the default delegator port; this test needs it free"
    );
    // No `up`: each command starts the data dir's database and services for itself.
    let (code, out, err) =
        outcome(bin_in(tmp.path()).args(["export", "--job", "mixed", "--out", "again.jsonl"]));
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(err.contains("started the database and services of .facesweep"), "{err}");
    let read = |f: &str| std::fs::read_to_string(tmp.path().join(f)).unwrap();
    assert_eq!(read("again.jsonl"), read("run.jsonl"));
    // What can be refused without the services is refused before they start.
    for (args, said) in [
        (["export", "--job", "mixed", "--out", "r.csv"], "unknown extension .csv"),
        (["export", "--job", "mixed", "--out", "/nonexist/r.jsonl"], "folder /nonexist does not exist"),
        (["retry", "--job", "mixed", "--status", "pending"], "pending URLs have not finished yet"),
    ] {
        let (code, _, err) = outcome(bin_in(tmp.path()).args(args));
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(err.contains(said) && !err.contains("started the database"), "{args:?}: {err}");
    }
    let (code, out, err) = outcome(bin_in(tmp.path()).args(["progress", "--job", "mixed"]));
    assert!(code == Some(0) && out.contains("2/2 URLs done"), "{out}\n{err}");
    let (code, out, err) =
        outcome(bin_in(tmp.path()).args(["priority", "--job", "mixed", "--priority", "-3"]));
    assert!(code == Some(0) && out.contains("mixed") && out.contains(" -3 "), "{out}\n{err}");
    let (code, out, err) =
        outcome(bin_in(tmp.path()).args(["retry", "--job", "mixed", "--status", "http_error"]));
    assert!(code == Some(0) && out.contains("1 URL with status http_error re-queued"), "{out}\n{err}");
    // Waiting needs URLs processed: the whole mesh is started, and the re-queued URL is done again.
    let (code, out, err) = outcome(bin_in(tmp.path()).args(["progress", "--job", "mixed", "--wait"]));
    assert!(code == Some(0) && out.contains("2/2 URLs done") && out.contains("http_error=1"), "{out}\n{err}");
    let (code, out, err) = outcome(bin_in(tmp.path()).args(["watch", "--job", "mixed"]));
    assert!(code == Some(0) && out.lines().filter(|l| l.contains("\"cursor\"")).count() == 2, "{out}\n{err}");
    // A wrong job name reads as one, with where to look.
    let (code, _, err) = outcome(bin_in(tmp.path()).args(["progress", "--job", "nope"]));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("error: no job named nope; `facesweep jobs` lists them"), "{err}");
    assert_plain(&err);
}

/// A bad --out is refused at once: no data dir made, no mesh started.
#[test]
fn a_bad_out_is_refused_before_anything_starts() {
    let tmp = tempfile::Builder::new().prefix("facesweep-badout").tempdir_in("/tmp").unwrap();
    std::fs::write(tmp.path().join("u.txt"), "http://127.0.0.1:9/a.jpg\n").unwrap();
    for (out, said) in
        [("missing/r.jsonl", "folder missing does not exist"), ("r.csv", "unknown extension .csv")]
    {
        let (code, _, err) = outcome(bin_in(tmp.path()).args(["run", "u.txt", "--out", out]));
        assert_eq!(code, Some(1), "{out}: {err}");
        assert!(err.contains(said), "{out}: {err}");
    }
    assert!(!tmp.path().join(".facesweep").exists(), "a mesh was started for a bad --out");
}

#[test]
fn commands_against_nothing_say_what_to_run() {
    let tmp = tempfile::Builder::new().prefix("facesweep-nothing").tempdir_in("/tmp").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let at = format!("127.0.0.1:{port}");
    for (args, said) in [
        (
            vec!["jobs", "--delegator", &at],
            format!("no delegator at {at} — start `facesweep up` or pass --delegator"),
        ),
        (vec!["cancel", "--job", "x", "--delegator", &at], format!("no delegator at {at}")),
        (vec!["export", "--job", "x", "--out", "o.jsonl", "--results", &at], format!("no results at {at}")),
    ] {
        let (code, _, err) = outcome(bin_in(tmp.path()).args(&args));
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(err.contains(&said), "{args:?}: {err}");
        assert_plain(&err);
    }
    // No data dir here and nothing at the default address: the same advice, nothing started.
    let (code, _, err) = outcome(bin_in(tmp.path()).args(["progress", "--job", "x"]));
    assert_eq!(code, Some(1), "{err}");
    assert!(!tmp.path().join(".facesweep").exists(), "a client command made a data dir");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_model_is_refused_at_import_and_fetcher_knobs_reach_up() {
    let tmp = tempfile::Builder::new().prefix("facesweep-models").tempdir_in("/tmp").unwrap();
    let list = tmp.path().join("m.txt");
    std::fs::write(&list, "http://127.0.0.1:9/a.jpg\n").unwrap();
    let knobs = ["--concurrency", "4", "--per-host", "2", "--model-detector", "other-v1=127.0.0.1:9"];
    let up = Up::start(&mut bin_in(tmp.path()), knobs).await;
    let delegator = up.delegator.clone();
    let import = |model: &str| {
        outcome(
            bin_in(tmp.path())
                .args(["import", "--job", "m", "--delegator", &delegator, "--model", model])
                .arg(&list),
        )
    };
    let (code, _, err) = import("retinaface-nope");
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(
            "no detector serves model retinaface-nope; served here: retinaface-mnet025-v1, other-v1"
        ),
        "{err}"
    );
    let (_, jobs, _) = outcome(bin_in(tmp.path()).args(["jobs", "--delegator", &delegator]));
    assert!(!jobs.lines().any(|l| l.starts_with("m ")), "a refused import left a job: {jobs}");
    let (code, out, err) = import("other-v1");
    assert_eq!(code, Some(0), "a model given to up with --model-detector is accepted: {err}");
    assert!(out.contains("received 1 URL, 1 new"), "{out}");
}

/// Every environment variable a service binary reads, less those `facesweep run` declares as
/// its own flags (DATABASE_URL, FACESWEEP_ADMIN_TOKEN: the user's settings for the CLI).
fn service_env_names() -> Vec<String> {
    use facesweep_common::config::env_names;
    let help = ok(bin().args(["run", "--help"]));
    let mut names = env_names::<facesweep_delegator::Args>();
    names.extend(env_names::<facesweep_detector::Args>());
    names.extend(env_names::<facesweep_fetcher::Args>());
    names.extend(env_names::<facesweep_results::Args>());
    names.sort();
    names.dedup();
    names.retain(|n| !help.contains(&format!("[env: {n}")));
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_environment_does_not_change_run() {
    let names = service_env_names();
    for expected in ["FETCHER_CONCURRENCY", "CONSUL_HTTP_ADDR", "DETECTOR_MAX_BATCH", "RESULTS_LISTEN"] {
        assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
    }
    let (addr, _srv) = photo_server().await;
    let tmp = tempfile::Builder::new().prefix("facesweep-hostile").tempdir_in("/tmp").unwrap();
    let list = tmp.path().join("photos.txt");
    std::fs::write(&list, format!("http://{addr}/astronaut.png\nhttp://{addr}/hopper.jpg\n")).unwrap();
    let run = |name: &str, hostile: bool| {
        let mut c = bin();
        c.arg("run").arg(&list).arg("--out").arg(tmp.path().join(format!("{name}.jsonl")));
        c.arg("--data-dir").arg(tmp.path().join(name));
        for n in names.iter().filter(|_| hostile) {
            c.env(n, "nonsense");
        }
        let summary = ok(&mut c);
        assert!(summary.contains("job photos: 2 URLs, 2 faces"), "{name}: {summary}");
        std::fs::read_to_string(tmp.path().join(format!("{name}.jsonl"))).unwrap()
    };
    let plain = run("plain", false);
    assert_eq!(plain.lines().count(), 2);
    assert_eq!(run("hostile", true), plain, "the service environment changed the export");
}
