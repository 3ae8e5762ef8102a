//! Detector: a TorchScript face detector behind a dynamic batcher on its own OS thread.

mod batcher;
pub mod input;
mod metrics;
pub mod model;
pub mod nms;
mod service;
pub mod timing;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use facesweep_common::consul::Announce;
use facesweep_common::grpc::{self, Frontend, Running};
use facesweep_common::Shutdown;
use facesweep_proto::detector_service_server::DetectorServiceServer;
use facesweep_proto::ModelInfoResponse;

pub use batcher::{Batcher, Detection, QueueLimits};
pub use input::{validate, ImageInput};
pub use model::{Model, ModelConfig};

/// Detector configuration (`facesweep-detector --help`).
#[derive(Clone, Debug, clap::Parser)]
#[command(name = "facesweep-detector", version, about)]
pub struct Config {
    /// Address to serve gRPC on.
    #[arg(long, env = "DETECTOR_LISTEN", default_value = "0.0.0.0:50052")]
    pub listen: SocketAddr,
    /// TorchScript model; its contract is read from the `.json` beside it.
    #[arg(long, env = "DETECTOR_MODEL", default_value = "models/retinaface_mnet025.pt")]
    pub model: PathBuf,
    /// `auto` (CUDA when present), `cpu`, or `cuda:N`.
    #[arg(long, env = "DETECTOR_DEVICE", default_value = "auto")]
    pub device: String,
    /// Run fp32 on CUDA instead of the default fp16.
    #[arg(long, env = "DETECTOR_FP32")]
    pub fp32: bool,
    /// Largest batch handed to the model.
    #[arg(long, env = "DETECTOR_MAX_BATCH", default_value_t = 32)]
    pub max_batch: usize,
    /// Longest the first image of a batch waits for company, in microseconds.
    #[arg(long, env = "DETECTOR_MAX_DELAY_US", default_value_t = 2000)]
    pub max_delay_us: u64,
    /// Images queued across all streams before new work waits (streams) or is refused (unary).
    #[arg(long, env = "DETECTOR_QUEUE", default_value_t = 1024)]
    pub queue: usize,
    /// Pixels queued per device at most, MiB (bounds memory whatever the image sizes).
    #[arg(long, env = "DETECTOR_QUEUE_MIB", default_value_t = 1024)]
    pub queue_mib: u64,
    /// Serve Prometheus metrics at http://ADDR/metrics (off when absent).
    #[arg(long, env = "DETECTOR_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// CPU threads for LibTorch; 0 = number of cores.
    #[arg(long, env = "DETECTOR_THREADS", default_value_t = 0)]
    pub threads: usize,
    /// Consul registration (off unless --consul-addr / CONSUL_HTTP_ADDR is set).
    #[command(flatten)]
    pub consul: facesweep_common::consul::ConsulArgs,
    /// Mutual TLS for gRPC (off unless --tls-cert, --tls-key and --tls-ca are all set).
    #[command(flatten)]
    pub tls: facesweep_common::tls::TlsArgs,
    /// Credentials for admin calls (off: loopback callers only).
    #[command(flatten)]
    pub auth: facesweep_common::auth::AuthArgs,
}

impl Config {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!((1..=1024).contains(&self.max_batch), "--max-batch must be in 1..=1024");
        anyhow::ensure!(self.queue >= self.max_batch, "--queue must be at least --max-batch");
        anyhow::ensure!(
            self.model.exists(),
            "model {} not found (run scripts/setup.sh)",
            self.model.display()
        );
        Ok(())
    }

    pub fn torch_device(&self) -> anyhow::Result<tch::Device> {
        Ok(match self.device.as_str() {
            "auto" => tch::Device::cuda_if_available(),
            "cpu" => tch::Device::Cpu,
            "cuda" => tch::Device::Cuda(0),
            d => match d.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
                Some(n) => tch::Device::Cuda(n),
                None => anyhow::bail!("--device must be auto, cpu, cuda or cuda:N, got {d:?}"),
            },
        })
    }
}

/// Loads and warms the model, then serves in the background.
pub async fn spawn(config: Config, shutdown: Shutdown) -> anyhow::Result<Running> {
    metrics::register();
    config.validate()?;
    let front = Frontend::start(&config.tls, &shutdown).await?;
    let listener = grpc::bind(config.listen).await?;
    front.health.set_not_serving::<DetectorServiceServer<service::DetectorSvc>>().await;
    let cfg = config.clone();
    // Loading and warm-up block for seconds: keep them off the async workers.
    let (batchers, info) = tokio::task::spawn_blocking(move || load(&cfg)).await??;
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
        move || {
            let up = batchers.iter().any(Batcher::healthy);
            metrics::DETECTOR_SERVING.set(up as i64);
            async move { up }
        },
    );
    let router = front
        .router(&["facesweep.v1.DetectorService"])?
        .add_service(DetectorServiceServer::new(svc).max_decoding_message_size(64 << 20));
    let metrics =
        facesweep_common::metrics::maybe_serve(config.metrics_listen, &metrics::REGISTRY, shutdown.clone())
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
fn load(config: &Config) -> anyhow::Result<(Vec<Batcher>, ModelInfoResponse)> {
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
        batchers.push(Batcher::start(model, config.max_batch, delay, limits));
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
