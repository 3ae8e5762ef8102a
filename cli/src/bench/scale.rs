//! `facesweep bench scale`: the control plane alone at scale. The real delegator and results
//! services (in-process, over gRPC on loopback) on a durable embedded Postgres (fsync on),
//! driven by synthetic fetchers that lease, record 0–5 made-up faces per URL and complete —
//! no HTTP, no decoding, no detector. Reports what docs/capacity.md is built from.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use facesweep_common::grpc::channel;
use facesweep_common::Shutdown;
use facesweep_pgembed::{Durability, PgEmbed};
use facesweep_proto::delegator_service_client::DelegatorServiceClient;
use facesweep_proto::results_service_client::ResultsServiceClient;
use facesweep_proto::*;
use tonic::transport::Channel;

use crate::client::{self, UrlInput};

/// What to run.
#[derive(Clone, Debug, clap::Args)]
pub struct ScaleOptions {
    /// URLs in the job.
    #[arg(long, default_value_t = 1_000_000)]
    pub urls: u64,
    /// Synthetic fetchers working at once.
    #[arg(long, default_value_t = 16)]
    pub fetchers: usize,
    /// URLs to take through lease → record → complete (default: all). At 100M URLs a part
    /// measures the rate at full table size without filling the disk with results.
    #[arg(long)]
    pub process: Option<u64>,
    /// Keep the cluster in --dir from an earlier run (same --urls): only export and retry.
    #[arg(long)]
    pub reuse: bool,
    /// URLs per chunk (lease).
    #[arg(long, default_value_t = 1000)]
    pub chunk_size: i32,
    /// Results per Record call, as the fetcher's --record-batch (default the same: 64).
    #[arg(long, default_value_t = 64)]
    pub record_batch: usize,
    /// Where the durable cluster and the files go (removed first).
    #[arg(long, default_value = "/var/tmp/facesweep-scale")]
    pub dir: PathBuf,
}

/// One line per measured figure, in the order printed.
pub type Report = Vec<(String, String)>;

/// Runs every phase and returns the figures.
pub async fn run(o: &ScaleOptions) -> anyhow::Result<Report> {
    if !o.reuse {
        let _ = std::fs::remove_dir_all(&o.dir);
    }
    std::fs::create_dir_all(&o.dir)?;
    let pg = PgEmbed::start(&o.dir, Durability::Durable)?;
    let stop = Shutdown::new();
    let (delegator, results) = start_services(&pg.url(), o.chunk_size, &stop).await?;
    let pool = facesweep_store::connect(&pg.url(), 2).await?;
    let mut report = Report::new();
    let mut put = |k: &str, v: String| {
        println!("{k}: {v}");
        report.push((k.to_string(), v));
    };
    put("urls", o.urls.to_string());
    let processed = if o.reuse {
        finished(&pool).await?
    } else {
        load_and_work(o, &delegator, &results, &pool, &mut put).await?
    };

    let out = o.dir.join("export.jsonl");
    let started = Instant::now();
    // A partial run exports for two minutes (pending URLs are lines too): the rate, not a
    // 100M-line file.
    let cap = Duration::from_secs(if processed < o.urls { 120 } else { u64::MAX / 4 });
    let lines = match tokio::time::timeout(cap, client::export(&results, "scale", &out)).await {
        Ok(sum) => sum?.lines,
        // Cut short: the lines written so far are in the temporary file.
        Err(_) => bytecount_lines(&out.with_extension("jsonl.tmp"))?,
    };
    put("export lines/s", format!("{:.0} ({lines} lines)", lines as f64 / started.elapsed().as_secs_f64()));
    let started = Instant::now();
    let req = RetryUrlsRequest { job: "scale".into(), status: "timeout".into(), force: false };
    let n = client::delegator(&delegator).await?.retry_urls(req).await?.into_inner().requeued;
    put("RetryUrls on 1% (s)", format!("{:.2} for {n} URLs", started.elapsed().as_secs_f64()));
    stop.cancel();
    Ok(report)
}

