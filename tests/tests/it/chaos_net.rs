//! Network chaos: every service in its own network namespace (198.18.0.0/15, veths into a
//! bridge), mTLS with per-service certificates, discovery through a Consul server, and
//! PostgreSQL on its own address. While a job runs: a fetcher is cut off past the lease TTL,
//! a detector past the fetcher's detect timeout, results from PostgreSQL, one of two
//! delegators isolated past its membership timeout; one of two detectors sits on a 50 Mbit
//! token bucket throughout, and an operator and a rogue fetcher act the whole time. Then
//! every URL must have exactly one result, the same for the same photo, and nothing forged.
//!
//! Needs root (namespaces); fails, never skips, without. CHAOS_NET_SECS (default 45: one
//! round of the four partitions, ~53 s) is how long partitions go on, CHAOS_NET_URLS (default
//! 600) the main job; `make chaos-net` runs 600 s / 6000.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use facesweep_common::consul::Consul;
use facesweep_common::grpc::channel_to;
use facesweep_proto::delegator_service_client::DelegatorServiceClient;
use facesweep_proto::*;
use facesweep_tests::netmesh::{grpc_port, ip, Mesh, CONSUL_PORT, METRICS_PORT, PG_PORT};
use facesweep_tests::operator::{Fate, JobFate, Operator};
use facesweep_tests::{check, netsite, rogue, *};
use facesweep_tests::{small_model, wait_until};
use rand::Rng;
use tonic::transport::Channel;

/// The run's folder, kept (with the services' logs) when the test fails.
struct KeepOnPanic(Option<tempfile::TempDir>);

impl Drop for KeepOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(d) = self.0.take() {
                eprintln!("logs kept in {}", d.keep().display());
            }
        }
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Small sample photos (fast to detect) and two failing paths.
fn routes(dir: &std::path::Path) -> (netsite::Routes, Vec<String>) {
    let mut routes = HashMap::new();
    let mut photos = Vec::new();
    for (i, e) in std::fs::read_dir(samples_dir()).unwrap().enumerate() {
        let p = e.unwrap().path();
        if !p.extension().is_some_and(|x| x == "jpg" || x == "png") {
            continue;
        }
        let out = dir.join(format!("s{i}.jpg"));
        image::open(&p).unwrap().thumbnail(320, 320).to_rgb8().save(&out).unwrap();
        routes.insert(format!("/s{i}.jpg"), (200, "image/jpeg", Bytes::from(std::fs::read(&out).unwrap())));
        photos.push(format!("/s{i}.jpg"));
    }
    routes.insert("/page.html".into(), (200, "text/html", Bytes::from_static(b"<html></html>")));
    (routes, photos)
}

/// URL `i` of `job`: mostly photos, every 10th missing (http_error), every 25th a page.
fn url_for(photos: &[String], job: &str, i: usize) -> String {
    let path = match i {
        _ if i % 10 == 9 => "/missing.jpg",
        _ if i % 25 == 24 => "/page.html",
        _ => &photos[i % photos.len()],
    };
    format!("http://{}{path}?j={job}&i={i}", ip("site"))
}

async fn start_mesh(mesh: &mut Mesh) -> sqlx::PgPool {
    mesh.start_postgres();
    let pg = format!("{}:{PG_PORT}", ip("postgres"));
    wait_until("postgres on its address", 60, || async { tokio::net::TcpStream::connect(&pg).await.is_ok() })
        .await;
    let pool = facesweep_store::connect(&mesh.db_url(), 4).await.expect("connect over TCP and migrate");
    mesh.start_consul();
    let consul = format!("{}:{CONSUL_PORT}", ip("consul"));
    wait_until("consul leader", 60, || async {
        http_get(&consul, "/v1/status/leader").await.is_some_and(|l| l.contains(':'))
    })
    .await;
    for s in ["results", "delegator-0", "delegator-1", "detector-0", "detector-1", "fetcher-0", "fetcher-1"] {
        mesh.start_service(s);
    }
    let c = Consul::new(&consul).unwrap();
    for (svc, n) in [("delegator", 2), ("results", 1), ("detector", 2), ("fetcher", 2)] {
        let name = format!("facesweep-{svc}");
        wait_until(&format!("{n} × {name} passing in consul"), 90, || async {
            c.passing(&name, None, 0, Duration::from_secs(1)).await.is_ok_and(|p| p.0.len() == n)
        })
        .await;
    }
    pool
}

