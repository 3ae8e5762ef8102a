//! RGB → planar YUV 4:2:0 (JFIF full range, the colour space JPEG itself stores): half the
//! bytes of RGB on the wire, and most web photos were 4:2:0 before they were decoded, so
//! little is lost. The detector converts back on its device (`input.rs` there).

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
