//! The lease loop: acquire, fetch + decode + detect every URL, record, complete.

use std::sync::Arc;
use std::time::{Duration, Instant};

use facesweep_common::Shutdown;
use facesweep_proto::delegator_service_client::DelegatorServiceClient;
use facesweep_proto::detector_service_client::DetectorServiceClient;
use facesweep_proto::results_service_client::ResultsServiceClient;
use facesweep_proto::*;
use futures::StreamExt;
use tokio::sync::Semaphore;
use tonic::transport::Channel;

use crate::decode::decode_letterbox;
use crate::detect_client::DetectStream;
use crate::download::{download, DownloadConfig, Failure};

/// Results sent to the results service per call.
const RECORD_BATCH: usize = 256;

pub struct Worker {
    pub id: String,
    pub delegator: DelegatorServiceClient<Channel>,
    pub detector: DetectorServiceClient<Channel>,
    pub results: ResultsServiceClient<Channel>,
    pub http: reqwest::Client,
    pub download: DownloadConfig,
    pub decode_slots: Arc<Semaphore>,
    pub input: (u32, u32),
    pub concurrency: usize,
    pub max_pixels: u64,
    pub lease_max_urls: i32,
    pub idle_poll: Duration,
}

impl Worker {
    /// Takes leases until shutdown; a lease in progress is finished first.
    pub async fn lease_loop(self: Arc<Self>, shutdown: Shutdown) {
        while !shutdown.is_cancelled() {
            let req = AcquireLeaseRequest { fetcher_id: self.id.clone(), max_urls: self.lease_max_urls };
            match self.delegator.clone().acquire_lease(req).await {
                Ok(r) => match r.into_inner().lease {
                    Some(lease) => self.process_lease(lease).await,
                    None => idle(&shutdown, self.idle_poll).await,
                },
                Err(e) => {
                    tracing::warn!(error = %e, "acquire lease failed");
                    idle(&shutdown, self.idle_poll * 4).await;
                }
            }
        }
    }

    async fn process_lease(&self, lease: Lease) {
        let lref =
            LeaseRef { job_id: lease.job_id, chunk_no: lease.chunk_no, fencing_token: lease.fencing_token };
        let span =
            tracing::info_span!("lease", job = lease.job_id, chunk = lease.chunk_no, urls = lease.urls.len());
        let _e = span.enter();
        let started = Instant::now();
        let renewing = Shutdown::new();
        tokio::spawn(renew_loop(self.delegator.clone(), lref, lease.expires_at, renewing.clone()));
        let _stop_renewing = renewing.drop_guard();
        let det = match DetectStream::open(self.detector.clone()).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "no detector; releasing lease");
                let _ = self.delegator.clone().release_lease(ReleaseLeaseRequest { lease: Some(lref) }).await;
                tokio::time::sleep(self.idle_poll).await;
                return;
            }
        };
        let n = lease.urls.len();
        let job_id = lease.job_id;
        let mut outcomes = futures::stream::iter(lease.urls)
            .map(|u| self.process_url(&det, job_id, u))
            .buffer_unordered(self.concurrency);
        let mut batch = Vec::with_capacity(RECORD_BATCH);
        let mut recorded = 0;
        while let Some(outcome) = outcomes.next().await {
            batch.extend(outcome);
            if batch.len() >= RECORD_BATCH {
                recorded += self.record(std::mem::take(&mut batch)).await;
            }
        }
        recorded += self.record(batch).await;
        match self.delegator.clone().complete_lease(CompleteLeaseRequest { lease: Some(lref) }).await {
            Ok(r) => tracing::info!(
                recorded,
                of = n,
                done = r.into_inner().done,
                secs = started.elapsed().as_secs_f32(),
                "lease completed"
            ),
            Err(e) => tracing::warn!(error = %e, "complete lease failed"),
        }
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
        let got = match download(&self.http, &self.download, &u.url).await {
            Ok(d) => d,
            Err(f) => return Some(fail(f, base)),
        };
        let base = UrlResult {
            http_status: got.http_status,
            bytes: got.body.len() as u64,
            download_ms: got.elapsed.as_secs_f32() * 1e3,
            ..base
        };
        let decode_started = Instant::now();
        let (w, h, max_pixels) = (self.input.0, self.input.1, self.max_pixels);
        let permit = self.decode_slots.clone().acquire_owned().await.ok()?;
        let body = got.body;
        let decoded = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            decode_letterbox(&body, w, h, max_pixels)
        })
        .await
        .unwrap_or_else(|e| Err(Failure::new(UrlStatus::DecodeError, format!("decoder panicked: {e}"))));
        let lb = match decoded {
            Ok(lb) => lb,
            Err(f) => return Some(fail(f, base)),
        };
        let base = UrlResult {
            width: lb.original_width,
            height: lb.original_height,
            decode_ms: decode_started.elapsed().as_secs_f32() * 1e3,
            ..base
        };
        let detect_started = Instant::now();
        match det.detect(lb).await {
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

    /// Records a batch, retrying transient failures; returns how many were sent.
    async fn record(&self, batch: Vec<UrlResult>) -> usize {
        if batch.is_empty() {
            return 0;
        }
        let n = batch.len();
        let mut delay = Duration::from_millis(100);
        for _ in 0..8 {
            match self.results.clone().record(RecordRequest { results: batch.clone() }).await {
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

async fn idle(shutdown: &Shutdown, d: Duration) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}

/// Renews at a third of the remaining lifetime until `stop`.
async fn renew_loop(
    mut delegator: DelegatorServiceClient<Channel>,
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
        if let Err(e) = delegator.renew_lease(RenewLeaseRequest { lease: Some(lease) }).await {
            tracing::warn!(error = %e, "lease renewal failed");
            if e.code() == tonic::Code::FailedPrecondition {
                return;
            }
        }
    }
}
