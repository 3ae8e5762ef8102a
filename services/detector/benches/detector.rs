//! `make bench-detector`: in-process model throughput by batch size, then throughput and
//! latency through gRPC with many concurrent streams. Not a test: it prints numbers.
//!
//! Env: BENCH_DEVICE (auto|cpu|cuda), BENCH_FP32=1, BENCH_BATCHES="1,2,4,8",
//! BENCH_STREAMS (default 8), BENCH_IMAGES (gRPC images, default 64), BENCH_THREADS.

use std::time::{Duration, Instant};

use facesweep_detector::{Config, ImageInput, Model};
use facesweep_proto::detector_service_client::DetectorServiceClient;
use facesweep_proto::DetectRequest;
use futures::StreamExt;

fn env<T: std::str::FromStr>(k: &str, d: T) -> T {
    std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d)
}

/// The model's input size (width, height): images fill its canvas.
type Size = (u32, u32);

fn image(seed: u8, (w, h): Size) -> ImageInput {
    // Textured input: a constant image would let NMS do no work.
    let n = (w * h * 3) as usize;
    let data: Vec<u8> = (0..n).map(|i: usize| ((i * 31 + seed as usize * 17) % 251) as u8).collect();
    ImageInput::rgb_canvas(data.into(), w, h)
}

/// Images/s of the model alone by batch size (median, synchronised); the best of them.
fn in_process(model: &Model, batches: &[usize]) -> anyhow::Result<f64> {
    let size = (model.config.input_width, model.config.input_height);
    let imgs: Vec<ImageInput> =
        (0..*batches.iter().max().unwrap_or(&1)).map(|i| image(i as u8, size)).collect();
    println!("in-process (model + NMS), {}x{} ({}):", size.0, size.1, model.config.model_id);
    let mut best = 0.0f64;
    for &b in batches {
        let refs: Vec<&ImageInput> = imgs[..b].iter().collect();
        let iters = env("BENCH_ITERS", (16 / b).max(3));
        let secs = facesweep_detector::timing::median_batch_secs(model, &refs, 2, iters)?;
        let ips = b as f64 / secs;
        best = best.max(ips);
        println!("  batch {b:>4}: {ips:>9.1} images/s (median of {iters}, {:.1} ms/batch)", secs * 1e3);
    }
    Ok(best)
}

/// `n` images over `streams` concurrent Detect streams; wall time and each image's latency.
async fn drive(
    ch: &tonic::transport::Channel,
    streams: usize,
    n: usize,
    size: Size,
) -> (Duration, Vec<Duration>) {
    let started = Instant::now();
    let tasks: Vec<_> =
        (0..streams).map(|s| tokio::spawn(one_stream(ch.clone(), s, n / streams, size))).collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    (started.elapsed(), lat)
}

/// One stream of `per` textured images; the latency of each, send to reply.
async fn one_stream(ch: tonic::transport::Channel, s: usize, per: usize, size: Size) -> Vec<Duration> {
    let mut client = DetectorServiceClient::new(ch);
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let mut out = client.detect(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
    let feeder = tokio::spawn(async move {
        let mut times = Vec::new();
        for i in 0..per {
            let img = image((s * 7 + i) as u8, size);
            times.push(Instant::now());
            let req = DetectRequest {
                id: i as u64,
                data: img.data,
                height: size.1,
                width: size.0,
                channels: 3,
                scale: 1.0,
                ..Default::default()
            };
            if tx.send(req).await.is_err() {
                break;
            }
        }
        times
    });
    let mut got = Vec::new();
    while let Some(r) = out.next().await {
        let r = r.unwrap();
        // An error reply is fast and would inflate images/s: a bench of refusals is no bench.
        assert_eq!(r.error_code, 0, "the detector refused a bench image: {}", r.error);
        got.push((r.id, Instant::now()));
        if got.len() == per {
            break;
        }
    }
    let sent = feeder.await.unwrap();
    got.into_iter().map(|(id, at)| at.duration_since(sent[id as usize])).collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    facesweep_detector::model::preload_cuda();
    let model_path = std::env::var("BENCH_MODEL").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/retinaface_mnet025.pt").into()
    });
    let device_arg: String = env("BENCH_DEVICE", "auto".to_string());
    let fp32 = std::env::var("BENCH_FP32").is_ok_and(|v| v == "1");
    let threads: i32 = env("BENCH_THREADS", std::thread::available_parallelism()?.get() as i32);
    tch::set_num_threads(threads);
    let cfg = Config { model: model_path.clone().into(), device: device_arg.clone(), ..Config::default() };
    let device = cfg.torch_device()?;
    let batches: Vec<usize> =
        env("BENCH_BATCHES", "1,2,4,8".to_string()).split(',').filter_map(|s| s.parse().ok()).collect();
    println!("device {device:?} fp32={fp32} torch threads {threads}");

    let model = Model::load(std::path::Path::new(&model_path), device, !fp32)?;
    let best = in_process(&model, &batches)?;
    let size = (model.config.input_width, model.config.input_height);
    drop(model);

    let streams: usize = env("BENCH_STREAMS", 8);
    let total: usize = env("BENCH_IMAGES", 64);
    let max_batch: usize = env("BENCH_MAX_BATCH", *batches.iter().max().unwrap_or(&8));
    let config = Config { listen: "127.0.0.1:0".parse()?, max_batch, threads: threads as usize, fp32, ..cfg };
    let stop = facesweep_common::Shutdown::new();
    let running = facesweep_detector::spawn(config, stop.clone()).await?;
    let ch = facesweep_common::grpc::channel(&running.addr.to_string())?;
    drive(&ch, streams, streams * 2, size).await; // warm-up
    let (elapsed, lat) = drive(&ch, streams, total, size).await;
    let mut ms: Vec<f64> = lat.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let ips = ms.len() as f64 / elapsed.as_secs_f64();
    println!(
        "gRPC: {} streams, {} images, max batch {max_batch}: {ips:.1} images/s, p50 {:.0} ms, p99 {:.0} ms; overhead vs best in-process {:.1}%",
        streams, ms.len(), ms[ms.len() / 2], ms[(ms.len() * 99 / 100).min(ms.len() - 1)], (1.0 - ips / best) * 100.0
    );
    stop.cancel();
    Ok(())
}
