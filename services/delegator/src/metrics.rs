//! One delegator's Prometheus metrics, in its own registry (served by
//! `facesweep_common::metrics` on that delegator's `--metrics-listen`). Built per instance by
//! `spawn`: two delegators in one process count apart.

use facesweep_common::metrics::Registry;
use prometheus::{IntCounter, IntCounterVec, IntGauge};

pub struct Metrics {
    pub registry: Registry,
    pub leases_granted: IntCounter,
    /// Granted leases on a chunk leased before (after an expiry, a release or a partial finish).
    pub leases_reissued: IntCounter,
    pub leases_renewed: IntCounter,
    pub leases_expired: IntCounter,
    pub leases_completed: IntCounterVec,
    pub leases_released: IntCounter,
    pub urls_abandoned: IntCounter,
    /// What backlog autoscaling follows (the chart's KEDA ScaledObject for fetchers): every
    /// delegator reports the same total, so scalers take the max, not the sum.
    pub backlog_urls: IntGauge,
}

impl Metrics {
    /// Every metric registered now, so each appears (at zero) before its first event.
    pub fn new() -> Self {
        let r = Registry::default();
        Metrics {
            leases_granted: r.counter("facesweep_leases_granted_total", "Leases handed to fetchers."),
            leases_reissued: r.counter(
                "facesweep_leases_reissued_total",
                "Granted leases on a chunk that was leased before.",
            ),
            leases_renewed: r.counter("facesweep_leases_renewed_total", "Lease renewals accepted."),
            leases_expired: r
                .counter("facesweep_leases_expired_total", "Leases returned by the sweeper after expiry."),
            leases_completed: r.counter_vec(
                "facesweep_leases_completed_total",
                "Completed leases; done=false when URLs were left open.",
                &["done"],
            ),
            leases_released: r.counter("facesweep_leases_released_total", "Leases given back unfinished."),
            urls_abandoned: r.counter(
                "facesweep_urls_abandoned_total",
                "URLs given the terminal status abandoned after repeated failed single-URL leases.",
            ),
            backlog_urls: r
                .gauge("facesweep_backlog_urls", "URLs of running jobs without a result yet (all shards)."),
            registry: r,
        }
    }
}
