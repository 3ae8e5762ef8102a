//! gRPC surface of the delegator: validate, then call the store.

use std::sync::Arc;

use facesweep_common::auth::{Access, Authorizer, FETCHER};
use facesweep_common::error::ServiceError;
use facesweep_proto::delegator_service_server::DelegatorService;
use facesweep_proto::*;
use futures::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::import;
use crate::metrics::Metrics;
use crate::store::{timestamp, Store};
use facesweep_store::jobstate::Action;

/// URLs buffered before one COPY round trip.
const IMPORT_BATCH: usize = 20_000;
const MAX_LEASE_URLS: i32 = 100_000;

pub struct DelegatorSvc {
    store: Store,
    default_chunk_size: u32,
    auth: Authorizer,
    metrics: Arc<Metrics>,
}

impl DelegatorSvc {
    pub fn new(store: Store, default_chunk_size: u32, auth: Authorizer, metrics: Arc<Metrics>) -> Self {
        DelegatorSvc { store, default_chunk_size, auth, metrics }
    }

    /// The job named `name`, after an operator action on it.
    async fn summary(&self, name: &str) -> Result<Option<JobSummary>, Status> {
        Ok(self.store.job_summaries(Some(name)).await?.pop())
    }

    /// Applies `action` to the named job (jobstate's table); its summary afterwards.
    async fn transition(&self, name: &str, action: Action) -> Result<Option<JobSummary>, Status> {
        let job = self.store.job(name).await?;
        let to = self.store.transition(job.id, action).await?;
        tracing::info!(job = %name, ?action, state = to.as_str(), "job state changed");
        self.summary(name).await
    }
}

fn invalid(msg: impl Into<String>) -> Status {
    ServiceError::InvalidArgument(msg.into()).into()
}

/// The lease a data-plane call names, checked for shape, from a caller allowed to act as
/// its holder; whoever holds it must present its secret and its fetcher id, which a
/// certificate naming another fetcher cannot claim.
fn lease_ref<T>(auth: &Authorizer, req: &Request<T>, lease: Option<LeaseRef>) -> Result<LeaseRef, Status> {
    auth.check_as(req, FETCHER, lease.as_ref().map_or("", |l| l.fetcher_id.as_str()))?;
    let lease = lease.ok_or_else(|| invalid("lease is required"))?;
    if lease.job_id <= 0 || lease.chunk_no < 0 || lease.fencing_token <= 0 {
        return Err(invalid("lease needs a positive job_id and token and chunk_no >= 0"));
    }
    facesweep_store::lease::check_presented(&lease)?;
    Ok(lease)
}

#[tonic::async_trait]
impl DelegatorService for DelegatorSvc {
    async fn create_job(
        &self,
        req: Request<CreateJobRequest>,
    ) -> Result<Response<CreateJobResponse>, Status> {
        self.auth.check(&req, Access::Admin)?;
        let msg = req.into_inner();
        if msg.name.trim().is_empty() || msg.name.len() > 200 {
            return Err(invalid("job name must be 1..=200 characters"));
        }
        if msg.chunk_size < 0 || msg.chunk_size > 1_000_000 {
            return Err(invalid("chunk_size must be in 0..=1000000 (0 = default)"));
        }
        let chunk = if msg.chunk_size == 0 { self.default_chunk_size as i32 } else { msg.chunk_size };
        if msg.input_digest.len() > 200 {
            return Err(invalid("input_digest must be at most 200 bytes"));
        }
        let models = msg.models.unwrap_or_default();
        check_models(&models)?;
        let (job, created) =
            self.store.create_job(&msg.name, chunk, msg.priority, &msg.input_digest, &models).await?;
        Ok(Response::new(CreateJobResponse { job: Some(job), created }))
    }

