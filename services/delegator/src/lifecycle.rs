//! A job's lifecycle (`jobstate`): pause and resume stop and restart leasing; cancel revokes
//! the job's leases and gives every URL without a result the terminal status `cancelled`;
//! delete removes everything of the job. Cancel and delete are recorded first (`cancelling`,
//! `deleting`) and done in bounded transactions, so an interrupted one is finished by the
//! sweeper (`resume_unfinished`). Summaries read counters, never results.

use facesweep_common::error::ServiceResult;
use facesweep_proto::{Job, JobSummary};
use facesweep_store::joblock::job_lock;
use facesweep_store::jobstate::{job_state, transition_in, Action, State};
use facesweep_store::terminal::{self, pages};

use crate::store::{JobRow, Store, JOB_COLUMNS};

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
        let state = State::parse(&r.state).map(State::proto).unwrap_or_default();
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

    /// Applies `action` to the job by the state table; FAILED_PRECONDITION where refused.
    pub async fn transition(&self, job_id: i64, action: Action) -> ServiceResult<State> {
        let mut tx = self.pool.begin().await?;
        let to = transition_in(&mut tx, job_id, action).await?;
        tx.commit().await?;
        Ok(to)
    }

    /// Cancels the job: no more leases, outstanding ones revoked (a new token and no secret:
    /// their holders' Record, Renew and Complete fail), then `cancelled` for every URL without
    /// a result, then the state `cancelled`. Returns the URLs it marked.
    pub async fn cancel(&self, job: &Job) -> ServiceResult<i64> {
        if self.transition(job.id, Action::Cancel).await? == State::Cancelled {
            return Ok(0);
        }
        self.finish_cancel(job.id, job.chunk_size).await
    }

    /// The rest of a cancel once the job is `cancelling` (also after an interruption).
    async fn finish_cancel(&self, job_id: i64, chunk_size: i32) -> ServiceResult<i64> {
        let end = self.next_ordinal(job_id).await?;
        let chunk_size = chunk_size.max(1) as i64;
        let chunks = (end + chunk_size - 1) / chunk_size;
        for from in (0..chunks).step_by(CHUNK_PAGE as usize) {
            sqlx::query(
                "UPDATE chunks SET state = 'done', lease_owner = NULL, expires_at = NULL,
                     token = nextval('lease_tokens'), secret_hash = NULL, updated_at = now()
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
            match self.cancel_page(job_id, from, to).await? {
                Some(n) => cancelled += n,
                None => return Ok(cancelled), // deleted meanwhile
            }
        }
        let mut tx = self.pool.begin().await?;
        job_lock(&mut tx, job_id, true).await?;
        sqlx::query("UPDATE jobs SET state = 'cancelled' WHERE id = $1 AND state = 'cancelling'")
            .bind(job_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(cancelled)
    }

    /// Marks one page; `None` when the job is no longer `cancelling` (a delete took over).
    async fn cancel_page(&self, job_id: i64, from: i64, to: i64) -> ServiceResult<Option<i64>> {
        let mut tx = self.pool.begin().await?;
        // Shared: pages of one cancel may overlap with a resumed one; a delete (exclusive)
        // waits for this page and then sees no more of them.
        job_lock(&mut tx, job_id, false).await?;
        if job_state(&mut tx, job_id).await? != Some(State::Cancelling) {
            return Ok(None);
        }
        let n = terminal::cancel_open(&mut tx, job_id, from, to).await?;
        tx.commit().await?;
        Ok(Some(n))
    }

    /// Removes the job: first its state becomes `deleting` (no import, retry or cancel page
    /// can start after that), then its chunks (waiting for every Record holding one: nothing
    /// can be leased, renewed or recorded from then on), then its URLs with their results a
    /// page per transaction, then its counters and the job row. Interrupted, the sweeper
    /// finishes it. Space is freed for reuse by autovacuum, not returned to the OS.
    pub async fn delete_job(&self, job_id: i64) -> ServiceResult<i64> {
        self.transition(job_id, Action::Delete).await?;
        sqlx::query("DELETE FROM chunks WHERE job_id = $1").bind(job_id).execute(&self.pool).await?;
        let mut deleted = 0;
        for (from, to) in pages(self.next_ordinal(job_id).await?) {
            deleted += terminal::delete_urls(&self.pool, job_id, from, to).await?;
        }
        // Every table keyed by the job, under its lock: nothing of it is written after this.
        let mut tx = self.pool.begin().await?;
        job_lock(&mut tx, job_id, true).await?;
        terminal::delete_job_rows(&mut tx, job_id).await?;
        tx.commit().await?;
        Ok(deleted)
    }

    pub async fn set_priority(&self, job_id: i64, priority: i32) -> ServiceResult<()> {
        let mut tx = self.pool.begin().await?;
        transition_in(&mut tx, job_id, Action::SetPriority).await?;
        sqlx::query("UPDATE jobs SET priority = $2 WHERE id = $1")
            .bind(job_id)
            .bind(priority)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Running jobs whose every chunk is closed become `done` (the sweeper's pass; a job's
    /// last completed lease marks it at once, see `mark_done_job`).
    pub async fn mark_done(&self) -> ServiceResult<u64> {
        let finished: Vec<i64> = sqlx::query_scalar(
            "SELECT j.id FROM jobs j WHERE j.state = 'running' AND j.total_urls > 0
               AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.job_id = j.id AND c.state <> 'done')",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut marked = 0;
        for job_id in finished {
            marked += u64::from(self.mark_done_job(job_id).await?);
        }
        Ok(marked)
    }

    /// The job becomes `done` if it runs and every chunk is closed (under its lock, so an
    /// import or retry either comes first and keeps it running, or comes after and re-opens
    /// it). One probe of the open-chunks index: cheap enough after every completed lease.
    pub async fn mark_done_job(&self, job_id: i64) -> ServiceResult<bool> {
        // Unlocked probe first: the exclusive lock below waits for every completion of the
        // job in flight, so it is taken only when the job looks finished.
        let finished: bool = sqlx::query_scalar(
            "SELECT NOT EXISTS (SELECT 1 FROM chunks c WHERE c.job_id = $1 AND c.state <> 'done')",
        )
        .bind(job_id)
        .fetch_one(&self.pool)
        .await?;
        if !finished {
            return Ok(false);
        }
        let mut tx = self.pool.begin().await?;
        job_lock(&mut tx, job_id, true).await?;
        let marked = sqlx::query(
            "UPDATE jobs j SET state = 'done' WHERE j.id = $1 AND j.state = 'running'
               AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.job_id = j.id AND c.state <> 'done')",
        )
        .bind(job_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(marked > 0)
    }

    /// Finishes cancels and deletes that were interrupted (a delegator killed mid-way).
    pub async fn resume_unfinished(&self) -> ServiceResult<()> {
        let jobs: Vec<(i64, i32, String)> = sqlx::query_as(
            // Two delegators may both resume one job: every step is idempotent.
            "SELECT id, chunk_size, state FROM jobs WHERE state IN ('cancelling', 'deleting')",
        )
        .fetch_all(&self.pool)
        .await?;
        for (job_id, chunk_size, state) in jobs {
            tracing::info!(job_id, state, "finishing an interrupted operator action");
            if state == "deleting" {
                self.delete_job(job_id).await?;
            } else {
                self.finish_cancel(job_id, chunk_size).await?;
            }
        }
        Ok(())
    }
}
