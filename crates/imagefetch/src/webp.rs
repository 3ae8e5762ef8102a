//! WebP through libwebp (`libwebp-sys`, C built from source): to YUV 4:2:0 planes at full
//! size for the I420 wire (no RGB round trip; resized by the JPEG planes' SIMD resizer), or
//! scaled while decoding to RGB for the canvas wire. About 5x less CPU than the `image`
//! crate's pure-Rust decoder on web WebPs (#24).
//!
//! Every `unsafe` block of the fetcher's WebP path is in this module. libwebp only reads
//! `bytes` within the length given and only writes into the external buffers we describe to
//! it (it checks each plane's stride × rows against the size we pass before writing); it keeps
//! no pointer after a call returns. Malformed input is a `VP8StatusCode`, never a crash.

use std::ffi::c_int;

use libwebp_sys as sys;

/// What the header says, read before anything is allocated (`WebPGetFeatures`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Info {
    pub width: u32,
    pub height: u32,
    pub has_alpha: bool,
    pub animated: bool,
    pub lossless: bool,
}

/// RIFF….WEBP: the container, whatever its chunks.
pub fn is_webp(bytes: &[u8]) -> bool {
    bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP"
}

/// An extended (VP8X) file whose flags say it carries EXIF: only those can be rotated.
pub fn has_exif(bytes: &[u8]) -> bool {
    bytes.len() > 20 && &bytes[12..16] == b"VP8X" && bytes[20] & 0x08 != 0
}

pub fn info(bytes: &[u8]) -> Result<Info, String> {
    // SAFETY: all-zero is a valid WebPBitstreamFeatures (plain ints); it is an out-parameter.
    let mut f: sys::WebPBitstreamFeatures = unsafe { std::mem::zeroed() };
    // SAFETY: libwebp reads at most `bytes.len()` bytes from the pointer and writes only `f`.
    let status = unsafe { sys::WebPGetFeatures(bytes.as_ptr(), bytes.len(), &mut f) };
    check(status)?;
    if f.width <= 0 || f.height <= 0 {
        return Err("WebP with a zero dimension".into());
    }
    Ok(Info {
        width: f.width as u32,
        height: f.height as u32,
        has_alpha: f.has_alpha != 0,
        animated: f.has_animation != 0,
        lossless: f.format == 2,
    })
}

/// Decodes `bytes` (`w`×`h`, as stored) at full size into `out` as YUV 4:2:0 planes in
/// libjpeg-turbo's layout (`yuv::Planes`: Y at an even width and height, then U and V at
/// half that), in libwebp's studio range (Y 16–235): the caller resizes them with the JPEG
/// planes' SIMD resizer and converts to full range. libwebp's own rescaler, which would
/// scale while decoding, is scalar C for single planes and cost a fifth of the decode (#24).
/// Alpha is ignored: callers send files with alpha to `decode_rgb`. For a picture shrunk to
/// `to` below 3/4 on both axes the in-loop deblocking filter is skipped, as libwebp's own
/// scaled decode does (io_dec.c): the downscale erases what it would smooth.
pub fn decode_planes(
    bytes: &[u8],
    (w, h): (u32, u32),
    to: (u32, u32),
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let ((yw, yh), (cw, ch)) = crate::yuv::Planes::sizes_420(w as usize, h as usize);
    // Cleared: the resizer's kernel may reach into the padding, which must not be stale.
    out.clear();
    out.resize(yw * yh + 2 * cw * ch, 0);
    let (y, uv) = out.split_at_mut(yw * yh);
    let (u, v) = uv.split_at_mut(cw * ch);
    let unfiltered = to.0 < w * 3 / 4 && to.1 < h * 3 / 4;
    decode_with(bytes, (w, h), (false, unfiltered), sys::WEBP_CSP_MODE::MODE_YUV, |buf| {
        buf.YUVA = sys::WebPYUVABuffer {
            y: y.as_mut_ptr(),
            u: u.as_mut_ptr(),
            v: v.as_mut_ptr(),
            a: std::ptr::null_mut(),
            y_stride: yw as c_int,
            u_stride: cw as c_int,
            v_stride: cw as c_int,
            a_stride: 0,
            y_size: y.len(),
            u_size: u.len(),
            v_size: v.len(),
            a_size: 0,
        };
    })
}

