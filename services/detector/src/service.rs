//! gRPC surface of the detector: validation, back-pressure, and streaming replies.

use std::pin::Pin;
use std::sync::Arc;

use facesweep_common::auth::{Access, Authorizer, FETCHER};
use facesweep_proto::detector_service_server::DetectorService;
use facesweep_proto::{
    DetectOneRequest, DetectOneResponse, DetectRequest, DetectResponse, ModelInfoRequest, ModelInfoResponse,
};
use futures::stream::FuturesUnordered;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};

use crate::batcher::{Batcher, DetectError, Detection};
use crate::error::DetectorError;
use crate::input::validate;

/// Images one stream may have queued or running at once.
const MAX_IN_FLIGHT_PER_STREAM: usize = 512;

pub struct DetectorSvc {
    /// One batcher (model thread) per device.
    pub batchers: Arc<Vec<Batcher>>,
    pub info: Arc<ModelInfoResponse>,
    pub auth: Authorizer,
}

/// Operators may detect one image or read the model's contract with grpcurl.
const FETCHER_OR_ADMIN: Access = Access::Roles(&["fetcher", "admin"]);

/// The working device with the most free queue slots (a broken one refuses, see `send`).
fn pick(batchers: &[Batcher]) -> &Batcher {
    batchers.iter().max_by_key(|b| (b.healthy(), b.available())).expect("at least one batcher")
}

/// A stream's reply for an image that failed: the error in the message, not the stream.
fn error_response(id: u64, e: DetectorError) -> DetectResponse {
    DetectResponse { id, error_code: e.code() as i32, error: e.to_string(), ..Default::default() }
}

fn to_response(
    id: u64,
    model_id: &str,
    res: Result<Result<Detection, DetectError>, tokio::sync::oneshot::error::RecvError>,
) -> DetectResponse {
    match res {
        Ok(Ok(d)) => DetectResponse {
            id,
            faces: d.faces,
            model_id: model_id.to_string(),
            batch_size: d.batch_size,
            queue_ms: d.queue.as_secs_f32() * 1e3,
            inference_ms: d.inference.as_secs_f32() * 1e3,
            ..Default::default()
        },
        Ok(Err(e)) => error_response(id, e.into()),
        Err(_) => error_response(id, DetectorError::ShuttingDown),
    }
}

type DetectStream = Pin<Box<dyn Stream<Item = Result<DetectResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl DetectorService for DetectorSvc {
    type DetectStream = DetectStream;

    async fn detect(&self, req: Request<Streaming<DetectRequest>>) -> Result<Response<DetectStream>, Status> {
        self.auth.check(&req, FETCHER)?;
        let mut incoming = req.into_inner();
        let batchers = self.batchers.clone();
        let model_id = self.info.model_id.clone();
        let max = (self.info.input_width, self.info.input_height);
        let (tx, rx) = mpsc::channel(MAX_IN_FLIGHT_PER_STREAM);
        // The stream's work stays inside the call's span (child of the fetcher's lease).
        let span = tracing::Span::current();
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let mut inflight = FuturesUnordered::new();
                let mut input_open = true;
                loop {
                    tokio::select! {
                        msg = incoming.next(), if input_open && inflight.len() < MAX_IN_FLIGHT_PER_STREAM => {
                            let req = match msg {
                                Some(Ok(r)) => r,
                                _ => { input_open = false; continue; }
                            };
                            let id = req.id;
                            let img = match validate(&req, max) {
                                Ok(img) => img,
                                Err(e) => {
                                    if tx.send(Ok(error_response(id, e.into()))).await.is_err() { return; }
                                    continue;
                                }
                            };
                            match pick(&batchers).submit(img).await {
                                Ok(rx) => inflight.push(async move { (id, rx.await) }),
                                // Waiting for room fails only once the model thread is gone.
                                Err(_) => {
                                    let _ = tx.send(Err(DetectorError::ShuttingDown.into())).await;
                                    return;
                                }
                            }
                        }
                        Some((id, res)) = inflight.next(), if !inflight.is_empty() => {
                            if tx.send(Ok(to_response(id, &model_id, res))).await.is_err() { return; }
                        }
                        else => break,
                    }
                    if !input_open && inflight.is_empty() {
                        break;
                    }
                }
            },
            span,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn detect_one(
        &self,
        req: Request<DetectOneRequest>,
    ) -> Result<Response<DetectOneResponse>, Status> {
        self.auth.check(&req, FETCHER_OR_ADMIN)?;
        let req = req.into_inner().image.ok_or(DetectorError::MissingImage)?;
        let img =
            validate(&req, (self.info.input_width, self.info.input_height)).map_err(DetectorError::from)?;
        let rx = pick(&self.batchers).try_submit(img).map_err(DetectorError::from)?;
        let resp = to_response(req.id, &self.info.model_id, rx.await);
        if resp.error_code != 0 {
            return Err(Status::new(Code::from(resp.error_code), resp.error));
        }
        Ok(Response::new(DetectOneResponse { result: Some(resp) }))
    }

    async fn model_info(
        &self,
        req: Request<ModelInfoRequest>,
    ) -> Result<Response<ModelInfoResponse>, Status> {
        self.auth.check(&req, FETCHER_OR_ADMIN)?;
        Ok(Response::new((*self.info).clone()))
    }
}
