//! Dynamic batching on a dedicated OS thread: the model never runs on a tokio worker.
//!
//! Requests carry a queue permit (the queue bound), their reply channel and the time they were
//! queued. The thread groups requests of the same shape until `max_batch` or until the oldest
//! has waited `max_delay`, runs the batch, and answers each request.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use facesweep_proto::Face;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::input::ImageInput;
use crate::metrics::Metrics;
use crate::model::Model;

/// What the caller gets back for one image.
#[derive(Debug)]
pub struct Detection {
    pub faces: Vec<Face>,
    pub batch_size: u32,
    pub queue: Duration,
    pub inference: Duration,
}

/// Why the model gave an image no answer.
#[derive(Clone, Debug, thiserror::Error)]
pub enum DetectError {
    /// LibTorch reported an error (its message).
    #[error("{0}")]
    Model(String),
    /// tch panicked inside LibTorch; the model thread caught it and lives on.
    #[error("model panicked: {0}")]
    Panicked(String),
}

impl DetectError {
    /// Whether the device is broken for good (every later call fails too).
    pub fn is_sticky(&self) -> bool {
        sticky(&self.to_string())
    }
}

/// The answer for one submitted image.
pub type Reply = oneshot::Receiver<Result<Detection, DetectError>>;

struct Request {
    image: ImageInput,
    reply: oneshot::Sender<Result<Detection, DetectError>>,
    queued: Instant,
    /// The image's span; the batch span links to it.
    span: tracing::Span,
    _permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
}

#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Request>,
    /// Queue bound in images.
    slots: Arc<Semaphore>,
    /// Queue bound in KiB of pixels: images of any size cannot grow memory past it.
    kib: Arc<Semaphore>,
    kib_total: u32,
    /// False once the model thread has stopped or the device failed for good (TEI's habit:
    /// health is fed by the backend, so probes and Consul take a broken detector out).
    healthy: Arc<AtomicBool>,
    /// The metrics of the detector this batcher serves (its queue depth among them).
    metrics: Arc<Metrics>,
}

/// Queue limits of one batcher.
#[derive(Clone, Copy, Debug)]
pub struct QueueLimits {
    pub images: usize,
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubmitError {
    #[error("detector queue is full")]
    QueueFull,
    #[error("detector is shutting down")]
    Closed,
}

/// Errors after which a CUDA context stays broken: every later call fails too.
fn sticky(error: &str) -> bool {
    [
        "illegal memory access",
        "device-side assert",
        "unspecified launch failure",
        "CUDA error: an illegal",
        "ECC error",
    ]
    .iter()
    .any(|e| error.contains(e))
}

impl Batcher {
    /// Starts the model thread. `max_delay` bounds how long the first image of a batch waits;
    /// `metrics` are the detector's, recorded by this batcher.
    pub fn start(
        model: Model,
        max_batch: usize,
        max_delay: Duration,
        queue: QueueLimits,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (tx, rx) = mpsc::channel::<Request>();
        let healthy = Arc::new(AtomicBool::new(true));
        let alive = healthy.clone();
        let m = metrics.clone();
        std::thread::Builder::new()
            .name("detector-model".into())
            .spawn(move || {
                // Set on any exit of the thread, a panic included.
                let _down = DownOnDrop(alive.clone());
                model_loop(model, rx, (max_batch.max(1), max_delay), &alive, &m)
            })
            .expect("spawn model thread");
        let kib_total = queue.bytes.div_ceil(1024).clamp(1, Semaphore::MAX_PERMITS as u64) as u32;
        Batcher {
            tx,
            slots: Arc::new(Semaphore::new(queue.images)),
            kib: Arc::new(Semaphore::new(kib_total as usize)),
            kib_total,
            healthy,
            metrics,
        }
    }

    /// Whether the model thread runs and its device works.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    fn kib_of(&self, image: &ImageInput) -> u32 {
        (image.data.len() as u64).div_ceil(1024).clamp(1, self.kib_total as u64) as u32
    }

    /// Waits for queue space (streams: back-pressure reaches the client through HTTP/2).
    pub async fn submit(&self, image: ImageInput) -> Result<Reply, SubmitError> {
        let slot = self.slots.clone().acquire_owned().await.map_err(|_| SubmitError::Closed)?;
        let kib = self
            .kib
            .clone()
            .acquire_many_owned(self.kib_of(&image))
            .await
            .map_err(|_| SubmitError::Closed)?;
        self.send(image, (slot, kib))
    }

    /// Fails fast when the queue is full (unary callers get RESOURCE_EXHAUSTED).
    pub fn try_submit(&self, image: ImageInput) -> Result<Reply, SubmitError> {
        let slot = self.slots.clone().try_acquire_owned().map_err(|_| SubmitError::QueueFull)?;
        let kib = self
            .kib
            .clone()
            .try_acquire_many_owned(self.kib_of(&image))
            .map_err(|_| SubmitError::QueueFull)?;
        self.send(image, (slot, kib))
    }

    /// Free queue slots: the service sends new work to the least loaded device.
    pub fn available(&self) -> usize {
        self.slots.available_permits()
    }

