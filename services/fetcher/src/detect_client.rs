//! Many concurrent detections multiplexed over one bidirectional stream, matched by id.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use facesweep_common::discovery::Balanced;
use facesweep_proto::detector_service_client::DetectorServiceClient;
use facesweep_proto::{DetectRequest, DetectResponse};
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

use crate::decode::Letterboxed;

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<DetectResponse, String>>>>>;

pub struct DetectStream {
    tx: mpsc::Sender<DetectRequest>,
    pending: Pending,
    next_id: AtomicU64,
}

impl DetectStream {
    pub async fn open(mut client: DetectorServiceClient<Balanced>) -> Result<Self, tonic::Status> {
        let (tx, rx) = mpsc::channel(64);
        let mut responses =
            client.detect(facesweep_common::propagation::traced(ReceiverStream::new(rx))).await?.into_inner();
        let pending: Pending = Arc::default();
        let p = pending.clone();
        tokio::spawn(async move {
            let why = loop {
                match responses.next().await {
                    Some(Ok(r)) => {
                        if let Some(waiter) = p.lock().unwrap().remove(&r.id) {
                            let _ = waiter.send(Ok(r));
                        }
                    }
                    Some(Err(e)) => break format!("detector stream failed: {e}"),
                    None => break "detector stream closed".to_string(),
                }
            };
            for (_, waiter) in p.lock().unwrap().drain() {
                let _ = waiter.send(Err(why.clone()));
            }
        });
        Ok(DetectStream { tx, pending, next_id: AtomicU64::new(1) })
    }

    /// Detects faces in one letterboxed image. `Err` means the detector, not the image, failed.
    pub async fn detect(&self, lb: Letterboxed) -> Result<DetectResponse, String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (wait_tx, wait_rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, wait_tx);
        let req = lb.into_request(id);
        if self.tx.send(req).await.is_err() {
            self.pending.lock().unwrap().remove(&id);
            return Err("detector stream closed".into());
        }
        wait_rx.await.map_err(|_| "detector stream closed".to_string())?
    }
}