fn delegators(mesh: &Mesh) -> Vec<Channel> {
    let admin = mesh.client_tls("operator", "admin", None);
    ["delegator-0", "delegator-1"]
        .iter()
        .map(|d| channel_to(&format!("{}:{}", ip(d), grpc_port(d)), Some(&admin), "delegator").unwrap())
        .collect()
}

async fn main_job(d: &[Channel], urls: Vec<String>) -> i64 {
    let mut c = DelegatorServiceClient::new(d[0].clone());
    let job = c
        .create_job(CreateJobRequest {
            name: "net".into(),
            chunk_size: 20,
            priority: 1,
            ..Default::default()
        })
        .await
        .expect("create the main job")
        .into_inner();
    let reqs: Vec<_> = urls
        .chunks(500)
        .enumerate()
        .map(|(i, u)| AppendUrlsRequest {
            job: "net".into(),
            first_ordinal: (i * 500) as i64,
            urls: u.to_vec(),
            ..Default::default()
        })
        .collect();
    c.append_urls(futures::stream::iter(reqs)).await.expect("append the main job's URLs");
    job.job.unwrap().id
}

/// Leases held by `owner` right now.
async fn leases_of(pool: &sqlx::PgPool, owner: &str) -> Vec<(i64, i64, i64)> {
    sqlx::query_as("SELECT job_id, chunk_no, token FROM chunks WHERE state = 'leased' AND lease_owner = $1")
        .bind(owner)
        .fetch_all(pool)
        .await
        .unwrap_or_default()
}

