//! Bilinear resizing of one 8-bit plane with `fast_image_resize`'s arithmetic (the same
//! coefficients, the same fixed-point rounding: byte-identical output, tested against it) and
//! a faster horizontal pass. fir's u8 horizontal kernel computes one output pixel at a time;
//! at the JPEG planes' ratios (1–1.33: two or three taps) that loop was 5.6% of the fetch
//! tier's CPU (#24). Here 8 output pixels are computed per step from four source bytes each:
//! one 16-byte load and a byte shuffle where the 8 fit in 16 bytes (up to ~1.5×), AVX2
//! gathers otherwise. fir still does the vertical pass (it is already SIMD across the row), and
//! everything when AVX2 is missing or a shrink needs more than 16 taps (beyond 8×).
//!
//! The one `unsafe` block outside the AVX2 kernel is its call, behind the runtime check; the
//! kernel's reads stay inside `temp`, padded by `MAX_TAPS` (16) bytes past its last row: a
//! start is at most `tw - 1`, and no read goes further than 16 bytes from a start.

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

/// Most taps the gather kernel handles: four 4-byte gathers per output pixel (shrinks < 8×).
const MAX_TAPS: usize = 16;

/// An 8-bit plane: its bytes, width and height.
pub type Plane<'a> = (&'a [u8], usize, usize);

/// fir's resizer plus what the fast horizontal pass keeps between images.
pub struct PlaneResizer {
    fir: Resizer,
    taps: Taps,
    /// The vertical pass's output: the columns the horizontal pass reads, `dh` rows.
    temp: Vec<u8>,
    avx2: bool,
}

impl Default for PlaneResizer {
    fn default() -> Self {
        #[cfg(target_arch = "x86_64")]
        let avx2 = std::arch::is_x86_feature_detected!("avx2");
        #[cfg(not(target_arch = "x86_64"))]
        let avx2 = false;
        PlaneResizer { fir: Resizer::new(), taps: Taps::default(), temp: Vec::new(), avx2 }
    }
}

impl PlaneResizer {
    /// Resizes the top-left `used` part of `src` (fractional for chroma planes) to all of `dst`.
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
    pub fn resize(&mut self, src: Plane, used: (f64, f64), dst: (&mut [u8], u32, u32)) -> Result<(), String> {
        let (sw, sh) = (src.1 as u32, src.2 as u32);
        let ok = |u: f64, s: u32| u > 0.0 && u <= s as f64;
        if !ok(used.0, sw) || !ok(used.1, sh) || src.0.len() < src.1 * src.2 {
            return Err(format!("plane resize: bad source {sw}x{sh} (used {used:?})"));
        }
        if dst.1 == 0 || dst.2 == 0 || dst.0.len() != dst.1 as usize * dst.2 as usize {
            return Err(format!("plane resize: bad destination {}x{}", dst.1, dst.2));
        }
        self.taps.compute(sw, used.0, dst.1);
        if !self.avx2 || self.taps.width > MAX_TAPS {
            return fir_resize(&mut self.fir, src, (0.0, used.0), used.1, dst);
        }
        // Vertical pass by fir, over just the columns the horizontal taps read.
        let (x0, tw, dh) = (self.taps.x0, self.taps.columns, dst.2);
        self.temp.resize(tw as usize * dh as usize + MAX_TAPS, 0);
        let temp = &mut self.temp[..tw as usize * dh as usize];
        fir_resize(&mut self.fir, src, (x0 as f64, tw as f64), used.1, (temp, tw, dh))?;
        let (out, dw) = (dst.0, dst.1 as usize);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX2 was detected at run time; `horizontal_avx2` reads `temp` only within
        // 16 bytes of row + start (start ≤ tw - 1), inside its MAX_TAPS padding.
        unsafe {
            horizontal_avx2(&self.temp, tw as usize, &self.taps, out, dw)
        };
        Ok(())
    }

