//! Tiles and their grid: a letterboxed picture with its faces drawn, or a grey failure.

use std::path::Path;

use facesweep_imagefetch::decode::Letterboxed;
use facesweep_proto::Face;
use image::{Rgb, RgbImage};

use super::font::{self, draw_text, put, GLYPH_H};
use super::Sampled;

/// Face boxes (and their scores): pure green stands out on skin and survives JPEG.
pub const BOX_COLOUR: Rgb<u8> = Rgb([0, 255, 0]);
/// Landmarks (eyes, nose, mouth corners).
const LANDMARK_COLOUR: Rgb<u8> = Rgb([255, 0, 255]);
/// A URL without a picture: failed, unfinished, or not downloadable now.
pub const FAILED_GREY: Rgb<u8> = Rgb([128, 128, 128]);
const BACKGROUND: Rgb<u8> = Rgb([24, 24, 24]);
const CAPTION_COLOUR: Rgb<u8> = Rgb([235, 235, 235]);
const FAILED_TEXT: Rgb<u8> = Rgb([20, 20, 20]);
/// Box line width in pixels (drawn inside the box).
const LINE: i64 = 2;

/// One cell's content.
pub enum Tile {
    /// The image letterboxed into the tile: canvas pixels = original × scale + offset.
    Picture(Placed),
    Failed {
        status: String,
        reason: String,
    },
}

pub struct Placed {
    pub image: RgbImage,
    pub scale: f32,
    pub offset: (f32, f32),
}

impl Tile {
    pub fn picture(lb: Letterboxed) -> Tile {
        let (w, h, scale, offset) = (lb.width, lb.height, lb.scale, (lb.offset_x, lb.offset_y));
        match RgbImage::from_raw(w, h, lb.data) {
            Some(image) => Tile::Picture(Placed { image, scale, offset }),
            None => Tile::Failed { status: "decode_error".into(), reason: "not an RGB canvas".into() },
        }
    }
}

/// Where cells lie on the sheet: a near-square grid of tiles, each with a caption under it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub tile: u32,
    pub cols: u32,
    pub rows: u32,
}

const GAP: u32 = 4;
/// Caption band under each tile.
const CAPTION: u32 = GLYPH_H + 5;

impl Layout {
    pub fn new(n: usize, tile: u32) -> Layout {
        let n = n.max(1) as u32;
        let cols = (n as f64).sqrt().ceil() as u32;
        Layout { tile, cols, rows: n.div_ceil(cols) }
    }

    /// Top-left corner of cell `i`'s picture area.
    pub fn cell(&self, i: usize) -> (u32, u32) {
        let (col, row) = (i as u32 % self.cols, i as u32 / self.cols);
        (GAP + col * (self.tile + GAP), GAP + row * (self.tile + CAPTION + GAP))
    }

    /// The whole sheet's width and height.
    pub fn size(&self) -> (u32, u32) {
        (GAP + self.cols * (self.tile + GAP), GAP + self.rows * (self.tile + CAPTION + GAP))
    }
}

/// The sheet: every tile in its cell, captioned with the URL's short name and face count.
pub fn compose(samples: &[Sampled], tiles: &[Tile], layout: Layout) -> RgbImage {
    let (w, h) = layout.size();
    let mut sheet = RgbImage::from_pixel(w, h, BACKGROUND);
    for (i, (s, t)) in samples.iter().zip(tiles).enumerate() {
        let (x, y) = layout.cell(i);
        let caption = match t {
            Tile::Picture(p) => {
                image::imageops::replace(&mut sheet, &p.image, x as i64, y as i64);
                let clip = Clip { x0: x as i64, y0: y as i64, side: layout.tile as i64 };
                s.faces.iter().for_each(|f| draw_face(&mut sheet, &clip, p, f));
                format!(
                    "{} {} face{}",
                    short_name(&s.url),
                    s.faces.len(),
                    if s.faces.len() == 1 { "" } else { "s" }
                )
            }
            Tile::Failed { status, reason } => {
                failed_tile(&mut sheet, (x, y), layout.tile, status, reason);
                format!("{} {status}", short_name(&s.url))
            }
        };
        draw_text(&mut sheet, x as i64, (y + layout.tile + 3) as i64, &caption, CAPTION_COLOUR, layout.tile);
    }
    sheet
}

/// A tile's square on the sheet; drawing stays inside it.
struct Clip {
    x0: i64,
    y0: i64,
    side: i64,
}

