//! Chaos: the mesh as separate processes (2 delegator shards, 2 fetchers, detector, results,
//! Postgres). While a job runs, random processes are `kill -9`ed at spread-out moments and
//! restarted. Afterwards every URL must have exactly one terminal result, identical to a
//! clean run of the same URLs, with no duplicate faces and nothing stuck; then SIGTERM must
//! drain everyone. The web is hostile too: many bodies come chunked (no Content-Length, some
//! larger than a first body reservation) into a small body budget at high concurrency, one
//! image makes the detector fail, and one makes it emit a non-finite landmark that the results
//! service must refuse.
//!
//! Meanwhile an operator pauses, resumes, reprioritises, appends to, retries, cancels and
//! deletes jobs of its own (tests/src/operator.rs), and a rogue fetcher guesses lease tokens
//! without their secrets (tests/src/rogue.rs): its jobs must end right and nothing be forged.
//!
//! CHAOS_URLS (default 2000) and CHAOS_KILLS (default 5); `make chaos` runs 10000 / 20.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use facesweep_cli::httpserve::serve;
use facesweep_common::grpc::channel;
use facesweep_pgembed::{Durability, PgEmbed};
use facesweep_proto::delegator_service_client::DelegatorServiceClient;
use facesweep_proto::*;
use facesweep_tests::bins::copy_into;
use facesweep_tests::hostile::{corpus, poisoned_model};
use facesweep_tests::operator::Operator;
use facesweep_tests::rogue::Rogue;
use facesweep_tests::{check, rogue, *};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

const KINDS: [&str; 7] =
    ["delegator-0", "delegator-1", "fetcher-0", "fetcher-1", "detector", "results", "postgres"];

struct Cluster {
    dir: PathBuf,
    db_url: String,
    ports: HashMap<&'static str, u16>,
    procs: HashMap<&'static str, Child>,
    pg: Option<PgEmbed>,
    pg_port: u16,
    model: PathBuf,
}

impl Cluster {
    fn command(&self, kind: &str) -> Command {
        let port = |k: &str| self.ports[k].to_string();
        let listen = format!("127.0.0.1:{}", self.ports[kind]);
        let mut c = match kind {
            "delegator-0" | "delegator-1" => {
                let mut c = Command::new(copy_into(&self.dir, "facesweep-delegator"));
                c.args([
                    "--shard-index",
                    &kind[10..],
                    "--shard-count",
                    "2",
                    "--lease-ttl-secs",
                    "4",
                    "--default-chunk-size",
                    "40",
                    "--failure-backoff-ms",
                    "500",
                ]);
                c
            }
            "results" => Command::new(copy_into(&self.dir, "facesweep-results")),
            "detector" => {
                let mut c = Command::new(copy_into(&self.dir, "facesweep-detector"));
                c.arg("--model").arg(&self.model).args(["--max-batch", "16", "--device", "cpu"]);
                c
            }
            _ => {
                let mut c = Command::new(copy_into(&self.dir, "facesweep-fetcher"));
                let delegators =
                    format!("127.0.0.1:{},127.0.0.1:{}", port("delegator-0"), port("delegator-1"));
                c.args([
                    "--id",
                    kind,
                    "--delegator",
                    &delegators,
                    "--detector",
                    &format!("127.0.0.1:{}", port("detector")),
                ]);
                c.args([
                    "--results",
                    &format!("127.0.0.1:{}", port("results")),
                    "--concurrency",
                    "64",
                    "--idle-poll-ms",
                    "100",
                    "--release-backoff-ms",
                    "200",
                ]);
                // 4 MiB of body memory for 2 × 64 downloads, chunked bodies of up to ~1.5 MB.
                c.args(["--body-budget-mib", "4", "--max-body-bytes", "2097152"]);
                c.args([
                    "--timeout-ms",
                    "10000",
                    "--drain-grace-secs",
                    "5",
                    "--allow-networks",
                    "127.0.0.0/8",
                ]);
                c
            }
        };
        c.arg("--listen").arg(listen).env("DATABASE_URL", &self.db_url).env("RUST_LOG", "warn");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{kind}.log")))
            .unwrap();
        c.stdout(Stdio::null()).stderr(log);
        c
    }

