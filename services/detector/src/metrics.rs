//! The detector's Prometheus metrics, in its own registry (served by
//! `facesweep_common::metrics` on the detector's `--metrics-listen`).

use std::sync::LazyLock;

use facesweep_common::metrics::{seconds, Registry};
use prometheus::{Histogram, IntCounter, IntGauge};

pub static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::default);

pub static DETECTOR_QUEUE_DEPTH: LazyLock<IntGauge> = LazyLock::new(|| {
    REGISTRY.gauge("facesweep_detector_queue_depth", "Images queued or running on the model.")
});
pub static DETECTOR_IMAGES: LazyLock<IntCounter> =
    LazyLock::new(|| REGISTRY.counter("facesweep_detector_images_total", "Images run through the model."));
pub static DETECTOR_BATCH_SIZE: LazyLock<Histogram> = LazyLock::new(|| {
    REGISTRY.histogram(
        "facesweep_detector_batch_size",
        "Images per model batch.",
        prometheus::exponential_buckets(1.0, 2.0, 11).expect("buckets"),
    )
});
pub static DETECTOR_QUEUE_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    REGISTRY.histogram("facesweep_detector_queue_seconds", "Time an image waited for its batch.", seconds())
});
/// Its `_sum` rate is the share of time the model runs: the dashboard's model (GPU) busy panel.
pub static DETECTOR_INFERENCE_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    REGISTRY.histogram(
        "facesweep_detector_inference_seconds",
        "Model time per batch (upload, network, NMS).",
        seconds(),
    )
});
/// What grpc health reports for the detector service (alert: detector NOT_SERVING).
pub static DETECTOR_SERVING: LazyLock<IntGauge> = LazyLock::new(|| {
    REGISTRY
        .gauge("facesweep_detector_serving", "1 while the detector reports SERVING, else 0 (NOT_SERVING).")
});

/// Registers every metric now, so each appears (at zero) before its first event.
pub fn register() {
    let _ = (&*DETECTOR_QUEUE_DEPTH, &*DETECTOR_IMAGES, &*DETECTOR_BATCH_SIZE);
    let _ = (&*DETECTOR_QUEUE_SECONDS, &*DETECTOR_INFERENCE_SECONDS, &*DETECTOR_SERVING);
}