/// Decodes `bytes` scaled to `w`×`h` into `out` as packed RGB; transparency is composited on
/// black (premultiplied output, alpha dropped), as the `image` route does for PNG and GIF.
pub fn decode_rgb(bytes: &[u8], (w, h): (u32, u32), alpha: bool, out: &mut Vec<u8>) -> Result<(), String> {
    let (mode, channels) =
        if alpha { (sys::WEBP_CSP_MODE::MODE_rgbA, 4) } else { (sys::WEBP_CSP_MODE::MODE_RGB, 3) };
    out.clear();
    out.resize(w as usize * h as usize * channels, 0);
    let stride = w as usize * channels;
    decode_with(bytes, (w, h), (true, false), mode, |buf| {
        buf.RGBA = sys::WebPRGBABuffer { rgba: out.as_mut_ptr(), stride: stride as c_int, size: out.len() };
    })?;
    if alpha {
        // In place: pixel i's RGB moves from 4i to 3i, never ahead of what is still unread.
        for i in 0..w as usize * h as usize {
            out.copy_within(4 * i..4 * i + 3, 3 * i);
        }
        out.truncate(w as usize * h as usize * 3);
    }
    Ok(())
}

/// One `WebPDecode` (scaled to `w`×`h` if `scale`, else `w`×`h` is the stored size; without
/// the deblocking filter if `unfiltered`) into caller-owned memory that `describe` points
/// the output at.
fn decode_with(
    bytes: &[u8],
    (w, h): (u32, u32),
    (scale, unfiltered): (bool, bool),
    mode: sys::WEBP_CSP_MODE,
    describe: impl FnOnce(&mut sys::WebPDecBuffer__bindgen_ty_1),
) -> Result<(), String> {
    if w == 0 || h == 0 || w > i32::MAX as u32 / 4 || h > i32::MAX as u32 {
        return Err(format!("WebP: bad output size {w}x{h}"));
    }
    let mut config = sys::WebPDecoderConfig::new().map_err(|_| "libwebp: ABI version mismatch")?;
    config.options.use_scaling = scale as c_int;
    config.options.bypass_filtering = unfiltered as c_int;
    config.options.scaled_width = w as c_int;
    config.options.scaled_height = h as c_int;
    config.output.colorspace = mode;
    // External memory: libwebp writes into our buffers and allocates no output of its own.
    config.output.is_external_memory = 1;
    describe(&mut config.output.u);
    // SAFETY: `bytes` is read within its length; the output pointers set by `describe` point
    // into live, exclusively borrowed buffers of the sizes given (libwebp's CheckDecBuffer
    // rejects strides or sizes too small for `w`×`h` before writing); `config` outlives the call.
    let status = unsafe { sys::WebPDecode(bytes.as_ptr(), bytes.len(), &mut config) };
    // SAFETY: `config.output` was initialised by WebPInitDecoderConfig; with external memory
    // this frees only libwebp's private bookkeeping, never our buffers.
    unsafe { sys::WebPFreeDecBuffer(&mut config.output) };
    check(status)
}

