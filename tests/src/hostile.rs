//! The hostile web of the chaos test: a corpus served plain and chunked with failing URLs,
//! and the real model wrapped so that marked images make the detector fail or emit
//! non-finite landmarks.

use std::path::{Path, PathBuf};
use std::process::Command;

use facesweep_cli::httpserve::Routes;

use crate::{python, samples_dir};

/// Small versions of the sample photos (fast to detect), each also served chunked, a large
/// chunked noise image, and failing URLs: cycled. Plus two single trouble-makers for the
/// poisoned model (see `poisoned_model`): `/poison.png` and `/nan.png`.
pub fn corpus(dir: &Path) -> (Routes, Vec<&'static str>) {
    let mut routes = Routes::default();
    let mut paths = Vec::new();
    for (i, e) in std::fs::read_dir(samples_dir()).unwrap().enumerate() {
        let p = e.unwrap().path();
        if !p.extension().is_some_and(|x| x == "jpg" || x == "png") {
            continue;
        }
        let img = image::open(&p).unwrap().thumbnail(320, 320);
        let out = dir.join(format!("s{i}.jpg"));
        img.to_rgb8().save(&out).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        let (plain, chunked): (&'static str, &'static str) = (
            Box::leak(format!("/s{i}.jpg").into_boxed_str()),
            Box::leak(format!("/c{i}.jpg").into_boxed_str()),
        );
        routes.add(plain, 200, "image/jpeg", bytes.clone());
        routes.add_chunked(chunked, "image/jpeg", bytes);
        paths.extend([plain, chunked]);
    }
    routes.add_chunked("/noise.jpg", "image/jpeg", noise_jpeg(dir));
    routes.add("/page.html", 200, "text/html", "<html></html>");
    paths.extend(["/noise.jpg", "/missing.jpg", "/page.html"]);
    for (name, marker) in [("poison", [255, 0, 255]), ("nan", [0, 255, 255])] {
        routes.add(&format!("/{name}.png"), 200, "image/png", marked_astronaut(dir, name, marker));
    }
    (routes, paths)
}

/// A ~1.5 MB JPEG: larger than the 1 MiB a body of unknown length first reserves.
fn noise_jpeg(dir: &Path) -> Vec<u8> {
    let mut seed = 0x9E37_79B9u32;
    let img = image::RgbImage::from_fn(1100, 1100, |_, _| {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        image::Rgb([seed as u8, (seed >> 8) as u8, (seed >> 16) as u8])
    });
    let out = dir.join("noise.jpg");
    img.save(&out).unwrap();
    std::fs::read(out).unwrap()
}

/// The astronaut at 256×256 (the model's input here: the corner stays at the tensor's corner)
/// with a solid `marker` block in its top-left corner.
fn marked_astronaut(dir: &Path, name: &str, marker: [u8; 3]) -> Vec<u8> {
    let img = image::open(samples_dir().join("astronaut.png")).unwrap().resize_exact(
        256,
        256,
        image::imageops::FilterType::Triangle,
    );
    let mut img = img.to_rgb8();
    for y in 0..24 {
        for x in 0..24 {
            img.put_pixel(x, y, image::Rgb(marker));
        }
    }
    let out = dir.join(format!("{name}.png"));
    img.save(&out).unwrap();
    std::fs::read(out).unwrap()
}

/// The real model wrapped so that an image with a magenta corner raises (a detector error
/// on one image) and one with a cyan corner gets non-finite landmarks (a result the results
/// service must refuse). Input is BGR minus the mean, so markers are compared in that space.
pub fn poisoned_model(dir: &Path, real: &Path) -> PathBuf {
    let script = r#"
import sys, torch
class Poisoned(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner
    def forward(self, x):
        px = x[:, :, 0, 0]
        magenta = torch.tensor([151.0, -117.0, 132.0], device=x.device, dtype=x.dtype)
        cyan = torch.tensor([151.0, 138.0, -123.0], device=x.device, dtype=x.dtype)
        if bool(((px - magenta).abs().max(dim=1).values < 40.0).any()):
            raise RuntimeError("poisoned image")
        boxes, scores, pts = self.inner(x)
        bad = ((px - cyan).abs().max(dim=1).values < 40.0).view(-1, 1, 1)
        pts = torch.where(bad, pts * float("nan"), pts)
        return boxes, scores, pts
torch.jit.script(Poisoned(torch.jit.load(sys.argv[1]))).save(sys.argv[2])
"#;
    let py = dir.join("poisoned.py");
    std::fs::write(&py, script).unwrap();
    let out = dir.join("poisoned.pt");
    let run = Command::new(python()).arg(&py).arg(real).arg(&out).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    std::fs::copy(real.with_extension("json"), out.with_extension("json")).unwrap();
    out
}
