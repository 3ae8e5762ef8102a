//! Back-pressure in the detector: a full queue makes streams wait and unary calls fail fast
//! with RESOURCE_EXHAUSTED; a caller past its deadline costs nothing and breaks nothing.

use std::time::Duration;

use facesweep_common::grpc::channel;
use facesweep_common::Shutdown;
use facesweep_proto::detector_service_client::DetectorServiceClient;
use facesweep_proto::*;
use facesweep_tests::*;
use futures::StreamExt;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_queue_waits_for_streams_and_refuses_unary_calls() {
    let stop = Shutdown::new();
    let cfg = facesweep_detector::Config {
        consul: Default::default(),
        tls: Default::default(),
        listen: "127.0.0.1:0".parse().unwrap(),
        model: model_path(),
        device: "cpu".into(),
        fp32: true,
        max_batch: 1,
        max_delay_us: 0,
        queue: 1,
        threads: 1,
        metrics_listen: None,
    };
    let running = facesweep_detector::spawn(cfg, stop.clone()).await.unwrap();
    let client = DetectorServiceClient::new(channel(&running.addr.to_string()).unwrap())
        .max_decoding_message_size(64 << 20);

    // Unary: with one queue slot, a burst must see refusals, and every call ends one way or the other.
    let calls: Vec<_> = (0..12)
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
    let mut answered = false;
    for _ in 0..100 {
        match client.clone().detect_one(DetectOneRequest { image: Some(image(100)) }).await {
            Ok(_) => {
                answered = true;
                break;
            }
            Err(e) => assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(answered, "the detector never recovered after a deadline");
    stop.cancel();
}
