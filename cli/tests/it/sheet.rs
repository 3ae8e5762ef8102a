//! `facesweep sheet` on a real job (real mesh, real model, photos over loopback HTTP): the
//! sheet's pixels show each detected face's box where it lies in its tile, and a failed
//! URL as a grey tile.

use std::process::Command;

use facesweep_cli::client::UrlInput;
use facesweep_cli::httpserve::{serve, Routes};
use facesweep_cli::sheet::{Layout, BOX_COLOUR, FAILED_GREY};
use facesweep_cli::{default_samples_dir, run_job, Mesh, MeshOptions};
use image::{Rgb, RgbImage};

use crate::harness::model;

const TILE: u32 = 200;

/// Close to `want` after JPEG: each channel within 70.
fn near(p: &Rgb<u8>, want: Rgb<u8>) -> bool {
    p.0.iter().zip(want.0).all(|(a, b)| (*a as i32 - b as i32).abs() < 70)
}

/// Share of the pixels from (x0, y0) to (x1, y1) (one row or one column) near `want`.
fn share_near(img: &RgbImage, (x0, y0): (u32, u32), (x1, y1): (u32, u32), want: Rgb<u8>) -> f64 {
    let pts: Vec<(u32, u32)> = (y0..=y1).flat_map(|y| (x0..=x1).map(move |x| (x, y))).collect();
    pts.iter().filter(|(x, y)| near(img.get_pixel(*x, *y), want)).count() as f64 / pts.len() as f64
}

/// The first face of an export line as a box in tile pixels (the letterbox the fetcher makes).
fn tile_box(line: &serde_json::Value) -> [u32; 4] {
    let (w, h) = (line["width"].as_u64().unwrap() as u32, line["height"].as_u64().unwrap() as u32);
    let p = facesweep_imagefetch::decode::fit(w, h, TILE, TILE);
    let b: Vec<f64> =
        line["faces"][0]["box"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let at = |v: f64, off: u32| (v * p.scale as f64 + off as f64).round() as u32;
    [at(b[0], p.x), at(b[1], p.y), at(b[2], p.x), at(b[3], p.y)]
}

#[tokio::test(flavor = "multi_thread")]
async fn sheet_draws_boxes_on_faces_and_greys_failures() {
    let dir = default_samples_dir();
    let mut routes = Routes::default();
    routes.add("/astronaut.png", 200, "image/png", std::fs::read(dir.join("astronaut.png")).unwrap());
    routes.add("/hopper.jpg", 200, "image/jpeg", std::fs::read(dir.join("grace_hopper.jpg")).unwrap());
    let (addr, _srv) = serve(routes).await.unwrap();
    let tmp = tempfile::Builder::new().prefix("facesweep-sheet").tempdir_in("/tmp").unwrap();
    let mut o = MeshOptions::new(tmp.path().join("data"), model());
    o.durability = facesweep_pgembed::Durability::Ephemeral;
    let mesh = Mesh::start(o).await.unwrap();
    let urls = ["astronaut.png", "hopper.jpg", "gone.jpg"].map(|n| format!("http://{addr}/{n}"));
    let export = tmp.path().join("export.jsonl");
    run_job(&mesh, "sheet", &UrlInput::List(urls.to_vec()), &export, true).await.unwrap();
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&export).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines[2]["status"], "http_error", "{:?}", lines[2]);

    let out = tmp.path().join("sheet.jpg");
    let run = Command::new(env!("CARGO_BIN_EXE_facesweep"))
        .args(["sheet", "--job", "sheet", "--tile", &TILE.to_string(), "--seed", "1"])
        .args(["--results", &mesh.results.to_string(), "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{said}\n{}", String::from_utf8_lossy(&run.stderr));
    assert!(said.contains("3 of 3 URLs (seed 1), 2 pictures, 1 grey"), "{said}");

    let sheet = image::open(&out).unwrap().to_rgb8();
    let layout = Layout::new(3, TILE);
    assert_eq!(sheet.dimensions(), layout.size());
    // Tiles are in input order: astronaut, hopper, the failure.
    for (i, line) in lines.iter().take(2).enumerate() {
        let (cx, cy) = layout.cell(i);
        let [x1, y1, x2, y2] = tile_box(line);
        let (l, r, t, b) = (cx + x1, cx + x2, cy + y1, cy + y2);
        // The line is drawn inside the box's edges: sample its middle, away from the corners.
        let edges = [
            share_near(&sheet, (l + 3, t), (r - 3, t), BOX_COLOUR),
            share_near(&sheet, (l + 3, b - 1), (r - 3, b - 1), BOX_COLOUR),
            share_near(&sheet, (l, t + 3), (l, b - 3), BOX_COLOUR),
            share_near(&sheet, (r - 1, t + 3), (r - 1, b - 3), BOX_COLOUR),
        ];
        assert!(edges.iter().all(|s| *s > 0.9), "tile {i} box edges (top, bottom, left, right): {edges:?}");
        // Only the outline: the face inside is the photo, not box colour.
        let inside = share_near(&sheet, (l + 8, (t + b) / 2), (r - 8, (t + b) / 2), BOX_COLOUR);
        assert!(inside < 0.3, "tile {i}: the box is filled ({inside})");
    }
    let (fx, fy) = layout.cell(2);
    let grey = share_near(&sheet, (fx + 2, fy + 2), (fx + TILE - 3, fy + 2), FAILED_GREY);
    let middle = share_near(&sheet, (fx + 2, fy + 20), (fx + 2, fy + TILE - 20), FAILED_GREY);
    assert!(grey > 0.95 && middle > 0.95, "failed tile not grey: {grey} {middle}");
    assert!(share_near(&sheet, (fx, fy), (fx + 10, fy + 10), BOX_COLOUR) == 0.0, "no box on a failure");

    // --status samples only that class; a job without URLs says where to look.
    let sheet_of = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_facesweep"))
            .arg("sheet")
            .args(args)
            .args(["--results", &mesh.results.to_string(), "--out"])
            .arg(tmp.path().join("more.png"))
            .output()
            .unwrap()
    };
    let failed = sheet_of(&["--job", "sheet", "--status", "http_error"]);
    let said = String::from_utf8_lossy(&failed.stdout);
    assert!(said.contains("1 of 1 URLs") && said.contains("0 pictures, 1 grey"), "{said}");
    let none = sheet_of(&["--job", "no-such-job"]);
    let err = String::from_utf8_lossy(&none.stderr);
    assert!(!none.status.success() && err.contains("facesweep jobs"), "{err}");
    mesh.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn sheet_names_the_formats_it_writes() {
    let tmp = tempfile::Builder::new().prefix("facesweep-sheet").tempdir_in("/tmp").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_facesweep"))
        .args(["sheet", "--job", "x", "--out"])
        .arg(tmp.path().join("s.gif"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("name the sheet .jpg or .png"), "{err}");
}
