//! A job's lifecycle (migration 0010): pause and resume stop and restart leasing; cancel
//! revokes the job's leases and gives every URL without a result the terminal status
//! `cancelled`, in bounded transactions whatever the job's size. Summaries read counters,
//! never results.

use facesweep_common::error::{ServiceError, ServiceResult};
use facesweep_proto::{Job, JobState, JobSummary};

use crate::joblock::job_lock;
use crate::store::{JobRow, Store, JOB_COLUMNS};
use crate::upkeep::pages;

/// Chunks fenced per transaction when a job is cancelled.
const CHUNK_PAGE: i64 = 10_000;

#[derive(sqlx::FromRow)]
struct SummaryRow {
    #[sqlx(flatten)]
    job: JobRow,
    state: String,
    total_urls: i64,
    done_urls: i64,
    failed_urls: i64,
}

impl From<SummaryRow> for JobSummary {
    fn from(r: SummaryRow) -> Self {
        let state = match r.state.as_str() {
            "running" => JobState::Running,
            "paused" => JobState::Paused,
            "cancelled" => JobState::Cancelled,
            _ => JobState::Unspecified,
        };
        JobSummary {
            job: Some(r.job.into()),
            state: state as i32,
            total_urls: r.total_urls,
            done_urls: r.done_urls,
            failed_urls: r.failed_urls,
        }
    }
}

impl Store {
    /// Every job (`name` None) or one, with state and counts: O(jobs), from the counters.
    pub async fn job_summaries(&self, name: Option<&str>) -> ServiceResult<Vec<JobSummary>> {
        let rows: Vec<SummaryRow> = sqlx::query_as(&format!(
            "SELECT {JOB_COLUMNS}, j.state, j.total_urls,
                    coalesce(sum(s.count), 0)::bigint AS done_urls,
                    coalesce(sum(s.count) FILTER (WHERE s.status <> 'ok'), 0)::bigint AS failed_urls
             FROM jobs j LEFT JOIN job_status_counts s ON s.job_id = j.id
             WHERE $1::text IS NULL OR j.name = $1
             GROUP BY j.id ORDER BY j.name"
        ))
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(JobSummary::from).collect())
    }

    /// Moves the job from one of `from` to `to`; FAILED_PRECONDITION from any other state.
    pub async fn set_state(&self, job_id: i64, from: &[&str], to: &str) -> ServiceResult<()> {
        let mut tx = self.pool.begin().await?;
        // Exclusive: transitions are serialised by it, and an import checks the state under
        // the same lock (no URL may join a cancelled job and stay without a terminal status).
        job_lock(&mut tx, job_id, true).await?;
        let now: String = sqlx::query_scalar("SELECT state FROM jobs WHERE id = $1")
            .bind(job_id)
            .fetch_one(&mut *tx)
            .await?;
        if now != to && !from.contains(&now.as_str()) {
            return Err(ServiceError::FailedPrecondition(format!("the job is {now}: it cannot become {to}")));
        }
        sqlx::query("UPDATE jobs SET state = $2 WHERE id = $1")
            .bind(job_id)
            .bind(to)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Cancels the job: no more leases, outstanding ones revoked (a new token: their holders'
    /// Record, Renew and Complete fail), then `cancelled` for every URL without a result.
    /// Safe to call again after an interruption; returns the URLs it marked.
    pub async fn cancel(&self, job: &Job) -> ServiceResult<i64> {
        let job_id = job.id;
        self.set_state(job_id, &["running", "paused"], "cancelled").await?;
        let end = self.next_ordinal(job_id).await?;
        let chunk_size = job.chunk_size.max(1) as i64;
        let chunks = (end + chunk_size - 1) / chunk_size;
        for from in (0..chunks).step_by(CHUNK_PAGE as usize) {
            sqlx::query(
                "UPDATE chunks SET state = 'done', lease_owner = NULL, expires_at = NULL,
                     token = nextval('lease_tokens'), updated_at = now()
                 WHERE job_id = $1 AND chunk_no >= $2 AND chunk_no < $3 AND state <> 'done'",
            )
            .bind(job_id)
            .bind(from)
            .bind(from + CHUNK_PAGE)
            .execute(&self.pool)
            .await?;
        }
        let mut cancelled = 0;
        for (from, to) in pages(end) {
            cancelled += self.cancel_page(job_id, from, to).await?;
        }
        Ok(cancelled)
    }

    async fn cancel_page(&self, job_id: i64, from: i64, to: i64) -> ServiceResult<i64> {
        let mut tx = self.pool.begin().await?;
        let n: i64 = sqlx::query_scalar(
            "WITH ins AS (
                 INSERT INTO url_results (url_id, job_id, status, reason)
                 SELECT u.id, $1, 'cancelled', 'the job was cancelled before this URL was processed'
                 FROM urls u
                 WHERE u.id BETWEEN url_id($1, $2) AND url_id($1, $3 - 1)
                   AND NOT EXISTS (SELECT 1 FROM url_results r WHERE r.url_id = u.id)
                 ON CONFLICT (url_id) DO NOTHING RETURNING 1)
             SELECT count(*) FROM ins",
        )
        .bind(job_id)
        .bind(from)
        .bind(to)
        .fetch_one(&mut *tx)
        .await?;
        if n > 0 {
            let deltas = [((job_id, "cancelled".to_string()), n)].into_iter().collect();
            facesweep_common::counters::add(&mut tx, &deltas).await?;
        }
        tx.commit().await?;
        Ok(n)
    }

    pub async fn set_priority(&self, job_id: i64, priority: i32) -> ServiceResult<()> {
        sqlx::query("UPDATE jobs SET priority = $2 WHERE id = $1")
            .bind(job_id)
            .bind(priority)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// Imports go only to jobs that will process them (called under the job's lock).
pub(crate) async fn accepts_urls(tx: &mut sqlx::PgConnection, job_id: i64) -> ServiceResult<()> {
    let state: String =
        sqlx::query_scalar("SELECT state FROM jobs WHERE id = $1").bind(job_id).fetch_one(&mut *tx).await?;
    if state == "cancelled" {
        return Err(ServiceError::FailedPrecondition("the job is cancelled: it takes no more URLs".into()));
    }
    Ok(())
}