fn check(status: sys::VP8StatusCode) -> Result<(), String> {
    use sys::VP8StatusCode as S;
    let why = match status {
        S::VP8_STATUS_OK => return Ok(()),
        S::VP8_STATUS_OUT_OF_MEMORY => "out of memory",
        S::VP8_STATUS_INVALID_PARAM => "invalid parameter",
        S::VP8_STATUS_BITSTREAM_ERROR => "corrupt bitstream",
        S::VP8_STATUS_UNSUPPORTED_FEATURE => "unsupported feature",
        S::VP8_STATUS_SUSPENDED | S::VP8_STATUS_USER_ABORT => "decoding stopped",
        S::VP8_STATUS_NOT_ENOUGH_DATA => "truncated (not enough data)",
    };
    Err(format!("WebP: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Decoder, Wire};
    use facesweep_proto::UrlStatus;

    /// A smooth colour field with a dark square: colour range and geometry errors both show.
    fn picture(w: u32, h: u32) -> image::RgbImage {
        image::RgbImage::from_fn(w, h, |x, y| {
            let dark = (w / 4..w / 2).contains(&x) && (h / 4..h / 2).contains(&y);
            image::Rgb(if dark { [20, 30, 40] } else { [(x * 255 / w) as u8, (y * 255 / h) as u8, 160] })
        })
    }

    fn lossy(img: &image::RgbImage) -> Vec<u8> {
        let (w, h) = img.dimensions();
        let mut out = std::ptr::null_mut();
        // SAFETY: `img` holds w*h*3 bytes at stride w*3; libwebp allocates `out`, freed below.
        let n = unsafe {
            sys::WebPEncodeRGB(img.as_ptr(), w as c_int, h as c_int, 3 * w as c_int, 90.0, &mut out)
        };
        assert!(n > 0);
        // SAFETY: `out` holds `n` bytes written by the encoder; copied before WebPFree.
        let v = unsafe { std::slice::from_raw_parts(out, n) }.to_vec();
        unsafe { sys::WebPFree(out.cast()) };
        v
    }

    fn lossless(img: image::DynamicImage) -> Vec<u8> {
        let mut out = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::WebP).unwrap();
        out
    }

    /// `simple` (a VP8/VP8L file) as an extended file with an EXIF orientation chunk.
    fn with_orientation(simple: &[u8], (w, h): (u32, u32), o: u8) -> Vec<u8> {
        let mut tiff = b"II*\0\x08\0\0\0\x01\0\x12\x01\x03\0\x01\0\0\0".to_vec();
        tiff.extend([o, 0, 0, 0, 0, 0, 0, 0]);
        let mut body = b"WEBPVP8X\x0a\0\0\0\x08\0\0\0".to_vec();
        body.extend(&(w - 1).to_le_bytes()[..3]);
        body.extend(&(h - 1).to_le_bytes()[..3]);
        body.extend(&simple[12..]);
        body.extend(b"EXIF");
        body.extend((tiff.len() as u32).to_le_bytes());
        body.extend(tiff);
        let mut out = b"RIFF".to_vec();
        out.extend((body.len() as u32).to_le_bytes());
        out.extend(body);
        out
    }

    /// What the `image` crate's route gives: RGB resized to `w`×`h`, then converted to I420.
    fn reference(webp: &[u8], (w, h): (u32, u32)) -> Vec<u8> {
        let img = image::load_from_memory(webp).unwrap();
        let img = img.apply_orientation_copy(webp_orientation(webp));
        let small = image::imageops::resize(&img.into_rgb8(), w, h, image::imageops::FilterType::Triangle);
        crate::yuv::rgb_to_i420(&small, w, h)
    }

    fn webp_orientation(webp: &[u8]) -> image::metadata::Orientation {
        use image::ImageDecoder;
        image::codecs::webp::WebPDecoder::new(std::io::Cursor::new(webp)).unwrap().orientation().unwrap()
    }

    fn mean_diff(a: &[u8], b: &[u8]) -> f64 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(x, y)| x.abs_diff(*y) as f64).sum::<f64>() / a.len() as f64
    }

    trait Copy2 {
        fn apply_orientation_copy(self, o: image::metadata::Orientation) -> Self;
    }
    impl Copy2 for image::DynamicImage {
        fn apply_orientation_copy(mut self, o: image::metadata::Orientation) -> Self {
            self.apply_orientation(o);
            self
        }
    }

    #[test]
    fn lossy_lossless_and_rotated_webp_match_the_image_crate_in_full_range() {
        let pic = picture(901, 601);
        let (lossy, lossless) = (lossy(&pic), lossless(image::DynamicImage::ImageRgb8(pic)));
        let mut d = Decoder::default();
        for (name, file, size) in [
            ("lossy", lossy.clone(), (640, 427)),
            ("lossless", lossless, (640, 427)),
            ("lossy, EXIF 6", with_orientation(&lossy, (901, 601), 6), (427, 640)),
            // Odd planes, shrunk 2.8× without the deblocking filter.
            ("lossy, large", self::lossy(&picture(1801, 1201)), (640, 427)),
        ] {
            let got = d.decode(&file, 640, 640, 1 << 30, Wire::I420).unwrap();
            assert_eq!((got.width, got.height), size, "{name}");
            let want = reference(&file, size);
            let (ys, cs) = (size.0 as usize * size.1 as usize, got.data.len());
            let (ym, cm) =
                (mean_diff(&got.data[..ys], &want[..ys]), mean_diff(&got.data[ys..cs], &want[ys..]));
            // Studio range left unconverted would be off by ~10 on this picture.
            assert!(ym < 2.5 && cm < 2.5, "{name}: Y mean diff {ym:.2}, chroma {cm:.2}");
            let canvas = d.decode(&file, 640, 640, 1 << 30, Wire::Canvas).unwrap();
            assert_eq!(
                (canvas.original_width, canvas.original_height),
                (got.original_width, got.original_height)
            );
            assert_eq!((canvas.offset_x, canvas.offset_y), (got.offset_x, got.offset_y), "{name}");
        }
    }

    #[test]
    fn alpha_is_composited_on_black_on_both_wires() {
        let mut rgba = image::RgbaImage::from_pixel(64, 64, image::Rgba([255, 255, 255, 0]));
        for (x, y) in [(30, 30), (31, 30), (30, 31), (31, 31)] {
            rgba.put_pixel(x, y, image::Rgba([255, 255, 255, 255]));
        }
        let file = lossless(image::DynamicImage::ImageRgba8(rgba));
        assert!(info(&file).unwrap().has_alpha);
        let mut d = Decoder::default();
        let canvas = d.decode(&file, 64, 64, 1 << 20, Wire::Canvas).unwrap();
        assert_eq!(canvas.data[..3], [0, 0, 0], "transparent white must become black");
        assert_eq!(canvas.data[(30 * 64 + 30) * 3..][..3], [255, 255, 255]);
        let i420 = d.decode(&file, 64, 64, 1 << 20, Wire::I420).unwrap();
        assert_eq!((i420.data[0], i420.data[30 * 64 + 30]), (0, 255));
    }

    #[test]
    fn malformed_webp_is_a_decode_error_and_the_pixel_cap_comes_first() {
        let file = lossy(&picture(300, 200));
        let mut d = Decoder::default();
        let mut status = |b: &[u8], cap: u64| d.decode(b, 64, 64, cap, Wire::I420).unwrap_err().status;
        for cut in [13, 20, 30, 40, file.len() / 2, file.len() - 1] {
            assert_eq!(status(&file[..cut], 1 << 30), UrlStatus::DecodeError, "cut at {cut}");
        }
        let mut garbage = file.clone();
        garbage[40..].iter_mut().enumerate().for_each(|(i, b)| *b = (i * 7919 % 251) as u8);
        assert_eq!(status(&garbage, 1 << 30), UrlStatus::DecodeError);
        let mut header_only = b"RIFF\0\0\0\0WEBPVP8 ".to_vec();
        header_only.extend([0xff; 64]);
        assert_eq!(status(&header_only, 1 << 30), UrlStatus::DecodeError);
        assert_eq!(status(&file, 300 * 200 - 1), UrlStatus::TooLarge);
        assert_eq!(
            info(&file).unwrap(),
            Info { width: 300, height: 200, has_alpha: false, animated: false, lossless: false }
        );
    }
}
