//! `facesweep bench gpu` (`make gpu-check`): every measurement of the detector tier in one
//! command, for the few minutes a GPU machine is lent. fp16 vs fp32 parity, in-process
//! throughput by batch size and wire format, gRPC throughput and the ingest ceiling with the
//! model stubbed out, and the whole mesh on a local corpus. Runs the same on CPU with small
//! sizes (CI), so it is known to work before a GPU is ever available.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use facesweep_common::grpc::channel;
use facesweep_common::Shutdown;
use facesweep_detector::{ImageInput, Model};
use facesweep_imagefetch::decode::{Decoder, Wire};
use facesweep_proto::detector_service_client::DetectorServiceClient;
use facesweep_proto::*;
use futures::StreamExt;
use serde_json::{json, Value};

/// What to measure, and how much of it.
#[derive(Clone, Debug, clap::Args)]
pub struct GpuCheckOptions {
    /// Where report.md and report.json go.
    #[arg(long, env = "OUT", default_value = "gpu-check")]
    pub out: PathBuf,
    /// TorchScript detector to measure.
    #[arg(long, default_value = "models/retinaface_mnet025.pt")]
    pub model: PathBuf,
    /// Photos (jpg/png) used as inputs; default: the sample photos.
    #[arg(long)]
    pub samples: Option<PathBuf>,
    /// Batch sizes of the in-process sweep.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,64,128,256,512")]
    pub batches: Vec<usize>,
    /// Timed repetitions per batch size (the median is reported).
    #[arg(long, default_value_t = 10)]
    pub iters: usize,
    /// Concurrent gRPC streams of the load generator.
    #[arg(long, default_value_t = 32)]
    pub streams: usize,
    /// Images each load-generator stream sends.
    #[arg(long, default_value_t = 2000)]
    pub per_stream: usize,
    /// URLs of the whole-mesh run (0 skips it).
    #[arg(long, default_value_t = 20_000)]
    pub mesh_urls: usize,
}

/// Runs every part; each part's failure is reported, not fatal, so one broken part does not
/// cost the others' figures on a scarce machine.
pub async fn run(o: &GpuCheckOptions) -> anyhow::Result<Value> {
    std::fs::create_dir_all(&o.out)?;
    let cuda = facesweep_detector::model::preload_cuda() && tch::Cuda::is_available();
    let device = if cuda { tch::Device::Cuda(0) } else { tch::Device::Cpu };
    let samples = o.samples.clone().unwrap_or_else(crate::default_samples_dir);
    let photos = load_photos(&samples)?;
    let mut report = json!({
        "date": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(), "device": format!("{device:?}"), "cuda": cuda,
        "cuda_devices": if cuda { tch::Cuda::device_count() } else { 0 }, "photos": photos.len(),
    });
    let parts: [(&str, Part); 4] = [
        ("parity", Part::Parity),
        ("inprocess", Part::InProcess),
        ("grpc", Part::Grpc),
        ("mesh", Part::Mesh),
    ];
    for (name, part) in parts {
        let started = Instant::now();
        let value = match part.run(o, device, &photos).await {
            Ok(v) => v,
            Err(e) => json!({ "error": format!("{e:#}") }),
        };
        eprintln!("gpu-check {name}: {value} ({:.1} s)", started.elapsed().as_secs_f64());
        report[name] = value;
    }
    std::fs::write(o.out.join("report.json"), serde_json::to_vec_pretty(&report)?)?;
    std::fs::write(o.out.join("report.md"), super::gpureport::markdown(&report))?;
    Ok(report)
}

enum Part {
    Parity,
    InProcess,
    Grpc,
    Mesh,
}

impl Part {
    async fn run(&self, o: &GpuCheckOptions, device: tch::Device, photos: &[Photo]) -> anyhow::Result<Value> {
        match self {
            Part::Parity => parity(o, device, photos),
            Part::InProcess => in_process(o, device, photos),
            Part::Grpc => grpc(o, device, photos).await,
            Part::Mesh => {
                let samples = o.samples.clone().unwrap_or_else(crate::default_samples_dir);
                let run =
                    super::gpureport::MeshRun { urls: o.mesh_urls, samples, model: &o.model, out: &o.out };
                super::gpureport::mesh(run, device).await
            }
        }
    }
}

