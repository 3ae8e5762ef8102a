//! Putting work back: expired leases (sweeper), a restarted fetcher's leases, and operator
//! retries of a failure class. Each runs in bounded transactions, whatever the job's size
//! (deleting a job is `lifecycle`).

use facesweep_common::error::ServiceResult;
use facesweep_store::jobstate::{transition_in, Action};
use facesweep_store::terminal::{self, pages};

use crate::failures::{self, FailedLease};
use crate::store::Store;

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
            failures::record(&mut tx, self.limits, &self.abandoned, f, "lease expired").await?;
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

    async fn retry_page(&self, job_id: i64, from: i64, to: i64, status: &str) -> ServiceResult<i64> {
        let mut tx = self.pool.begin().await?;
        // Under the job's exclusive lock: refused for a cancelled or deleted job, and a
        // finished one runs again.
        transition_in(&mut tx, job_id, Action::Retry).await?;
        let n = terminal::delete_status(&mut tx, job_id, from, to, status).await?;
        tx.commit().await?;
        Ok(n)
    }
}
