//! Putting work back: expired leases (sweeper), a restarted fetcher's leases, and operator
//! retries of a failure class. Each runs in bounded transactions, whatever the job's size.

use facesweep_common::error::ServiceResult;

use crate::failures::{self, FailedLease};
use crate::joblock::job_lock;
use crate::store::Store;

/// Tables with rows per job (besides `jobs`), emptied last when a job is deleted: a table
/// keyed by job added by a later migration must be listed here (tests check none is left).
const JOB_TABLES: [&str; 5] =
    ["chunks", "job_status_counts", "job_chunk_counts", "job_model_counts", "job_minute_counts"];

/// URL ordinals re-queued (`retry`) or removed (`delete_job`) per transaction.
const PAGE: i64 = 50_000;

/// Ordinal ranges `[from, to)` of one page each, covering `0..end`.
pub(crate) fn pages(end: i64) -> impl Iterator<Item = (i64, i64)> {
    (0..end).step_by(PAGE as usize).map(move |from| (from, (from + PAGE).min(end)))
}

impl Store {
    /// Returns this shard's expired leases to pending, each counted as a failure.
    pub async fn sweep(&self) -> ServiceResult<u64> {
        let shard = self.shard.get();
        let mut tx = self.pool.begin().await?;
        let expired: Vec<FailedLease> = sqlx::query_as(
            "UPDATE chunks SET state = 'pending', expired = expired + 1, lease_owner = NULL,
                 expires_at = NULL, updated_at = now()
             WHERE state = 'leased' AND expires_at < now() AND chunk_no % $1 = $2
             RETURNING job_id, chunk_no, lease_first, lease_last",
        )
        .bind(shard.count as i64)
        .bind(shard.index as i64)
        .fetch_all(&mut *tx)
        .await?;
        for f in &expired {
            failures::record(&mut tx, self.limits, f, "lease expired").await?;
        }
        tx.commit().await?;
        Ok(expired.len() as u64)
    }

    /// Gives back every lease `owner` held before it restarted (any shard: tokens make it
    /// safe). Not a failure: a healthy URL must not be abandoned because fetchers restarted.
    pub async fn release_owned(&self, owner: &str) -> ServiceResult<i64> {
        let released = sqlx::query(
            "UPDATE chunks SET state = 'pending', lease_owner = NULL, expires_at = NULL, updated_at = now()
             WHERE state = 'leased' AND lease_owner = $1",
        )
        .bind(owner)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(released as i64)
    }

    /// Deletes the job's results with `status` and re-opens their chunks, one page of
    /// ordinals per transaction (memory and lock time stay O(page) for any job size).
    pub async fn retry(&self, job_id: i64, status: &str) -> ServiceResult<i64> {
        // Up to the highest ordinal, not the URL count: ordinals may have gaps.
        let mut requeued = 0;
        for (from, to) in pages(self.next_ordinal(job_id).await?) {
            requeued += self.retry_page(job_id, from, to, status).await?;
        }
        Ok(requeued)
    }

