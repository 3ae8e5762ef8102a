//! Decode threads sized to the cores, each with its own `Decoder` (reused buffers), so CPU
//! work never runs on the async workers and never oversubscribes the machine.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use facesweep_proto::UrlStatus;
use tokio::sync::oneshot;

use crate::decode::{Decoder, Letterboxed, Shape};
use crate::outcome::Failure;

struct Job {
    body: Bytes,
    shape: Shape,
    max_pixels: u64,
    /// Told when a thread takes the job: the decode limit runs from there, not from the queue.
    started: oneshot::Sender<()>,
    reply: oneshot::Sender<Result<Letterboxed, Failure>>,
}

/// A URL waits at most this many decode limits for a free thread. The queue is bounded by the
/// fetcher's downloads in flight, so this fires only on an overloaded node, and then as a
/// timeout, not as a broken image.
const QUEUE_LIMITS: u32 = 10;

#[derive(Clone)]
pub struct DecodePool {
    tx: mpsc::Sender<Job>,
    /// Longest a decode may take once a thread has it; the thread itself cannot be stopped,
    /// but the URL gets its terminal status and the lease moves on.
    limit: Duration,
}

impl DecodePool {
    pub fn new(threads: usize, limit: Duration) -> Self {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("decode-{i}"))
                .spawn(move || {
                    let mut decoder = Decoder::default();
                    loop {
                        let job = match rx.lock().unwrap().recv() {
                            Ok(j) => j,
                            Err(_) => return,
                        };
                        if job.reply.is_closed() {
                            continue;
                        }
                        let _ = job.started.send(());
                        let Shape { width, height, wire } = job.shape;
                        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            decoder.decode(&job.body, width, height, job.max_pixels, wire)
                        }))
                        .unwrap_or_else(|_| {
                            decoder = Decoder::default(); // its state may be torn
                            Err(Failure::new(UrlStatus::DecodeError, "decoder panicked on this image"))
                        });
                        let _ = job.reply.send(r);
                    }
                })
                .expect("spawn decode thread");
        }
        DecodePool { tx, limit }
    }

    pub async fn decode(&self, body: Bytes, shape: Shape, max_pixels: u64) -> Result<Letterboxed, Failure> {
        let stopped = || Failure::new(UrlStatus::DecodeError, "decode pool stopped");
        let (reply, rx) = oneshot::channel();
        let (started, taken) = oneshot::channel();
        self.tx.send(Job { body, shape, max_pixels, started, reply }).map_err(|_| stopped())?;
        // At least a second: a thread's wake-up on a loaded machine is not an overload.
        let queue_limit = (self.limit * QUEUE_LIMITS).max(Duration::from_secs(1));
        match tokio::time::timeout(queue_limit, taken).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(stopped()),
            Err(_) => {
                let why = format!("no decode thread free within {queue_limit:?}: this fetcher is overloaded");
                return Err(Failure::new(UrlStatus::Timeout, why));
            }
        }
        match tokio::time::timeout(self.limit, rx).await {
            Ok(r) => r.map_err(|_| stopped())?,
            Err(_) => {
                Err(Failure::new(UrlStatus::DecodeError, format!("decode took longer than {:?}", self.limit)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(w: u32, h: u32) -> Bytes {
        let img = image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(w, h, image::Rgb([9, 99, 199])));
        let mut out = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Jpeg).unwrap();
        out.into()
    }

    #[tokio::test]
    async fn a_decode_past_its_limit_ends_the_url_not_the_pool() {
        // One thread, and an image that takes longer than the limit: the URL gets its
        // terminal status in time, whatever the thread does.
        let pool = DecodePool::new(1, Duration::from_millis(1));
        let Err(slow) = pool.decode(jpeg(4000, 4000), Shape::canvas(640, 640), u64::MAX).await else {
            panic!("a 16 MP decode finished within 1 ms")
        };
        assert_eq!(slow.status, UrlStatus::DecodeError);
        assert!(slow.reason.contains("decode took longer"), "{}", slow.reason);
        let pool = DecodePool::new(1, Duration::from_secs(30));
        assert!(pool.decode(jpeg(64, 64), Shape::canvas(32, 32), u64::MAX).await.is_ok());
    }

    #[tokio::test]
    async fn time_queued_behind_a_busy_thread_is_not_decode_time() {
        // The one thread is held inside a large decode (this test holds the large-decode lock)
        // while a small image waits in the queue for longer than the limit: the small one is
        // healthy and must decode (it failed "decode took longer" when the limit ran from
        // submission: busy fetchers marked good images broken).
        let pool = DecodePool::new(1, Duration::from_secs(1));
        let (big, small) = (jpeg(2048, 2048), jpeg(64, 64));
        let held = crate::decode::LARGE_DECODE.lock().unwrap();
        let (big, small, ()) = tokio::join!(
            pool.decode(big, Shape::canvas(2048, 2048), u64::MAX),
            pool.decode(small, Shape::canvas(32, 32), u64::MAX),
            async move {
                tokio::time::sleep(Duration::from_millis(2500)).await;
                drop(held);
            }
        );
        assert!(small.is_ok(), "queued past the limit: {small:?}");
        let big = big.expect_err("held 2.5 s inside its decode, past the 1 s limit");
        assert!(big.reason.contains("decode took longer"), "{}", big.reason);
    }
}