    async fn append_urls(
        &self,
        req: Request<Streaming<AppendUrlsRequest>>,
    ) -> Result<Response<AppendUrlsResponse>, Status> {
        self.auth.check(&req, Access::Admin)?;
        let mut stream = req.into_inner();
        let mut job = None;
        let (mut received, mut inserted) = (0i64, 0i64);
        let mut batch: Vec<String> = Vec::new();
        // The batch's carried columns: empty, or one per URL of the batch.
        let mut extras: Vec<String> = Vec::new();
        let mut batch_first = 0i64;
        // The input segment as of the batch's last message, stored with the batch.
        let mut mark: Option<InputSegment> = None;
        while let Some(msg) = stream.next().await {
            let msg = msg?;
            if job.is_none() {
                if msg.job.is_empty() {
                    return Err(invalid("the first AppendUrls message must name the job"));
                }
                job = Some(self.store.job(&msg.job).await?);
            }
            let j = job.as_ref().expect("set above");
            import::check_ordinals(msg.first_ordinal, msg.urls.len())?;
            received += msg.urls.len() as i64;
            // Flush when the next message is not contiguous or the batch is full.
            if !batch.is_empty() && batch_first + batch.len() as i64 != msg.first_ordinal
                || batch.len() >= IMPORT_BATCH
            {
                inserted += self.store.append(j, batch_first, &batch, &extras, mark.as_ref()).await?;
                batch.clear();
                extras.clear();
            }
            if batch.is_empty() {
                batch_first = msg.first_ordinal;
            }
            if !msg.extras.is_empty() && msg.extras.len() != msg.urls.len() {
                return Err(invalid("AppendUrls extras must be empty or one per URL"));
            }
            if !msg.extras.is_empty() || !extras.is_empty() {
                extras.resize(batch.len(), String::new());
                extras.extend(msg.extras);
                extras.resize(batch.len() + msg.urls.len(), String::new());
            }
            batch.extend(msg.urls);
            mark = msg.segment;
        }
        if let Some(j) = &job {
            inserted += self.store.append(j, batch_first, &batch, &extras, mark.as_ref()).await?;
        }
        Ok(Response::new(AppendUrlsResponse { received, inserted }))
    }

    async fn list_job_inputs(
        &self,
        req: Request<ListJobInputsRequest>,
    ) -> Result<Response<ListJobInputsResponse>, Status> {
        self.auth.check(&req, Access::Admin)?;
        let j = self.store.job(&req.into_inner().job).await?;
        let next = self.store.next_ordinal(j.id).await?;
        let (segments, next_free_ordinal) = import::list_inputs(&self.store.pool, j.id, next).await?;
        Ok(Response::new(ListJobInputsResponse { segments, next_free_ordinal }))
    }

    async fn acquire_lease(
        &self,
        req: Request<AcquireLeaseRequest>,
    ) -> Result<Response<AcquireLeaseResponse>, Status> {
        self.auth.check_as(&req, FETCHER, &req.get_ref().fetcher_id)?;
        if req.get_ref().fetcher_id.is_empty() || req.get_ref().fetcher_id.len() > 200 {
            return Err(invalid("fetcher_id is required (at most 200 bytes)"));
        }
        let msg = req.into_inner();
        if msg.max_urls < 0 || msg.max_urls > MAX_LEASE_URLS {
            return Err(invalid(format!("max_urls must be in 0..={MAX_LEASE_URLS} (0 = whole chunk)")));
        }
        let max = if msg.max_urls == 0 { MAX_LEASE_URLS } else { msg.max_urls };
        let lease = self.store.acquire(&msg.fetcher_id, max as i64).await?.inspect(|g| {
            self.metrics.leases_granted.inc();
            if g.reissued {
                self.metrics.leases_reissued.inc();
            }
        });
        let lease = lease.map(|g| Lease {
            job_id: g.job_id,
            chunk_no: g.chunk_no,
            fencing_token: g.token,
            secret: g.secret,
            fetcher_id: g.owner,
            expires_at: Some(timestamp(g.expires_at)),
            urls: g.urls,
            job_name: g.job_name,
        });
        Ok(Response::new(AcquireLeaseResponse { lease }))
    }

    async fn renew_lease(
        &self,
        req: Request<RenewLeaseRequest>,
    ) -> Result<Response<RenewLeaseResponse>, Status> {
        let lease = lease_ref(&self.auth, &req, req.get_ref().lease.clone())?;
        let at = self.store.renew(&lease).await?;
        self.metrics.leases_renewed.inc();
        Ok(Response::new(RenewLeaseResponse { expires_at: Some(timestamp(at)) }))
    }