    /// Removes the job: first its state becomes `deleting` (no import, retry or cancel page
    /// can start after that), then its chunks (waiting for every Record holding one: nothing
    /// can be leased, renewed or recorded from then on), then its URLs with their results a
    /// page per transaction, then its counters and the job row. Interrupted, the sweeper
    /// finishes it. Space is freed for reuse by autovacuum, not returned to the OS.
    pub async fn delete_job(&self, job_id: i64) -> ServiceResult<i64> {
        self.transition(job_id, crate::jobstate::Action::Delete).await?;
        sqlx::query("DELETE FROM chunks WHERE job_id = $1").bind(job_id).execute(&self.pool).await?;
        let mut deleted = 0;
        for (from, to) in pages(self.next_ordinal(job_id).await?) {
            deleted += sqlx::query_scalar::<_, i64>(
                "WITH f AS (DELETE FROM faces WHERE url_id BETWEEN url_id($1, $2) AND url_id($1, $3 - 1)),
                      r AS (DELETE FROM url_results WHERE url_id BETWEEN url_id($1, $2) AND url_id($1, $3 - 1)),
                      a AS (DELETE FROM url_attempts WHERE url_id BETWEEN url_id($1, $2) AND url_id($1, $3 - 1)),
                      u AS (DELETE FROM urls WHERE id BETWEEN url_id($1, $2) AND url_id($1, $3 - 1) RETURNING 1)
                 SELECT count(*) FROM u",
            )
            .bind(job_id)
            .bind(from)
            .bind(to)
            .fetch_one(&self.pool)
            .await?;
        }
        // Every table keyed by the job, under its lock: nothing of it is written after this.
        let mut tx = self.pool.begin().await?;
        job_lock(&mut tx, job_id, true).await?;
        for table in JOB_TABLES {
            sqlx::query(&format!("DELETE FROM {table} WHERE job_id = $1"))
                .bind(job_id)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("DELETE FROM jobs WHERE id = $1").bind(job_id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(deleted)
    }

    async fn retry_page(&self, job_id: i64, from: i64, to: i64, status: &str) -> ServiceResult<i64> {
        let mut tx = self.pool.begin().await?;
        // Under the job's exclusive lock: refused for a cancelled or deleted job, and a
        // finished one runs again.
        crate::jobstate::transition_in(&mut tx, job_id, crate::jobstate::Action::Retry).await?;
        // A literal `status <> 'ok'` lets the planner use the index of failed results
        // (a bound parameter cannot prove the index's predicate).
        let failed = if status == "ok" { "" } else { "AND status <> 'ok'" };
        let sql = format!(
            "WITH gone AS (
                 DELETE FROM url_results
                 WHERE url_id BETWEEN url_id($1, $2) AND url_id($1, $3 - 1) AND status = $4 {FAILED}
                 RETURNING url_id, model_id, face_count),
             -- Only ok results have faces (results refuses faces on failures).
             f AS (DELETE FROM faces WHERE $4 = 'ok'
                   AND url_id BETWEEN url_id($1, $2) AND url_id($1, $3 - 1)
                   AND url_id IN (SELECT url_id FROM gone)),
             a AS (DELETE FROM url_attempts WHERE url_id IN (SELECT url_id FROM gone)),
             c AS (UPDATE chunks c SET state = 'pending', failures = 0, updated_at = now()
                   FROM jobs j
                   WHERE j.id = c.job_id AND c.job_id = $1 AND c.state = 'done'
                     AND c.chunk_no IN (SELECT DISTINCT url_ordinal(url_id) / j.chunk_size FROM gone))
             SELECT model_id, count(*), sum(face_count)::bigint FROM gone GROUP BY model_id",
            FAILED = failed
        );
        let gone: Vec<(String, i64, i64)> =
            sqlx::query_as(&sql).bind(job_id).bind(from).bind(to).bind(status).fetch_all(&mut *tx).await?;
        let n: i64 = gone.iter().map(|g| g.1).sum();
        if n > 0 {
            let deltas = [((job_id, status.to_string()), -n)].into_iter().collect();
            facesweep_common::counters::add(&mut tx, &deltas).await?;
        }
        if status == "ok" {
            let models = gone.into_iter().map(|(m, n, faces)| ((job_id, m), (-n, -faces))).collect();
            facesweep_common::counters::add_models(&mut tx, &models).await?;
        }
        tx.commit().await?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_cover_every_ordinal_once() {
        assert_eq!(pages(0).count(), 0);
        assert_eq!(pages(1).collect::<Vec<_>>(), [(0, 1)]);
        let all: Vec<_> = pages(2 * PAGE + 3).collect();
        assert_eq!(all, [(0, PAGE), (PAGE, 2 * PAGE), (2 * PAGE, 2 * PAGE + 3)]);
    }
}
