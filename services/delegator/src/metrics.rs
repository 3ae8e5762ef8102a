//! The delegator's Prometheus metrics (served by `facesweep_common::metrics`).

use std::sync::LazyLock;

use facesweep_common::metrics::{counter, counter_vec, gauge};
use prometheus::{IntCounter, IntCounterVec, IntGauge};

pub static LEASES_GRANTED: LazyLock<IntCounter> =
    LazyLock::new(|| counter("facesweep_leases_granted_total", "Leases handed to fetchers."));
pub static LEASES_EXPIRED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter("facesweep_leases_expired_total", "Leases returned by the sweeper after expiry.")
});
pub static LEASES_COMPLETED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "facesweep_leases_completed_total",
        "Completed leases; done=false when URLs were left open.",
        &["done"],
    )
});
pub static LEASES_RELEASED: LazyLock<IntCounter> =
    LazyLock::new(|| counter("facesweep_leases_released_total", "Leases given back unfinished."));

/// What backlog autoscaling follows (the chart's KEDA ScaledObject for fetchers): every
/// delegator reports the same total, so scalers take the max, not the sum.
pub static BACKLOG_URLS: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge("facesweep_backlog_urls", "URLs of running jobs without a result yet (all shards).")
});

/// Registers every metric now, so each appears (at zero) before its first event.
pub fn register() {
    let _ = (&*LEASES_GRANTED, &*LEASES_EXPIRED, &*LEASES_COMPLETED, &*LEASES_RELEASED, &*BACKLOG_URLS);
}
