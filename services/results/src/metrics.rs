//! One results service's Prometheus metrics, in its own registry (served by
//! `facesweep_common::metrics` on its `--metrics-listen`). Built per instance by `spawn`.

use facesweep_common::metrics::{seconds, Registry};
use prometheus::{Gauge, Histogram, IntCounter};

pub struct Metrics {
    pub registry: Registry,
    pub persisted: IntCounter,
    pub duplicates: IntCounter,
    pub persist_seconds: Histogram,
    pub watch_lag_seconds: Gauge,
}

impl Metrics {
    /// Every metric registered now, so each appears (at zero) before its first event.
    pub fn new() -> Self {
        let r = Registry::default();
        Metrics {
            persisted: r.counter("facesweep_results_persisted_total", "URL results stored (first writer)."),
            duplicates: r.counter(
                "facesweep_results_duplicates_total",
                "URL results ignored because the URL already had one.",
            ),
            persist_seconds: r.histogram(
                "facesweep_results_persist_seconds",
                "Time to persist one Record batch.",
                seconds(),
            ),
            watch_lag_seconds: r.float_gauge(
                "facesweep_results_watch_lag_seconds",
                "Age of the oldest facesweep transaction in progress, which WatchResults streams wait \
                 for (0 when none); as of the last watch poll.",
            ),
            registry: r,
        }
    }
}
