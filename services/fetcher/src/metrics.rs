//! The fetcher's Prometheus metrics (served by `facesweep_common::metrics`).

use std::sync::LazyLock;

use facesweep_common::metrics::{counter_vec, gauge, histogram, seconds};
use prometheus::{Histogram, IntCounterVec, IntGauge};

pub static FETCH_IN_FLIGHT: LazyLock<IntGauge> =
    LazyLock::new(|| gauge("facesweep_fetch_in_flight", "URLs being downloaded or decoded now."));
pub static FETCH_RESULTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "facesweep_fetch_results_total",
        "URLs fetched, by outcome (ok or failure class).",
        &["status"],
    )
});
pub static FETCH_DOWNLOAD_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    histogram("facesweep_fetch_download_seconds", "Download time per URL, retries included.", seconds())
});
pub static FETCH_DECODE_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    histogram("facesweep_fetch_decode_seconds", "Decode + letterbox time per image.", seconds())
});

/// Registers every metric now, so each appears (at zero) before its first event.
pub fn register() {
    let _ = (&*FETCH_IN_FLIGHT, &*FETCH_RESULTS, &*FETCH_DOWNLOAD_SECONDS, &*FETCH_DECODE_SECONDS);
}
