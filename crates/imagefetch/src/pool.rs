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
    reply: oneshot::Sender<Result<Letterboxed, Failure>>,
}

#[derive(Clone)]
pub struct DecodePool {
    tx: mpsc::Sender<Job>,
    /// Longest a URL waits for its decode (queue included); the thread itself cannot be
    /// stopped, but the URL gets its terminal status and the lease moves on.
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
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job { body, shape, max_pixels, reply })
            .map_err(|_| Failure::new(UrlStatus::DecodeError, "decode pool stopped"))?;
        match tokio::time::timeout(self.limit, rx).await {
            Ok(r) => r.map_err(|_| Failure::new(UrlStatus::DecodeError, "decode pool stopped"))?,
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
}
