//! Progressive JPEGs decoded at half size or less lose their refinement scans before
//! libjpeg-turbo sees them (imagefetch's `jpegscan.rs`, issue #24): the detector's faces must
//! not move. The sample photos, re-encoded progressive by the pinned Pillow (libjpeg's standard
//! script, as on the web), through one detector over gRPC, decoded with and without splicing.

use facesweep_common::Shutdown;
use facesweep_imagefetch::decode::{Decoder, Wire};
use facesweep_tests::*;

use crate::wire::{boxf, detect, detector};

/// Writes each photo as a progressive JPEG (quality 85, 4:2:0) into `dir`.
fn progressive_copies(photos: &[std::path::PathBuf], dir: &std::path::Path) -> Vec<Vec<u8>> {
    let script = "import sys\nfrom PIL import Image\nfor i, p in enumerate(sys.argv[2:]):\n    \
                  Image.open(p).convert('RGB').save(f'{sys.argv[1]}/{i}.jpg', quality=85, progressive=True)";
    let out =
        std::process::Command::new(python()).args(["-c", script]).arg(dir).args(photos).output().unwrap();
    assert!(out.status.success(), "Pillow failed: {}", String::from_utf8_lossy(&out.stderr));
    (0..photos.len()).map(|i| std::fs::read(dir.join(format!("{i}.jpg"))).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn faces_in_spliced_progressive_jpegs_match_the_whole_files() {
    let stop = Shutdown::new();
    let mut d = detector(&stop).await;
    let photos = facesweep_cli::photos_in(&samples_dir()).unwrap();
    let dir = tmp_dir();
    let files = progressive_copies(&photos, dir.path());
    let (mut whole, mut spliced) = (Decoder::default().with_scan_splicing(false), Decoder::default());
    let (mut full, mut cut, mut differ) = (Vec::new(), Vec::new(), 0);
    for wire in [Wire::Canvas, Wire::I420] {
        for (i, body) in files.iter().enumerate() {
            let a = whole.decode(body, 640, 640, 1 << 30, wire).unwrap();
            let b = spliced.decode(body, 640, 640, 1 << 30, wire).unwrap();
            differ += usize::from(a.data != b.data);
            let id = (full.len()) as u64;
            full.push(a.into_request(id));
            cut.push(b.into_request(id));
            assert_eq!(id as usize % files.len(), i);
        }
    }
    // The 1920-pixel photos decode at 3/8 and are spliced; the 512-pixel ones are not.
    assert!(differ >= 12, "only {differ} decodes changed: is splicing on?");
    let (want, got) = (detect(&mut d, full).await, detect(&mut d, cut).await);
    let (mut faces, mut worst_iou, mut worst_score) = (0, 1.0f64, 0.0f64);
    for (w, g) in want.iter().zip(&got) {
        assert_eq!((w.error_code, g.error_code), (0, 0), "{} / {}", w.error, g.error);
        let name = photos[w.id as usize % photos.len()].display();
        assert_eq!(w.faces.len(), g.faces.len(), "{name}: {:?} vs {:?}", w.faces, g.faces);
        for f in &w.faces {
            let m = g.faces.iter().map(|h| (iou(&boxf(h), &boxf(f)), h)).max_by(|a, b| a.0.total_cmp(&b.0));
            let (best, h) = m.unwrap();
            worst_iou = worst_iou.min(best);
            worst_score = worst_score.max((h.score - f.score).abs() as f64);
            faces += 1;
        }
    }
    eprintln!("{faces} faces (both wires): worst IoU {worst_iou:.4}, worst score change {worst_score:.4}");
    assert!(faces >= 40, "expected the multi-face photos to yield many faces, got {faces}");
    assert!(worst_iou >= 0.9, "worst IoU {worst_iou:.3}");
    assert!(worst_score <= 0.01, "worst score change {worst_score:.4}");
    stop.cancel();
}
