//! The exported model is reproducible: its outputs on a fixed input hash to the stored value,
//! and the Rust loader honours the contract file beside it.

use facesweep_tests::*;

#[test]
fn export_reproduces_the_stored_output_checksum() {
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model_path().with_extension("json")).unwrap()).unwrap();
    let want = std::fs::read_to_string(repo_root().join("tests/fixtures/model_output_checksum.txt")).unwrap();
    assert_eq!(
        cfg["output_checksum"].as_str().unwrap(),
        want.trim(),
        "scripts/export_model.py output changed"
    );
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