/// Cuts `node` off for `secs`; for a fetcher, also the time until one of its leases is
/// re-issued to someone else.
async fn cut(mesh: &Mesh, pool: &sqlx::PgPool, node: &str, secs: u64) -> Option<Duration> {
    // A fetcher is cut while it holds leases (bounded wait: it may be between leases).
    let until = Instant::now() + Duration::from_secs(20);
    let mut held = leases_of(pool, node).await;
    while node.starts_with("fetcher") && held.is_empty() && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
        held = leases_of(pool, node).await;
    }
    let at = Instant::now();
    mesh.net.set_link(node, false).unwrap();
    let mut reissued = None;
    while at.elapsed() < Duration::from_secs(secs) {
        if reissued.is_none() && !held.is_empty() {
            let moved: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM chunks c JOIN unnest($1::bigint[], $2::bigint[], $3::bigint[]) h(j, n, t)
                 ON c.job_id = h.j AND c.chunk_no = h.n WHERE c.token <> h.t",
            )
            .bind(held.iter().map(|h| h.0).collect::<Vec<_>>())
            .bind(held.iter().map(|h| h.1).collect::<Vec<_>>())
            .bind(held.iter().map(|h| h.2).collect::<Vec<_>>())
            .fetch_one(pool)
            .await
            .unwrap_or_else(|e| panic!("re-issue query: {e}"));
            if moved > 0 {
                reissued = Some(at.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    mesh.net.set_link(node, true).unwrap();
    if node.starts_with("fetcher") {
        eprintln!(
            "cut {node} for {secs} s holding {} leases: first re-issued after {reissued:?}",
            held.len()
        );
    }
    reissued
}

/// What happened when: partition windows (scenario, start, end) and re-issue times.
#[derive(Default)]
struct Timeline {
    windows: Vec<(&'static str, Instant, Instant)>,
    reissue: Vec<Duration>,
}

impl Timeline {
    /// Re-downloads by the scenario whose window (or the 10 s after it) they fall in.
    fn attribute(&self, repeats: &[Instant]) -> Vec<(&'static str, usize)> {
        let mut out: Vec<(&'static str, usize)> = Vec::new();
        for t in repeats {
            let w = self.windows.iter().find(|w| *t >= w.1 && *t <= w.2 + Duration::from_secs(10));
            let name = w.map_or("outside partitions", |w| w.0);
            match out.iter_mut().find(|o| o.0 == name) {
                Some(o) => o.1 += 1,
                None => out.push((name, 1)),
            }
        }
        out
    }
}

/// The partitions, in sequence, until `secs` have passed (each at least once).
async fn partitions(mesh: &Mesh, pool: &sqlx::PgPool, secs: u64, tl: &mut Timeline) -> usize {
    let start = Instant::now();
    let mut n = 0;
    let mut round = 0;
    while n < 4 || start.elapsed() < Duration::from_secs(secs) {
        let f = if round % 2 == 0 { "fetcher-0" } else { "fetcher-1" };
        // Past the 4 s lease TTL; past the fetcher's 10 s detect timeout.
        let at = Instant::now();
        tl.reissue.extend(cut(mesh, pool, f, 8).await);
        tl.windows.push(("fetcher cut", at, Instant::now()));
        tokio::time::sleep(Duration::from_secs(3)).await;
        let at = Instant::now();
        cut(mesh, pool, "detector-0", 13).await;
        tl.windows.push(("detector cut", at, Instant::now()));
        tokio::time::sleep(Duration::from_secs(3)).await;
        let at = Instant::now();
        mesh.net.cut_pair("results", "postgres", true).unwrap();
        tokio::time::sleep(Duration::from_secs(8)).await;
        mesh.net.cut_pair("results", "postgres", false).unwrap();
        tl.windows.push(("results-postgres cut", at, Instant::now()));
        tokio::time::sleep(Duration::from_secs(3)).await;
        // Past the 6 s membership timeout: the other delegator takes its shard.
        let at = Instant::now();
        cut(mesh, pool, "delegator-1", 12).await;
        tl.windows.push(("delegator isolated", at, Instant::now()));
        tokio::time::sleep(Duration::from_secs(3)).await;
        n += 4;
        round += 1;
    }
    n
}

async fn images_served(node: &str) -> u64 {
    let text = http_get(&format!("{}:{METRICS_PORT}", ip(node)), "/metrics").await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("facesweep_detector_images_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Photo URLs of finished jobs that ended failed, and photos/bad paths whose results
/// differ from the majority for the same path.
async fn consistency(pool: &sqlx::PgPool, complete: &[i64]) -> (i64, usize) {
    let rows: Vec<(String, String, i32)> = sqlx::query_as(
        "SELECT split_part(u.url, '?', 1), r.status, r.face_count FROM urls u JOIN url_results r ON r.url_id = u.id
         WHERE u.job_id = ANY($1)",
    )
    .bind(complete)
    .fetch_all(pool)
    .await
    .unwrap();
    let photo = |p: &str| p.rsplit('/').next().is_some_and(|f| f.starts_with('s') && f.ends_with(".jpg"));
    let failed_good = rows.iter().filter(|r| photo(&r.0) && r.1 != "ok").count() as i64;
    let mut by_path: HashMap<&str, HashMap<(&str, i32), usize>> = HashMap::new();
    for r in &rows {
        *by_path.entry(&r.0).or_default().entry((&r.1, r.2)).or_default() += 1;
    }
    let mismatched = by_path.values().map(|m| m.values().sum::<usize>() - m.values().max().unwrap()).sum();
    (failed_good, mismatched)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn network_partitions_lose_duplicate_and_forge_nothing() {
    let started = Instant::now();
    let (secs, n) = (env_or("CHAOS_NET_SECS", 45), env_or("CHAOS_NET_URLS", 600) as usize);
    let seed = env_or("CHAOS_SEED", rand::thread_rng().gen());
    eprintln!("chaos-net seed {seed} (CHAOS_SEED to replay), {secs} s of partitions, {n} URLs");
    let tmp =
        KeepOnPanic(Some(tempfile::Builder::new().prefix("facesweep-chaos-net").tempdir_in("/tmp").unwrap()));
    let dir = tmp.0.as_ref().unwrap().path().to_path_buf();
    let mut mesh = Mesh::new(&dir, small_model(&dir));
    let (routes, photos) = routes(&dir);
    let site = netsite::bind_in(&mesh.net.node("site").ns(), (ip("site"), 80).into()).expect("site socket");
    let (downloads, _site) = netsite::serve(site, routes);
    let pool = start_mesh(&mut mesh).await;
    mesh.net.slow("detector-1", "50mbit").unwrap();

    let d = delegators(&mesh);
    let main_id = main_job(&d, (0..n).map(|i| url_for(&photos, "net", i)).collect()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let p = photos.clone();
    let url = Arc::new(move |job: &str, i: usize| url_for(&p, job, i));
    let operator = Operator::new(d.clone(), url, seed, 80).spawn(stop.clone());
    let rogue_tls = mesh.client_tls("rogue", "fetcher", Some("rogue"));
    let results =
        channel_to(&format!("{}:{}", ip("results"), grpc_port("results")), Some(&rogue_tls), "results");
    let rogue_d = ["delegator-0", "delegator-1"]
        .iter()
        .map(|x| channel_to(&format!("{}:{}", ip(x), grpc_port(x)), Some(&rogue_tls), "delegator").unwrap())
        .collect();
    let rogue = rogue::Rogue {
        delegators: rogue_d,
        results: vec![results.unwrap()],
        pool: pool.clone(),
        victims: vec!["fetcher-0".into(), "fetcher-1".into()],
        seed: seed ^ 0x5eed,
    }
    .spawn(stop.clone());

    let mut tl = Timeline::default();
    let parts = partitions(&mesh, &pool, secs, &mut tl).await;
    stop.store(true, Ordering::Relaxed);
    let ops = operator.await.expect("operator task");
    let rogue = rogue.await.expect("rogue task");
    let mut jobs = ops.jobs.clone();
    jobs.push(JobFate { name: "net".into(), id: main_id, urls: n as i64, fate: Fate::Complete });
    let settled = check::wait_settled(&pool, &jobs, Duration::from_secs(120)).await;
    finish(&mut mesh, &pool, &jobs, (parts, &ops, &rogue, &tl, &downloads), settled, started).await;
}

type Stats<'a> = (usize, &'a operator::OpReport, &'a rogue::RogueReport, &'a Timeline, &'a netsite::Counts);

async fn finish(
    mesh: &mut Mesh,
    pool: &sqlx::PgPool,
    jobs: &[JobFate],
    (parts, ops, rogue, tl, downloads): Stats<'_>,
    settled: bool,
    started: Instant,
) {
    // Let jobs whose last URL just landed reach their final state.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let v = check::check_jobs(pool, jobs).await;
    let complete: Vec<i64> = jobs.iter().filter(|j| j.fate == Fate::Complete).map(|j| j.id).collect();
    let (failed_good, mismatched) = consistency(pool, &complete).await;
    let forged = rogue::marker_faces(pool).await + rogue.forged_calls() as i64;
    let urls: i64 = jobs.iter().map(|j| j.urls).sum();
    let stuck = v.stuck + v.bad_cancel + v.wrong_state.len() as i64;
    let orphans = v.orphans + v.leftovers;
    let (distinct, twice) = downloads.twice("?j=net&");
    let (d0, d1) = (images_served("detector-0").await, images_served("detector-1").await);
    let crashed = mesh.exited();
    eprintln!(
        "operator: {} actions, {} refused (FAILED_PRECONDITION), {} errors",
        ops.actions, ops.refused, ops.errors
    );
    eprintln!(
        "rogue: {} calls, forged {:?}; jobs in a wrong state: {:?}",
        rogue.calls, rogue.forged, v.wrong_state
    );
    eprintln!("re-issue after a fetcher cut: {:?}; settled={settled}; crashed: {crashed:?}", tl.reissue);
    eprintln!("re-downloads of the main job by scenario: {:?}", tl.attribute(&downloads.repeats("?j=net&")));
    eprintln!(
        "downloads: {} in all; main job: {distinct} URLs, {twice} downloaded more than once ({:.1}%)",
        downloads.total(),
        100.0 * twice as f64 / distinct.max(1) as f64
    );
    eprintln!("p2c split: detector-0 (full link) {d0} images, detector-1 (50 Mbit tbf) {d1} images");
    eprintln!("took {:.0} s; logs in {}", started.elapsed().as_secs_f64(), mesh.dir.display());
    println!(
        "chaos-net: {urls} urls, {parts} partitions, {} operator actions, lost={} duplicated={} mismatched={mismatched} \
         stuck={stuck} orphans={orphans} forged={forged} failed_good={failed_good}",
        ops.actions, v.lost, v.duplicated
    );
    let counters = (v.lost, v.duplicated, mismatched, stuck, orphans, forged, failed_good);
    assert_eq!(
        counters,
        (0, 0, 0, 0, 0, 0, 0),
        "lost, duplicated, mismatched, stuck, orphans, forged, failed_good"
    );
    assert!(crashed.is_empty(), "services exited during the run: {crashed:?}");
    assert!(d0 > 0 && d1 > 0, "both detectors served images ({d0}, {d1})");
}
