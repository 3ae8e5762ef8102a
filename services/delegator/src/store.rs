//! Lease state in Postgres. Taking a lease is one atomic UPDATE on the chunk row, so no
//! chunk is ever leased twice, whatever the number of delegator instances.

use std::time::Duration;

use chrono::{DateTime, Utc};
use facesweep_common::ab::model_for;
use facesweep_common::chunk_id_range;
use facesweep_common::error::{ServiceError, ServiceResult};
use facesweep_proto::{InputSegment, Job, LeaseRef, LeaseUrl, ModelSplit};
use facesweep_store::bind_lease;
use facesweep_store::lease::LEASE_HELD;
use sqlx::PgPool;

use crate::failures::{self, FailedLease, Limits};
use crate::membership::ShardCell;
use crate::{import, sched};
use facesweep_store::joblock;

/// URL text one lease may carry (with 16 bytes per URL for ids and framing): half the 4 MiB
/// gRPC default, a quarter of the fetcher's limit, whatever the chunk size or URL lengths.
pub const MAX_LEASE_BYTES: i64 = 2 << 20;

#[derive(Clone)]
pub struct Store {
    pub(crate) pool: PgPool,
    /// Fixed, or moved by the membership heartbeat (elastic shards).
    pub(crate) shard: std::sync::Arc<ShardCell>,
    ttl: Duration,
    pub(crate) limits: Limits,
    /// `facesweep_urls_abandoned_total` of this delegator, counted where the status is written.
    pub(crate) abandoned: prometheus::IntCounter,
}

#[derive(Debug)]
pub struct GrantedLease {
    pub job_id: i64,
    pub job_name: String,
    pub chunk_no: i64,
    pub token: i64,
    /// Handed to the holder once; only its hash is stored.
    pub secret: String,
    /// The fetcher it was granted to.
    pub owner: String,
    pub expires_at: DateTime<Utc>,
    pub urls: Vec<LeaseUrl>,
    /// The chunk was leased before (expired, released or left unfinished): lease churn.
    pub reissued: bool,
}

impl Store {
    /// `abandoned` counts the URLs this store gives the terminal status `abandoned`.
    pub fn new(
        pool: PgPool,
        shard: std::sync::Arc<ShardCell>,
        ttl: Duration,
        limits: Limits,
        abandoned: prometheus::IntCounter,
    ) -> Self {
        Store { pool, shard, ttl, limits, abandoned }
    }

    fn ttl_secs(&self) -> f64 {
        self.ttl.as_secs_f64()
    }

    /// Creates the job, or returns the existing one (`created` = false). An input digest is
    /// kept on first sight; another one for the same job is refused, as are other models.
    pub async fn create_job(
        &self,
        name: &str,
        chunk_size: i32,
        priority: i32,
        digest: &str,
        models: &ModelSplit,
    ) -> ServiceResult<(Job, bool)> {
        let inserted = sqlx::query(
            "INSERT INTO jobs (name, chunk_size, priority, input_digest, model_id, alt_model_id, alt_share)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (name) DO NOTHING RETURNING id",
        )
        .bind(name)
        .bind(chunk_size)
        .bind(priority)
        .bind(digest)
        .bind(&models.model_id)
        .bind(&models.alt_model_id)
        .bind(models.alt_share)
        .fetch_optional(&self.pool)
        .await?;
        if inserted.is_none() && !digest.is_empty() {
            let stored: String = sqlx::query_scalar(
                "UPDATE jobs SET input_digest = CASE WHEN input_digest = '' THEN $2 ELSE input_digest END
                 WHERE name = $1 RETURNING input_digest",
            )
            .bind(name)
            .bind(digest)
            .fetch_one(&self.pool)
            .await?;
            if stored != digest {
                return Err(ServiceError::FailedPrecondition(format!(
                    "job {name:?} was made from another input ({stored}, now {digest}): \
                     give the new input another job name"
                )));
            }
        }
        let job = self.job(name).await?;
        if inserted.is_none() {
            let state: String = sqlx::query_scalar("SELECT state FROM jobs WHERE id = $1")
                .bind(job.id)
                .fetch_one(&self.pool)
                .await?;
            if state == "deleting" {
                return Err(ServiceError::FailedPrecondition(format!(
                    "job {name:?} is being deleted: its name is free again once that finishes (a few seconds)"
                )));
            }
        }
        if inserted.is_none() && *models != ModelSplit::default() && job.models.as_ref() != Some(models) {
            return Err(ServiceError::FailedPrecondition(format!(
                "job {name:?} exists with other models ({:?}): give this one another job name",
                job.models.unwrap_or_default()
            )));
        }
        Ok((job, inserted.is_some()))
    }

