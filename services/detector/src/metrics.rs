//! The detector's Prometheus metrics (served by `facesweep_common::metrics`).

use std::sync::LazyLock;

use facesweep_common::metrics::{counter, gauge, histogram, seconds};
use prometheus::{Histogram, IntCounter, IntGauge};

pub static DETECTOR_QUEUE_DEPTH: LazyLock<IntGauge> =
    LazyLock::new(|| gauge("facesweep_detector_queue_depth", "Images queued or running on the model."));
pub static DETECTOR_IMAGES: LazyLock<IntCounter> =
    LazyLock::new(|| counter("facesweep_detector_images_total", "Images run through the model."));
pub static DETECTOR_BATCH_SIZE: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "facesweep_detector_batch_size",
        "Images per model batch.",
        prometheus::exponential_buckets(1.0, 2.0, 11).expect("buckets"),
    )
});
pub static DETECTOR_QUEUE_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    histogram("facesweep_detector_queue_seconds", "Time an image waited for its batch.", seconds())
});
pub static DETECTOR_INFERENCE_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "facesweep_detector_inference_seconds",
        "Model time per batch (upload, network, NMS).",
        seconds(),
    )
});

/// Registers every metric now, so each appears (at zero) before its first event.
pub fn register() {
    let _ = (
        &*DETECTOR_QUEUE_DEPTH,
        &*DETECTOR_IMAGES,
        &*DETECTOR_BATCH_SIZE,
        &*DETECTOR_QUEUE_SECONDS,
        &*DETECTOR_INFERENCE_SECONDS,
    );
}