    fn send(
        &self,
        image: ImageInput,
        permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
    ) -> Result<Reply, SubmitError> {
        if !self.healthy() {
            return Err(SubmitError::Closed);
        }
        let (reply, rx) = oneshot::channel();
        self.metrics.queue_depth.inc();
        let span = tracing::info_span!("image", height = image.height, width = image.width);
        let req = Request { image, reply, queued: Instant::now(), span, _permits: permits };
        self.tx.send(req).map_err(|_| SubmitError::Closed)?;
        Ok(rx)
    }
}

struct DownOnDrop(Arc<AtomicBool>);

impl Drop for DownOnDrop {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

fn model_loop(
    model: Model,
    rx: mpsc::Receiver<Request>,
    (max_batch, max_delay): (usize, Duration),
    healthy: &AtomicBool,
    metrics: &Metrics,
) {
    let mut pending: VecDeque<Request> = VecDeque::new();
    loop {
        if pending.is_empty() {
            match rx.recv() {
                Ok(r) => pending.push_back(r),
                Err(_) => return,
            }
        }
        let shape = pending[0].image.shape();
        let deadline = pending[0].queued + max_delay;
        let mut batch = Vec::with_capacity(max_batch);
        let mut rest = VecDeque::new();
        for r in pending.drain(..) {
            if batch.len() < max_batch && r.image.shape() == shape {
                batch.push(r);
            } else {
                rest.push_back(r);
            }
        }
        pending = rest;
        while batch.len() < max_batch {
            let now = Instant::now();
            let wait = deadline.saturating_duration_since(now);
            let r = if wait.is_zero() {
                rx.try_recv().map_err(|_| RecvTimeoutError::Timeout)
            } else {
                rx.recv_timeout(wait)
            };
            match r {
                Ok(r) if r.image.shape() == shape => batch.push(r),
                Ok(r) => pending.push_back(r),
                Err(_) => break,
            }
        }
        // A caller that gave up (deadline, cancelled stream) costs no GPU time.
        let before = batch.len();
        batch.retain(|r| !r.reply.is_closed());
        metrics.queue_depth.sub((before - batch.len()) as i64);
        if batch.is_empty() {
            continue;
        }
        if let Err(e) = run_batch(&model, batch, metrics) {
            if e.is_sticky() {
                tracing::error!(error = %e, "device unusable: reporting NOT_SERVING");
                healthy.store(false, Ordering::Relaxed);
            }
        }
    }
}

/// Runs one batch and answers its requests; the error, when the batch failed. A failed
/// batch of several images is run again one image at a time (unless the device is gone), so
/// one bad image fails alone instead of taking its batch-mates with it.
fn run_batch(model: &Model, batch: Vec<Request>, m: &Metrics) -> Result<(), DetectError> {
    let started = Instant::now();
    let images: Vec<&ImageInput> = batch.iter().map(|r| &r.image).collect();
    let span = tracing::info_span!(parent: None, "detect_batch", size = images.len());
    facesweep_common::propagation::link_all(&span, batch.iter().map(|r| &r.span));
    let result = span.in_scope(|| detect_guarded(model, &images));
    let inference = started.elapsed();
    let n = batch.len() as u32;
    m.images.inc_by(n as u64);
    m.batch_size.observe(n as f64);
    m.inference_seconds.observe(inference.as_secs_f64());
    m.queue_depth.sub(n as i64);
    for r in &batch {
        m.queue_seconds.observe(started.duration_since(r.queued).as_secs_f64());
    }
    let results: Vec<Result<Vec<Face>, DetectError>> = match result {
        Ok(faces) => faces.into_iter().map(Ok).collect(),
        Err(e) if batch.len() == 1 || e.is_sticky() => vec![Err(e); batch.len()],
        Err(e) => {
            tracing::warn!(error = %e, size = n, "batch failed; running its images one by one");
            images.iter().map(|img| detect_guarded(model, &[img]).map(|mut f| f.remove(0))).collect()
        }
    };
    let mut failed = None;
    for (r, faces) in batch.into_iter().zip(results) {
        let queue = started.duration_since(r.queued);
        if let Err(e) = &faces {
            tracing::error!(error = %e, "image failed");
            failed = Some(e.clone());
        }
        let _ = r.reply.send(faces.map(|faces| Detection { faces, batch_size: n, queue, inference }));
    }
    failed.map_or(Ok(()), Err)
}

/// The model on `images`; LibTorch reports some errors by panicking in tch, which must not
/// end the model thread.
fn detect_guarded(model: &Model, images: &[&ImageInput]) -> Result<Vec<Vec<Face>>, DetectError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| model.detect(images))) {
        Ok(r) => r.map_err(|e| DetectError::Model(e.to_string())),
        Err(p) => Err(DetectError::Panicked(
            p.downcast_ref::<String>()
                .map(String::as_str)
                .or(p.downcast_ref::<&str>().copied())
                .unwrap_or("?")
                .to_string(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::{sticky, DetectError};

    #[test]
    fn only_errors_that_break_the_device_are_sticky() {
        assert!(DetectError::Panicked("CUDA error: device-side assert triggered".into()).is_sticky());
        assert!(!DetectError::Model("CUDA out of memory.".into()).is_sticky());
        assert!(sticky("CUDA error: an illegal memory access was encountered"));
        assert!(sticky("torch: CUDA error: device-side assert triggered"));
        assert!(!sticky("CUDA out of memory. Tried to allocate 2.00 GiB"));
        assert!(!sticky("model output: expected a 3-tuple"));
    }
}
