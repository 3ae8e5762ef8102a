//! The exported model is the pinned one: its weights hash to the stored value (bit-exact on
//! any CPU: they are copied, not computed), and its outputs on a fixed input match stored
//! reference outputs within a tolerance (float kernels differ between CPUs, so never bit for
//! bit). The Rust loader honours the contract file beside it.

use facesweep_tests::*;
use serde_json::Value;
use tch::{CModule, IValue, Kind, Tensor};

fn reference() -> Value {
    let text = std::fs::read_to_string(repo_root().join("tests/fixtures/model_reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

#[test]
fn export_keeps_the_pinned_weights() {
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(model_path().with_extension("json")).unwrap()).unwrap();
    assert_eq!(
        cfg["weights_sha256"].as_str().unwrap(),
        reference()["weights_sha256"].as_str().unwrap(),
        "scripts/export_model.py now exports other weights"
    );
}

/// The same input as `reference_input()` in scripts/export_model.py: a lossless photo, exact.
fn reference_input() -> Tensor {
    let rgb = image::open(samples_dir().join("astronaut.png")).unwrap().to_rgb8();
    assert_eq!(rgb.dimensions(), (512, 512));
    let bgr = Tensor::from_slice(rgb.as_raw()).view([512, 512, 3]).permute([2, 0, 1]).flip([0]);
    let mean = Tensor::from_slice(&[104f32, 117.0, 123.0]).view([3, 1, 1]);
    (bgr.to_kind(Kind::Float) - mean).unsqueeze(0)
}

#[test]
fn export_outputs_match_the_reference_within_tolerance() {
    let want = reference();
    let module = CModule::load(model_path()).unwrap();
    let out = tch::no_grad(|| module.forward_is(&[IValue::Tensor(reference_input())])).unwrap();
    let IValue::Tuple(out) = out else { panic!("model returned {out:?}") };
    let t = |i: usize| match &out[i] {
        IValue::Tensor(t) => t.to_kind(Kind::Double).get(0),
        other => panic!("output {i}: {other:?}"),
    };
    let (boxes, scores, landmarks) = (t(0), t(1), t(2));
    let anchors: Vec<i64> = want["anchors"].as_array().unwrap().iter().map(|a| a.as_i64().unwrap()).collect();
    assert!(anchors.len() >= 8);
    let mut worst = (0f64, 0f64);
    for (k, &a) in anchors.iter().enumerate() {
        let score = scores.double_value(&[a]);
        worst.1 = worst.1.max((score - want["scores"][k].as_f64().unwrap()).abs());
        for (got, refs) in [(&boxes, &want["boxes"][k]), (&landmarks, &want["landmarks"][k])] {
            let got = Vec::<f64>::try_from(got.get(a)).unwrap();
            for (g, w) in got.iter().zip(floats(refs)) {
                worst.0 = worst.0.max((g - w).abs());
            }
        }
    }
    // Another CPU moves these by rounding noise (far below the bounds); another model by pixels.
    assert!(worst.0 <= 0.05, "boxes/landmarks differ from the reference by {} px", worst.0);
    assert!(worst.1 <= 1e-3, "scores differ from the reference by {}", worst.1);
}

#[test]
fn contract_file_is_read_and_validated() {
    let cfg = facesweep_detector::ModelConfig::for_model(&model_path()).unwrap();
    assert_eq!(cfg.model_id, "retinaface-mnet025-v1");
    assert_eq!(cfg.channel_order, "BGR");
    assert_eq!(cfg.mean, [104.0, 117.0, 123.0]);
    let dir = tmp_dir();
    let pt = dir.path().join("m.pt");
    std::fs::write(dir.path().join("m.json"), r#"{"model_id":"x","input_height":1,"input_width":1,"channel_order":"YUV","mean":[0,0,0],"std":[1,1,1],"score_threshold":0.5,"nms_iou":0.4}"#).unwrap();
    let err = facesweep_detector::ModelConfig::for_model(&pt).unwrap_err().to_string();
    assert!(err.contains("channel_order"), "{err}");
    assert!(facesweep_detector::ModelConfig::for_model(&dir.path().join("missing.pt")).is_err());
}