/// A sample photo decoded for both wires, as the detector request each would send (its
/// bytes are shared, so copies of a request cost nothing).
struct Photo {
    canvas: DetectRequest,
    compact: DetectRequest,
}

impl Photo {
    fn request(&self, wire: Wire) -> &DetectRequest {
        if wire == Wire::Canvas {
            &self.canvas
        } else {
            &self.compact
        }
    }
}

fn load_photos(dir: &Path) -> anyhow::Result<Vec<Photo>> {
    let paths = crate::photos_in(dir)?;
    anyhow::ensure!(!paths.is_empty(), "no photos in {}", dir.display());
    let mut d = Decoder::default();
    let mut out = Vec::new();
    for p in paths {
        let body = std::fs::read(&p)?;
        let decode = |d: &mut Decoder, w| {
            Ok::<_, anyhow::Error>(
                d.decode(&body, 640, 640, 1 << 30, w).map_err(|f| anyhow::anyhow!("{f:?}"))?.into_request(0),
            )
        };
        out.push(Photo { canvas: decode(&mut d, Wire::Canvas)?, compact: decode(&mut d, Wire::I420)? });
    }
    Ok(out)
}

/// The detector's own view of an image as it would arrive on `wire`.
fn input(p: &Photo, wire: Wire) -> anyhow::Result<ImageInput> {
    facesweep_detector::validate(p.request(wire), (640, 640)).map_err(anyhow::Error::msg)
}

/// fp16 against fp32 on the same device: every confident fp32 face found within 2 px and
/// 1e-2 of score. CUDA only (LibTorch's CPU half kernels are not what production runs).
fn parity(o: &GpuCheckOptions, device: tch::Device, photos: &[Photo]) -> anyhow::Result<Value> {
    if !device.is_cuda() {
        return Ok(json!({ "skipped": "no CUDA device: fp16 runs on CUDA only" }));
    }
    let (full, half) = (Model::load(&o.model, device, false)?, Model::load(&o.model, device, true)?);
    let (mut faces, mut px, mut score, mut unmatched) = (0, 0.0f32, 0.0f32, 0);
    for p in photos {
        let img = input(p, Wire::I420)?;
        let (a, b) = (full.detect(&[&img])?.remove(0), half.detect(&[&img])?.remove(0));
        for f in a.iter().filter(|f| f.score >= 0.5) {
            let d = |g: &Face| {
                [g.x1 - f.x1, g.y1 - f.y1, g.x2 - f.x2, g.y2 - f.y2].iter().fold(0f32, |m, v| m.max(v.abs()))
            };
            match b.iter().min_by(|x, y| d(x).total_cmp(&d(y))) {
                Some(g) if d(g) <= 2.0 => (px, score) = (px.max(d(g)), score.max((g.score - f.score).abs())),
                _ => unmatched += 1,
            }
            faces += 1;
        }
    }
    let ok = unmatched == 0 && score <= 1e-2;
    Ok(
        json!({ "faces": faces, "unmatched": unmatched, "max_px": px, "max_score": score, "within_2px_1e-2": ok }),
    )
}

