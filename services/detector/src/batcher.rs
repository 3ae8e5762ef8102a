//! Dynamic batching on a dedicated OS thread: the model never runs on a tokio worker.
//!
//! Requests carry a queue permit (the queue bound), their reply channel and the time they were
//! queued. The thread groups requests of the same shape until `max_batch` or until the oldest
//! has waited `max_delay`, runs the batch, and answers each request.

use std::collections::VecDeque;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use facesweep_proto::Face;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::model::{ImageInput, Model};

/// What the caller gets back for one image.
#[derive(Debug)]
pub struct Detection {
    pub faces: Vec<Face>,
    pub batch_size: u32,
    pub queue: Duration,
    pub inference: Duration,
}

struct Request {
    image: ImageInput,
    reply: oneshot::Sender<Result<Detection, String>>,
    queued: Instant,
    /// The image's span; the batch span links to it.
    span: tracing::Span,
    _permit: OwnedSemaphorePermit,
}

#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Request>,
    slots: Arc<Semaphore>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubmitError {
    #[error("detector queue is full")]
    QueueFull,
    #[error("detector is shutting down")]
    Closed,
}

impl Batcher {
    /// Starts the model thread. `max_delay` bounds how long the first image of a batch waits.
    pub fn start(model: Model, max_batch: usize, max_delay: Duration, queue: usize) -> Self {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("detector-model".into())
            .spawn(move || model_loop(model, rx, max_batch.max(1), max_delay))
            .expect("spawn model thread");
        Batcher { tx, slots: Arc::new(Semaphore::new(queue)) }
    }

    /// Waits for queue space (streams: back-pressure reaches the client through HTTP/2).
    pub async fn submit(
        &self,
        image: ImageInput,
    ) -> Result<oneshot::Receiver<Result<Detection, String>>, SubmitError> {
        let permit = self.slots.clone().acquire_owned().await.map_err(|_| SubmitError::Closed)?;
        self.send(image, permit)
    }

    /// Fails fast when the queue is full (unary callers get RESOURCE_EXHAUSTED).
    pub fn try_submit(
        &self,
        image: ImageInput,
    ) -> Result<oneshot::Receiver<Result<Detection, String>>, SubmitError> {
        let permit = self.slots.clone().try_acquire_owned().map_err(|_| SubmitError::QueueFull)?;
        self.send(image, permit)
    }

    /// Free queue slots: the service sends new work to the least loaded device.
    pub fn available(&self) -> usize {
        self.slots.available_permits()
    }

    fn send(
        &self,
        image: ImageInput,
        permit: OwnedSemaphorePermit,
    ) -> Result<oneshot::Receiver<Result<Detection, String>>, SubmitError> {
        let (reply, rx) = oneshot::channel();
        facesweep_common::metrics::DETECTOR_QUEUE_DEPTH.inc();
        let span = tracing::info_span!("image", height = image.height, width = image.width);
        let req = Request { image, reply, queued: Instant::now(), span, _permit: permit };
        self.tx.send(req).map_err(|_| SubmitError::Closed)?;
        Ok(rx)
    }
}

fn model_loop(model: Model, rx: mpsc::Receiver<Request>, max_batch: usize, max_delay: Duration) {
    let mut pending: VecDeque<Request> = VecDeque::new();
    loop {
        if pending.is_empty() {
            match rx.recv() {
                Ok(r) => pending.push_back(r),
                Err(_) => return,
            }
        }
        let shape = (pending[0].image.height, pending[0].image.width);
        let deadline = pending[0].queued + max_delay;
        let mut batch = Vec::with_capacity(max_batch);
        let mut rest = VecDeque::new();
        for r in pending.drain(..) {
            if batch.len() < max_batch && (r.image.height, r.image.width) == shape {
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
                Ok(r) if (r.image.height, r.image.width) == shape => batch.push(r),
                Ok(r) => pending.push_back(r),
                Err(_) => break,
            }
        }
        // A caller that gave up (deadline, cancelled stream) costs no GPU time.
        let before = batch.len();
        batch.retain(|r| !r.reply.is_closed());
        facesweep_common::metrics::DETECTOR_QUEUE_DEPTH.sub((before - batch.len()) as i64);
        if batch.is_empty() {
            continue;
        }
        run_batch(&model, batch);
    }
}

fn run_batch(model: &Model, batch: Vec<Request>) {
    let started = Instant::now();
    let images: Vec<&ImageInput> = batch.iter().map(|r| &r.image).collect();
    let span = tracing::info_span!(parent: None, "detect_batch", size = images.len());
    facesweep_common::propagation::link_all(&span, batch.iter().map(|r| &r.span));
    // LibTorch reports some errors by panicking in tch: keep the model thread alive.
    let result =
        span.in_scope(|| std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| model.detect(&images))));
    let result = match result {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(p) => Err(format!(
            "model panicked: {}",
            p.downcast_ref::<String>()
                .map(String::as_str)
                .or(p.downcast_ref::<&str>().copied())
                .unwrap_or("?")
        )),
    };
    let inference = started.elapsed();
    let n = batch.len() as u32;
    {
        use facesweep_common::metrics as m;
        m::DETECTOR_IMAGES.inc_by(n as u64);
        m::DETECTOR_BATCH_SIZE.observe(n as f64);
        m::DETECTOR_INFERENCE_SECONDS.observe(inference.as_secs_f64());
        m::DETECTOR_QUEUE_DEPTH.sub(n as i64);
        for r in &batch {
            m::DETECTOR_QUEUE_SECONDS.observe(started.duration_since(r.queued).as_secs_f64());
        }
    }
    match result {
        Ok(faces) => {
            for (r, faces) in batch.into_iter().zip(faces) {
                let queue = started.duration_since(r.queued);
                let _ = r.reply.send(Ok(Detection { faces, batch_size: n, queue, inference }));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "batch failed");
            for r in batch {
                let _ = r.reply.send(Err(e.clone()));
            }
        }
    }
}
