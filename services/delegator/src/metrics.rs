//! The delegator's Prometheus metrics, in its own registry (served by
//! `facesweep_common::metrics` on the delegator's `--metrics-listen`).

use std::sync::LazyLock;

use facesweep_common::metrics::Registry;
use prometheus::{IntCounter, IntCounterVec, IntGauge};

pub static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::default);

pub static LEASES_GRANTED: LazyLock<IntCounter> =
    LazyLock::new(|| REGISTRY.counter("facesweep_leases_granted_total", "Leases handed to fetchers."));
/// Granted leases on a chunk leased before (after an expiry, a release or a partial finish).
pub static LEASES_REISSUED: LazyLock<IntCounter> = LazyLock::new(|| {
    REGISTRY.counter("facesweep_leases_reissued_total", "Granted leases on a chunk that was leased before.")
});
pub static LEASES_RENEWED: LazyLock<IntCounter> =
    LazyLock::new(|| REGISTRY.counter("facesweep_leases_renewed_total", "Lease renewals accepted."));
pub static LEASES_EXPIRED: LazyLock<IntCounter> = LazyLock::new(|| {
    REGISTRY.counter("facesweep_leases_expired_total", "Leases returned by the sweeper after expiry.")
});
pub static LEASES_COMPLETED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    REGISTRY.counter_vec(
        "facesweep_leases_completed_total",
        "Completed leases; done=false when URLs were left open.",
        &["done"],
    )
});
pub static LEASES_RELEASED: LazyLock<IntCounter> =
    LazyLock::new(|| REGISTRY.counter("facesweep_leases_released_total", "Leases given back unfinished."));
pub static URLS_ABANDONED: LazyLock<IntCounter> = LazyLock::new(|| {
    REGISTRY.counter(
        "facesweep_urls_abandoned_total",
        "URLs given the terminal status abandoned after repeated failed single-URL leases.",
    )
});

/// What backlog autoscaling follows (the chart's KEDA ScaledObject for fetchers): every
/// delegator reports the same total, so scalers take the max, not the sum.
pub static BACKLOG_URLS: LazyLock<IntGauge> = LazyLock::new(|| {
    REGISTRY.gauge("facesweep_backlog_urls", "URLs of running jobs without a result yet (all shards).")
});

/// Registers every metric now, so each appears (at zero) before its first event.
pub fn register() {
    let _ = (&*LEASES_GRANTED, &*LEASES_REISSUED, &*LEASES_RENEWED, &*LEASES_EXPIRED);
    let _ = (&*LEASES_COMPLETED, &*LEASES_RELEASED, &*URLS_ABANDONED, &*BACKLOG_URLS);
}
