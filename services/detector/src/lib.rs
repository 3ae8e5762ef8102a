//! Detector: a TorchScript face detector behind a dynamic batcher on its own OS thread.

mod batcher;
mod config;
mod error;
pub mod input;
pub mod metrics;
pub mod model;
pub mod nms;
mod service;
pub mod timing;

use std::sync::Arc;
use std::time::Duration;

use facesweep_common::consul::Announce;
use facesweep_common::grpc::{self, Frontend, Running};
use facesweep_common::Shutdown;
use facesweep_proto::detector_service_server::DetectorServiceServer;
use facesweep_proto::ModelInfoResponse;

pub use batcher::{Batcher, DetectError, Detection, QueueLimits};
pub use config::{Args, Config};
pub use error::DetectorError;
pub use input::{validate, ImageInput, InvalidImage};
pub use model::{Model, ModelConfig};

/// Loads and warms the model, then serves in the background.
pub async fn spawn(config: Config, shutdown: Shutdown) -> anyhow::Result<Running> {
    config.validate()?;
    let metrics = Arc::new(metrics::Metrics::new());
    let front = Frontend::start(&config.tls, &shutdown).await?;
    let listener = grpc::bind(config.listen).await?;
    front.health.set_not_serving::<DetectorServiceServer<service::DetectorSvc>>().await;
    let (cfg, m) = (config.clone(), metrics.clone());
    // Loading and warm-up block for seconds: keep them off the async workers.
    let (batchers, info) = tokio::task::spawn_blocking(move || load(&cfg, m)).await??;
    let model_id = info.model_id.clone();
    let batchers = Arc::new(batchers);
    let svc = service::DetectorSvc {
        batchers: batchers.clone(),
        info: Arc::new(info),
        auth: facesweep_common::auth::Authorizer::new(&config.auth),
    };
    // Ready from here on (model warm) while a model thread works; NOT_SERVING once every
    // device is broken or draining starts.
    grpc::health_follows(
        front.health.clone(),
        "facesweep.v1.DetectorService",
        Duration::from_secs(1),
        shutdown.clone(),
        {
            let serving = metrics.serving.clone();
            move || {
                let up = batchers.iter().any(Batcher::healthy);
                serving.set(up as i64);
                async move { up }
            }
        },
    );
    let router = front
        .router(&["facesweep.v1.DetectorService"])?
        .add_service(DetectorServiceServer::new(svc).max_decoding_message_size(64 << 20));
    let metrics =
        facesweep_common::metrics::maybe_serve(config.metrics_listen, &metrics.registry, shutdown.clone())
            .await?;
    let running = grpc::spawn_router(router, listener, shutdown.clone());
    // Registered only now, with the model warm: Consul's first check can pass at once. The
    // tag lets fetchers route a model's images to the detectors serving it.
    let me = Announce {
        tags: vec![facesweep_common::ab::consul_tag(&model_id)],
        meta: vec![("model_id".into(), model_id)],
        ..front.announce("detector", running.addr)
    };
    let consul = facesweep_common::consul::register_self(&config.consul, me, shutdown)?;
    Ok(grpc::Running { metrics, ..running }.also_awaiting(consul))
}

/// Benchmarks only (`facesweep bench gpu`): detectors started while set answer without
/// running the model, which measures the gRPC ingest ceiling alone. Not a flag: no deployment
/// should be able to turn it on.
pub static BENCH_SKIP_MODEL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Loads and warms one model per device (every GPU under `auto`), each behind its batcher.
fn load(
    config: &Config,
    metrics: Arc<metrics::Metrics>,
) -> anyhow::Result<(Vec<Batcher>, ModelInfoResponse)> {
    let cuda = model::preload_cuda();
    let device = config.torch_device()?;
    if config.threads > 0 {
        tch::set_num_threads(config.threads as i32);
    }
    let devices: Vec<tch::Device> = match (config.device.as_str(), device) {
        ("auto", tch::Device::Cuda(_)) => {
            (0..tch::Cuda::device_count() as usize).map(tch::Device::Cuda).collect()
        }
        _ => vec![device],
    };
    let mut batchers = Vec::new();
    let mut info = None;
    for d in devices {
        let mut model = Model::load(&config.model, d, !config.fp32)?;
        warm_up(&model)?;
        model.stubbed = BENCH_SKIP_MODEL.load(std::sync::atomic::Ordering::Relaxed);
        tracing::info!(model = %model.config.model_id, device = ?d, dtype = ?model.kind, libtorch_cuda = cuda, "model ready");
        info.get_or_insert_with(|| model_info(&model, config));
        let delay = Duration::from_micros(config.max_delay_us);
        let limits = QueueLimits { images: config.queue, bytes: config.queue_mib << 20 };
        batchers.push(Batcher::start(model, config.max_batch, delay, limits, metrics.clone()));
    }
    Ok((batchers, info.expect("one device at least")))
}

fn model_info(model: &Model, config: &Config) -> ModelInfoResponse {
    let c = &model.config;
    ModelInfoResponse {
        model_id: c.model_id.clone(),
        input_height: c.input_height,
        input_width: c.input_width,
        channel_order: c.channel_order.clone(),
        mean: c.mean.to_vec(),
        std: c.std.to_vec(),
        score_threshold: c.score_threshold,
        nms_iou: c.nms_iou,
        device: format!("{:?}", model.device),
        dtype: format!("{:?}", model.kind),
        max_batch: config.max_batch as u32,
        pixel_formats: input::pixel_formats(model.device).into_iter().map(|f| f as i32).collect(),
    }
}

/// The first passes compile kernels and are many times slower: pay before reporting SERVING.
fn warm_up(model: &Model) -> anyhow::Result<()> {
    let c = &model.config;
    let (w, h) = (c.input_width, c.input_height);
    let warm = ImageInput::rgb_canvas(vec![0u8; (w * h * 3) as usize].into(), w, h);
    for _ in 0..2 {
        model.detect(&[&warm])?;
    }
    Ok(())
}

/// Serves until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    spawn(config, shutdown).await?.join().await
}
