//! Lease state in Postgres. Taking a lease is one atomic UPDATE on the chunk row, so no
//! chunk is ever leased twice, whatever the number of delegator instances.

use std::time::Duration;

use chrono::{DateTime, Utc};
use facesweep_common::error::{ServiceError, ServiceResult};
use facesweep_common::{chunk_id_range, ORDINAL_BITS};
use facesweep_proto::{Job, LeaseRef, LeaseUrl, StatusCount};
use sqlx::{PgPool, Row};

use crate::sched;

/// Which chunks this instance owns: `chunk_no % count == index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

/// When failing chunks shrink and failing URLs are abandoned.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Failures of a chunk before its leases start halving.
    pub split_after: i32,
    /// Failed single-URL leases before the URL is `abandoned`.
    pub abandon_after: i32,
}

#[derive(Clone)]
pub struct Store {
    pub(crate) pool: PgPool,
    pub(crate) shard: Shard,
    ttl: Duration,
    pub(crate) limits: Limits,
}

#[derive(Debug)]
pub struct GrantedLease {
    pub job_id: i64,
    pub job_name: String,
    pub chunk_no: i64,
    pub token: i64,
    pub expires_at: DateTime<Utc>,
    pub urls: Vec<LeaseUrl>,
}

#[derive(Debug, Default)]
pub struct Progress {
    pub total_urls: i64,
    pub done_urls: i64,
    pub failed_urls: i64,
    pub leases_expired: i64,
    pub chunks: [i64; 3],
    pub by_status: Vec<StatusCount>,
    pub rate_per_second: f64,
    pub leases_reissued: i64,
}

impl Store {
    pub fn new(pool: PgPool, shard: Shard, ttl: Duration, limits: Limits) -> Self {
        Store { pool, shard, ttl, limits }
    }

    fn ttl_secs(&self) -> f64 {
        self.ttl.as_secs_f64()
    }

    /// Creates the job, or returns the existing one with this name (`created` = false).
    pub async fn create_job(&self, name: &str, chunk_size: i32, priority: i32) -> ServiceResult<(Job, bool)> {
        let inserted = sqlx::query(
            "INSERT INTO jobs (name, chunk_size, priority) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO NOTHING RETURNING id",
        )
        .bind(name)
        .bind(chunk_size)
        .bind(priority)
        .fetch_optional(&self.pool)
        .await?;
        Ok((self.job(name).await?, inserted.is_some()))
    }

