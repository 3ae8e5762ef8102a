//! One fetcher's Prometheus metrics, in its own registry (served by
//! `facesweep_common::metrics` on that fetcher's `--metrics-listen`, with its discovery's).
//! Built per instance by `spawn`: several fetchers in one process (`facesweep up`) count apart.

use facesweep_common::discovery::DiscoveryMetrics;
use facesweep_common::metrics::{seconds, Registry};
use facesweep_imagefetch::fetch::{FetchObserver, Stats};
use facesweep_imagefetch::outcome::Failure;
use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge};

pub struct Metrics {
    pub registry: Registry,
    pub in_flight: IntGauge,
    pub results: IntCounterVec,
    pub bytes: IntCounter,
    pub download_seconds: Histogram,
    pub decode_seconds: Histogram,
    /// What this fetcher's discovery of delegators, detectors and results counts.
    pub discovery: DiscoveryMetrics,
}

impl Metrics {
    /// Every metric registered now, so each appears (at zero) before its first event.
    pub fn new() -> Self {
        let r = Registry::default();
        Metrics {
            in_flight: r.gauge("facesweep_fetch_in_flight", "URLs being downloaded or decoded now."),
            results: r.counter_vec(
                "facesweep_fetch_results_total",
                "URLs fetched, by outcome (ok or failure class).",
                &["status"],
            ),
            bytes: r.counter("facesweep_fetch_bytes_total", "Body bytes downloaded."),
            download_seconds: r.histogram(
                "facesweep_fetch_download_seconds",
                "Download time per URL, retries included.",
                seconds(),
            ),
            decode_seconds: r.histogram(
                "facesweep_fetch_decode_seconds",
                "Decode + letterbox time per image.",
                seconds(),
            ),
            discovery: DiscoveryMetrics::new(&r),
            registry: r,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The fetch pipeline's events, counted in this fetcher's metrics.
impl FetchObserver for Metrics {
    fn started(&self) {
        self.in_flight.inc();
    }

    fn finished(&self, failure: Option<&Failure>, stats: &Stats) {
        self.in_flight.dec();
        let status = failure.map_or("ok", |f| f.status.short_name());
        self.results.with_label_values(&[status]).inc();
        if stats.bytes > 0 {
            self.bytes.inc_by(stats.bytes);
            self.download_seconds.observe(stats.download.as_secs_f64());
            self.decode_seconds.observe(stats.decode.as_secs_f64());
        }
    }
}
