//! The lease loop: acquire, fetch + decode + detect every URL, record, complete.
//!
//! Every wait here is bounded: delegator and results calls by `rpc_timeout`, each image's
//! detection by `detect_timeout`, and the lease as a whole by a watchdog that gives it back
//! when no URL finishes for `stall_timeout`, so a stuck worker never pins a chunk while its
//! renewals keep the lease alive.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use facesweep_common::discovery::Balanced;
use facesweep_common::grpc::within;
use facesweep_common::propagation::traced;
use facesweep_common::Shutdown;
use facesweep_proto::results_service_client::ResultsServiceClient;
use facesweep_proto::*;
use futures::StreamExt;
use rand::Rng;
use tracing::field::Empty;
use tracing::{info_span, Instrument};

use crate::delegators::Delegators;
use crate::detectors::{Lanes, Models, NoLane};
use crate::renewal::{rotated, Renewal};
use facesweep_imagefetch::fetch::Fetcher;
use facesweep_imagefetch::outcome::Failure;

/// How a worker paces and bounds itself (from the fetcher's `Config`).
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    pub id: String,
    pub concurrency: usize,
    pub lease_max_urls: i32,
    pub idle_poll: Duration,
    /// How long a lease in progress may keep working after shutdown starts.
    pub drain_grace: Duration,
    pub rpc_timeout: Duration,
    pub detect_timeout: Duration,
    pub stall_timeout: Duration,
    /// A batch of results is recorded when it holds this many URLs…
    pub record_batch: usize,
    /// …or when its oldest result has waited this long, whichever comes first.
    pub record_interval: Duration,
    /// Mean pause after giving a lease back for want of a detector (jittered ±50%).
    pub release_backoff: Duration,
}

pub struct Worker {
    cfg: WorkerConfig,
    /// The delegator shards (static or discovered); acquisition rotates over them.
    delegators: Delegators,
    next_delegator: AtomicUsize,
    /// Detector pools by model; results balanced over every replica.
    models: Models,
    results: ResultsServiceClient<Balanced>,
    fetcher: Fetcher,
}

/// How one URL of a lease ended.
enum UrlOutcome {
    Done(UrlResult),
    /// No terminal result yet: the URL stays open for a later lease.
    Open(LeftOpen),
}

/// Why URLs of a lease were left open, which decides what giving the lease back costs them.
#[derive(Clone, Debug, PartialEq, Eq)]
enum LeftOpen {
    /// Shutdown's grace period ended: no fault of the URLs.
    Drained,
    /// A part of the mesh (detector, results) did not answer: never counted against a URL.
    Infra(String),
    /// The URLs' own failure (the detector's error on an image, a stall, an unserved model):
    /// counted, so a poison URL ends `abandoned`.
    Failed(String),
    /// The lease was revoked or re-issued: nothing to give back, its work stops at once.
    Lost,
}

impl LeftOpen {
    /// Of two reasons, the one that decides: a lost lease, then an outage (so an outage
    /// never counts against URLs that also failed during it), then a failure.
    fn worst(self, other: LeftOpen) -> LeftOpen {
        let rank = |l: &LeftOpen| match l {
            LeftOpen::Drained => 0,
            LeftOpen::Failed(_) => 1,
            LeftOpen::Infra(_) => 2,
            LeftOpen::Lost => 3,
        };
        if rank(&other) > rank(&self) {
            other
        } else {
            self
        }
    }
}

/// How working a lease's URLs ended.
struct LeaseRun {
    recorded: usize,
    left_open: Option<LeftOpen>,
}

impl LeaseRun {
    fn leave_open(&mut self, why: LeftOpen) {
        self.left_open = Some(match self.left_open.take() {
            Some(prev) => prev.worst(why),
            None => why,
        });
    }
}

