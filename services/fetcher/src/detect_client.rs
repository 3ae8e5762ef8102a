//! Many concurrent detections multiplexed over one bidirectional stream, matched by id.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use facesweep_common::discovery::Balanced;
use facesweep_proto::detector_service_client::DetectorServiceClient;
use facesweep_proto::{DetectRequest, DetectResponse};
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

use facesweep_imagefetch::decode::Letterboxed;

type Reply = Result<DetectResponse, StreamError>;

/// Why a detection got no answer: the detector (or the way to it) failed, not the image.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    #[error("detector stream closed")]
    Closed,
    #[error("detector stream failed: {0}")]
    Failed(String),
    #[error("no detector reply within {0:?}")]
    NoReply(Duration),
}

/// Who waits for which reply. Once the response reader stops, the table is closed under the
/// same lock, so a request registered after that fails at once instead of waiting for an
/// answer that can never come.
#[derive(Default)]
struct Waiters(Mutex<Option<HashMap<u64, oneshot::Sender<Reply>>>>);

impl Waiters {
    fn open() -> Self {
        Waiters(Mutex::new(Some(HashMap::new())))
    }

    fn register(&self, id: u64) -> Result<oneshot::Receiver<Reply>, StreamError> {
        let (tx, rx) = oneshot::channel();
        match self.0.lock().unwrap().as_mut() {
            Some(waiting) => {
                waiting.insert(id, tx);
                Ok(rx)
            }
            None => Err(StreamError::Closed),
        }
    }

    fn answer(&self, r: DetectResponse) {
        let waiter = self.0.lock().unwrap().as_mut().and_then(|w| w.remove(&r.id));
        if let Some(w) = waiter {
            let _ = w.send(Ok(r));
        }
    }

    fn forget(&self, id: u64) {
        if let Some(w) = self.0.lock().unwrap().as_mut() {
            w.remove(&id);
        }
    }

    /// Fails every waiter with `why` and refuses new ones.
    fn close(&self, why: StreamError) {
        let waiting = self.0.lock().unwrap().take().unwrap_or_default();
        for (_, w) in waiting {
            let _ = w.send(Err(why.clone()));
        }
    }
}

pub struct DetectStream {
    tx: mpsc::Sender<DetectRequest>,
    waiters: Arc<Waiters>,
    next_id: AtomicU64,
    /// Longest one image waits for its reply (send, queue and inference included).
    deadline: Duration,
}

impl DetectStream {
    pub async fn open(
        mut client: DetectorServiceClient<Balanced>,
        deadline: Duration,
    ) -> Result<Self, tonic::Status> {
        let (tx, rx) = mpsc::channel(64);
        let requests = facesweep_common::propagation::traced(ReceiverStream::new(rx));
        let mut responses =
            facesweep_common::grpc::within(deadline, client.detect(requests)).await?.into_inner();
        let waiters = Arc::new(Waiters::open());
        let reader = waiters.clone();
        tokio::spawn(async move {
            let why = loop {
                match responses.next().await {
                    Some(Ok(r)) => reader.answer(r),
                    Some(Err(e)) => break StreamError::Failed(e.message().to_string()),
                    None => break StreamError::Closed,
                }
            };
            reader.close(why);
        });
        Ok(DetectStream { tx, waiters, next_id: AtomicU64::new(1), deadline })
    }

    /// Detects faces in one letterboxed image. `Err` means the detector, not the image, failed.
    pub async fn detect(&self, lb: Letterboxed) -> Result<DetectResponse, StreamError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let reply = self.waiters.register(id)?;
        let asked = async {
            self.tx.send(lb.into_request(id)).await.map_err(|_| StreamError::Closed)?;
            reply.await.map_err(|_| StreamError::Closed)?
        };
        match tokio::time::timeout(self.deadline, asked).await {
            Ok(r) => r,
            Err(_) => {
                self.waiters.forget(id);
                Err(StreamError::NoReply(self.deadline))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_after_the_reader_stopped_fails_at_once() {
        let w = Waiters::open();
        let early = w.register(1).unwrap();
        w.close(StreamError::Closed);
        assert_eq!(early.await.unwrap().unwrap_err(), StreamError::Closed);
        // Registered after the reader exited: refused, never left waiting.
        assert!(w.register(2).is_err());
    }

    #[tokio::test]
    async fn answers_reach_their_waiter_only() {
        let w = Waiters::open();
        let (a, b) = (w.register(1).unwrap(), w.register(2).unwrap());
        w.answer(DetectResponse { id: 2, model_id: "m".into(), ..Default::default() });
        assert_eq!(b.await.unwrap().unwrap().model_id, "m");
        w.forget(1);
        w.close(StreamError::Failed("gone".into()));
        assert!(a.await.is_err(), "a forgotten waiter is dropped, not answered");
    }
}