    /// Stores `urls` (and their carried columns, see `import::append`) as ordinals `first..`
    /// of the job, and the input segment they end if given; returns how many were new.
    pub async fn append(
        &self,
        job: &Job,
        first: i64,
        urls: &[String],
        extras: &[String],
        segment: Option<&InputSegment>,
    ) -> ServiceResult<i64> {
        import::append(&self.pool, job.id, job.chunk_size, first, (urls, extras), segment).await
    }

    pub async fn job(&self, name: &str) -> ServiceResult<Job> {
        let row: JobRow = sqlx::query_as(&format!("SELECT {JOB_COLUMNS} FROM jobs j WHERE j.name = $1"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("job {name:?}")))?;
        Ok(row.into())
    }

    /// Running jobs with a pending chunk in this shard, with their scheduling weight.
    async fn jobs_with_work(&self) -> ServiceResult<Vec<(i64, i32)>> {
        let shard = self.shard.get();
        Ok(sqlx::query_as(
            "SELECT j.id, greatest(j.priority, 1) FROM jobs j WHERE j.state = 'running' AND EXISTS (
                 SELECT 1 FROM chunks c WHERE c.job_id = j.id AND c.state = 'pending' AND c.chunk_no % $1 = $2
                   AND (c.retry_after IS NULL OR c.retry_after <= now()))",
        )
        .bind(shard.count as i64)
        .bind(shard.index as i64)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Leases the next pending chunk of this shard from a job picked by weight.
    pub async fn acquire(&self, owner: &str, max_urls: i64) -> ServiceResult<Option<GrantedLease>> {
        // A chunk whose URLs all have results is closed here and the next one tried.
        for _ in 0..16 {
            let jobs = self.jobs_with_work().await?;
            let mut taken = None;
            let secret = facesweep_store::lease::new_secret();
            let order = sched::weighted_order(&jobs, &mut rand::thread_rng());
            for job in order {
                taken = self.take_chunk(job, owner, &secret).await?;
                if taken.is_some() {
                    break;
                }
            }
            let Some(t) = taken else { return Ok(None) };
            let limit = sched::lease_size(t.chunk_size as i64, t.failures, self.limits.split_after, max_urls);
            let urls = self.open_urls(&t, limit).await?;
            let lease = LeaseRef {
                job_id: t.job_id,
                chunk_no: t.chunk_no,
                fencing_token: t.token,
                secret: secret.clone(),
                fetcher_id: owner.to_string(),
            };
            let (Some(first), Some(last)) = (urls.first(), urls.last()) else {
                self.complete(&lease).await?;
                continue;
            };
            // Remember exactly which URLs this lease holds, for failure accounting.
            sqlx::query("UPDATE chunks SET lease_first = $4, lease_last = $5 WHERE job_id = $1 AND chunk_no = $2 AND token = $3")
                .bind(t.job_id)
                .bind(t.chunk_no)
                .bind(t.token)
                .bind(first.id)
                .bind(last.id)
                .execute(&self.pool)
                .await?;
            return Ok(Some(GrantedLease {
                job_id: t.job_id,
                job_name: t.job_name,
                chunk_no: t.chunk_no,
                token: t.token,
                secret,
                owner: owner.to_string(),
                expires_at: t.expires_at,
                urls,
                reissued: t.attempts > 1,
            }));
        }
        Ok(None)
    }

    /// Up to `limit` URLs of the chunk without a result, in id order, and at most
    /// `MAX_LEASE_BYTES` of URL text, so every lease fits in one gRPC message.
    async fn open_urls(&self, t: &TakenChunk, limit: i64) -> ServiceResult<Vec<LeaseUrl>> {
        let (lo, hi) = chunk_id_range(t.job_id, t.chunk_no, t.chunk_size as i64);
        let rows: Vec<(i64, String)> = sqlx::query_as(
            // A URL is taken while the ones before it stay under the bound: the first always is.
            "SELECT id, url FROM (
                 SELECT u.id, u.url, sum(octet_length(u.url) + 16) OVER (ORDER BY u.id) AS upto,
                        octet_length(u.url) + 16 AS own
                 FROM urls u WHERE u.id BETWEEN $1 AND $2
                   AND NOT EXISTS (SELECT 1 FROM url_results r WHERE r.url_id = u.id)
                 ORDER BY u.id LIMIT $3) open
             WHERE upto - own < $4 ORDER BY id",
        )
        .bind(lo)
        .bind(hi)
        .bind(limit)
        .bind(MAX_LEASE_BYTES)
        .fetch_all(&self.pool)
        .await?;
        let model = |id| model_for(id, &t.model_id, &t.alt_model_id, t.alt_share).to_string();
        Ok(rows.into_iter().map(|(id, url)| LeaseUrl { id, url, model_id: model(id) }).collect())
    }