impl Worker {
    pub fn new(
        cfg: WorkerConfig,
        delegators: Delegators,
        models: Models,
        results: ResultsServiceClient<Balanced>,
        fetcher: Fetcher,
    ) -> Self {
        Worker { cfg, delegators, next_delegator: AtomicUsize::new(0), models, results, fetcher }
    }

    /// Gives back leases a previous process under the same id still holds.
    pub async fn reclaim(&self) {
        for mut d in self.delegators.snapshot() {
            let req = ReleaseFetcherLeasesRequest { fetcher_id: self.cfg.id.clone() };
            if let Ok(r) = within(self.cfg.rpc_timeout, d.release_fetcher_leases(traced(req))).await {
                let released = r.into_inner().released;
                if released > 0 {
                    tracing::info!(released, "released leases of a previous run");
                }
                return;
            }
        }
    }

    /// Takes leases until shutdown; a lease in progress is finished (or released) first.
    pub async fn lease_loop(self: Arc<Self>, shutdown: Shutdown) {
        while !shutdown.is_cancelled() {
            // One trace per lease: acquire, fetch/decode/detect per URL, persist, complete.
            let span = tracing::info_span!(parent: None, "lease", job = Empty, chunk = Empty, urls = Empty);
            self.poll_once(&shutdown).instrument(span).await;
        }
    }

    async fn poll_once(&self, shutdown: &Shutdown) {
        let delegators = self.delegators.snapshot();
        if delegators.is_empty() {
            tracing::warn!("no delegator known yet");
            idle(shutdown, self.cfg.idle_poll * 2).await;
            return;
        }
        let shard = self.next_delegator.fetch_add(1, Ordering::Relaxed) % delegators.len();
        let req = AcquireLeaseRequest { fetcher_id: self.cfg.id.clone(), max_urls: self.cfg.lease_max_urls };
        match within(self.cfg.rpc_timeout, delegators[shard].clone().acquire_lease(traced(req))).await {
            Ok(r) => match r.into_inner().lease {
                Some(lease) => self.process_lease(lease, shard, shutdown).await,
                // Only idle once every shard came back empty.
                None if shard + 1 == delegators.len() => idle(shutdown, self.cfg.idle_poll).await,
                None => {}
            },
            Err(e) => {
                tracing::warn!(error = %e, "acquire lease failed");
                idle(shutdown, self.cfg.idle_poll * 2).await;
            }
        }
    }

    async fn process_lease(&self, lease: Lease, shard: usize, shutdown: &Shutdown) {
        let lref = LeaseRef {
            job_id: lease.job_id,
            chunk_no: lease.chunk_no,
            fencing_token: lease.fencing_token,
            secret: lease.secret.clone(),
            fetcher_id: self.cfg.id.clone(),
        };
        let span = tracing::Span::current();
        span.record("job", lease.job_id).record("chunk", lease.chunk_no).record("urls", lease.urls.len());
        let started = Instant::now();
        let renewing = Shutdown::new();
        let lost = Shutdown::new();
        let renewal = Renewal {
            delegators: self.delegators.snapshot(),
            first: shard,
            lease: lref.clone(),
            expires_at: lease.expires_at,
            rpc_timeout: self.cfg.rpc_timeout,
            lost: lost.clone(),
        };
        tokio::spawn(renewal.run(renewing.clone()).instrument(span.clone()));
        let _stop_renewing = renewing.drop_guard();
        let lanes = self.models.open_lanes(&lease, self.cfg.detect_timeout).await;
        if let Some(why) = lanes.all_unreachable() {
            tracing::warn!(error = %why, "no detector; releasing lease");
            self.release(&lref, shard, None).await;
            self.back_off(shutdown).await;
            return;
        }
        let urls = lease.urls.len();
        let run = self.work_urls(&lanes, lease, &lref, shutdown, &lost).await;
        let recorded = run.recorded;
        match run.left_open {
            None => self.complete(&lref, shard, recorded, urls, started).await,
            Some(LeftOpen::Lost) => tracing::warn!(recorded, of = urls, "lease lost; its work stopped"),
            Some(LeftOpen::Drained) => self.release(&lref, shard, None).await,
            Some(LeftOpen::Infra(why)) => {
                tracing::warn!(recorded, of = urls, why, "releasing lease (not the URLs' fault)");
                self.release(&lref, shard, None).await;
                self.back_off(shutdown).await;
            }
            Some(LeftOpen::Failed(why)) => {
                tracing::info!(recorded, of = urls, why, "releasing lease with URLs left open");
                // A failed chunk waits on the delegator (retry_after) before anyone re-leases it.
                self.release(&lref, shard, Some(&why)).await;
            }
        }
    }

