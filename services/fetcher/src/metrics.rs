//! The fetcher's Prometheus metrics, in its own registry (served by
//! `facesweep_common::metrics` on the fetcher's `--metrics-listen`, with discovery's).

use std::sync::LazyLock;

use facesweep_common::metrics::{seconds, Registry};
use facesweep_imagefetch::fetch::{FetchObserver, Stats};
use facesweep_imagefetch::outcome::Failure;
use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge};

pub static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::default);

pub static DISCOVERY: LazyLock<facesweep_common::discovery::DiscoveryMetrics> =
    LazyLock::new(|| facesweep_common::discovery::DiscoveryMetrics::new(&REGISTRY));

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
    let _ = &*DISCOVERY;
}

/// The fetch pipeline's events counted in the metrics above.
pub struct FetchMetrics;

impl FetchObserver for FetchMetrics {
    fn started(&self) {
        FETCH_IN_FLIGHT.inc();
    }

    fn finished(&self, failure: Option<&Failure>, stats: &Stats) {
        FETCH_IN_FLIGHT.dec();
        let status = failure.map_or("ok", |f| f.status.short_name());
        FETCH_RESULTS.with_label_values(&[status]).inc();
        if stats.bytes > 0 {
            FETCH_BYTES.inc_by(stats.bytes);
            FETCH_DOWNLOAD_SECONDS.observe(stats.download.as_secs_f64());
            FETCH_DECODE_SECONDS.observe(stats.decode.as_secs_f64());
        }
    }
}