    /// Atomically takes the first pending chunk of `job` in this shard (compare-and-set).
    async fn take_chunk(&self, job: i64, owner: &str, secret: &str) -> ServiceResult<Option<TakenChunk>> {
        let shard = self.shard.get();
        Ok(sqlx::query_as(
            // MATERIALIZED: the pick runs once. As a plain FROM subquery the planner may rescan
            // it per row and lease several chunks in one statement.
            "WITH pick AS MATERIALIZED (
                 SELECT chunk_no FROM chunks
                 WHERE job_id = $5 AND state = 'pending' AND chunk_no % $3 = $4
                   AND (retry_after IS NULL OR retry_after <= now())
                 ORDER BY chunk_no LIMIT 1 FOR UPDATE SKIP LOCKED),
             started AS (UPDATE jobs SET started_at = now()
                 WHERE id = $5 AND started_at IS NULL AND EXISTS (SELECT 1 FROM pick))
             UPDATE chunks c SET state = 'leased', lease_owner = $1,
                 token = nextval('lease_tokens'), secret_hash = sha256(convert_to($6, 'UTF8')),
                 expires_at = now() + make_interval(secs => $2),
                 attempts = c.attempts + 1,
                 reissued = c.reissued + CASE WHEN c.attempts > 0 THEN 1 ELSE 0 END,
                 lease_first = NULL, lease_last = NULL, updated_at = now()
             FROM pick, jobs j
             WHERE c.job_id = $5 AND c.chunk_no = pick.chunk_no AND c.state = 'pending' AND j.id = c.job_id
               AND j.state = 'running'
             RETURNING c.job_id, c.chunk_no, c.token, c.expires_at, j.chunk_size, c.failures, c.attempts, j.name AS job_name,
                       j.model_id, j.alt_model_id, j.alt_share",
        )
        .bind(owner)
        .bind(self.ttl_secs())
        .bind(shard.count as i64)
        .bind(shard.index as i64)
        .bind(job)
        .bind(secret)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Extends a lease still held under `lease.fencing_token`. A paused job's lease is handed
    /// back instead (pending again, no failure counted): pause stops work within a renewal
    /// interval, not at the end of every chunk in hand.
    pub async fn renew(&self, lease: &LeaseRef) -> ServiceResult<DateTime<Utc>> {
        let mut tx = self.pool.begin().await?;
        // Shared against pause and resume (exclusive): both statements see one job state, so a
        // resume between them cannot make a held lease look lost.
        joblock::job_lock(&mut tx, lease.job_id, false).await?;
        let sql = format!(
            "UPDATE chunks c SET expires_at = now() + make_interval(secs => $6), updated_at = now()
             FROM jobs j WHERE j.id = c.job_id AND j.state <> 'paused' AND {LEASE_HELD}
             RETURNING c.expires_at"
        );
        let renewed = bind_lease!(sqlx::query_scalar(&sql), lease)
            .bind(self.ttl_secs())
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(at) = renewed {
            tx.commit().await?;
            return Ok(at);
        }
        let sql = format!(
            "UPDATE chunks c SET state = 'pending', lease_owner = NULL, expires_at = NULL,
                 secret_hash = NULL, updated_at = now()
             FROM jobs j WHERE j.id = c.job_id AND j.state = 'paused' AND {LEASE_HELD}
             RETURNING j.name"
        );
        let paused: Option<String> =
            bind_lease!(sqlx::query_scalar(&sql), lease).fetch_optional(&mut *tx).await?;
        tx.commit().await?;
        Err(match paused {
            Some(job) => ServiceError::FailedPrecondition(format!(
                "job {job:?} is paused: chunk {} was handed back and its URLs without a result \
                 will be leased again after `facesweep resume {job}`",
                lease.chunk_no
            )),
            None => lost(lease),
        })
    }

    /// Closes a lease: `done` only if every URL of the chunk has a result, else back to
    /// pending, counted as a failure of the chunk.
    pub async fn complete(&self, lease: &LeaseRef) -> ServiceResult<bool> {
        let mut tx = self.pool.begin().await?;
        // Shared with other completions, exclusive against RetryUrls/AppendUrls: their
        // changes are either all seen by the check below or made after this commits.
        joblock::job_lock(&mut tx, lease.job_id, false).await?;
        let sql = format!(
            "UPDATE chunks c SET
                 state = CASE WHEN EXISTS (
                     SELECT 1 FROM urls u
                     WHERE u.id BETWEEN url_id($1, c.chunk_no * j.chunk_size)
                                    AND url_id($1, (c.chunk_no + 1) * j.chunk_size - 1)
                       AND NOT EXISTS (SELECT 1 FROM url_results r WHERE r.url_id = u.id))
                   THEN 'pending'::chunk_state ELSE 'done'::chunk_state END,
                 lease_owner = NULL, expires_at = NULL, secret_hash = NULL, updated_at = now()
             FROM jobs j
             WHERE j.id = c.job_id AND {LEASE_HELD}
             RETURNING c.job_id, c.chunk_no, c.lease_first, c.lease_last, c.state = 'done' AS done"
        );
        let closed: ClosedChunk = bind_lease!(sqlx::query_as(&sql), lease)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| lost(lease))?;
        if !closed.done {
            // Only URLs of this lease still open count against it (new ones may have arrived).
            let open: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM urls u WHERE u.id BETWEEN $1 AND $2
                   AND NOT EXISTS (SELECT 1 FROM url_results r WHERE r.url_id = u.id))",
            )
            .bind(closed.lease.lease_first.unwrap_or(0))
            .bind(closed.lease.lease_last.unwrap_or(-1))
            .fetch_one(&mut *tx)
            .await?;
            if open {
                let why = "lease completed with URLs unresolved";
                failures::record(&mut tx, self.limits, &self.abandoned, &closed.lease, why).await?;
            }
        }
        tx.commit().await?;
        Ok(closed.done)
    }

    /// Gives a lease back unfinished; its chunk is immediately leasable again. A non-empty
    /// `failure` (the holder's reason) counts against the chunk and its URLs like an expiry.
    pub async fn release(&self, lease: &LeaseRef, failure: &str) -> ServiceResult<()> {
        let mut tx = self.pool.begin().await?;
        let sql = format!(
            "UPDATE chunks c SET state = 'pending', lease_owner = NULL, expires_at = NULL,
                 secret_hash = NULL, updated_at = now()
             WHERE {LEASE_HELD}
             RETURNING c.job_id, c.chunk_no, c.lease_first, c.lease_last"
        );
        let released: FailedLease = bind_lease!(sqlx::query_as(&sql), lease)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| lost(lease))?;
        if !failure.is_empty() {
            failures::record(&mut tx, self.limits, &self.abandoned, &released, failure).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Chunks of a job (open ones unless `include_done`), leased ones first.
    pub async fn list_chunks(
        &self,
        job_id: i64,
        limit: i64,
        include_done: bool,
    ) -> ServiceResult<Vec<facesweep_proto::ChunkLease>> {
        let rows: Vec<ChunkRow> = sqlx::query_as(
            "SELECT chunk_no, state::text AS state, coalesce(lease_owner, '') AS owner, expires_at,
                    attempts, failures, expired
             FROM chunks WHERE job_id = $1 AND ($3 OR state <> 'done')
             ORDER BY state DESC, chunk_no LIMIT $2",
        )
        .bind(job_id)
        .bind(limit)
        .bind(include_done)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| facesweep_proto::ChunkLease {
                chunk_no: r.chunk_no,
                state: r.state,
                owner: r.owner,
                expires_at: r.expires_at.map(timestamp),
                attempts: r.attempts,
                failures: r.failures,
                expired: r.expired,
            })
            .collect())
    }
}