/// Import, then lease → record → complete, reporting both; the URLs processed.
async fn load_and_work(
    o: &ScaleOptions,
    delegator: &str,
    results: &str,
    pool: &sqlx::PgPool,
    put: &mut impl FnMut(&str, String),
) -> anyhow::Result<u64> {
    let list = o.dir.join("urls.txt");
    write_urls(&list, o.urls)?;
    let started = Instant::now();
    let quiet = client::ImportOptions { quiet: true, ..Default::default() };
    client::import(delegator, "scale", &UrlInput::File(list.clone()), quiet).await?;
    let secs = started.elapsed().as_secs_f64();
    put("import URLs/s", format!("{:.0}", o.urls as f64 / secs));
    put("bytes/URL pending", sizes(pool, o.urls, o.urls).await?);

    let wal_before = wal_lsn(pool).await?;
    let run = work(delegator, results, o, o.process.unwrap_or(o.urls)).await?;
    let wal = wal_lsn(pool).await? - wal_before;
    put("URLs processed", run.urls.to_string());
    put("lease→record→complete URLs/s", format!("{:.0}", run.urls as f64 / run.secs));
    put("AcquireLease p50 / p99 ms", format!("{:.1} / {:.1}", run.acquire.0, run.acquire.1));
    put("GetProgress p50 / p99 ms", format!("{:.1} / {:.1}", run.progress.0, run.progress.1));
    put("WAL bytes/URL processed", format!("{:.0}", wal as f64 / run.urls as f64));
    put("bytes/URL finished", sizes(pool, o.urls, run.urls).await?);
    Ok(run.urls)
}

/// URLs with a result, from the counters (a reused cluster).
async fn finished(pool: &sqlx::PgPool) -> anyhow::Result<u64> {
    let n: i64 = sqlx::query_scalar("SELECT coalesce(sum(count), 0)::bigint FROM job_status_counts")
        .fetch_one(pool)
        .await?;
    Ok(n as u64)
}

async fn start_services(db: &str, chunk: i32, stop: &Shutdown) -> anyhow::Result<(String, String)> {
    let listen = "127.0.0.1:0".parse()?;
    let chunk = u32::try_from(chunk)?;
    let d = facesweep_delegator::Config {
        listen,
        default_chunk_size: chunk,
        ..facesweep_delegator::Config::new(db)
    };
    let d = facesweep_delegator::spawn(d, stop.clone()).await?;
    let r = facesweep_results::Config { listen, db_connections: 16, ..facesweep_results::Config::new(db) };
    let r = facesweep_results::spawn(r, stop.clone()).await?;
    Ok((d.addr.to_string(), r.addr.to_string()))
}

/// Web-like URLs: a thousand hosts, paths of ~60 bytes.
fn write_urls(path: &std::path::Path, n: u64) -> anyhow::Result<()> {
    use std::io::Write;
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    for i in 0..n {
        writeln!(w, "https://img{}.example.com/photos/2026/11/{i:012}/original.jpg", i % 1000)?;
    }
    Ok(w.flush()?)
}

/// Table + index bytes per URL of every table that grows with URLs: `urls` and `chunks` per
/// URL imported, the result tables per URL `finished`.
async fn sizes(pool: &sqlx::PgPool, urls: u64, finished: u64) -> anyhow::Result<String> {
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT relname::text, pg_table_size(c.oid), pg_indexes_size(c.oid) FROM pg_class c
         WHERE relname IN ('urls', 'chunks', 'url_results', 'faces', 'url_attempts') ORDER BY relname",
    )
    .fetch_all(pool)
    .await?;
    let per = |t: &str, b: i64| {
        let n = if t == "urls" || t == "chunks" { urls } else { finished };
        b as f64 / n.max(1) as f64
    };
    let total: f64 = rows.iter().map(|(t, d, i)| per(t, d + i)).sum();
    let parts: Vec<String> =
        rows.iter().map(|(t, d, i)| format!("{t} {:.0}+{:.0}", per(t, *d), per(t, *i))).collect();
    Ok(format!("{total:.0} ({})", parts.join(", ")))
}

/// Complete lines written so far to `path`.
fn bytecount_lines(path: &std::path::Path) -> anyhow::Result<u64> {
    use std::io::Read;
    let (mut n, mut buf, mut f) = (0u64, vec![0u8; 1 << 20], std::fs::File::open(path)?);
    loop {
        let got = f.read(&mut buf)?;
        if got == 0 {
            return Ok(n);
        }
        n += buf[..got].iter().filter(|b| **b == b'\n').count() as u64;
    }
}

