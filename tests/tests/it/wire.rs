//! The compact wire (resized content only, YUV 4:2:0, padded and converted on the detector's
//! device) against the whole RGB canvas, through one detector over gRPC on the sample photos:
//! the same faces, a third of the bytes; and a format the detector does not know is refused.

use facesweep_common::grpc::channel;
use facesweep_common::Shutdown;
use facesweep_imagefetch::decode::{Decoder, Wire};
use facesweep_proto::detector_service_client::DetectorServiceClient;
use facesweep_proto::*;
use facesweep_tests::*;
use futures::StreamExt;
use tonic::transport::Channel;

pub(crate) async fn detector(stop: &Shutdown) -> DetectorServiceClient<Channel> {
    let cfg = facesweep_detector::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        device: "cpu".into(),
        threads: 2,
        model: model_path(),
        ..Default::default()
    };
    let running = facesweep_detector::spawn(cfg, stop.clone()).await.unwrap();
    DetectorServiceClient::new(channel(&running.addr.to_string()).unwrap())
        .max_decoding_message_size(64 << 20)
}

pub(crate) async fn detect(
    d: &mut DetectorServiceClient<Channel>,
    reqs: Vec<DetectRequest>,
) -> Vec<DetectResponse> {
    let mut out: Vec<DetectResponse> =
        d.detect(futures::stream::iter(reqs)).await.unwrap().into_inner().map(|r| r.unwrap()).collect().await;
    out.sort_by_key(|r| r.id);
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn i420_content_finds_the_faces_the_rgb_canvas_finds_in_a_third_of_the_bytes() {
    let stop = Shutdown::new();
    let mut d = detector(&stop).await;
    let info = d.model_info(ModelInfoRequest {}).await.unwrap().into_inner();
    // Accepted everywhere; a CPU detector prefers the canvas (converting costs it images/s).
    let (rgb, i420) = (PixelFormat::RgbUnspecified as i32, PixelFormat::I420 as i32);
    assert_eq!(info.pixel_formats, [rgb, i420]);
    let photos = facesweep_cli::photos_in(&samples_dir()).unwrap();
    assert!(photos.len() >= 6);
    let (mut canvas, mut compact, mut bytes) = (Vec::new(), Vec::new(), (0usize, 0usize));
    let mut decoder = Decoder::default();
    for (i, p) in photos.iter().enumerate() {
        let body = std::fs::read(p).unwrap();
        let a = decoder.decode(&body, 640, 640, 1 << 30, Wire::Canvas).unwrap();
        let b = decoder.decode(&body, 640, 640, 1 << 30, Wire::I420).unwrap();
        bytes = (bytes.0 + a.data.len(), bytes.1 + b.data.len());
        canvas.push(a.into_request(i as u64));
        compact.push(b.into_request(i as u64));
    }
    let ratio = bytes.1 as f64 / bytes.0 as f64;
    eprintln!("{} photos: canvas {} B, i420 content {} B ({ratio:.3})", photos.len(), bytes.0, bytes.1);
    assert!(ratio <= 0.5, "i420 content must at least halve the bytes, got {ratio:.3}");

    let (want, got) = (detect(&mut d, canvas).await, detect(&mut d, compact).await);
    let (mut faces, mut worst_iou, mut worst_score) = (0, 1.0f64, 0.0f64);
    for (w, g) in want.iter().zip(&got) {
        assert_eq!((w.error_code, g.error_code), (0, 0), "{} / {}", w.error, g.error);
        let name = photos[w.id as usize].display();
        // Faces at the score threshold may flip either way: compare the confident ones.
        for f in w.faces.iter().filter(|f| f.score >= 0.7) {
            let m = g.faces.iter().map(|h| (iou(&boxf(h), &boxf(f)), h)).max_by(|a, b| a.0.total_cmp(&b.0));
            let (best, h) = m.unwrap_or_else(|| panic!("{name}: no face at all for {f:?}"));
            assert!(best >= 0.9, "{name}: face {f:?} best match IoU {best:.3}");
            worst_iou = worst_iou.min(best);
            worst_score = worst_score.max((h.score - f.score).abs() as f64);
            faces += 1;
        }
    }
    eprintln!(
        "{faces} confident faces matched: worst IoU {worst_iou:.3}, worst score deviation {worst_score:.4}"
    );
    assert!(faces >= 20, "expected the multi-face photos to yield many faces, got {faces}");
    assert!(worst_score <= 0.01, "score deviation {worst_score}");
    stop.cancel();
}

pub(crate) fn boxf(f: &Face) -> [f64; 4] {
    [f.x1 as f64, f.y1 as f64, f.x2 as f64, f.y2 as f64]
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wire_format_the_detector_does_not_know_is_refused_and_the_stream_goes_on() {
    let stop = Shutdown::new();
    let mut d = detector(&stop).await;
    let good = DetectRequest {
        id: 1,
        data: vec![0u8; 8 * 8 * 3].into(),
        width: 8,
        height: 8,
        channels: 3,
        scale: 1.0,
        ..Default::default()
    };
    let unknown = DetectRequest { id: 2, format: 99, ..good.clone() };
    // Content that would land outside its canvas.
    let outside = DetectRequest { id: 3, canvas_width: 8, canvas_height: 8, offset_x: 4.0, ..good.clone() };
    let got = detect(&mut d, vec![good, unknown, outside]).await;
    assert_eq!(got.iter().map(|r| r.error_code).collect::<Vec<_>>(), [0, 3, 3]);
    assert!(got[1].error.contains("pixel format 99"), "{}", got[1].error);
    assert!(got[2].error.contains("does not fit"), "{}", got[2].error);
    stop.cancel();
}