impl Clip {
    fn put(&self, img: &mut RgbImage, x: i64, y: i64, c: Rgb<u8>) {
        if (0..self.side).contains(&x) && (0..self.side).contains(&y) {
            put(img, self.x0 + x, self.y0 + y, c);
        }
    }
}

/// The face's box (lines inside its edges), landmarks and score, in tile coordinates.
fn draw_face(img: &mut RgbImage, clip: &Clip, p: &Placed, f: &Face) {
    let at = |x: f32, y: f32| {
        ((x * p.scale + p.offset.0).round() as i64, (y * p.scale + p.offset.1).round() as i64)
    };
    let ((x1, y1), (x2, y2)) = (at(f.x1, f.y1), at(f.x2, f.y2));
    for t in 0..LINE {
        for x in x1..=x2 {
            clip.put(img, x, y1 + t, BOX_COLOUR);
            clip.put(img, x, y2 - t, BOX_COLOUR);
        }
        for y in y1..=y2 {
            clip.put(img, x1 + t, y, BOX_COLOUR);
            clip.put(img, x2 - t, y, BOX_COLOUR);
        }
    }
    for pair in f.landmarks.chunks_exact(2) {
        let (lx, ly) = at(pair[0], pair[1]);
        for (dx, dy) in (-1..=1).flat_map(|dx| (-1..=1).map(move |dy| (dx, dy))) {
            clip.put(img, lx + dx, ly + dy, LANDMARK_COLOUR);
        }
    }
    // Above the box, or just inside its top when it touches the tile's top.
    let ty = if y1 >= GLYPH_H as i64 + 2 { y1 - GLYPH_H as i64 - 2 } else { y1 + LINE + 1 };
    let score = format!("{:.2}", f.score);
    let room = (clip.side - x1.max(0)).max(0) as u32;
    let (sx, sy) = (clip.x0 + x1.max(0), clip.y0 + ty.max(0));
    draw_text(img, sx, sy, &score, BOX_COLOUR, room);
}

/// Grey square with the status (and the start of the reason) in the middle.
fn failed_tile(img: &mut RgbImage, (x, y): (u32, u32), side: u32, status: &str, reason: &str) {
    for py in y..y + side {
        for px in x..x + side {
            img.put_pixel(px, py, FAILED_GREY);
        }
    }
    let mid = (y + side / 2) as i64;
    let centred = |t: &str| x as i64 + ((side as i64 - font::text_width(t) as i64) / 2).max(2);
    draw_text(img, centred(status), mid - GLYPH_H as i64 - 2, status, FAILED_TEXT, side - 4);
    draw_text(img, centred(reason), mid + 2, reason, FAILED_TEXT, side - 4);
}

/// The URL's last path segment (or its host), which is what a person recognises.
pub fn short_name(url: &str) -> String {
    let no_query = url.split(['?', '#']).next().unwrap_or(url);
    let path = no_query.split_once("://").map_or(no_query, |(_, rest)| rest);
    path.rsplit('/').find(|s| !s.is_empty()).unwrap_or(path).to_string()
}

/// The sheet's encoding, from the name asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutFormat {
    Jpeg,
    Png,
}

impl OutFormat {
    pub fn for_path(p: &Path) -> anyhow::Result<OutFormat> {
        match p.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("jpg" | "jpeg") => Ok(OutFormat::Jpeg),
            Some("png") => Ok(OutFormat::Png),
            _ => anyhow::bail!("--out {}: name the sheet .jpg or .png", p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_a_near_square_grid_without_overlap() {
        let l = Layout::new(48, 100);
        assert_eq!((l.cols, l.rows), (7, 7));
        assert_eq!(Layout::new(3, 100).cols, 2);
        let (a, b) = (l.cell(0), l.cell(1));
        assert!(b.0 >= a.0 + 100, "cells side by side do not overlap");
        let (w, h) = l.size();
        let last = l.cell(47);
        assert!(last.0 + 100 <= w && last.1 + 100 + CAPTION <= h);
    }

    #[test]
    fn short_names_and_formats() {
        assert_eq!(short_name("http://h:1/a/b/face.jpg?x=1"), "face.jpg");
        assert_eq!(short_name("https://example.com/"), "example.com");
        assert_eq!(OutFormat::for_path(Path::new("s.JPG")).unwrap(), OutFormat::Jpeg);
        let e = OutFormat::for_path(Path::new("s.gif")).unwrap_err().to_string();
        assert!(e.contains(".jpg or .png"), "{e}");
    }
}
