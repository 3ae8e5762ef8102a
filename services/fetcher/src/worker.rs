//! The lease loop: acquire, fetch + decode + detect every URL, record, complete.

use std::sync::Arc;
use std::time::{Duration, Instant};

use facesweep_common::discovery::Balanced;
use facesweep_common::Shutdown;
use facesweep_proto::delegator_service_client::DelegatorServiceClient;
use facesweep_proto::detector_service_client::DetectorServiceClient;
use facesweep_proto::results_service_client::ResultsServiceClient;
use facesweep_proto::*;
use futures::StreamExt;
use tonic::transport::Channel;
use tracing::field::Empty;
use tracing::{info_span, Instrument};

use facesweep_common::propagation::traced;

use crate::delegators::Delegators;
use crate::detect_client::DetectStream;
use crate::download::Failure;
use crate::fetch::Fetcher;

/// Results sent to the results service per call.
const RECORD_BATCH: usize = 256;

pub struct Worker {
    pub id: String,
    /// The delegator shards (static or discovered); acquisition rotates over them.
    pub delegators: Delegators,
    pub next_delegator: std::sync::atomic::AtomicUsize,
    /// How long a lease in progress may keep working after shutdown starts.
    pub drain_grace: Duration,
    /// Balanced over every detector / results replica.
    pub detector: DetectorServiceClient<Balanced>,
    pub results: ResultsServiceClient<Balanced>,
    pub fetcher: Fetcher,
    pub input: (u32, u32),
    pub concurrency: usize,
    pub lease_max_urls: i32,
    pub idle_poll: Duration,
}