    /// The fir resizer inside, for pictures other than planes (one per decoder).
    pub fn fir(&mut self) -> &mut Resizer {
        &mut self.fir
    }
}

/// fir's bilinear resize of the columns `cols` (start, count) and `used_h` rows of `src`.
fn fir_resize(
    fir: &mut Resizer,
    (src, sw, sh): Plane,
    cols: (f64, f64),
    used_h: f64,
    (dst, dw, dh): (&mut [u8], u32, u32),
) -> Result<(), String> {
    let src = ImageRef::new(sw as u32, sh as u32, src, PixelType::U8).map_err(|e| e.to_string())?;
    let mut dst = Image::from_slice_u8(dw, dh, dst, PixelType::U8).map_err(|e| e.to_string())?;
    let opts = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear))
        .crop(cols.0, 0.0, cols.1, used_h);
    fir.resize(&src, &mut dst, &opts).map_err(|e| e.to_string())
}

/// One horizontal pass's coefficients, as fir's `precompute_coefficients` (bilinear, adaptive
/// kernel) and `Normalizer16` make them; kept while the sizes repeat.
#[derive(Default)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct Taps {
    key: (u32, u64, u32),
    precision: u8,
    /// The first source column any output reads, and how many columns from there they read.
    x0: u32,
    columns: u32,
    /// First source column of each output pixel, counted from `x0`.
    starts: Vec<i32>,
    /// Taps per output, rounded up to 4 (zero-padded).
    width: usize,
    /// In groups of 4 taps: group g of output o at `g * 4 * n + 4 * o`, n = outputs.
    coefs: Vec<i16>,
    /// When every block of 8 outputs (4 taps) reads within 16 bytes from its first start:
    /// per block, the byte shuffle that spreads those 16 bytes to its 8×4 taps.
    shuffles: Vec<[u8; 32]>,
}

impl Taps {
    fn compute(&mut self, in_size: u32, extent: f64, out: u32) {
        let key = (in_size, extent.to_bits(), out);
        if self.key == key && !self.starts.is_empty() {
            return;
        }
        let (weights, bounds, window) = weights(in_size, extent, out);
        let max_weight = weights.iter().copied().fold(0.0, f64::max);
        let mut precision = 0u8;
        for p in 0..22u8 {
            precision = p;
            if (max_weight * (1u32 << (p + 1)) as f64).round() as i32 >= 1 << 15 {
                break;
            }
        }
        let width = bounds.iter().map(|b| b.1 as usize).max().unwrap_or(0).div_ceil(4) * 4;
        let n = out as usize;
        self.coefs.clear();
        self.coefs.resize(width * n, 0);
        for (o, (&(_, size), w)) in bounds.iter().zip(weights.chunks_exact(window)).enumerate() {
            for (t, &v) in w[..size as usize].iter().enumerate() {
                self.coefs[(t / 4) * 4 * n + 4 * o + t % 4] = (v * (1u32 << precision) as f64).round() as i16;
            }
        }
        // The minimum, not the first: the kernel's reads stay in bounds whatever the order.
        self.x0 = bounds.iter().map(|b| b.0).min().unwrap_or(0);
        self.columns = bounds.iter().map(|b| b.0 + b.1).max().unwrap_or(0) - self.x0;
        self.starts = bounds.iter().map(|b| (b.0 - self.x0) as i32).collect();
        (self.key, self.precision, self.width) = (key, precision, width);
        self.shuffles = if width == 4 { shuffles(&self.starts) } else { Vec::new() };
    }
}

/// For each whole block of 8 outputs, the `vpshufb` control that takes output i's 4 taps
/// from a 16-byte window at the block's first start (the window is in both 128-bit lanes:
/// outputs 0–3 from the low one, 4–7 from the high); empty when some block reaches further.
fn shuffles(starts: &[i32]) -> Vec<[u8; 32]> {
    let mut out = Vec::with_capacity(starts.len() / 8);
    for block in starts.chunks_exact(8) {
        let mut mask = [0u8; 32];
        for (i, &s) in block.iter().enumerate() {
            let off = s - block[0];
            if !(0..=12).contains(&off) {
                return Vec::new();
            }
            for t in 0..4 {
                mask[4 * i + t] = (off as usize + t) as u8;
            }
        }
        out.push(mask);
    }
    out
}