    /// Runs every URL of the lease and records results in small batches (`record_batch`
    /// URLs or `record_interval`, whichever first, so results show up live), until done,
    /// drained, stalled (no URL finished within `stall_timeout`) or lost (dropping the stream
    /// cancels the downloads in flight, freeing their slots at once).
    async fn work_urls(
        &self,
        lanes: &Lanes,
        lease: Lease,
        lref: &LeaseRef,
        shutdown: &Shutdown,
        lost: &Shutdown,
    ) -> LeaseRun {
        let job_id = lease.job_id;
        let mut outcomes = futures::stream::iter(lease.urls)
            .map(|u| self.process_url(lanes, job_id, u))
            .buffer_unordered(self.cfg.concurrency);
        let drained = drained(shutdown, self.cfg.drain_grace);
        tokio::pin!(drained);
        let mut run = LeaseRun { recorded: 0, left_open: None };
        let mut batch = Batch::new(self.cfg.record_batch, self.cfg.record_interval);
        let mut last_done = tokio::time::Instant::now();
        loop {
            let stalled = tokio::time::sleep_until(last_done + self.cfg.stall_timeout);
            let outcome = tokio::select! {
                o = outcomes.next() => match o {
                    Some(o) => o,
                    None => break,
                },
                _ = batch.due() => {
                    self.flush(&mut batch, lref, &mut run, shutdown, lost).await;
                    continue;
                }
                _ = stalled => {
                    let why = format!("no URL of the lease finished within {:?}", self.cfg.stall_timeout);
                    tracing::warn!("{why}; releasing the lease");
                    run.leave_open(LeftOpen::Failed(why));
                    break;
                }
                _ = &mut drained => {
                    tracing::warn!("drain grace period over; releasing the rest of the lease");
                    run.leave_open(LeftOpen::Drained);
                    break;
                }
                _ = lost.cancelled() => {
                    run.leave_open(LeftOpen::Lost);
                    break;
                }
            };
            last_done = tokio::time::Instant::now();
            match outcome {
                UrlOutcome::Done(r) => batch.push(r),
                UrlOutcome::Open(why) => run.leave_open(why),
            }
            if batch.full() {
                self.flush(&mut batch, lref, &mut run, shutdown, lost).await;
            }
        }
        drop(outcomes);
        if run.left_open != Some(LeftOpen::Lost) {
            self.flush(&mut batch, lref, &mut run, shutdown, lost).await;
        }
        run
    }

    async fn flush(
        &self,
        batch: &mut Batch,
        lease: &LeaseRef,
        run: &mut LeaseRun,
        shutdown: &Shutdown,
        lost: &Shutdown,
    ) {
        let results = batch.take();
        let count = results.len();
        match self.record(results, lease, shutdown, lost).instrument(info_span!("persist")).await {
            Ok(()) => run.recorded += count,
            Err(why) => run.leave_open(why),
        }
    }