    async fn complete_lease(
        &self,
        req: Request<CompleteLeaseRequest>,
    ) -> Result<Response<CompleteLeaseResponse>, Status> {
        let lease = lease_ref(&self.auth, &req, req.get_ref().lease.clone())?;
        let done = self.store.complete(&lease).await?;
        self.metrics.leases_completed.with_label_values(&[if done { "true" } else { "false" }]).inc();
        // The job's last chunk: `done` now, not at the sweeper's next pass (`jobs` right
        // after `run` would still say running). Best effort: the sweeper retries.
        if done {
            if let Err(e) = self.store.mark_done_job(lease.job_id).await {
                tracing::warn!(error = %e, job_id = lease.job_id, "marking a finished job failed");
            }
        }
        Ok(Response::new(CompleteLeaseResponse { done }))
    }

    async fn release_lease(
        &self,
        req: Request<ReleaseLeaseRequest>,
    ) -> Result<Response<ReleaseLeaseResponse>, Status> {
        let lease = lease_ref(&self.auth, &req, req.get_ref().lease.clone())?;
        let msg = req.into_inner();
        if msg.failure.len() > 1000 {
            return Err(invalid("failure reason must be at most 1000 bytes"));
        }
        self.store.release(&lease, &msg.failure).await?;
        self.metrics.leases_released.inc();
        Ok(Response::new(ReleaseLeaseResponse {}))
    }

    async fn get_progress(
        &self,
        req: Request<GetProgressRequest>,
    ) -> Result<Response<GetProgressResponse>, Status> {
        self.auth.check(&req, Access::Admin)?;
        let name = req.into_inner().job;
        if name.is_empty() {
            return Err(invalid("job is required"));
        }
        let job = self.store.job(&name).await?;
        let progress = self.store.progress(job.id).await?;
        let left = (progress.total_urls - progress.done_urls).max(0);
        let eta = if left == 0 {
            0.0
        } else if progress.rate_per_second > 0.0 {
            left as f64 / progress.rate_per_second
        } else {
            -1.0
        };
        Ok(Response::new(GetProgressResponse {
            job: Some(job),
            total_urls: progress.total_urls,
            done_urls: progress.done_urls,
            chunks_total: progress.chunks.iter().sum(),
            chunks_pending: progress.chunks[0],
            chunks_leased: progress.chunks[1],
            chunks_done: progress.chunks[2],
            by_status: progress.by_status,
            by_model: progress.by_model,
            rate_per_second: progress.rate_per_second,
            eta_seconds: eta,
            leases_reissued: progress.leases_reissued,
            failed_urls: progress.failed_urls,
            next_ordinal: progress.next_ordinal,
            leases_expired: progress.leases_expired,
        }))
    }

    async fn retry_urls(
        &self,
        req: Request<RetryUrlsRequest>,
    ) -> Result<Response<RetryUrlsResponse>, Status> {
        self.auth.check(&req, Access::Admin)?;
        let msg = req.into_inner();
        if UrlStatus::from_short_name(&msg.status).is_none_or(|s| s == UrlStatus::Unspecified) {
            let names = UrlStatus::finished_names().collect::<Vec<_>>().join(", ");
            return Err(invalid(format!("unknown status {:?}; the statuses are {names}", msg.status)));
        }
        if msg.status == UrlStatus::Ok.short_name() && !msg.force {
            return Err(invalid("retrying status ok deletes stored faces: set force to do it"));
        }
        let job = self.store.job(&msg.job).await?;
        let requeued = self.store.retry(job.id, &msg.status).await?;
        Ok(Response::new(RetryUrlsResponse { requeued }))
    }

    async fn list_leases(
        &self,
        req: Request<ListLeasesRequest>,
    ) -> Result<Response<ListLeasesResponse>, Status> {
        self.auth.check(&req, Access::Admin)?;
        let msg = req.into_inner();
        if !(0..=10_000).contains(&msg.limit) {
            return Err(invalid("limit must be in 0..=10000 (0 = 100)"));
        }
        let job = self.store.job(&msg.job).await?;
        let limit = if msg.limit == 0 { 100 } else { msg.limit as i64 };
        Ok(Response::new(ListLeasesResponse {
            chunks: self.store.list_chunks(job.id, limit, msg.include_done).await?,
        }))
    }

