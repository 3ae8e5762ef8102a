//! Planar YUV 4:2:0 (JFIF full range, the colour space JPEG itself stores): half the bytes of
//! RGB on the wire, and most web photos were 4:2:0 before they were decoded, so little is lost.
//! The detector converts back on its device (`input.rs` there). JPEGs come here as their own
//! planes at the DCT scale (`planes_to_i420`: no colour conversion, no chroma upsampling, no
//! full-size RGB buffer); other formats as RGB (`rgb_to_i420`).

use turbojpeg::{Subsamp, YuvImage};

use crate::exif;
use crate::planescale::PlaneResizer;

/// A picture as YUV planes in libjpeg-turbo's layout (`decompress_to_yuv`, row alignment 1):
/// Y, then Cb and Cr at the file's subsampling (none when grey), each padded to whole MCUs.
/// JPEGs decode to it; so do lossy WebPs (`webp::decode_planes`, 4:2:0).
pub struct Planes<'a> {
    pub pixels: &'a [u8],
    pub width: usize,
    pub height: usize,
    pub subsamp: Subsamp,
}

impl<'a> Planes<'a> {
    /// Decompresses `jpeg` (`width`×`height` at `tj`'s scaling factor, as its header says) into
    /// `buf`, which is reused across images.
    pub fn decompress(
        tj: &mut turbojpeg::Decompressor,
        jpeg: &[u8],
        (width, height): (usize, usize),
        subsamp: Subsamp,
        buf: &'a mut Vec<u8>,
    ) -> Result<Self, turbojpeg::Error> {
        buf.resize(turbojpeg::yuv_pixels_len(width, 1, height, subsamp)?, 0);
        tj.decompress_to_yuv(jpeg, YuvImage { pixels: &mut buf[..], width, align: 1, height, subsamp })?;
        Ok(Planes { pixels: buf, width, height, subsamp })
    }

    fn layout(&self) -> YuvImage<()> {
        YuvImage { pixels: (), width: self.width, align: 1, height: self.height, subsamp: self.subsamp }
    }

    /// The Y and the chroma plane sizes of a `w`×`h` 4:2:0 picture in this layout (Y padded to
    /// an even size), for decoders other than libjpeg-turbo that write into it.
    pub fn sizes_420(w: usize, h: usize) -> ((usize, usize), (usize, usize)) {
        let layout = YuvImage { pixels: (), width: w, align: 1, height: h, subsamp: Subsamp::Sub2x2 };
        (layout.y_size(), layout.uv_size())
    }
}

/// Resizes YUV planes to a `w`×`h` (upright) I420 picture, turned upright per EXIF `o`;
/// `scratch` holds the stored-orientation planes when `o` turns or flips.
pub fn planes_to_i420(
    src: &Planes,
    (w, h): (u32, u32),
    o: u8,
    resizer: &mut PlaneResizer,
    scratch: &mut Vec<u8>,
) -> Result<Vec<u8>, String> {
    let mut out = vec![0u8; i420_len(w, h)];
    if o <= 1 {
        resize_planes(src, (w, h), resizer, &mut out)?;
        return Ok(out);
    }
    let (sw, sh) = if exif::swaps_axes(o) { (h, w) } else { (w, h) };
    scratch.resize(i420_len(sw, sh), 0);
    resize_planes(src, (sw, sh), resizer, scratch)?;
    orient_i420(scratch, (sw, sh), o, &mut out, (w, h));
    Ok(out)
}

/// Writes the I420 picture `src` (`sw`×`sh`, stored orientation) upright per EXIF `o` into
/// `out` (`w`×`h`: `sw`×`sh`, swapped when `o` turns by 90°).
pub fn orient_i420(src: &mut [u8], (sw, sh): (u32, u32), o: u8, out: &mut [u8], (w, h): (u32, u32)) {
    let (s, d) = (split_i420(src, sw, sh), split_i420(out, w, h));
    let (scw, sch) = (sw.div_ceil(2) as usize, sh.div_ceil(2) as usize);
    exif::orient_into(s.0, (sw as usize, sh as usize, 1), o, d.0, w as usize);
    exif::orient_into(s.1, (scw, sch, 1), o, d.1, w.div_ceil(2) as usize);
    exif::orient_into(s.2, (scw, sch, 1), o, d.2, w.div_ceil(2) as usize);
}

