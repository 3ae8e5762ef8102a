//! End-of-chaos checks on the database: every URL of a live job exactly once, deleted jobs
//! leave no row anywhere, cancelled jobs end cancelled or with one other terminal result,
//! finished jobs are `done`, and no orphans.

use crate::operator::{Fate, JobFate};

/// Tables holding rows of a job, by `job_id` (those that exist in this schema).
const JOB_TABLES: [&str; 9] = [
    "urls",
    "url_results",
    "chunks",
    "job_status_counts",
    "job_chunk_counts",
    "job_model_counts",
    "job_minute_counts",
    "job_inputs",
    "url_attempts", // by url_id range, see `rows_of`
];

#[derive(Debug, Default, Clone)]
pub struct Verdict {
    pub lost: i64,
    pub duplicated: i64,
    pub stuck: i64,
    pub orphans: i64,
    /// Rows left by deleted jobs.
    pub leftovers: i64,
    /// Cancelled jobs' URLs with no or a non-terminal result.
    pub bad_cancel: i64,
    /// Jobs whose state is wrong at the end (finished but not `done`, …), with the state.
    pub wrong_state: Vec<(String, String)>,
}

async fn scalar(pool: &sqlx::PgPool, sql: &str, job: i64) -> i64 {
    sqlx::query_scalar::<_, i64>(sql).bind(job).fetch_one(pool).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

async fn table_exists(pool: &sqlx::PgPool, t: &str) -> bool {
    sqlx::query_scalar::<_, bool>("SELECT to_regclass($1) IS NOT NULL").bind(t).fetch_one(pool).await.unwrap()
}

/// Rows of job `id` in every table (urls' ids carry the job id in their top bits).
pub async fn rows_of(pool: &sqlx::PgPool, id: i64) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for t in JOB_TABLES.iter().chain(&["faces", "jobs"]) {
        if !table_exists(pool, t).await {
            continue;
        }
        let sql = match *t {
            "faces" | "url_attempts" => format!("SELECT count(*) FROM {t} WHERE url_id >> 40 = $1"),
            "jobs" => "SELECT count(*) FROM jobs WHERE id = $1".into(),
            _ => format!("SELECT count(*) FROM {t} WHERE job_id = $1"),
        };
        out.push((t.to_string(), scalar(pool, &sql, id).await));
    }
    out
}

/// Checks every job the operator (and the test) made against its fate.
pub async fn check_jobs(pool: &sqlx::PgPool, jobs: &[JobFate]) -> Verdict {
    let mut v = Verdict::default();
    for j in jobs {
        match j.fate {
            Fate::Deleted => {
                for (t, n) in rows_of(pool, j.id).await {
                    if n > 0 {
                        eprintln!("deleted job {} (id {}) left {n} rows in {t}", j.name, j.id);
                        v.leftovers += n;
                    }
                }
            }
            Fate::Complete | Fate::Cancelled => check_live(pool, j, &mut v).await,
        }
    }
    v.orphans = orphans(pool).await;
    v
}

async fn check_live(pool: &sqlx::PgPool, j: &JobFate, v: &mut Verdict) {
    let urls = scalar(pool, "SELECT count(*) FROM urls WHERE job_id = $1", j.id).await;
    let results = scalar(pool, "SELECT count(*) FROM url_results WHERE job_id = $1", j.id).await;
    let unresolved = scalar(
        pool,
        "SELECT count(*) FROM urls u LEFT JOIN url_results r ON r.url_id = u.id
         WHERE u.job_id = $1 AND (r.url_id IS NULL OR r.status = 'pending')",
        j.id,
    )
    .await;
    v.lost += (j.urls - urls).max(0) + unresolved;
    // More URLs than appended, or results not matching a URL, are duplicates.
    v.duplicated += (urls - j.urls).max(0) + (results - urls).max(0);
    v.duplicated += scalar(
        pool,
        "SELECT count(*) FROM url_results r
         WHERE r.job_id = $1 AND r.face_count <> (SELECT count(*) FROM faces f WHERE f.url_id = r.url_id)",
        j.id,
    )
    .await;
    v.duplicated += scalar(
        pool,
        "SELECT count(*) FROM (SELECT url_id FROM faces WHERE url_id >> 40 = $1
                               GROUP BY url_id, x1, y1, x2, y2 HAVING count(*) > 1) d",
        j.id,
    )
    .await;
    v.stuck += scalar(pool, "SELECT count(*) FROM chunks WHERE job_id = $1 AND state <> 'done'", j.id).await;
    let state: String =
        sqlx::query_scalar("SELECT state FROM jobs WHERE id = $1").bind(j.id).fetch_one(pool).await.unwrap();
    let fine = match j.fate {
        Fate::Complete => state == "done",
        _ => state == "cancelled" || state == "done",
    };
    if !fine {
        v.wrong_state.push((j.name.clone(), state));
    }
    if j.fate == Fate::Cancelled {
        // Cancelled, or exactly one other terminal result: nothing pending, nothing missing.
        v.bad_cancel += unresolved;
    }
}

/// Rows whose job or URL no longer exists.
pub async fn orphans(pool: &sqlx::PgPool) -> i64 {
    let mut n = 0;
    for t in JOB_TABLES.iter().filter(|t| **t != "url_attempts") {
        if table_exists(pool, t).await {
            let sql = format!(
                "SELECT count(*) FROM {t} x WHERE NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = x.job_id)"
            );
            n += sqlx::query_scalar::<_, i64>(&sql).fetch_one(pool).await.unwrap();
        }
    }
    for sql in [
        "SELECT count(*) FROM faces f WHERE NOT EXISTS (SELECT 1 FROM url_results r WHERE r.url_id = f.url_id)",
        "SELECT count(*) FROM url_results r WHERE NOT EXISTS (SELECT 1 FROM urls u WHERE u.id = r.url_id)",
        "SELECT count(*) FROM url_attempts a WHERE NOT EXISTS (SELECT 1 FROM urls u WHERE u.id = a.url_id)",
    ] {
        n += sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await.unwrap();
    }
    n
}

/// Waits until every job with a fate other than Deleted has no open chunk and every URL a
/// result, as long as that count keeps falling: false once it has not for `stall` (or
/// after an hour in all).
pub async fn wait_settled(pool: &sqlx::PgPool, jobs: &[JobFate], stall: std::time::Duration) -> bool {
    use std::time::{Duration, Instant};
    let ids: Vec<i64> = jobs.iter().filter(|j| j.fate != Fate::Deleted).map(|j| j.id).collect();
    let (start, mut best, mut since) = (Instant::now(), i64::MAX, Instant::now());
    loop {
        let open: Result<i64, _> = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM chunks WHERE job_id = ANY($1) AND state <> 'done')
                  + (SELECT count(*) FROM urls u LEFT JOIN url_results r ON r.url_id = u.id
                     WHERE u.job_id = ANY($1) AND r.url_id IS NULL)",
        )
        .bind(&ids)
        .fetch_one(pool)
        .await;
        match open {
            Ok(0) => return true,
            Ok(n) if n < best => (best, since) = (n, Instant::now()),
            _ => {}
        }
        if since.elapsed() > stall || start.elapsed() > Duration::from_secs(3600) {
            eprintln!("jobs not settled: {open:?} open chunks + unresolved URLs, no progress for {stall:?}");
            return false;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