/// Images/s of `Model::detect` alone by batch size, fp32 and (on CUDA) fp16, for both wires;
/// synchronised, after warm-up, median of `iters`.
fn in_process(o: &GpuCheckOptions, device: tch::Device, photos: &[Photo]) -> anyhow::Result<Value> {
    let mut rows = Vec::new();
    let kinds: &[bool] = if device.is_cuda() { &[false, true] } else { &[false] };
    for &fp16 in kinds {
        let model = Model::load(&o.model, device, fp16)?;
        for wire in [Wire::Canvas, Wire::I420] {
            for &b in &o.batches {
                let imgs: Vec<ImageInput> =
                    (0..b).map(|i| input(&photos[i % photos.len()], wire)).collect::<Result<_, _>>()?;
                let refs: Vec<&ImageInput> = imgs.iter().collect();
                let med = facesweep_detector::timing::median_batch_secs(&model, &refs, 2, o.iters)?;
                rows.push(json!({ "dtype": if fp16 { "fp16" } else { "fp32" }, "wire": format!("{wire:?}"),
                    "batch": b, "median_ms": med * 1e3, "images_per_s": b as f64 / med }));
            }
        }
    }
    Ok(Value::Array(rows))
}

/// A detector over gRPC on loopback fed by `streams` concurrent streams of pre-made inputs:
/// with the model (throughput) and with it stubbed out (the ingest ceiling), per wire.
async fn grpc(o: &GpuCheckOptions, device: tch::Device, photos: &[Photo]) -> anyhow::Result<Value> {
    let mut rows = Vec::new();
    for stub in [false, true] {
        facesweep_detector::BENCH_SKIP_MODEL.store(stub, std::sync::atomic::Ordering::Relaxed);
        let stop = Shutdown::new();
        let dev = if device.is_cuda() { "cuda" } else { "cpu" };
        let batch = o.batches.iter().copied().max().unwrap_or(32);
        let cfg = facesweep_detector::Config {
            listen: "127.0.0.1:0".parse()?,
            device: dev.to_string(),
            max_batch: batch,
            queue: 100_000,
            model: o.model.clone(),
            ..Default::default()
        };
        let running = facesweep_detector::spawn(cfg, stop.clone()).await;
        facesweep_detector::BENCH_SKIP_MODEL.store(false, std::sync::atomic::Ordering::Relaxed);
        let addr = running?.addr.to_string();
        for wire in [Wire::Canvas, Wire::I420] {
            let reqs: Vec<DetectRequest> = photos.iter().map(|p| p.request(wire).clone()).collect();
            let (images, bytes, secs) = drive(&addr, Arc::new(reqs), o.streams, o.per_stream).await?;
            rows.push(json!({ "model": if stub { "stubbed" } else { "real" }, "wire": format!("{wire:?}"),
                "streams": o.streams, "images": images, "images_per_s": images as f64 / secs,
                "mb_per_s": bytes as f64 / secs / 1e6, "bytes_per_image": bytes / images.max(1) }));
        }
        stop.cancel();
    }
    Ok(Value::Array(rows))
}

/// Sends `per_stream` images on each of `streams` streams; returns (images, bytes, seconds).
async fn drive(
    addr: &str,
    reqs: Arc<Vec<DetectRequest>>,
    streams: usize,
    per_stream: usize,
) -> anyhow::Result<(u64, u64, f64)> {
    let client = DetectorServiceClient::new(channel(addr)?).max_decoding_message_size(64 << 20);
    let started = Instant::now();
    let tasks: Vec<_> = (0..streams)
        .map(|s| {
            let (mut c, reqs) = (client.clone(), reqs.clone());
            tokio::spawn(async move {
                let bytes: u64 = (0..per_stream).map(|i| reqs[(s + i) % reqs.len()].data.len() as u64).sum();
                let msgs = (0..per_stream)
                    .map(move |i| DetectRequest { id: i as u64, ..reqs[(s + i) % reqs.len()].clone() });
                let mut out = c.detect(futures::stream::iter(msgs)).await?.into_inner();
                let mut n = 0u64;
                while let Some(r) = out.next().await {
                    let r = r?;
                    anyhow::ensure!(r.error_code == 0, "detector refused an image: {}", r.error);
                    n += 1;
                }
                Ok::<_, anyhow::Error>((n, bytes))
            })
        })
        .collect();
    let (mut images, mut bytes) = (0, 0);
    for t in tasks {
        let (n, b) = t.await??;
        (images, bytes) = (images + n, bytes + b);
    }
    Ok((images, bytes, started.elapsed().as_secs_f64()))
}
