//! `make bench-results`: persisted URL results per second (0-5 faces each) into a durable
//! embedded Postgres, through the same `Store::record` the gRPC service uses.
//! Env: BENCH_RESULTS (default 200000), BENCH_BATCH (default 5000), BENCH_WRITERS (default 2).

use std::time::Instant;

use facesweep_pgembed::{Durability, PgEmbed};
use facesweep_proto::{Face, LeaseRef, UrlResult, UrlStatus};
use facesweep_results::Store;
use rand::{Rng, SeedableRng};

fn env(k: &str, d: usize) -> usize {
    std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d)
}

fn batch(first: i64, n: usize, rng: &mut impl Rng) -> Vec<UrlResult> {
    (0..n as i64)
        .map(|i| {
            let faces = (0..rng.gen_range(0..=5))
                .map(|k| Face {
                    x1: k as f32,
                    y1: 1.0,
                    x2: 20.0,
                    y2: 30.0,
                    score: 0.9,
                    landmarks: vec![5.0; 10],
                })
                .collect();
            UrlResult {
                url_id: first + i,
                status: UrlStatus::Ok as i32,
                faces,
                model_id: "m".into(),
                width: 640,
                height: 480,
                ..Default::default()
            }
        })
        .collect()
}

/// One job of `total` URLs and one live lease per writer over its share of them, as a
/// fetcher would hold it; the share.
async fn seed(pool: &sqlx::PgPool, total: usize, writers: usize) -> anyhow::Result<usize> {
    let per = total / writers;
    sqlx::query("INSERT INTO jobs (id, name, chunk_size) VALUES (1, 'bench', $1)")
        .bind(per as i32)
        .execute(pool)
        .await?;
    sqlx::query(
        "INSERT INTO chunks (job_id, chunk_no, state, lease_owner, token, secret_hash, lease_first, lease_last)
         SELECT 1, w, 'leased', 'bench', w + 1, sha256(convert_to('bench', 'UTF8')),
                url_id(1, w * $1), url_id(1, (w + 1) * $1 - 1)
         FROM generate_series(0, $2 - 1) w",
    )
    .bind(per as i64)
    .bind(writers as i64)
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO urls SELECT url_id(1, g), 1, 'http://x/' || g FROM generate_series(0, $1 - 1) g",
    )
    .bind(total as i64)
    .execute(pool)
    .await?;
    sqlx::query("VACUUM ANALYZE urls").execute(pool).await?;
    Ok(per)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let total = env("BENCH_RESULTS", 200_000);
    let size = env("BENCH_BATCH", 5_000);
    let writers = env("BENCH_WRITERS", 2);
    let dir = tempfile::Builder::new().prefix("bench-results").tempdir_in("/tmp")?;
    let pg = PgEmbed::start(dir.path(), Durability::Durable)?;
    let pool = facesweep_store::connect(&pg.url(), writers as u32 + 1).await?;
    let per = seed(&pool, total, writers).await?;
    let store = Store::new(pool.clone());
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64(w as u64);
                let base = facesweep_common::url_id(1, (w * per) as i64);
                let lease = LeaseRef {
                    job_id: 1,
                    chunk_no: w as i64,
                    fencing_token: w as i64 + 1,
                    secret: "bench".into(),
                    fetcher_id: "bench".into(),
                };
                let mut done = 0;
                while done < per {
                    let n = size.min(per - done);
                    store.record(&lease, &batch(base + done as i64, n, &mut rng)).await.unwrap();
                    done += n;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await?;
    }
    let secs = started.elapsed().as_secs_f64();
    let (rows, faces): (i64, i64) =
        sqlx::query_as("SELECT (SELECT count(*) FROM url_results), (SELECT count(*) FROM faces)")
            .fetch_one(&pool)
            .await?;
    assert_eq!(rows as usize, per * writers);
    println!(
        "results: {rows} URL results with {faces} faces, batch {size}, {writers} writers, durable Postgres: {secs:.2} s = {:.0} results/s ({:.0} faces/s)",
        rows as f64 / secs,
        faces as f64 / secs
    );
    Ok(())
}
