//! Keeping a lease alive while its URLs are worked, and noticing when it is lost: renewals
//! at a third of its lifetime on any delegator that answers (fencing tokens and secrets make
//! any of them safe to ask).

use std::time::{Duration, Instant};

use facesweep_common::grpc::within;
use facesweep_common::propagation::traced;
use facesweep_common::Shutdown;
use facesweep_proto::delegator_service_client::DelegatorServiceClient;
use facesweep_proto::{LeaseRef, RenewLeaseRequest};
use tonic::transport::Channel;

/// Any delegator can renew/complete/release (fencing tokens make it safe): try all, `first` first.
pub(crate) fn rotated<T>(mut all: Vec<T>, first: usize) -> Vec<T> {
    if !all.is_empty() {
        let n = all.len();
        all.rotate_left(first % n);
    }
    all
}

/// The lease to keep alive, where to ask first, and how long each ask may take.
pub(crate) struct Renewal {
    pub delegators: Vec<DelegatorServiceClient<Channel>>,
    pub first: usize,
    pub lease: LeaseRef,
    pub expires_at: Option<prost_types::Timestamp>,
    pub rpc_timeout: Duration,
    /// Cancelled once the lease is known lost: refused, or past its expiry unrenewed.
    pub lost: Shutdown,
}

impl Renewal {
    /// Renews at a third of the remaining lifetime until `stop`, on any delegator that answers.
    /// A refusal, or no answer until the lease's lifetime has passed, marks it lost: its work
    /// stops within one renewal interval (the chunk is someone else's by then).
    pub async fn run(self, stop: Shutdown) {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let ttl = self
            .expires_at
            .map(|t| Duration::from_secs(t.seconds.max(0) as u64).saturating_sub(now))
            .unwrap_or(Duration::from_secs(30))
            .max(Duration::from_secs(1));
        let mut valid_until = Instant::now() + ttl;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(ttl / 3) => {}
            }
            match self.renew_once(ttl).await {
                Ok(true) => valid_until = Instant::now() + ttl,
                Ok(false) => {}
                Err(()) => return self.lost.cancel(),
            }
            if Instant::now() >= valid_until {
                tracing::warn!("lease not renewed within its lifetime; stopping its work");
                return self.lost.cancel();
            }
        }
    }

    /// One renewal on any delegator that answers: `Ok(true)` renewed, `Ok(false)` none
    /// answered, `Err` one refused (the lease is lost).
    async fn renew_once(&self, ttl: Duration) -> Result<bool, ()> {
        for mut d in rotated(self.delegators.clone(), self.first) {
            let req = traced(RenewLeaseRequest { lease: Some(self.lease.clone()) });
            match within(self.rpc_timeout.min(ttl / 3), d.renew_lease(req)).await {
                Ok(_) => return Ok(true),
                Err(e) if e.code() == tonic::Code::FailedPrecondition => {
                    // The delegator's words (lost, revoked, or its job paused), not tonic's.
                    tracing::warn!(reason = e.message(), "lease given up");
                    return Err(());
                }
                Err(e) => tracing::warn!(error = %e, "lease renewal failed"),
            }
        }
        Ok(false)
    }
}