    pub async fn job(&self, name: &str) -> ServiceResult<Job> {
        let row = sqlx::query("SELECT id, name, chunk_size, priority, created_at FROM jobs WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("job {name:?}")))?;
        let created: DateTime<Utc> = row.get(4);
        Ok(Job {
            id: row.get(0),
            name: row.get(1),
            chunk_size: row.get(2),
            priority: row.get(3),
            created_at: Some(timestamp(created)),
        })
    }

    /// Jobs with a pending chunk in this shard, with their scheduling weight.
    async fn jobs_with_work(&self) -> ServiceResult<Vec<(i64, i32)>> {
        let rows = sqlx::query(
            "SELECT j.id, greatest(j.priority, 1) FROM jobs j WHERE EXISTS (
                 SELECT 1 FROM chunks c WHERE c.job_id = j.id AND c.state = 'pending' AND c.chunk_no % $1 = $2)",
        )
        .bind(self.shard.count as i64)
        .bind(self.shard.index as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Leases the next pending chunk of this shard from a job picked by weight.
    pub async fn acquire(&self, owner: &str, max_urls: i64) -> ServiceResult<Option<GrantedLease>> {
        // A chunk whose URLs all have results is closed here and the next one tried.
        for _ in 0..16 {
            let jobs = self.jobs_with_work().await?;
            let mut row = None;
            let order = sched::weighted_order(&jobs, &mut rand::thread_rng());
            for job in order {
                row = self.take_chunk(job, owner).await?;
                if row.is_some() {
                    break;
                }
            }
            let Some(row) = row else { return Ok(None) };
            let (job_id, chunk_no, token): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
            let (chunk_size, failures): (i32, i32) = (row.get(4), row.get(5));
            let limit = sched::lease_size(chunk_size as i64, failures, self.limits.split_after, max_urls);
            let (lo, hi) = chunk_id_range(job_id, chunk_no, chunk_size as i64);
            let urls: Vec<LeaseUrl> = sqlx::query(
                "SELECT u.id, u.url FROM urls u WHERE u.id BETWEEN $1 AND $2
                   AND NOT EXISTS (SELECT 1 FROM url_results r WHERE r.url_id = u.id)
                 ORDER BY u.id LIMIT $3",
            )
            .bind(lo)
            .bind(hi)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|r| LeaseUrl { id: r.get(0), url: r.get(1) })
            .collect();
            let lease = LeaseRef { job_id, chunk_no, fencing_token: token };
            let (Some(first), Some(last)) = (urls.first(), urls.last()) else {
                self.complete(&lease).await?;
                continue;
            };
            // Remember exactly which URLs this lease holds, for failure accounting.
            sqlx::query("UPDATE chunks SET lease_first = $4, lease_last = $5 WHERE job_id = $1 AND chunk_no = $2 AND token = $3")
                .bind(job_id)
                .bind(chunk_no)
                .bind(token)
                .bind(first.id)
                .bind(last.id)
                .execute(&self.pool)
                .await?;
            return Ok(Some(GrantedLease {
                job_id,
                job_name: row.get(6),
                chunk_no,
                token,
                expires_at: row.get(3),
                urls,
            }));
        }
        Ok(None)
    }

    /// Atomically takes the first pending chunk of `job` in this shard (compare-and-set).
    async fn take_chunk(&self, job: i64, owner: &str) -> ServiceResult<Option<sqlx::postgres::PgRow>> {
        Ok(sqlx::query(
            // MATERIALIZED: the pick runs once. As a plain FROM subquery the planner may rescan
            // it per row and lease several chunks in one statement.
            "WITH pick AS MATERIALIZED (
                 SELECT chunk_no FROM chunks
                 WHERE job_id = $5 AND state = 'pending' AND chunk_no % $3 = $4
                 ORDER BY chunk_no LIMIT 1 FOR UPDATE SKIP LOCKED)
             UPDATE chunks c SET state = 'leased', lease_owner = $1,
                 token = nextval('lease_tokens'),
                 expires_at = now() + make_interval(secs => $2),
                 attempts = c.attempts + 1,
                 reissued = c.reissued + CASE WHEN c.attempts > 0 THEN 1 ELSE 0 END,
                 lease_first = NULL, lease_last = NULL, updated_at = now()
             FROM pick
             WHERE c.job_id = $5 AND c.chunk_no = pick.chunk_no AND c.state = 'pending'
             RETURNING c.job_id, c.chunk_no, c.token, c.expires_at,
                 (SELECT chunk_size FROM jobs WHERE id = c.job_id), c.failures,
                 (SELECT name FROM jobs WHERE id = c.job_id)",
        )
        .bind(owner)
        .bind(self.ttl_secs())
        .bind(self.shard.count as i64)
        .bind(self.shard.index as i64)
        .bind(job)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Extends a lease still held under `lease.fencing_token`.
    pub async fn renew(&self, lease: &LeaseRef) -> ServiceResult<DateTime<Utc>> {
        sqlx::query_scalar(
            "UPDATE chunks SET expires_at = now() + make_interval(secs => $4), updated_at = now()
             WHERE job_id = $1 AND chunk_no = $2 AND token = $3 AND state = 'leased'
             RETURNING expires_at",
        )
        .bind(lease.job_id)
        .bind(lease.chunk_no)
        .bind(lease.fencing_token)
        .bind(self.ttl_secs())
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| lost(lease))
    }

    /// Closes a lease: `done` only if every URL of the chunk has a result, else back to
    /// pending, counted as a failure of the chunk.
    pub async fn complete(&self, lease: &LeaseRef) -> ServiceResult<bool> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "UPDATE chunks c SET
                 state = CASE WHEN EXISTS (
                     SELECT 1 FROM urls u
                     WHERE u.id BETWEEN ($1 << $4) + c.chunk_no * j.chunk_size
                                    AND ($1 << $4) + (c.chunk_no + 1) * j.chunk_size - 1
                       AND NOT EXISTS (SELECT 1 FROM url_results r WHERE r.url_id = u.id))
                   THEN 'pending'::chunk_state ELSE 'done'::chunk_state END,
                 lease_owner = NULL, expires_at = NULL, updated_at = now()
             FROM jobs j
             WHERE j.id = c.job_id AND c.job_id = $1 AND c.chunk_no = $2 AND c.token = $3
               AND c.state = 'leased'
             RETURNING c.job_id, c.chunk_no, c.lease_first, c.lease_last, c.state::text",
        )
        .bind(lease.job_id)
        .bind(lease.chunk_no)
        .bind(lease.fencing_token)
        .bind(ORDINAL_BITS as i32)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| lost(lease))?;
        let done = row.get::<String, _>(4) == "done";
        if !done {
            let f = crate::failures::failed(&row);
            // Only URLs of this lease still open count against it (new ones may have arrived).
            let open: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM urls u WHERE u.id BETWEEN $1 AND $2
                   AND NOT EXISTS (SELECT 1 FROM url_results r WHERE r.url_id = u.id))",
            )
            .bind(f.first.unwrap_or(0))
            .bind(f.last.unwrap_or(-1))
            .fetch_one(&mut *tx)
            .await?;
            if open {
                self.record_failure(&mut tx, &f, "lease completed with URLs unresolved").await?;
            }
        }
        tx.commit().await?;
        Ok(done)
    }

    /// Gives a lease back unfinished; its chunk is immediately leasable again.
    pub async fn release(&self, lease: &LeaseRef) -> ServiceResult<()> {
        sqlx::query(
            "UPDATE chunks SET state = 'pending', lease_owner = NULL, expires_at = NULL,
                 updated_at = now()
             WHERE job_id = $1 AND chunk_no = $2 AND token = $3 AND state = 'leased'
             RETURNING 1",
        )
        .bind(lease.job_id)
        .bind(lease.chunk_no)
        .bind(lease.fencing_token)
        .fetch_optional(&self.pool)
        .await?
        .map(|_| ())
        .ok_or_else(|| lost(lease))
    }

    /// Chunks of a job (open ones unless `include_done`), leased ones first.
    pub async fn list_chunks(
        &self,
        job_id: i64,
        limit: i64,
        include_done: bool,
    ) -> ServiceResult<Vec<facesweep_proto::ChunkLease>> {
        let rows = sqlx::query(
            "SELECT chunk_no, state::text, coalesce(lease_owner, ''), expires_at, attempts, failures, expired
             FROM chunks WHERE job_id = $1 AND ($3 OR state <> 'done')
             ORDER BY state DESC, chunk_no LIMIT $2",
        )
        .bind(job_id)
        .bind(limit)
        .bind(include_done)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| facesweep_proto::ChunkLease {
                chunk_no: r.get(0),
                state: r.get(1),
                owner: r.get(2),
                expires_at: r.get::<Option<DateTime<Utc>>, _>(3).map(timestamp),
                attempts: r.get(4),
                failures: r.get(5),
                expired: r.get(6),
            })
            .collect())
    }

    pub async fn progress(&self, job_id: i64) -> ServiceResult<Progress> {
        let row = sqlx::query(
            "SELECT (SELECT total_urls FROM jobs WHERE id = $1),
                    count(*) FILTER (WHERE state = 'pending'),
                    count(*) FILTER (WHERE state = 'leased'),
                    count(*) FILTER (WHERE state = 'done'),
                    coalesce(sum(reissued), 0),
                    coalesce(sum(expired), 0)
             FROM chunks WHERE job_id = $1",
        )
        .bind(job_id)
        .fetch_one(&self.pool)
        .await?;
        // Counters, not count(*): exact and O(1) whatever the job size.
        let statuses = sqlx::query(
            "SELECT status, sum(count)::bigint FROM job_status_counts WHERE job_id = $1
             GROUP BY status HAVING sum(count) > 0 ORDER BY status",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?;
        let (recent, secs): (i64, f64) = sqlx::query_as(
            "SELECT coalesce(sum(count), 0)::bigint,
                    extract(epoch FROM now() - date_trunc('minute', now() - interval '1 minute'))::float8
             FROM job_minute_counts WHERE job_id = $1 AND minute >= date_trunc('minute', now() - interval '1 minute')",
        )
        .bind(job_id)
        .fetch_one(&self.pool)
        .await?;
        let mut p = Progress {
            total_urls: row.get(0),
            chunks: [row.get(1), row.get(2), row.get(3)],
            leases_reissued: row.get(4),
            leases_expired: row.get(5),
            ..Default::default()
        };
        for s in statuses {
            let n: i64 = s.get(1);
            p.done_urls += n;
            if s.get::<String, _>(0) != "ok" {
                p.failed_urls += n;
            }
            p.by_status.push(StatusCount { status: s.get(0), count: n });
        }
        p.rate_per_second = recent as f64 / secs.max(1.0);
        Ok(p)
    }
}

pub fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 }
}

fn lost(lease: &LeaseRef) -> ServiceError {
    ServiceError::FailedPrecondition(format!(
        "lease on job {} chunk {} with token {} is no longer held",
        lease.job_id, lease.chunk_no, lease.fencing_token
    ))
}