async fn wal_lsn(pool: &sqlx::PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint")
        .fetch_one(pool)
        .await?)
}

struct Run {
    urls: u64,
    secs: f64,
    acquire: (f64, f64),
    progress: (f64, f64),
}

/// `fetchers` synthetic fetchers until `limit` URLs are done (or the job is); GetProgress
/// sampled meanwhile.
async fn work(delegator: &str, results: &str, o: &ScaleOptions, limit: u64) -> anyhow::Result<Run> {
    let d = DelegatorServiceClient::new(channel(delegator)?).max_decoding_message_size(16 << 20);
    let r = ResultsServiceClient::new(channel(results)?);
    let done = Arc::new(AtomicU64::new(0));
    let acquire_ms = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let batch = o.record_batch.max(1);
    let tasks: Vec<_> = (0..o.fetchers)
        .map(|i| {
            let shared = Shared { done: done.clone(), limit, acquire_ms: acquire_ms.clone(), batch };
            tokio::spawn(fetcher(format!("synthetic-{i}"), d.clone(), r.clone(), shared))
        })
        .collect();
    let mut progress_ms = Vec::new();
    while !tasks.iter().all(|t| t.is_finished()) {
        let t = Instant::now();
        d.clone().get_progress(GetProgressRequest { job: "scale".into() }).await?;
        progress_ms.push(t.elapsed().as_secs_f64() * 1e3);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for t in tasks {
        t.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    let acquire = percentiles(&mut acquire_ms.lock().unwrap());
    Ok(Run { urls: done.load(Ordering::Relaxed), secs, acquire, progress: percentiles(&mut progress_ms) })
}

/// What the synthetic fetchers share: URLs done, where to stop, AcquireLease timings.
struct Shared {
    done: Arc<AtomicU64>,
    limit: u64,
    acquire_ms: Arc<Mutex<Vec<f64>>>,
    /// Results per Record call.
    batch: usize,
}

async fn fetcher(
    id: String,
    mut d: DelegatorServiceClient<Channel>,
    mut r: ResultsServiceClient<Channel>,
    Shared { done, limit, acquire_ms, batch }: Shared,
) -> anyhow::Result<()> {
    while done.load(Ordering::Relaxed) < limit {
        let t = Instant::now();
        let req = AcquireLeaseRequest { fetcher_id: id.clone(), max_urls: 0 };
        let lease = d.acquire_lease(req).await?.into_inner().lease;
        acquire_ms.lock().unwrap().push(t.elapsed().as_secs_f64() * 1e3);
        let Some(lease) = lease else { return Ok(()) };
        let lref = LeaseRef {
            job_id: lease.job_id,
            chunk_no: lease.chunk_no,
            fencing_token: lease.fencing_token,
            secret: lease.secret.clone(),
            fetcher_id: lease.fetcher_id.clone(),
        };
        for batch in lease.urls.chunks(batch) {
            let results = batch.iter().map(|u| synthetic(u.id)).collect();
            r.record(RecordRequest { results, lease: Some(lref.clone()) }).await?;
        }
        d.complete_lease(CompleteLeaseRequest { lease: Some(lref) }).await?;
        done.fetch_add(lease.urls.len() as u64, Ordering::Relaxed);
    }
    Ok(())
}

/// 1% timeouts (for RetryUrls), else ok with `id % 6` faces.
fn synthetic(id: i64) -> UrlResult {
    if id % 100 == 0 {
        return UrlResult {
            url_id: id,
            status: UrlStatus::Timeout as i32,
            reason: "synthetic".into(),
            ..Default::default()
        };
    }
    let faces = (0..id % 6)
        .map(|k| {
            let x = (k * 50) as f32;
            Face { x1: x, y1: 10.0, x2: x + 40.0, y2: 60.0, score: 0.9, landmarks: vec![x + 5.0; 10] }
        })
        .collect();
    UrlResult {
        url_id: id,
        status: UrlStatus::Ok as i32,
        faces,
        width: 640,
        height: 480,
        ..Default::default()
    }
}

fn percentiles(v: &mut [f64]) -> (f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0);
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}