pub fn i420_len(w: u32, h: u32) -> usize {
    (w * h + 2 * w.div_ceil(2) * h.div_ceil(2)) as usize
}

/// Studio-range BT.601 (what VP8 stores: Y 16–235, chroma 16–240) to the JFIF full range the
/// wire carries, in place, by table: 255/219 for Y and 255/224 around 128 for U and V.
pub fn studio_to_full(i420: &mut [u8], w: u32, h: u32) {
    static TABLES: std::sync::LazyLock<([u8; 256], [u8; 256])> = std::sync::LazyLock::new(|| {
        let (mut y, mut c) = ([0u8; 256], [0u8; 256]);
        for i in 0..256 {
            let v = i as f32;
            y[i] = ((v - 16.0) * 255.0 / 219.0).round().clamp(0.0, 255.0) as u8;
            c[i] = ((v - 128.0) * 255.0 / 224.0 + 128.0).round().clamp(0.0, 255.0) as u8;
        }
        (y, c)
    });
    let (ty, tc) = &*TABLES;
    let (y, uv) = i420.split_at_mut((w * h) as usize);
    y.iter_mut().for_each(|p| *p = ty[*p as usize]);
    uv.iter_mut().for_each(|p| *p = tc[*p as usize]);
}

fn split_i420(buf: &mut [u8], w: u32, h: u32) -> (&mut [u8], &mut [u8], &mut [u8]) {
    let (y, uv) = buf.split_at_mut((w * h) as usize);
    let (u, v) = uv.split_at_mut((w.div_ceil(2) * h.div_ceil(2)) as usize);
    (y, u, v)
}

/// Each plane resized on its own (bilinear, SIMD: `planescale.rs`); only the picture's part
/// of the MCU padding is read, so the geometry is exact for any size and subsampling. Grey
/// gets neutral chroma.
fn resize_planes(
    src: &Planes,
    (w, h): (u32, u32),
    resizer: &mut PlaneResizer,
    out: &mut [u8],
) -> Result<(), String> {
    let layout = src.layout();
    let (yw, yh) = layout.y_size();
    let (cw, ch) = layout.uv_size();
    let (dy, du, dv) = split_i420(out, w, h);
    let (dcw, dch) = (w.div_ceil(2), h.div_ceil(2));
    let (iw, ih) = (src.width as f64, src.height as f64);
    let y_plane = src.pixels.get(..yw * yh).ok_or("YUV planes: short buffer")?;
    resizer.resize((y_plane, yw, yh), (iw, ih), (dy, w, h))?;
    if src.subsamp == Subsamp::Gray {
        du.fill(128);
        dv.fill(128);
        return Ok(());
    }
    let chroma = src.pixels.get(yw * yh..yw * yh + 2 * cw * ch).ok_or("YUV planes: short buffer")?;
    let (u, v) = chroma.split_at(cw * ch);
    // The picture's extent in chroma samples (e.g. 50.5 for 101 pixels at 2:1).
    let used = (iw / src.subsamp.width() as f64, ih / src.subsamp.height() as f64);
    resizer.resize((u, cw, ch), used, (du, dcw, dch))?;
    resizer.resize((v, cw, ch), used, (dv, dcw, dch))
}