/// fir's `precompute_coefficients` for the bilinear filter over `[0, extent)` of `in_size`
/// pixels: each output's normalised weights (`window` slots, zero-padded) and (start, count).
fn weights(in_size: u32, extent: f64, out: u32) -> (Vec<f64>, Vec<(u32, u32)>, usize) {
    let scale = extent / out as f64;
    let radius = scale.max(1.0); // the filter's support (1) times the adaptive kernel scale
    let window = radius.ceil() as usize * 2 + 1;
    let recip = 1.0 / radius;
    let (mut weights, mut bounds) = (Vec::with_capacity(window * out as usize), Vec::new());
    for o in 0..out {
        let in_center = (o as f64 + 0.5) * scale;
        let x_min = (in_center - radius).floor().max(0.) as u32;
        let x_max = (in_center + radius).ceil().min(in_size as f64) as u32;
        let (cur, center, mut ww) = (weights.len(), in_center - 0.5, 0.0);
        let (mut start, mut end) = (x_min, x_max);
        for x in x_min..x_max {
            let d = ((x as f64 - center) * recip).abs();
            let w = if d < 1.0 { 1.0 - d } else { 0.0 };
            if x == start && w == 0. {
                start += 1; // fir drops zero weights at the start…
            } else {
                weights.push(w);
                ww += w;
            }
        }
        for &c in weights[cur..].iter().rev() {
            if end <= start || c != 0. {
                break;
            }
            end -= 1; // …and at the end
        }
        if ww != 0.0 {
            weights[cur..].iter_mut().for_each(|w| *w /= ww);
        }
        weights.resize(cur + window, 0.);
        bounds.push((start, end - start));
    }
    (weights, bounds, window)
}