    async fn complete(&self, lref: &LeaseRef, shard: usize, recorded: usize, of: usize, started: Instant) {
        for mut delegator in rotated(self.delegators.snapshot(), shard) {
            let req = traced(CompleteLeaseRequest { lease: Some(lref.clone()) });
            match within(self.cfg.rpc_timeout, delegator.complete_lease(req)).await {
                Ok(r) => {
                    let secs = started.elapsed().as_secs_f32();
                    tracing::info!(recorded, of, done = r.into_inner().done, secs, "lease completed");
                    return;
                }
                Err(e) if e.code() == tonic::Code::FailedPrecondition => {
                    tracing::warn!(error = %e, "lease lost before completion");
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "complete lease failed; trying another delegator"),
            }
        }
    }

    /// Gives the lease back; a `failure` counts against its URLs (on the wire: non-empty).
    async fn release(&self, lref: &LeaseRef, shard: usize, failure: Option<&str>) {
        let failure = failure.unwrap_or_default().to_string();
        for mut delegator in rotated(self.delegators.snapshot(), shard) {
            let req = traced(ReleaseLeaseRequest { lease: Some(lref.clone()), failure: failure.clone() });
            match within(self.cfg.rpc_timeout, delegator.release_lease(req)).await {
                Ok(_) => return,
                Err(e) if e.code() == tonic::Code::FailedPrecondition => return,
                Err(e) => tracing::warn!(error = %e, "release failed"),
            }
        }
        // Unreleased, the lease simply expires and the sweeper returns it.
    }

    /// With no detector reachable: a jittered pause before leasing again.
    async fn back_off(&self, shutdown: &Shutdown) {
        let jitter = rand::thread_rng().gen_range(0.5..1.5);
        idle(shutdown, self.cfg.release_backoff.mul_f64(jitter)).await;
    }

    /// One URL to its terminal result, or left open: `Infra` when its detector did not
    /// answer, `Failed` when the detector failed on it or none serves its model.
    async fn process_url(&self, lanes: &Lanes, job_id: i64, u: LeaseUrl) -> UrlOutcome {
        let (det, shape) = match lanes.get(&u.model_id) {
            Ok(lane) => lane,
            Err(NoLane::Unreachable(why)) => return UrlOutcome::Open(LeftOpen::Infra(why.to_string())),
            Err(NoLane::Unserved(why)) => return UrlOutcome::Open(LeftOpen::Failed(why.to_string())),
        };
        let base = UrlResult { url_id: u.id, job_id, ..Default::default() };
        let (fetched, st) =
            self.fetcher.fetch(&u.url, *shape).instrument(info_span!("fetch", url_id = u.id)).await;
        let base = UrlResult {
            http_status: st.http_status,
            bytes: st.bytes,
            download_ms: st.download.as_secs_f32() * 1e3,
            decode_ms: st.decode.as_secs_f32() * 1e3,
            ..base
        };
        let letterboxed = match fetched {
            Ok(image) => image,
            Err(f) => return UrlOutcome::Done(failed(f, base)),
        };
        let base =
            UrlResult { width: letterboxed.original_width, height: letterboxed.original_height, ..base };
        let detect_started = Instant::now();
        match det.detect(letterboxed).instrument(info_span!("detect", url_id = u.id)).await {
            Ok(r) if r.error_code == 0 => UrlOutcome::Done(UrlResult {
                status: UrlStatus::Ok as i32,
                faces: r.faces,
                model_id: r.model_id,
                detect_ms: detect_started.elapsed().as_secs_f32() * 1e3,
                ..base
            }),
            // The detector judged this tensor invalid: terminal, with its reason.
            Ok(r) if r.error_code == tonic::Code::InvalidArgument as i32 => {
                UrlOutcome::Done(failed(Failure::new(UrlStatus::DetectError, r.error), base))
            }
            Ok(r) => {
                tracing::warn!(url_id = u.id, error = %r.error, "detector error; will retry");
                UrlOutcome::Open(detector_error(r.error_code, r.error))
            }
            Err(e) => {
                tracing::warn!(url_id = u.id, error = %e, "detector unavailable; will retry");
                UrlOutcome::Open(LeftOpen::Infra(format!("detector unreachable: {e}")))
            }
        }
    }

