//! What a failed lease costs: expiry (sweeper), an incomplete completion, or a release with a
//! reason. Failures shrink the chunk's next leases; a URL that fails alone `abandon_after`
//! times gets the terminal status `abandoned`, so a poison URL never blocks a job.
//! A restarted fetcher's or a draining fetcher's leases are not failures (see `upkeep`).
//! A failed chunk waits before its next lease (`Limits::backoff`), whoever asks for it.

use facesweep_common::error::ServiceResult;
use prometheus::IntCounter;
use sqlx::{Postgres, Transaction};

use std::time::Duration;

/// When failing chunks shrink and failing URLs are abandoned.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Failures of a chunk before its leases start halving.
    pub split_after: i32,
    /// Failed single-URL leases before the URL is `abandoned`.
    pub abandon_after: i32,
    /// Pause before a failed chunk is leased again, doubling with each failure (≤ 5 min,
    /// jittered ±50%).
    pub backoff: Duration,
}

/// A lease that ended without finishing its URLs: the chunk and the URL ids it held.
#[derive(Debug, sqlx::FromRow)]
pub struct FailedLease {
    pub job_id: i64,
    pub chunk_no: i64,
    pub lease_first: Option<i64>,
    pub lease_last: Option<i64>,
}

/// Counts a failure against the chunk and, for single-URL leases, against the URL (an
/// abandoned URL also in `abandoned`).
pub async fn record(
    tx: &mut Transaction<'_, Postgres>,
    limits: Limits,
    abandoned: &IntCounter,
    f: &FailedLease,
    why: &str,
) -> ServiceResult<()> {
    sqlx::query(
        "UPDATE chunks SET failures = failures + 1,
             retry_after = now() + make_interval(secs => least($3 * power(2, least(failures, 20)), 300) * (0.5 + random()))
         WHERE job_id = $1 AND chunk_no = $2",
    )
    .bind(f.job_id)
    .bind(f.chunk_no)
    .bind(limits.backoff.as_secs_f64())
    .execute(&mut **tx)
    .await?;
    match (f.lease_first, f.lease_last) {
        (Some(first), Some(last)) if first == last => {
            against_url(tx, limits, abandoned, f.job_id, first, why).await
        }
        _ => Ok(()),
    }
}

/// One more failed attempt of `url_id`; at `abandon_after`, its terminal `abandoned` result.
async fn against_url(
    tx: &mut Transaction<'_, Postgres>,
    limits: Limits,
    abandoned: &IntCounter,
    job_id: i64,
    url_id: i64,
    why: &str,
) -> ServiceResult<()> {
    let attempts: Option<i32> = sqlx::query_scalar(
        "INSERT INTO url_attempts (url_id, attempts, last_error)
         SELECT $1, 1, $2 WHERE NOT EXISTS (SELECT 1 FROM url_results WHERE url_id = $1)
         ON CONFLICT (url_id) DO UPDATE SET attempts = url_attempts.attempts + 1, last_error = $2
         RETURNING attempts",
    )
    .bind(url_id)
    .bind(why)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(attempts) = attempts.filter(|a| *a >= limits.abandon_after) else { return Ok(()) };
    let reason = format!("abandoned after {attempts} failed single-URL leases; last: {why}");
    let stored = facesweep_store::terminal::insert_status(
        tx,
        job_id,
        "abandoned",
        &[url_id],
        std::slice::from_ref(&reason),
    )
    .await?;
    if stored == 1 {
        abandoned.inc();
    }
    tracing::warn!(url_id, %reason, "URL abandoned");
    Ok(())
}
