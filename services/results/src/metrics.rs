//! The results's Prometheus metrics (served by `facesweep_common::metrics`).

use std::sync::LazyLock;

use facesweep_common::metrics::{counter, histogram, seconds};
use prometheus::{Gauge, Histogram, IntCounter};

pub static RESULTS_PERSISTED: LazyLock<IntCounter> =
    LazyLock::new(|| counter("facesweep_results_persisted_total", "URL results stored (first writer)."));
pub static RESULTS_DUPLICATES: LazyLock<IntCounter> = LazyLock::new(|| {
    counter("facesweep_results_duplicates_total", "URL results ignored because the URL already had one.")
});
pub static RESULTS_PERSIST_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    histogram("facesweep_results_persist_seconds", "Time to persist one Record batch.", seconds())
});

pub static WATCH_LAG_SECONDS: LazyLock<Gauge> = LazyLock::new(|| {
    let g = Gauge::new(
        "facesweep_results_watch_lag_seconds",
        "Age of the oldest facesweep transaction in progress, which WatchResults streams wait \
         for (0 when none); as of the last watch poll.",
    )
    .expect("valid metric");
    let _ = prometheus::register(Box::new(g.clone()));
    g
});

/// Registers every metric now, so each appears (at zero) before its first event.
pub fn register() {
    let _ = (&*RESULTS_PERSISTED, &*RESULTS_DUPLICATES, &*RESULTS_PERSIST_SECONDS, &*WATCH_LAG_SECONDS);
}