    /// Records a batch under its lease. A results outage is waited out (jittered backoff)
    /// for up to `stall_timeout` while the lease lives: it is nobody's fault, so it must not
    /// cost the URLs an attempt, nor their downloads a second time.
    async fn record(
        &self,
        batch: Vec<UrlResult>,
        lease: &LeaseRef,
        shutdown: &Shutdown,
        lost: &Shutdown,
    ) -> Result<(), LeftOpen> {
        if batch.is_empty() {
            return Ok(());
        }
        let deadline = Instant::now() + self.cfg.stall_timeout;
        let mut delay = Duration::from_millis(100);
        loop {
            let req = traced(RecordRequest { results: batch.clone(), lease: Some(lease.clone()) });
            let e = match within(self.cfg.rpc_timeout, self.results.clone().record(req)).await {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            match e.code() {
                // The lease moved on (expired, re-issued, revoked): its new holder records these.
                tonic::Code::FailedPrecondition => {
                    tracing::warn!(error = %e, "lease lost while recording");
                    return Err(LeftOpen::Lost);
                }
                tonic::Code::InvalidArgument => {
                    return Err(LeftOpen::Failed(format!("results refused the batch: {}", e.message())))
                }
                _ if Instant::now() + delay > deadline => {
                    let why =
                        format!("results unreachable for {:?}: {}", self.cfg.stall_timeout, e.message());
                    return Err(LeftOpen::Infra(why));
                }
                _ => tracing::warn!(error = %e, "record failed; retrying"),
            }
            let jitter = rand::thread_rng().gen_range(0.5..1.5);
            tokio::select! {
                _ = lost.cancelled() => return Err(LeftOpen::Lost),
                _ = shutdown.cancelled() => return Err(LeftOpen::Drained),
                _ = tokio::time::sleep(delay.mul_f64(jitter)) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }
}

/// Finished results waiting to be recorded, with the moment the oldest of them finished.
struct Batch {
    results: Vec<UrlResult>,
    oldest: Option<tokio::time::Instant>,
    max: usize,
    interval: Duration,
}

impl Batch {
    fn new(max: usize, interval: Duration) -> Self {
        Batch { results: Vec::with_capacity(max), oldest: None, max, interval }
    }

    fn push(&mut self, r: UrlResult) {
        self.oldest.get_or_insert_with(tokio::time::Instant::now);
        self.results.push(r);
    }

    fn full(&self) -> bool {
        self.results.len() >= self.max
    }

    /// Resolves when the oldest result has waited `interval`; never while empty.
    async fn due(&self) {
        match self.oldest {
            Some(t) => tokio::time::sleep_until(t + self.interval).await,
            None => std::future::pending().await,
        }
    }

    fn take(&mut self) -> Vec<UrlResult> {
        self.oldest = None;
        std::mem::take(&mut self.results)
    }
}

/// A detector's per-image error: overload or unavailability is an outage; anything else
/// (an internal error on this image) may be the image's own fault and counts.
fn detector_error(code: i32, error: String) -> LeftOpen {
    use tonic::Code;
    match Code::from_i32(code) {
        Code::ResourceExhausted | Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
            LeftOpen::Infra(format!("detector busy or unavailable: {error}"))
        }
        _ => LeftOpen::Failed(format!("detector failed on a URL: {error}")),
    }
}

fn failed(f: Failure, base: UrlResult) -> UrlResult {
    UrlResult { status: f.status as i32, reason: f.reason, http_status: f.http_status, ..base }
}

/// Resolves when shutdown's grace period for work in progress is over.
async fn drained(shutdown: &Shutdown, grace: Duration) {
    shutdown.cancelled().await;
    tokio::time::sleep(grace).await;
}

async fn idle(shutdown: &Shutdown, d: Duration) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}
