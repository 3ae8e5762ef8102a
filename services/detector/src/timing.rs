//! How benchmarks time the model (`make bench-detector`, `make gpu-check`): warm-up runs
//! first (kernel selection, allocator growth), CUDA synchronised around each timed run, the
//! median reported.

use crate::input::ImageInput;
use crate::model::{Model, ModelError};

/// Waits for the device's queued work (a no-op on CPU).
pub fn sync(device: tch::Device) {
    if let tch::Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// Median seconds of `iters` runs of `images` as one batch, after `warmup` untimed runs.
pub fn median_batch_secs(
    model: &Model,
    images: &[&ImageInput],
    warmup: usize,
    iters: usize,
) -> Result<f64, ModelError> {
    for _ in 0..warmup {
        model.detect(images)?;
    }
    let mut secs = Vec::with_capacity(iters);
    for _ in 0..iters.max(1) {
        sync(model.device);
        let t = std::time::Instant::now();
        model.detect(images)?;
        sync(model.device);
        secs.push(t.elapsed().as_secs_f64());
    }
    secs.sort_by(f64::total_cmp);
    Ok(secs[secs.len() / 2])
}
