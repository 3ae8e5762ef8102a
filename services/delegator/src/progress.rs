//! Progress of a job at any size, O(1) in its size: chunk-state counters appended by a trigger
//! on every change of `chunks` (migration 0009, folded by upkeep), result counters kept by every
//! writer (never a count of results), the highest ordinal by a backward index probe, and a
//! true rate.

use facesweep_common::error::ServiceResult;
use facesweep_proto::{ModelCount, StatusCount};

use crate::store::Store;

#[derive(Debug, Default)]
pub struct Progress {
    pub total_urls: i64,
    pub done_urls: i64,
    pub failed_urls: i64,
    pub leases_expired: i64,
    pub chunks: [i64; 3],
    pub by_status: Vec<StatusCount>,
    pub by_model: Vec<ModelCount>,
    pub rate_per_second: f64,
    pub leases_reissued: i64,
    pub next_ordinal: i64,
}

#[derive(sqlx::FromRow)]
struct ChunkCounts {
    total_urls: i64,
    pending: i64,
    leased: i64,
    done: i64,
    reissued: i64,
    expired: i64,
}

impl Store {
    pub async fn progress(&self, job_id: i64) -> ServiceResult<Progress> {
        let counts: ChunkCounts = sqlx::query_as(
            "SELECT (SELECT total_urls FROM jobs WHERE id = $1) AS total_urls,
                    coalesce(sum(pending), 0)::bigint AS pending,
                    coalesce(sum(leased), 0)::bigint AS leased,
                    coalesce(sum(done), 0)::bigint AS done,
                    coalesce(sum(reissued), 0)::bigint AS reissued,
                    coalesce(sum(expired), 0)::bigint AS expired
             FROM job_chunk_counts WHERE job_id = $1",
        )
        .bind(job_id)
        .fetch_one(&self.pool)
        .await?;
        let mut progress = Progress {
            total_urls: counts.total_urls,
            chunks: [counts.pending, counts.leased, counts.done],
            leases_reissued: counts.reissued,
            leases_expired: counts.expired,
            next_ordinal: self.next_ordinal(job_id).await?,
            ..Default::default()
        };
        for status in self.status_counts(job_id).await? {
            progress.done_urls += status.count;
            if status.status != "ok" {
                progress.failed_urls += status.count;
            }
            progress.by_status.push(status);
        }
        progress.by_model = self.model_counts(job_id).await?;
        let finished = progress.total_urls > 0 && progress.done_urls >= progress.total_urls;
        progress.rate_per_second = self.rate_window(job_id).await?.per_second(finished, progress.done_urls);
        Ok(progress)
    }

    /// Folds the chunk-state deltas of every job that has more than one row into one row, so
    /// that progress reads a few rows; jobs already folded are left alone (no rewrite of every
    /// row each tick). Safe while writers append and while another delegator folds: each fold
    /// re-inserts exactly the sum of the rows its own DELETE removed.
    pub async fn fold_chunk_counts(&self) -> ServiceResult<()> {
        sqlx::query(
            "WITH d AS (DELETE FROM job_chunk_counts WHERE job_id IN (
                            SELECT job_id FROM job_chunk_counts GROUP BY job_id HAVING count(*) > 1)
                        RETURNING *)
             INSERT INTO job_chunk_counts
             SELECT job_id, sum(pending), sum(leased), sum(done), sum(reissued), sum(expired)
             FROM d WHERE d.job_id IN (SELECT id FROM jobs WHERE state <> 'deleting') GROUP BY job_id
             -- A deleted job's deltas sum to zero: nothing left to keep (and a job being
             -- deleted gets no row back after delete_job emptied its counters).
             HAVING sum(pending) <> 0 OR sum(leased) <> 0 OR sum(done) <> 0
                 OR sum(reissued) <> 0 OR sum(expired) <> 0",
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Successful URLs and faces per model that produced them, from their counters.
    async fn model_counts(&self, job_id: i64) -> ServiceResult<Vec<ModelCount>> {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT model_id, sum(ok_urls)::bigint, sum(faces)::bigint FROM job_model_counts
             WHERE job_id = $1 GROUP BY model_id HAVING sum(ok_urls) <> 0 ORDER BY model_id",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(model_id, ok_urls, faces)| ModelCount { model_id, ok_urls, faces })
            .collect())
    }

    /// URLs of running jobs without a result: totals minus the status counters, O(jobs).
    pub async fn backlog(&self) -> ServiceResult<i64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT ((SELECT coalesce(sum(total_urls), 0) FROM jobs WHERE state = 'running')
                   - (SELECT coalesce(sum(s.count), 0) FROM job_status_counts s
                      JOIN jobs j ON j.id = s.job_id WHERE j.state = 'running'))::bigint",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(n.max(0))
    }

    /// Counters, not count(*): exact and O(1) whatever the job size.
    async fn status_counts(&self, job_id: i64) -> ServiceResult<Vec<StatusCount>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT status, sum(count)::bigint FROM job_status_counts WHERE job_id = $1
             GROUP BY status HAVING sum(count) > 0 ORDER BY status",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(status, count)| StatusCount { status, count }).collect())
    }

    /// One past the highest ordinal imported, by a backward index probe: O(log n).
    pub(crate) async fn next_ordinal(&self, job_id: i64) -> ServiceResult<i64> {
        Ok(sqlx::query_scalar(
            "SELECT coalesce(url_ordinal(max(id)) + 1, 0) FROM urls
             WHERE id >= url_id($1, 0) AND id < job_url_id_end($1)",
        )
        .bind(job_id)
        .fetch_one(&self.pool)
        .await?)
    }

    async fn rate_window(&self, job_id: i64) -> ServiceResult<RateWindow> {
        Ok(sqlx::query_as(
            "SELECT (SELECT coalesce(sum(count), 0)::bigint FROM job_minute_counts
                     WHERE job_id = $1 AND minute >= date_trunc('minute', now() - interval '1 minute')) AS recent,
                    extract(epoch FROM now() - greatest(j.started_at,
                        date_trunc('minute', now() - interval '1 minute')))::float8 AS window_secs,
                    extract(epoch FROM (SELECT max(last_at) FROM job_minute_counts WHERE job_id = $1
                        AND minute = (SELECT max(minute) FROM job_minute_counts WHERE job_id = $1))
                        - j.started_at)::float8 AS run_secs
             FROM jobs j WHERE j.id = $1",
        )
        .bind(job_id)
        .fetch_one(&self.pool)
        .await?)
    }
}

/// What a true rate needs: results in the last one-to-two minutes, how long that window (or
/// the job, when younger) has run, and how long the job took from first lease to last result.
#[derive(sqlx::FromRow)]
struct RateWindow {
    recent: i64,
    window_secs: Option<f64>,
    run_secs: Option<f64>,
}

impl RateWindow {
    /// A finished job reports its average; a running one its recent rate.
    fn per_second(&self, finished: bool, done: i64) -> f64 {
        // Results land in batches: below a few milliseconds a span is not a rate.
        let rate = |n: i64, secs: Option<f64>| secs.filter(|s| *s > 0.005).map_or(0.0, |s| n as f64 / s);
        match (finished, self.run_secs) {
            (true, Some(_)) => rate(done, self.run_secs),
            _ => rate(self.recent, self.window_secs),
        }
    }
}
