//! The fetcher's Prometheus metrics, in its own registry (served by
//! `facesweep_common::metrics` on the fetcher's `--metrics-listen`, with discovery's).

use std::sync::LazyLock;

use facesweep_common::metrics::{seconds, Registry};
use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge};

pub static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::default);

pub static FETCH_IN_FLIGHT: LazyLock<IntGauge> =
    LazyLock::new(|| REGISTRY.gauge("facesweep_fetch_in_flight", "URLs being downloaded or decoded now."));
pub static FETCH_RESULTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    REGISTRY.counter_vec(
        "facesweep_fetch_results_total",
        "URLs fetched, by outcome (ok or failure class).",
        &["status"],
    )
});
pub static FETCH_BYTES: LazyLock<IntCounter> =
    LazyLock::new(|| REGISTRY.counter("facesweep_fetch_bytes_total", "Body bytes downloaded."));
pub static FETCH_DOWNLOAD_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    REGISTRY.histogram(
        "facesweep_fetch_download_seconds",
        "Download time per URL, retries included.",
        seconds(),
    )
});
pub static FETCH_DECODE_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    REGISTRY.histogram("facesweep_fetch_decode_seconds", "Decode + letterbox time per image.", seconds())
});

/// Registers every metric now, so each appears (at zero) before its first event.
pub fn register() {
    let _ =
        (&*FETCH_IN_FLIGHT, &*FETCH_RESULTS, &*FETCH_BYTES, &*FETCH_DOWNLOAD_SECONDS, &*FETCH_DECODE_SECONDS);
    facesweep_common::metrics::register_discovery(&REGISTRY);
}
