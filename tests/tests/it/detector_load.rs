//! Back-pressure in the detector: a full queue makes streams wait and unary calls fail fast
//! with RESOURCE_EXHAUSTED (the queue is bounded in images and in bytes); a caller past its
//! deadline costs nothing and breaks nothing; a broken device turns health NOT_SERVING.

use std::time::Duration;

use facesweep_common::grpc::channel;
use facesweep_common::Shutdown;
use facesweep_proto::detector_service_client::DetectorServiceClient;
use facesweep_proto::*;
use facesweep_tests::*;
use futures::StreamExt;
use tonic::transport::Channel;
use tonic::Code;

fn image(id: u64) -> DetectRequest {
    DetectRequest {
        id,
        data: vec![90u8; 640 * 640 * 3].into(),
        height: 640,
        width: 640,
        channels: 3,
        scale: 1.0,
        ..Default::default()
    }
}

fn config(model: std::path::PathBuf, queue: usize, queue_mib: u64) -> facesweep_detector::Config {
    facesweep_detector::Config {
        consul: Default::default(),
        tls: Default::default(),
        auth: Default::default(),
        listen: "127.0.0.1:0".parse().unwrap(),
        model,
        device: "cpu".into(),
        fp32: true,
        max_batch: 1,
        max_delay_us: 0,
        queue,
        queue_mib,
        threads: 1,
        metrics_listen: None,
    }
}

async fn start(
    cfg: facesweep_detector::Config,
    stop: &Shutdown,
) -> (DetectorServiceClient<Channel>, Channel) {
    let running = facesweep_detector::spawn(cfg, stop.clone()).await.unwrap();
    let ch = channel(&running.addr.to_string()).unwrap();
    (DetectorServiceClient::new(ch.clone()).max_decoding_message_size(64 << 20), ch)
}

