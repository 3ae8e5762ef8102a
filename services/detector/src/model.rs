//! The TorchScript model and its contract (the JSON config that travels with the `.pt`).

use std::path::{Path, PathBuf};

use facesweep_proto::Face;
use serde::Deserialize;
use tch::{CModule, Device, IValue, Kind, Tensor};

use crate::input::ImageInput;
use crate::nms;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model config {0}: {1}")]
    Config(PathBuf, String),
    #[error("torch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("model output: {0}")]
    Output(String),
}

/// What a model file promises; see `docs/ARCHITECTURE.md` ("Model contract").
#[derive(Clone, Debug, Deserialize)]
pub struct ModelConfig {
    pub model_id: String,
    pub input_height: u32,
    pub input_width: u32,
    /// "BGR" or "RGB": the order the network expects (images arrive RGB).
    pub channel_order: String,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub score_threshold: f32,
    pub nms_iou: f32,
}

impl ModelConfig {
    /// Reads `<model>.json` beside `<model>.pt`.
    pub fn for_model(pt: &Path) -> Result<Self, ModelError> {
        let path = pt.with_extension("json");
        let text =
            std::fs::read_to_string(&path).map_err(|e| ModelError::Config(path.clone(), e.to_string()))?;
        let cfg: ModelConfig =
            serde_json::from_str(&text).map_err(|e| ModelError::Config(path.clone(), e.to_string()))?;
        if !matches!(cfg.channel_order.as_str(), "BGR" | "RGB") {
            return Err(ModelError::Config(path, "channel_order must be BGR or RGB".into()));
        }
        Ok(cfg)
    }
}

pub struct Model {
    module: CModule,
    pub device: Device,
    pub kind: Kind,
    pub config: ModelConfig,
    mean: Tensor,
    std: Tensor,
    /// Candidates kept per image before NMS, as in the reference implementation.
    pre_nms_top_k: i64,
    /// Answers no faces without touching the device (ingest benchmarks only).
    pub stubbed: bool,
}

impl Model {
    pub fn load(pt: &Path, device: Device, fp16: bool) -> Result<Self, ModelError> {
        let config = ModelConfig::for_model(pt)?;
        let mut module = CModule::load_on_device(pt, device)?;
        module.set_eval();
        let kind = if fp16 && device.is_cuda() { Kind::Half } else { Kind::Float };
        if kind == Kind::Half {
            module.to(device, kind, false);
        }
        let col = |v: [f32; 3]| Tensor::from_slice(&v).view([1, 3, 1, 1]).to_device(device);
        Ok(Model {
            module,
            device,
            kind,
            mean: col(config.mean),
            std: col(config.std),
            config,
            pre_nms_top_k: 5000,
            stubbed: false,
        })
    }

    /// Runs one batch of same-shape images; faces come back in original-image pixels.
    pub fn detect(&self, images: &[&ImageInput]) -> Result<Vec<Vec<Face>>, ModelError> {
        if self.stubbed {
            return Ok(vec![Vec::new(); images.len()]);
        }
        let _guard = tch::no_grad_guard();
        let mut x = crate::input::assemble(images, self.device);
        if self.config.channel_order == "BGR" {
            x = x.flip([1]);
        }
        let x = ((x - &self.mean) / &self.std).to_kind(self.kind);
        let out = self.module.forward_is(&[IValue::Tensor(x)])?;
        let (boxes, scores, landmarks) = match out {
            IValue::Tuple(mut v) if v.len() == 3 => {
                let t = |iv: IValue| match iv {
                    IValue::Tensor(t) => Ok(t.to_kind(Kind::Float)),
                    other => Err(ModelError::Output(format!("expected tensor, got {other:?}"))),
                };
                let l = t(v.pop().unwrap())?;
                let s = t(v.pop().unwrap())?;
                (t(v.pop().unwrap())?, s, l)
            }
            other => return Err(ModelError::Output(format!("expected a 3-tuple, got {other:?}"))),
        };
        let mut all = Vec::with_capacity(images.len());
        for (i, img) in images.iter().enumerate() {
            let s = scores.get(i as i64);
            let mut keep = s.gt(self.config.score_threshold as f64).nonzero().squeeze_dim(1);
            if keep.size()[0] > self.pre_nms_top_k {
                let (_, idx) = s.index_select(0, &keep).topk(self.pre_nms_top_k, 0, true, true);
                keep = keep.index_select(0, &idx);
            }
            let (bx, sc) = (boxes.get(i as i64).index_select(0, &keep), s.index_select(0, &keep));
            let kept = nms::nms_tensor(&bx, &sc, self.config.nms_iou as f64);
            let kept = Tensor::from_slice(&kept).to_device(self.device);
            // Only the survivors cross back to the host.
            let bx = to_vec(&bx.index_select(0, &kept))?;
            let sc = to_vec(&sc.index_select(0, &kept))?;
            let lm = to_vec(&landmarks.get(i as i64).index_select(0, &keep).index_select(0, &kept))?;
            all.push((0..sc.len()).map(|j| unletterbox(img, &bx, &sc, &lm, j)).collect());
        }
        Ok(all)
    }
}

fn to_vec(t: &Tensor) -> Result<Vec<f32>, ModelError> {
    let t = t.to_device(Device::Cpu).to_kind(Kind::Float).contiguous().view(-1);
    Vec::<f32>::try_from(&t).map_err(ModelError::from)
}

/// Maps candidate `j` from letterboxed to original pixels, clamped to the image.
fn unletterbox(img: &ImageInput, bx: &[f32], sc: &[f32], lm: &[f32], j: usize) -> Face {
    let (ow, oh) = (img.original_width as f32, img.original_height as f32);
    let x = |v: f32| ((v - img.offset_x) / img.scale).clamp(0.0, ow);
    let y = |v: f32| ((v - img.offset_y) / img.scale).clamp(0.0, oh);
    let b = &bx[j * 4..j * 4 + 4];
    let landmarks = lm[j * 10..j * 10 + 10]
        .chunks(2)
        .flat_map(|p| [(p[0] - img.offset_x) / img.scale, (p[1] - img.offset_y) / img.scale])
        .collect();
    Face { x1: x(b[0]), y1: y(b[1]), x2: x(b[2]), y2: y(b[3]), score: sc[j], landmarks }
}

/// Makes CUDA kernels visible: a plain link drops libtorch_cuda.so (no symbol is used directly).
pub fn preload_cuda() -> bool {
    let name = c"libtorch_cuda.so";
    // SAFETY: dlopen with a valid C string; the handle is intentionally leaked.
    let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    !handle.is_null()
}