impl Worker {
    /// Gives back leases a previous process under the same id still holds.
    pub async fn reclaim(&self) {
        for mut d in self.delegators.snapshot() {
            let req = ReleaseFetcherLeasesRequest { fetcher_id: self.id.clone() };
            if let Ok(r) = d.release_fetcher_leases(traced(req)).await {
                let n = r.into_inner().released;
                if n > 0 {
                    tracing::info!(released = n, "released leases of a previous run");
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
            idle(shutdown, self.idle_poll * 2).await;
            return;
        }
        let d = self.next_delegator.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % delegators.len();
        let req = AcquireLeaseRequest { fetcher_id: self.id.clone(), max_urls: self.lease_max_urls };
        match delegators[d].clone().acquire_lease(traced(req)).await {
            Ok(r) => match r.into_inner().lease {
                Some(lease) => self.process_lease(lease, d, shutdown).await,
                // Only idle once every shard came back empty.
                None if d + 1 == delegators.len() => idle(shutdown, self.idle_poll).await,
                None => {}
            },
            Err(e) => {
                tracing::warn!(error = %e, "acquire lease failed");
                idle(shutdown, self.idle_poll * 2).await;
            }
        }
    }

    async fn process_lease(&self, lease: Lease, d: usize, shutdown: &Shutdown) {
        let lref =
            LeaseRef { job_id: lease.job_id, chunk_no: lease.chunk_no, fencing_token: lease.fencing_token };
        let span = tracing::Span::current();
        span.record("job", lease.job_id).record("chunk", lease.chunk_no).record("urls", lease.urls.len());
        let started = Instant::now();
        let renewing = Shutdown::new();
        tokio::spawn(
            renew_loop(self.delegators.snapshot(), d, lref, lease.expires_at, renewing.clone())
                .instrument(span.clone()),
        );
        let _stop_renewing = renewing.drop_guard();
        let det = match DetectStream::open(self.detector.clone()).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "no detector; releasing lease");
                self.release(lref, d).await;
                idle(shutdown, self.idle_poll).await;
                return;
            }
        };
        let n = lease.urls.len();
        let job_id = lease.job_id;
        let mut outcomes = futures::stream::iter(lease.urls)
            .map(|u| self.process_url(&det, job_id, u))
            .buffer_unordered(self.concurrency);
        let grace = self.drain_grace;
        let drained = async move {
            shutdown.cancelled().await;
            tokio::time::sleep(grace).await;
        };
        tokio::pin!(drained);
        let mut batch = Vec::with_capacity(RECORD_BATCH);
        let (mut recorded, mut unfinished) = (0, 0);
        loop {
            let outcome = tokio::select! {
                o = outcomes.next() => match o { Some(o) => o, None => break },
                _ = &mut drained => {
                    tracing::warn!("drain grace period over; releasing the rest of the lease");
                    unfinished += 1;
                    break;
                }
            };
            match outcome {
                Some(r) => batch.push(r),
                None => unfinished += 1,
            }
            if batch.len() >= RECORD_BATCH {
                let b = std::mem::take(&mut batch);
                let sent = self.record(b).instrument(info_span!("persist")).await;
                unfinished += RECORD_BATCH - sent;
                recorded += sent;
            }
        }
        drop(outcomes);
        let left = batch.len();
        let sent = self.record(batch).instrument(info_span!("persist")).await;
        recorded += sent;
        unfinished += left - sent;
        if unfinished > 0 {
            // Not the URLs' fault (detector/results down, or draining): no failure is counted.
            tracing::info!(recorded, of = n, "releasing lease with URLs left open");
            self.release(lref, d).await;
            return;
        }
        for mut delegator in rotated(self.delegators.snapshot(), d) {
            match delegator.complete_lease(traced(CompleteLeaseRequest { lease: Some(lref) })).await {
                Ok(r) => {
                    let secs = started.elapsed().as_secs_f32();
                    tracing::info!(recorded, of = n, done = r.into_inner().done, secs, "lease completed");
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

    async fn release(&self, lref: LeaseRef, d: usize) {
        for mut delegator in rotated(self.delegators.snapshot(), d) {
            match delegator.release_lease(traced(ReleaseLeaseRequest { lease: Some(lref) })).await {
                Ok(_) => return,
                Err(e) if e.code() == tonic::Code::FailedPrecondition => return,
                Err(e) => tracing::warn!(error = %e, "release failed"),
            }
        }
        // Unreleased, the lease simply expires and the sweeper returns it.
    }

    /// One URL to its terminal result; `None` when the detector (not the URL) failed,
    /// so the URL stays open and is retried under a later lease.
    async fn process_url(&self, det: &DetectStream, job_id: i64, u: LeaseUrl) -> Option<UrlResult> {
        let base = UrlResult { url_id: u.id, job_id, ..Default::default() };
        let fail = |f: Failure, base: UrlResult| UrlResult {
            status: f.status as i32,
            reason: f.reason,
            http_status: f.http_status,
            ..base
        };
        let (fetched, st) =
            self.fetcher.fetch(&u.url, self.input).instrument(info_span!("fetch", url_id = u.id)).await;
        let base = UrlResult {
            http_status: st.http_status,
            bytes: st.bytes,
            download_ms: st.download.as_secs_f32() * 1e3,
            decode_ms: st.decode.as_secs_f32() * 1e3,
            ..base
        };
        let lb = match fetched {
            Ok(lb) => lb,
            Err(f) => return Some(fail(f, base)),
        };
        let base = UrlResult { width: lb.original_width, height: lb.original_height, ..base };
        let detect_started = Instant::now();
        match det.detect(lb).instrument(info_span!("detect", url_id = u.id)).await {
            Ok(r) if r.error_code == 0 => Some(UrlResult {
                status: UrlStatus::Ok as i32,
                faces: r.faces,
                model_id: r.model_id,
                detect_ms: detect_started.elapsed().as_secs_f32() * 1e3,
                ..base
            }),
            // The detector judged this tensor invalid: terminal, with its reason.
            Ok(r) if r.error_code == tonic::Code::InvalidArgument as i32 => {
                Some(fail(Failure::new(UrlStatus::DetectError, r.error), base))
            }
            Ok(r) => {
                tracing::warn!(url_id = u.id, error = %r.error, "detector error; will retry");
                None
            }
            Err(e) => {
                tracing::warn!(url_id = u.id, error = %e, "detector unavailable; will retry");
                None
            }
        }
    }

    /// Records a batch, retrying transient failures for ~30 s; returns how many were stored.
    async fn record(&self, batch: Vec<UrlResult>) -> usize {
        if batch.is_empty() {
            return 0;
        }
        let n = batch.len();
        let mut delay = Duration::from_millis(100);
        for _ in 0..12 {
            match self.results.clone().record(traced(RecordRequest { results: batch.clone() })).await {
                Ok(_) => return n,
                Err(e) => {
                    tracing::warn!(error = %e, "record failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        // Unrecorded URLs stay open in their chunk and are leased again.
        0
    }
}

/// Any delegator can renew/complete/release (fencing tokens make it safe): try all, `first` first.
fn rotated<T>(mut all: Vec<T>, first: usize) -> Vec<T> {
    if !all.is_empty() {
        let n = all.len();
        all.rotate_left(first % n);
    }
    all
}

async fn idle(shutdown: &Shutdown, d: Duration) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}

/// Renews at a third of the remaining lifetime until `stop`, on any delegator that answers.
async fn renew_loop(
    delegators: Vec<DelegatorServiceClient<Channel>>,
    first: usize,
    lease: LeaseRef,
    expires_at: Option<prost_types::Timestamp>,
    stop: Shutdown,
) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let ttl = expires_at
        .map(|t| Duration::from_secs(t.seconds.max(0) as u64).saturating_sub(now))
        .unwrap_or(Duration::from_secs(30))
        .max(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(ttl / 3) => {}
        }
        for mut d in rotated(delegators.clone(), first) {
            match d.renew_lease(traced(RenewLeaseRequest { lease: Some(lease) })).await {
                Ok(_) => break,
                Err(e) if e.code() == tonic::Code::FailedPrecondition => {
                    tracing::warn!(error = %e, "lease lost");
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "lease renewal failed"),
            }
        }
    }
}
