//! One detector's Prometheus metrics, in its own registry (served by
//! `facesweep_common::metrics` on that detector's `--metrics-listen`). Built per instance by
//! `spawn` and shared by its batchers (one per device).

use facesweep_common::metrics::{seconds, Registry};
use prometheus::{Histogram, IntCounter, IntGauge};

pub struct Metrics {
    pub registry: Registry,
    pub queue_depth: IntGauge,
    pub images: IntCounter,
    pub batch_size: Histogram,
    pub queue_seconds: Histogram,
    /// Its `_sum` rate is the share of time the model runs: the dashboard's model (GPU) busy panel.
    pub inference_seconds: Histogram,
    /// What grpc health reports for the detector service (alert: detector NOT_SERVING).
    pub serving: IntGauge,
}

impl Metrics {
    /// Every metric registered now, so each appears (at zero) before its first event.
    pub fn new() -> Self {
        let r = Registry::default();
        let batch_buckets = prometheus::exponential_buckets(1.0, 2.0, 11).expect("buckets");
        Metrics {
            queue_depth: r.gauge("facesweep_detector_queue_depth", "Images queued or running on the model."),
            images: r.counter("facesweep_detector_images_total", "Images run through the model."),
            batch_size: r.histogram(
                "facesweep_detector_batch_size",
                "Images per model batch.",
                batch_buckets,
            ),
            queue_seconds: r.histogram(
                "facesweep_detector_queue_seconds",
                "Time an image waited for its batch.",
                seconds(),
            ),
            inference_seconds: r.histogram(
                "facesweep_detector_inference_seconds",
                "Model time per batch (upload, network, NMS).",
                seconds(),
            ),
            serving: r.gauge(
                "facesweep_detector_serving",
                "1 while the detector reports SERVING, else 0 (NOT_SERVING).",
            ),
            registry: r,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