/// The horizontal pass over `temp` (`tw` columns from source column `taps.x0`, one row per
/// output row) into `out` (`dw` wide): 8 output pixels per step, 4 taps per shuffle or gather.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn horizontal_avx2(temp: &[u8], tw: usize, taps: &Taps, out: &mut [u8], dw: usize) {
    use std::arch::x86_64::*;
    let (groups, n) = (taps.width / 4, dw);
    let round = _mm256_set1_epi32(1 << (taps.precision - 1));
    let shift = _mm_cvtsi32_si128(taps.precision as i32);
    let order = _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7);
    let starts = &taps.starts;
    for (r, row_out) in out.chunks_exact_mut(dw).enumerate() {
        let row = temp.as_ptr().add(r * tw);
        let mut o = 0;
        while o + 8 <= dw {
            let (mut lo, mut hi) = (_mm256_setzero_si256(), _mm256_setzero_si256());
            for g in 0..groups {
                let px = match taps.shuffles.get(o / 8) {
                    // One load and one shuffle: gathers are slow on some CPUs (AMD Zen 2/3,
                    // Intel with the Downfall microcode fix), and slower than this anywhere.
                    Some(mask) => _mm256_shuffle_epi8(
                        _mm256_broadcastsi128_si256(_mm_loadu_si128(row.add(starts[o] as usize).cast())),
                        _mm256_loadu_si256(mask.as_ptr().cast()),
                    ),
                    None => _mm256_i32gather_epi32::<1>(
                        row.add(4 * g).cast(),
                        _mm256_loadu_si256(starts.as_ptr().add(o).cast()),
                    ),
                };
                let c = taps.coefs.as_ptr().add(g * 4 * n + 4 * o);
                let p_lo = _mm256_cvtepu8_epi16(_mm256_castsi256_si128(px));
                let p_hi = _mm256_cvtepu8_epi16(_mm256_extracti128_si256::<1>(px));
                lo = _mm256_add_epi32(lo, _mm256_madd_epi16(p_lo, _mm256_loadu_si256(c.cast())));
                hi = _mm256_add_epi32(hi, _mm256_madd_epi16(p_hi, _mm256_loadu_si256(c.add(16).cast())));
            }
            // hadd leaves [o0 o1 o4 o5 | o2 o3 o6 o7]; the permute puts them in order.
            let sum = _mm256_permutevar8x32_epi32(_mm256_hadd_epi32(lo, hi), order);
            let v = _mm256_sra_epi32(_mm256_add_epi32(sum, round), shift);
            let p16 = _mm256_packs_epi32(v, v);
            let p8 = _mm256_packus_epi16(p16, p16);
            let bytes = (_mm256_cvtsi256_si32(p8) as u32 as u64)
                | ((_mm256_extract_epi32::<4>(p8) as u32 as u64) << 32);
            row_out[o..o + 8].copy_from_slice(&bytes.to_le_bytes());
            o += 8;
        }
        for (o, d) in row_out.iter_mut().enumerate().skip(o) {
            let mut s = 1i32 << (taps.precision - 1);
            for t in 0..taps.width {
                let k = taps.coefs[(t / 4) * 4 * n + 4 * o + t % 4] as i32;
                s += k * *row.add(starts[o] as usize + t) as i32;
            }
            *d = (s >> taps.precision).clamp(0, 255) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plane(w: usize, h: usize, seed: u32) -> Vec<u8> {
        let mut s = seed.wrapping_mul(2654435761) | 1;
        (0..w * h)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                // Smooth gradients and noise: both kinds of content a photo has.
                if (i / w) % 7 < 3 {
                    ((i % w) * 255 / w) as u8
                } else {
                    s as u8
                }
            })
            .collect()
    }

    #[test]
    fn byte_identical_to_fast_image_resize_at_every_ratio_and_crop() {
        let mut ours = PlaneResizer::default();
        let mut fir = Resizer::new();
        let mut cases = 0;
        for (sw, sh) in [(17, 9), (712, 476), (356, 238), (1001, 667), (640, 427), (2000, 30)] {
            for (dw, dh) in [(640, 427), (320, 214), (1, 1), (9, 5), (500, 333), (17, 9)] {
                for used in
                    [(sw as f64, sh as f64), (sw as f64 - 0.5, sh as f64 - 0.5), (sw as f64 - 7.0, sh as f64)]
                {
                    if used.0 <= 0.0 || used.1 <= 0.0 {
                        continue;
                    }
                    let src = plane(sw, sh, (sw * dw) as u32);
                    let (mut a, mut b) = (vec![0u8; dw * dh], vec![0u8; dw * dh]);
                    ours.resize((&src, sw, sh), used, (&mut a, dw as u32, dh as u32)).unwrap();
                    fir_resize(
                        &mut fir,
                        (&src, sw, sh),
                        (0.0, used.0),
                        used.1,
                        (&mut b, dw as u32, dh as u32),
                    )
                    .unwrap();
                    assert!(a == b, "{sw}x{sh} (used {used:?}) -> {dw}x{dh}");
                    cases += 1;
                }
            }
        }
        assert!(cases > 90);
    }

    #[test]
    fn bad_sizes_are_errors_not_panics() {
        let mut r = PlaneResizer::default();
        let src = vec![0u8; 100];
        let mut dst = vec![0u8; 16];
        assert!(r.resize((&src, 10, 10), (11.0, 10.0), (&mut dst, 4, 4)).is_err());
        assert!(r.resize((&src, 10, 11), (10.0, 10.0), (&mut dst, 4, 4)).is_err());
        assert!(r.resize((&src, 10, 10), (10.0, 10.0), (&mut dst, 5, 4)).is_err());
        assert!(r.resize((&src, 10, 10), (0.0, 10.0), (&mut dst, 4, 4)).is_err());
        r.resize((&src, 10, 10), (10.0, 10.0), (&mut dst, 4, 4)).unwrap();
    }
}