pub fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 }
}

/// A job as its columns hold it (`JOB_COLUMNS`); the one place a `Job` is built from.
#[derive(sqlx::FromRow)]
pub(crate) struct JobRow {
    id: i64,
    name: String,
    chunk_size: i32,
    priority: i32,
    created_at: DateTime<Utc>,
    model_id: String,
    alt_model_id: String,
    alt_share: f64,
}

/// The columns of `JobRow`, for queries on `jobs j`.
pub(crate) const JOB_COLUMNS: &str =
    "j.id, j.name, j.chunk_size, j.priority, j.created_at, j.model_id, j.alt_model_id, j.alt_share";

impl From<JobRow> for Job {
    fn from(r: JobRow) -> Self {
        let models =
            ModelSplit { model_id: r.model_id, alt_model_id: r.alt_model_id, alt_share: r.alt_share };
        Job {
            id: r.id,
            name: r.name,
            chunk_size: r.chunk_size,
            priority: r.priority,
            created_at: Some(timestamp(r.created_at)),
            models: Some(models),
        }
    }
}

/// A chunk as operators list it.
#[derive(sqlx::FromRow)]
struct ChunkRow {
    chunk_no: i64,
    state: String,
    owner: String,
    expires_at: Option<DateTime<Utc>>,
    attempts: i32,
    failures: i32,
    expired: i32,
}

/// The chunk row a lease was just granted on, with what the lease needs of its job.
#[derive(sqlx::FromRow)]
struct TakenChunk {
    job_id: i64,
    chunk_no: i64,
    token: i64,
    expires_at: DateTime<Utc>,
    chunk_size: i32,
    failures: i32,
    attempts: i32,
    job_name: String,
    model_id: String,
    alt_model_id: String,
    alt_share: f64,
}

#[derive(sqlx::FromRow)]
struct ClosedChunk {
    #[sqlx(flatten)]
    lease: FailedLease,
    done: bool,
}

fn lost(lease: &LeaseRef) -> ServiceError {
    ServiceError::FailedPrecondition(format!(
        "lease on job {} chunk {} with token {} is not held by {:?} with that secret (expired, \
         re-issued, revoked by a cancel or delete, or never granted): take a new lease",
        lease.job_id, lease.chunk_no, lease.fencing_token, lease.fetcher_id
    ))
}