    fn start(&mut self, kind: &'static str) {
        if kind == "postgres" {
            let pg =
                PgEmbed::start_on(&self.dir.join("db"), Durability::Durable, Some(self.pg_port)).unwrap();
            self.db_url = pg.url();
            self.pg = Some(pg);
        } else {
            let child = facesweep_tests::bins::spawn(&mut self.command(kind)).unwrap();
            self.procs.insert(kind, child);
        }
    }

    fn kill9(&mut self, kind: &'static str) {
        if kind == "postgres" {
            self.pg.as_mut().unwrap().crash();
        } else if let Some(mut c) = self.procs.remove(kind) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn delegator(&self) -> DelegatorServiceClient<tonic::transport::Channel> {
        DelegatorServiceClient::new(channel(&format!("127.0.0.1:{}", self.ports["delegator-0"])).unwrap())
    }
}

async fn progress(c: &Cluster, job: &str) -> Option<GetProgressResponse> {
    for k in ["delegator-0", "delegator-1"] {
        let mut d = DelegatorServiceClient::new(channel(&format!("127.0.0.1:{}", c.ports[k])).unwrap());
        if let Ok(p) = d.get_progress(GetProgressRequest { job: job.into() }).await {
            return Some(p.into_inner());
        }
    }
    None
}

async fn import(c: &Cluster, job: &str, urls: &[String]) {
    let mut d = c.delegator();
    d.create_job(CreateJobRequest { name: job.into(), chunk_size: 40, priority: 1, ..Default::default() })
        .await
        .unwrap();
    let msgs: Vec<_> = urls
        .chunks(1000)
        .enumerate()
        .map(|(i, u)| AppendUrlsRequest {
            job: job.into(),
            first_ordinal: (i * 1000) as i64,
            urls: u.to_vec(),
            ..Default::default()
        })
        .collect();
    d.append_urls(futures::stream::iter(msgs)).await.unwrap();
}

/// The job's progress once every URL has a result, or the last seen at `deadline`.
async fn wait_done(c: &Cluster, job: &str, deadline: Instant) -> GetProgressResponse {
    let mut last = GetProgressResponse::default();
    loop {
        if let Some(p) = progress(c, job).await {
            // Done means every URL has a result and every chunk is closed: a chunk whose lease
            // expired after its last result is closed by the next fetcher that polls.
            if p.total_urls > 0 && p.done_urls >= p.total_urls && p.chunks_pending + p.chunks_leased == 0 {
                return p;
            }
            last = p;
        }
        if Instant::now() >= deadline {
            eprintln!("job {job} did not finish in time; logs in {}", c.dir.display());
            return last;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_processes_loses_and_duplicates_nothing() {
    let n: usize = std::env::var("CHAOS_URLS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let kills: usize = std::env::var("CHAOS_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let seed: u64 = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    eprintln!("chaos seed {seed} (CHAOS_SEED to replay)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let tmp = tmp_dir();
    let dir = tmp.path().to_path_buf();
    let model = poisoned_model(&dir, &small_model(&dir));
    let (routes, paths) = corpus(&dir);
    let (addr, _server) = serve(routes).await.unwrap();
    let mut urls: Vec<String> =
        (0..n).map(|i| format!("http://{addr}{}?i={i}", paths[i % paths.len()])).collect();
    // One of each trouble-maker, early, so it is in flight when the kills start.
    urls[n / 10] = format!("http://{addr}/poison.png");
    urls[n / 10 + 1] = format!("http://{addr}/nan.png");

    let pg_port = free_port();
    let mut c = Cluster {
        dir: dir.clone(),
        db_url: String::new(), // set when postgres starts

        ports: KINDS.iter().map(|k| (*k, free_port())).collect(),
        procs: HashMap::new(),
        pg: None,
        pg_port,
        model,
    };
    for k in KINDS.iter().rev() {
        c.start(k);
    }
    let deadline = Instant::now() + Duration::from_secs(900);
    // Reference: the same URLs without chaos.
    let clean_deadline = deadline;
    wait_until("the first delegator answers", 60, || {
        let mut d = c.delegator();
        async move { d.list_jobs(ListJobsRequest {}).await.is_ok() }
    })
    .await;
    import(&c, "clean", &urls).await;
    let clean = wait_done(&c, "clean", clean_deadline).await;
    assert_eq!(clean.done_urls, n as i64, "the clean run did not finish; logs in {}", dir.display());

    import(&c, "chaos", &urls).await;
    // An operator on jobs of its own and a rogue fetcher, both throughout the kills.
    let stop = Arc::new(AtomicBool::new(false));
    let chans: Vec<_> = ["delegator-0", "delegator-1"]
        .iter()
        .map(|k| channel(&format!("127.0.0.1:{}", c.ports[k])).unwrap())
        .collect();
    let op_paths = paths.clone();
    let op_url = Arc::new(move |job: &str, i: usize| {
        format!("http://{addr}{}?{job}={i}", op_paths[i % op_paths.len()])
    });
    let operator = Operator::new(chans.clone(), op_url, seed, 100).spawn(stop.clone());
    let rogue = Rogue {
        delegators: chans,
        results: vec![channel(&format!("127.0.0.1:{}", c.ports["results"])).unwrap()],
        pool: facesweep_store::connect(&c.db_url, 2).await.unwrap(),
        // Without mTLS no caller has an identity: ReleaseFetcherLeases cannot be told apart.
        victims: Vec::new(),
        seed: seed ^ 0x5eed,
    }
    .spawn(stop.clone());
    // Each kind once (a random instance of it, shuffled), then random processes; each kill
    // waits for a later point of progress so they spread over the whole run.
    let pick = |rng: &mut rand::rngs::StdRng, k: &str| -> &'static str {
        let of_kind: Vec<&'static str> = KINDS.iter().copied().filter(|p| p.starts_with(k)).collect();
        of_kind[rng.gen_range(0..of_kind.len())]
    };
    let mut plan: Vec<&'static str> = ["delegator", "fetcher", "detector", "results", "postgres"]
        .iter()
        .map(|k| pick(&mut rng, k))
        .collect();
    plan.shuffle(&mut rng);
    while plan.len() < kills {
        plan.push(KINDS[rng.gen_range(0..KINDS.len())]);
    }
    plan.truncate(kills.max(1));
    eprintln!("kill plan: {plan:?}");
    for (i, kind) in plan.iter().enumerate() {
        let at = (n * (i + 1) / (plan.len() + 2)) as i64;
        let what = format!("{at} URLs done before kill {i} ({kind}); logs in {}", dir.display());
        let left = deadline.saturating_duration_since(Instant::now()).as_secs();
        wait_until(&what, left, || async { progress(&c, "chaos").await.is_some_and(|p| p.done_urls >= at) })
            .await;
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..400))).await;
        c.kill9(kind);
        tokio::time::sleep(Duration::from_millis(rng.gen_range(200..1500))).await;
        c.start(kind);
    }
    stop.store(true, Ordering::Relaxed);
    let (ops, rogue) = (operator.await.unwrap(), rogue.await.unwrap());
    let p = wait_done(&c, "chaos", deadline).await;

    let pool = facesweep_store::connect(&c.db_url, 2).await.unwrap();
    let (clean_id, chaos_id): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT id FROM jobs WHERE name='clean'), (SELECT id FROM jobs WHERE name='chaos')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let rows = |job: i64| {
        let pool = pool.clone();
        async move {
            sqlx::query_as::<_, (i64, Option<String>, Option<i32>, i64)>(
                "SELECT url_ordinal(u.id), r.status, r.face_count, (SELECT count(*) FROM faces f WHERE f.url_id = u.id)
                 FROM urls u LEFT JOIN url_results r ON r.url_id = u.id WHERE u.job_id = $1 ORDER BY u.id",
            )
            .bind(job)
            .fetch_all(&pool)
            .await
            .unwrap()
        }
    };
    let (clean, chaos) = (rows(clean_id).await, rows(chaos_id).await);
    assert_eq!(clean.len(), n);
    let lost = chaos.iter().filter(|r| r.1.is_none()).count() + n.saturating_sub(chaos.len());
    let dup_faces: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT url_id, x1, y1, x2, y2 FROM faces GROUP BY 1, 2, 3, 4, 5 HAVING count(*) > 1) d",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let miscounted = chaos.iter().filter(|r| r.2.unwrap_or(0) as i64 != r.3).count();
    // Nothing left behind: URLs without a result, or chunks not closed once all URLs have one.
    let open_chunks: i64 =
        sqlx::query_scalar("SELECT count(*) FROM chunks WHERE job_id = $1 AND state <> 'done'")
            .bind(chaos_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    let stuck = (p.total_urls - p.done_urls).max(0) as usize + open_chunks as usize;
    // The trouble-makers ended the same way in both runs: abandoned, and refused as detect_error.
    for (i, want) in [(n / 10, "abandoned"), (n / 10 + 1, "detect_error")] {
        assert_eq!(clean[i].1.as_deref(), Some(want), "clean run, URL {i}");
        assert_eq!(chaos[i].1.as_deref(), Some(want), "chaos run, URL {i}");
    }
    let duplicated = dup_faces as usize + miscounted;
    let mismatched = clean.iter().zip(&chaos).filter(|(a, b)| a.0 != b.0 || a.1 != b.1 || a.2 != b.2).count();
    let statuses: Vec<String> = p.by_status.iter().map(|s| format!("{}={}", s.status, s.count)).collect();
    eprintln!(
        "chaos progress: {} (expired {}, re-issued {})",
        statuses.join(" "),
        p.leases_expired,
        p.leases_reissued
    );
    // The operator's jobs: each URL once, deleted ones gone, cancelled ones ended; nothing forged.
    check::wait_settled(&pool, &ops.jobs, Duration::from_secs(120)).await;
    let v = check::check_jobs(&pool, &ops.jobs).await;
    let forged = rogue::marker_faces(&pool).await + rogue.forged_calls() as i64;
    eprintln!(
        "operator: {} actions, {} refused (FAILED_PRECONDITION), {} errors; {:?}; rogue: {} calls, forged {:?}",
        ops.actions, ops.refused, ops.errors, v, rogue.calls, rogue.forged
    );
    println!(
        "chaos: {n} urls, {} kills, lost={lost} duplicated={duplicated} mismatched={mismatched} stuck={stuck} \
         operator actions={} forged={forged}",
        plan.len(),
        ops.actions
    );
    let op = (v.lost, v.duplicated, v.stuck + v.bad_cancel, v.orphans + v.leftovers, v.wrong_state.len());
    assert_eq!(op, (0, 0, 0, 0, 0), "operator jobs: lost, duplicated, stuck, orphans/leftovers, wrong state");
    assert_eq!(forged, 0, "the rogue forged results or lease calls");

    // Graceful drain: SIGTERM fetchers first, then the rest; all must exit cleanly and quickly.
    for group in [&["fetcher-0", "fetcher-1"][..], &["delegator-0", "delegator-1", "detector", "results"][..]]
    {
        for k in group {
            let pid = c.procs[k].id();
            Command::new("kill").arg("-TERM").arg(pid.to_string()).status().unwrap();
        }
        for k in group {
            let mut child = c.procs.remove(k).unwrap();
            let pid = child.id();
            wait_until(&format!("{k} exits after SIGTERM"), 30, || async move { exited(pid) }).await;
            let status = child.wait().unwrap();
            assert!(
                status.success(),
                "{k} exited with {status} after SIGTERM; see {}",
                dir.join(format!("{k}.log")).display()
            );
        }
    }
    let leased: i64 = sqlx::query_scalar("SELECT count(*) FROM chunks WHERE state = 'leased'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(leased, 0, "drained fetchers left leases behind");
    assert_eq!((lost, duplicated, mismatched, stuck), (0, 0, 0, 0), "logs in {}", dir.display());
}
