//! The results service's Prometheus metrics, in its own registry (served by
//! `facesweep_common::metrics` on its `--metrics-listen`).

use std::sync::LazyLock;

use facesweep_common::metrics::{seconds, Registry};
use prometheus::{Gauge, Histogram, IntCounter};

pub static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::default);

pub static RESULTS_PERSISTED: LazyLock<IntCounter> = LazyLock::new(|| {
    REGISTRY.counter("facesweep_results_persisted_total", "URL results stored (first writer).")
});
pub static RESULTS_DUPLICATES: LazyLock<IntCounter> = LazyLock::new(|| {
    REGISTRY
        .counter("facesweep_results_duplicates_total", "URL results ignored because the URL already had one.")
});
pub static RESULTS_PERSIST_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    REGISTRY.histogram("facesweep_results_persist_seconds", "Time to persist one Record batch.", seconds())
});

pub static WATCH_LAG_SECONDS: LazyLock<Gauge> = LazyLock::new(|| {
    REGISTRY.float_gauge(
        "facesweep_results_watch_lag_seconds",
        "Age of the oldest facesweep transaction in progress, which WatchResults streams wait \
         for (0 when none); as of the last watch poll.",
    )
});

/// Registers every metric now, so each appears (at zero) before its first event.
pub fn register() {
    let _ = (&*RESULTS_PERSISTED, &*RESULTS_DUPLICATES, &*RESULTS_PERSIST_SECONDS, &*WATCH_LAG_SECONDS);
}
