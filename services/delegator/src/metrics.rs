//! The delegator's Prometheus metrics (served by `facesweep_common::metrics`).

use std::sync::LazyLock;

use facesweep_common::metrics::{counter, counter_vec};
use prometheus::{IntCounter, IntCounterVec};

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

/// Registers every metric now, so each appears (at zero) before its first event.
pub fn register() {
    let _ = (&*LEASES_GRANTED, &*LEASES_EXPIRED, &*LEASES_COMPLETED, &*LEASES_RELEASED);
}
