//! What happens when a lease fails: expiry (sweeper), an incomplete completion, or a
//! restarted fetcher. Failures shrink the chunk's next leases; a URL that fails alone
//! `abandon_after` times gets the terminal status `abandoned`, so a poison URL never blocks a job.

use facesweep_common::error::ServiceResult;
use facesweep_common::ORDINAL_BITS;
use sqlx::{Postgres, Row, Transaction};

use crate::store::Store;

/// A lease that ended without finishing its URLs.
pub struct FailedLease {
    pub job_id: i64,
    pub chunk_no: i64,
    pub first: Option<i64>,
    pub last: Option<i64>,
}

impl Store {
    /// Counts a failure against the chunk and, for single-URL leases, against the URL.
    pub(crate) async fn record_failure(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        f: &FailedLease,
        why: &str,
    ) -> ServiceResult<()> {
        sqlx::query("UPDATE chunks SET failures = failures + 1 WHERE job_id = $1 AND chunk_no = $2")
            .bind(f.job_id)
            .bind(f.chunk_no)
            .execute(&mut **tx)
            .await?;
        let (Some(first), Some(last)) = (f.first, f.last) else { return Ok(()) };
        if first != last {
            return Ok(());
        }
        let attempts: Option<i32> = sqlx::query_scalar(
            "INSERT INTO url_attempts (url_id, attempts, last_error)
             SELECT $1, 1, $2 WHERE NOT EXISTS (SELECT 1 FROM url_results WHERE url_id = $1)
             ON CONFLICT (url_id) DO UPDATE SET attempts = url_attempts.attempts + 1, last_error = $2
             RETURNING attempts",
        )
        .bind(first)
        .bind(why)
        .fetch_optional(&mut **tx)
        .await?;
        if attempts.is_some_and(|a| a >= self.limits.abandon_after) {
            let reason =
                format!("abandoned after {} failed single-URL leases; last: {why}", attempts.unwrap());
            let stored = sqlx::query(
                "INSERT INTO url_results (url_id, job_id, status, reason) VALUES ($1, $2, 'abandoned', $3)
                 ON CONFLICT (url_id) DO NOTHING",
            )
            .bind(first)
            .bind(f.job_id)
            .bind(&reason)
            .execute(&mut **tx)
            .await?
            .rows_affected();
            if stored == 1 {
                let deltas = [((f.job_id, "abandoned".to_string()), 1)].into_iter().collect();
                facesweep_common::counters::add(tx, &deltas).await?;
            }
            tracing::warn!(url_id = first, %reason, "URL abandoned");
        }
        Ok(())
    }

    /// Returns this shard's expired leases to pending; returns how many.
    pub async fn sweep(&self) -> ServiceResult<u64> {
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(
            "UPDATE chunks SET state = 'pending', expired = expired + 1, lease_owner = NULL,
                 expires_at = NULL, updated_at = now()
             WHERE state = 'leased' AND expires_at < now() AND chunk_no % $1 = $2
             RETURNING job_id, chunk_no, lease_first, lease_last",
        )
        .bind(self.shard.count as i64)
        .bind(self.shard.index as i64)
        .fetch_all(&mut *tx)
        .await?;
        for r in &rows {
            self.record_failure(&mut tx, &failed(r), "lease expired").await?;
        }
        tx.commit().await?;
        Ok(rows.len() as u64)
    }

    /// Gives back every lease `owner` held before it restarted (any shard: tokens make it safe).
    pub async fn release_owned(&self, owner: &str) -> ServiceResult<i64> {
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(
            "UPDATE chunks SET state = 'pending', lease_owner = NULL, expires_at = NULL, updated_at = now()
             WHERE state = 'leased' AND lease_owner = $1
             RETURNING job_id, chunk_no, lease_first, lease_last",
        )
        .bind(owner)
        .fetch_all(&mut *tx)
        .await?;
        for r in &rows {
            self.record_failure(&mut tx, &failed(r), &format!("fetcher {owner} restarted")).await?;
        }
        tx.commit().await?;
        Ok(rows.len() as i64)
    }

    /// Deletes the job's results with `status` and re-opens their chunks.
    pub async fn retry(&self, job_id: i64, status: &str) -> ServiceResult<i64> {
        let mut tx = self.pool.begin().await?;
        // By primary-key range: the job's URL ids are one contiguous block.
        let ids: Vec<i64> = sqlx::query_scalar(
            "DELETE FROM url_results WHERE url_id BETWEEN ($1 << $3) AND (($1 + 1) << $3) - 1 AND status = $2
             RETURNING url_id",
        )
        .bind(job_id)
        .bind(status)
        .bind(ORDINAL_BITS as i32)
        .fetch_all(&mut *tx)
        .await?;
        if !ids.is_empty() {
            let deltas = [((job_id, status.to_string()), -(ids.len() as i64))].into_iter().collect();
            facesweep_common::counters::add(&mut tx, &deltas).await?;
            sqlx::query("DELETE FROM faces WHERE url_id = ANY($1)").bind(&ids).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM url_attempts WHERE url_id = ANY($1)")
                .bind(&ids)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "UPDATE chunks c SET state = 'pending', failures = 0, updated_at = now()
                 FROM jobs j
                 WHERE j.id = c.job_id AND c.job_id = $1 AND c.state = 'done'
                   AND c.chunk_no IN (SELECT DISTINCT (id - ($1 << $3)) / j.chunk_size FROM UNNEST($2::bigint[]) AS id)",
            )
            .bind(job_id)
            .bind(&ids)
            .bind(ORDINAL_BITS as i32)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(ids.len() as i64)
    }
}

pub(crate) fn failed(r: &sqlx::postgres::PgRow) -> FailedLease {
    FailedLease { job_id: r.get(0), chunk_no: r.get(1), first: r.get(2), last: r.get(3) }
}