    async fn delete_job(
        &self,
        req: Request<DeleteJobRequest>,
    ) -> Result<Response<DeleteJobResponse>, Status> {
        self.auth.check(&req, Access::Admin)?;
        let job = self.store.job(&req.into_inner().job).await?;
        // `deleting` first: an interruption from here on is finished by the sweeper.
        let urls_deleted = self.store.delete_job(job.id).await?;
        tracing::info!(job = %job.name, urls_deleted, "job deleted");
        Ok(Response::new(DeleteJobResponse { urls_deleted }))
    }

    async fn pause_job(&self, req: Request<PauseJobRequest>) -> Result<Response<PauseJobResponse>, Status> {
        self.auth.check(&req, Access::Admin)?;
        let job = self.transition(&req.into_inner().job, Action::Pause).await?;
        Ok(Response::new(PauseJobResponse { job }))
    }

    async fn resume_job(
        &self,
        req: Request<ResumeJobRequest>,
    ) -> Result<Response<ResumeJobResponse>, Status> {
        self.auth.check(&req, Access::Admin)?;
        let job = self.transition(&req.into_inner().job, Action::Resume).await?;
        Ok(Response::new(ResumeJobResponse { job }))
    }

    async fn cancel_job(
        &self,
        req: Request<CancelJobRequest>,
    ) -> Result<Response<CancelJobResponse>, Status> {
        self.auth.check(&req, Access::Admin)?;
        let name = req.into_inner().job;
        let job = self.store.job(&name).await?;
        let urls_cancelled = self.store.cancel(&job).await?;
        tracing::info!(job = %name, urls_cancelled, "job cancelled");
        Ok(Response::new(CancelJobResponse { job: self.summary(&name).await?, urls_cancelled }))
    }

    async fn list_jobs(&self, req: Request<ListJobsRequest>) -> Result<Response<ListJobsResponse>, Status> {
        self.auth.check(&req, Access::Admin)?;
        Ok(Response::new(ListJobsResponse { jobs: self.store.job_summaries(None).await? }))
    }

    async fn set_job_priority(
        &self,
        req: Request<SetJobPriorityRequest>,
    ) -> Result<Response<SetJobPriorityResponse>, Status> {
        self.auth.check(&req, Access::Admin)?;
        let msg = req.into_inner();
        let job = self.store.job(&msg.job).await?;
        self.store.set_priority(job.id, msg.priority).await?;
        Ok(Response::new(SetJobPriorityResponse { job: self.summary(&msg.job).await? }))
    }

    async fn release_fetcher_leases(
        &self,
        req: Request<ReleaseFetcherLeasesRequest>,
    ) -> Result<Response<ReleaseFetcherLeasesResponse>, Status> {
        // A fetcher restarting gives back its own old leases; an admin anyone's.
        self.auth.check_own_or_admin(&req, &req.get_ref().fetcher_id)?;
        let id = req.get_ref().fetcher_id.clone();
        if id.is_empty() {
            return Err(invalid("fetcher_id is required"));
        }
        let released = self.store.release_owned(&id).await?;
        Ok(Response::new(ReleaseFetcherLeasesResponse { released }))
    }
}

/// A job's models: ids safe for tags and file names, a share in [0, 1] and, when positive,
/// a second model that differs from the first.
fn check_models(m: &ModelSplit) -> Result<(), Status> {
    use facesweep_common::ab::valid_model_id;
    if !valid_model_id(&m.model_id) || !valid_model_id(&m.alt_model_id) {
        return Err(invalid("model ids are at most 64 of A-Z a-z 0-9 . _ -"));
    }
    if !(0.0..=1.0).contains(&m.alt_share) {
        return Err(invalid("alt_share must be between 0 and 1"));
    }
    let ab = m.alt_share > 0.0;
    if ab == m.alt_model_id.is_empty() || (ab && m.alt_model_id == m.model_id) {
        return Err(invalid(
            "an A/B job names a second model, different from the first, with a share above 0",
        ));
    }
    Ok(())
}