/// How a burst of unary calls ended: (answered, refused with RESOURCE_EXHAUSTED).
async fn burst(client: &DetectorServiceClient<Channel>, n: u64) -> (usize, usize) {
    let calls: Vec<_> = (0..n)
        .map(|i| {
            let mut c = client.clone();
            tokio::spawn(
                async move { c.detect_one(DetectOneRequest { image: Some(image(i)) }).await.map(|_| ()) },
            )
        })
        .collect();
    let (mut ok, mut exhausted) = (0, 0);
    for c in calls {
        match c.await.unwrap() {
            Ok(()) => ok += 1,
            Err(e) if e.code() == Code::ResourceExhausted => exhausted += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    (ok, exhausted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_queue_is_bounded_in_bytes_too() {
    let stop = Shutdown::new();
    // 64 image slots but 1 MiB of pixels: one 1.2 MB image fills the queue.
    let (client, _) = start(config(model_path(), 64, 1), &stop).await;
    let (ok, exhausted) = burst(&client, 12).await;
    assert!(ok >= 1 && exhausted >= 1, "ok {ok}, exhausted {exhausted}");
    stop.cancel();
}

/// A TorchScript model that raises `error` on batches holding a bright image (warm-up's
/// black passes) and finds nothing otherwise.
fn failing_model(dir: &std::path::Path, error: &str) -> std::path::PathBuf {
    let pt = dir.join("failing.pt");
    // TorchScript raises only literal messages: the message is written into the source.
    let script = format!(
        r#"
import json, sys, torch
class Failing(torch.nn.Module):
    def forward(self, x):
        if bool(x.max() > 100.0):
            raise RuntimeError({error:?})
        b = x.shape[0]
        return torch.zeros(b, 1, 4), torch.zeros(b, 1), torch.zeros(b, 1, 10)
torch.jit.script(Failing()).save(sys.argv[1])
cfg = json.load(open(sys.argv[2])); cfg["model_id"] = "failing"
json.dump(cfg, open(sys.argv[1][:-3] + ".json", "w"))
"#
    );
    let real = model_path().with_extension("json");
    // TorchScript reads the module's source, so it must come from a file.
    let py = dir.join("failing.py");
    std::fs::write(&py, script).unwrap();
    let out = std::process::Command::new(python()).arg(&py).arg(&pt).arg(real).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    pt
}

/// Waits until the detector's health reads `want`.
async fn reach(ch: &Channel, want: tonic_health::pb::health_check_response::ServingStatus, what: &str) {
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    wait_until(what, 20, || async {
        let req = HealthCheckRequest { service: "facesweep.v1.DetectorService".into() };
        HealthClient::new(ch.clone()).check(req).await.unwrap().into_inner().status() == want
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broken_device_takes_the_detector_out_of_service() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let stop = Shutdown::new();
    let dir = tmp_dir();
    let model = failing_model(dir.path(), "CUDA error: an illegal memory access was encountered");
    let (client, ch) = start(config(model, 8, 64), &stop).await;
    reach(&ch, ServingStatus::Serving, "the detector becomes ready").await;
    let mut white = image(1);
    white.data = vec![255u8; 640 * 640 * 3].into();
    let e = client.clone().detect_one(DetectOneRequest { image: Some(white) }).await.unwrap_err();
    assert!(e.message().contains("illegal memory access"), "{e:?}");
    reach(&ch, ServingStatus::NotServing, "health NOT_SERVING after the device broke").await;
    // New work is refused at once instead of failing image by image.
    let e = client.clone().detect_one(DetectOneRequest { image: Some(image(2)) }).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_failing_image_does_not_fail_its_batch_mates() {
    let stop = Shutdown::new();
    let dir = tmp_dir();
    let mut cfg = config(failing_model(dir.path(), "this image breaks the model"), 16, 64);
    (cfg.max_batch, cfg.max_delay_us) = (4, 500_000); // the four images share one batch
    let (client, _) = start(cfg, &stop).await;
    let mut images: Vec<DetectRequest> = (0..4).map(image).collect();
    images[2].data = vec![255u8; 640 * 640 * 3].into();
    let replies: Vec<DetectResponse> = client
        .clone()
        .detect(futures::stream::iter(images))
        .await
        .unwrap()
        .into_inner()
        .map(|r| r.unwrap())
        .collect()
        .await;
    assert_eq!(replies.len(), 4);
    for r in &replies {
        if r.id == 2 {
            assert!(r.error.contains("breaks the model"), "{r:?}");
        } else {
            assert_eq!(r.error_code, 0, "batch-mate {} failed with {:?}", r.id, r.error);
        }
    }
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_queue_waits_for_streams_and_refuses_unary_calls() {
    let stop = Shutdown::new();
    let (client, _) = start(config(model_path(), 1, 1024), &stop).await;

    // Unary: with one queue slot, a burst must see refusals, and every call ends one way or the other.
    let (ok, exhausted) = burst(&client, 12).await;
    assert!(ok >= 1 && exhausted >= 1, "ok {ok}, exhausted {exhausted}");

    // Streams wait instead: every image of the stream is answered.
    let mut c = client.clone();
    let replies: Vec<_> =
        c.detect(futures::stream::iter((0..6).map(image))).await.unwrap().into_inner().collect().await;
    assert_eq!(replies.len(), 6);
    assert!(replies.iter().all(|r| r.as_ref().is_ok_and(|r| r.error_code == 0)));

    // A deadline the model cannot meet: the call ends with DEADLINE_EXCEEDED, the service lives on.
    let mut req = tonic::Request::new(DetectOneRequest { image: Some(image(99)) });
    req.set_timeout(Duration::from_millis(1));
    let e = client.clone().detect_one(req).await.unwrap_err();
    assert!(matches!(e.code(), Code::DeadlineExceeded | Code::Cancelled), "{e:?}");
    // The abandoned image holds the only queue slot until the model thread discards it;
    // until then refusals are RESOURCE_EXHAUSTED, and then the service answers again.
    wait_until("the detector answers again after a deadline", 30, || {
        let mut c = client.clone();
        async move {
            match c.detect_one(DetectOneRequest { image: Some(image(100)) }).await {
                Ok(_) => true,
                Err(e) => {
                    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
                    false
                }
            }
        }
    })
    .await;
    stop.cancel();
}