/// `rgb` is `w`×`h` HWC; returns the Y plane, then U and V at ceil(w/2)×ceil(h/2), each
/// chroma sample the average of its (up to) 2×2 pixels.
pub fn rgb_to_i420(rgb: &[u8], w: u32, h: u32) -> Vec<u8> {
    let (w, h) = (w as usize, h as usize);
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let mut out = vec![0u8; w * h + 2 * cw * ch];
    let (y_plane, uv) = out.split_at_mut(w * h);
    let (u_plane, v_plane) = uv.split_at_mut(cw * ch);
    // 16-bit fixed point of the BT.601 full-range matrix; the added half rounds.
    for (y_row, px_row) in y_plane.chunks_exact_mut(w).zip(rgb.chunks_exact(w * 3)) {
        for (y, p) in y_row.iter_mut().zip(px_row.chunks_exact(3)) {
            let (r, g, b) = (p[0] as i32, p[1] as i32, p[2] as i32);
            *y = ((19_595 * r + 38_470 * g + 7_471 * b + (1 << 15)) >> 16) as u8;
        }
    }
    for cy in 0..ch {
        let rows = [2 * cy, (2 * cy + 1).min(h - 1)];
        for cx in 0..cw {
            let cols = [2 * cx, (2 * cx + 1).min(w - 1)];
            let (mut r, mut g, mut b) = (0i32, 0i32, 0i32);
            for y in rows {
                for x in cols {
                    let p = &rgb[(y * w + x) * 3..][..3];
                    (r, g, b) = (r + p[0] as i32, g + p[1] as i32, b + p[2] as i32);
                }
            }
            // Sums of four samples: the matrix's >> 16 becomes >> 18.
            let u = ((-11_059 * r - 21_709 * g + 32_768 * b + (1 << 17)) >> 18) + 128;
            let v = ((32_768 * r - 27_439 * g - 5_329 * b + (1 << 17)) >> 18) + 128;
            u_plane[cy * cw + cx] = u.clamp(0, 255) as u8;
            v_plane[cy * cw + cx] = v.clamp(0, 255) as u8;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The inverse the detector applies (float, as on the device).
    fn back(y: u8, u: u8, v: u8) -> [f32; 3] {
        let (y, u, v) = (y as f32, u as f32 - 128.0, v as f32 - 128.0);
        [y + 1.402 * v, y - 0.344_136 * u - 0.714_136 * v, y + 1.772 * u]
    }

    #[test]
    fn flat_colours_survive_the_round_trip_and_odd_sizes_have_their_planes() {
        for rgb in [[0u8, 0, 0], [255, 255, 255], [200, 100, 50], [12, 240, 130], [255, 0, 0]] {
            let img: Vec<u8> = rgb.iter().copied().cycle().take(5 * 3 * 3).collect();
            let yuv = rgb_to_i420(&img, 5, 3);
            assert_eq!(yuv.len(), 15 + 2 * 3 * 2);
            let got = back(yuv[0], yuv[15], yuv[21]);
            for c in 0..3 {
                assert!((got[c] - rgb[c] as f32).abs() <= 2.5, "{rgb:?} came back as {got:?}");
            }
        }
    }

    /// A JPEG of a smooth colour field with a sharp dark square (something a detector sees).
    fn jpeg(w: usize, h: usize, subsamp: turbojpeg::Subsamp, orientation: Option<u8>) -> Vec<u8> {
        let mut px = vec![0u8; w * h * 3];
        for (i, p) in px.chunks_exact_mut(3).enumerate() {
            let (x, y) = (i % w, i / w);
            let dark = (w / 4..w / 2).contains(&x) && (h / 4..h / 2).contains(&y);
            let c = [(x * 255 / w) as u8, (y * 255 / h) as u8, 160];
            p.copy_from_slice(&if dark { [20, 30, 40] } else { c });
        }
        let img = turbojpeg::Image {
            pixels: &px[..],
            width: w,
            pitch: w * 3,
            height: h,
            format: turbojpeg::PixelFormat::RGB,
        };
        let mut c = turbojpeg::Compressor::new().unwrap();
        c.set_subsamp(subsamp).unwrap();
        c.set_quality(95).unwrap();
        let j = c.compress_to_vec(img).unwrap();
        let Some(o) = orientation else { return j };
        // SOI, then an APP1/Exif segment whose IFD holds only the orientation tag.
        let mut tiff = b"II*\0\x08\0\0\0\x01\0\x12\x01\x03\0\x01\0\0\0".to_vec();
        tiff.extend([o, 0, 0, 0, 0, 0, 0, 0]);
        let mut out = j[..2].to_vec();
        out.extend([0xFF, 0xE1]);
        out.extend(((tiff.len() + 8) as u16).to_be_bytes());
        out.extend(b"Exif\0\0");
        out.extend(tiff);
        out.extend(&j[2..]);
        out
    }

    /// Mean and max absolute difference of two equally sized buffers.
    fn diff(a: &[u8], b: &[u8]) -> (f64, u8) {
        assert_eq!(a.len(), b.len());
        let d = a.iter().zip(b).map(|(x, y)| x.abs_diff(*y));
        (d.clone().map(f64::from).sum::<f64>() / a.len() as f64, d.max().unwrap())
    }

    #[test]
    fn jpeg_planes_match_the_rgb_route_for_every_subsampling_and_orientation() {
        use turbojpeg::Subsamp as S;
        let mut d = crate::decode::Decoder::default();
        for (subsamp, o) in [
            (S::Sub2x2, None),
            (S::None, None),
            (S::Sub2x1, None),
            (S::Gray, None),
            (S::Sub2x2, Some(6)),
            (S::None, Some(3)),
        ] {
            // Odd sizes: MCU padding and half chroma samples must not shift the picture.
            let j = jpeg(1001, 667, subsamp, o);
            let fast = d.decode(&j, 640, 640, 1 << 30, crate::decode::Wire::I420).unwrap();
            let rgb = d.decode(&j, 640, 640, 1 << 30, crate::decode::Wire::Canvas).unwrap();
            assert_eq!((fast.width, fast.height), if o == Some(6) { (426, 640) } else { (640, 426) });
            assert_eq!((fast.offset_x, fast.offset_y), (rgb.offset_x, rgb.offset_y));
            assert_eq!(
                (fast.original_width, fast.original_height),
                (rgb.original_width, rgb.original_height)
            );
            // The RGB route's content, cut from its canvas and converted the old way.
            let (w, h, cw) = (fast.width as usize, fast.height as usize, rgb.width as usize * 3);
            let (x0, y0) = (rgb.offset_x as usize * 3, rgb.offset_y as usize);
            let cut: Vec<u8> =
                (0..h).flat_map(|y| &rgb.data[(y0 + y) * cw + x0..][..w * 3]).copied().collect();
            let slow = rgb_to_i420(&cut, w as u32, h as u32);
            let (ym, yx) = diff(&fast.data[..w * h], &slow[..w * h]);
            let (cm, _) = diff(&fast.data[w * h..], &slow[w * h..]);
            let what = format!("{subsamp:?} orientation {o:?}: Y mean {ym:.2} max {yx}, chroma mean {cm:.2}");
            eprintln!("{what}");
            assert!(ym < 0.5 && cm < 0.5, "{what}");
            // A picture shifted by one pixel would differ by ~100 on the dark square's edges.
            assert!(yx <= 4, "{what}");
        }
    }

    #[test]
    fn chroma_is_the_average_of_its_block() {
        // Left column red, right column blue: U/V of the 2x1 block sit between the two.
        let img = [255, 0, 0, 0, 0, 255];
        let yuv = rgb_to_i420(&img, 2, 1);
        assert_eq!(yuv[..2], [76, 29]);
        let (u, v) = (yuv[2] as i32, yuv[3] as i32);
        // U = 128 + (-0.168736 + 0.5) * 255 / 2, V = 128 + (0.5 - 0.081312) * 255 / 2.
        assert!((u - 170).abs() <= 1, "u {u}");
        assert!((v - 181).abs() <= 1, "v {v}");
    }
}
