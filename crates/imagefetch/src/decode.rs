//! Decode and letterbox to the model input, as fast as the CPU allows:
//! JPEG through libjpeg-turbo with DCT-domain downscaling (decode at 1/8…1 of the size, the
//! smallest that still covers the target), then a SIMD resize straight into the letterbox
//! canvas. Still WebP through libwebp (`webp.rs`), the common PNG through libdeflate
//! (`png.rs`). Other formats (GIF, BMP, animated WebP, unusual PNGs) go through the `image` crate. The format is sniffed from the
//! bytes, never taken from Content-Type.

use std::io::Cursor;

use facesweep_proto::{PixelFormat, UrlStatus};
use fast_image_resize::images::{CroppedImageMut, Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions};
use image::{DynamicImage, ImageDecoder, ImageReader, Limits};

pub use crate::canvas::{fit, Letterboxed, Placement, Shape, Wire};
use crate::jpeghead::{dct_scale, has_jpeg_end};
pub use crate::jpegscan::MAX_JPEG_SCANS;
use crate::outcome::Failure;
use crate::planescale::PlaneResizer;
use crate::{exif, jpegscan, png, webp, yuv};
use turbojpeg::Subsamp::Sub2x2;

/// Per-thread decoder: the libjpeg-turbo handle and scratch buffers are reused across images.
pub struct Decoder {
    tj: Option<turbojpeg::Decompressor>,
    raw: Vec<u8>,
    upright: Vec<u8>,
    /// A progressive JPEG without the scans a reduced-scale decode can do without.
    spliced: Vec<u8>,
    splice_scans: bool,
    png: png::Scratch,
    /// fir for RGB, its plane path for YUV planes: one fir `Resizer` and its buffers.
    resizer: PlaneResizer,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            tj: new_tj(),
            raw: Vec::new(),
            upright: Vec::new(),
            spliced: Vec::new(),
            splice_scans: true,
            png: png::Scratch::default(),
            resizer: PlaneResizer::default(),
        }
    }
}

/// A libjpeg-turbo handle with the scan limit set; `None` if libjpeg-turbo cannot start.
fn new_tj() -> Option<turbojpeg::Decompressor> {
    let mut tj = turbojpeg::Decompressor::new().ok()?;
    tj.set_scan_limit(MAX_JPEG_SCANS).ok()?;
    Some(tj)
}

/// Decodes whose full-size buffer is above this (4 MP of RGB) run one at a time process-wide:
/// two 25 MP PNGs at once would cost ~200 MB by themselves.
const LARGE_DECODE_BYTES: u64 = 12_000_000;
pub(crate) static LARGE_DECODE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The process-wide turn for a decode into a buffer of `bytes`, if it is that large.
fn large_decode(bytes: u64) -> Option<std::sync::MutexGuard<'static, ()>> {
    (bytes > LARGE_DECODE_BYTES).then(|| LARGE_DECODE.lock().unwrap_or_else(|e| e.into_inner()))
}
/// Scratch buffers above this are dropped after use rather than kept per thread.
const KEEP_SCRATCH_BYTES: usize = 16 << 20;
/// The largest inflated PNG stream decoded whole (`png.rs`); bigger ones stream.
const PNG_WHOLE_BYTES: usize = 64 << 20;

fn decode_err(e: impl std::fmt::Display) -> Failure {
    Failure::new(UrlStatus::DecodeError, e.to_string())
}

/// Pixels decoded into `Decoder::raw`: their size and EXIF orientation as stored, and the
/// image's size as stored in the file.
struct Decoded {
    width: u32,
    height: u32,
    orientation: u8,
    stored: (u32, u32),
}

impl Decoder {
    /// Whether progressive JPEGs decoded at half size or less lose their refinement scans
    /// first (`jpegscan.rs`; on by default: about half the CPU for them, same faces).
    pub fn with_scan_splicing(mut self, on: bool) -> Self {
        self.splice_scans = on;
        self
    }

    /// Decodes `bytes`, applies EXIF orientation, letterboxes into `tw`×`th` (black padding).
    pub fn decode_letterbox(
        &mut self,
        bytes: &[u8],
        tw: u32,
        th: u32,
        max_pixels: u64,
    ) -> Result<Letterboxed, Failure> {
        self.decode(bytes, tw, th, max_pixels, Wire::Canvas)
    }

    /// Decodes `bytes`, applies EXIF orientation, and fits it into a `tw`×`th` letterbox, sent as
    /// `wire` says.
    pub fn decode(
        &mut self,
        bytes: &[u8],
        tw: u32,
        th: u32,
        max_pixels: u64,
        wire: Wire,
    ) -> Result<Letterboxed, Failure> {
        let result = self.decode_inner(bytes, tw, th, max_pixels, wire);
        if self.raw.capacity() > KEEP_SCRATCH_BYTES {
            self.raw = Vec::new();
        }
        if self.upright.capacity() > KEEP_SCRATCH_BYTES {
            self.upright = Vec::new();
        }
        if self.spliced.capacity() > KEEP_SCRATCH_BYTES {
            self.spliced = Vec::new();
        }
        self.png.trim(KEEP_SCRATCH_BYTES);
        result
    }

    fn decode_inner(
        &mut self,
        bytes: &[u8],
        tw: u32,
        th: u32,
        max_pixels: u64,
        wire: Wire,
    ) -> Result<Letterboxed, Failure> {
        if bytes.is_empty() {
            return Err(Failure::new(UrlStatus::NotAnImage, "empty body"));
        }
        if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            if !has_jpeg_end(bytes) {
                // Decoders would fill the missing scans with grey instead of failing.
                return Err(Failure::new(UrlStatus::DecodeError, "truncated JPEG (no end-of-image marker)"));
            }
            let r = self.jpeg(bytes, tw, th, max_pixels, wire);
            if !matches!(r, Some(Ok(_))) {
                // libjpeg-turbo keeps state from a file it failed on, and the next file decoded
                // differently (decode_tests.rs): a failure costs a fresh handle, not the crawl.
                self.tj = new_tj();
            }
            if let Some(r) = r {
                return r;
            }
            // libjpeg-turbo declined (CMYK/YCCK, arithmetic coding…): the generic path may not.
        }
        if webp::is_webp(bytes) {
            if let Some(r) = self.webp(bytes, tw, th, max_pixels, wire) {
                return r;
            }
            // Animated: the `image` route takes the first frame.
        }
        self.generic(bytes, tw, th, max_pixels, wire)
    }

    /// `None` when turbojpeg cannot handle this JPEG at all.
    fn jpeg(
        &mut self,
        bytes: &[u8],
        tw: u32,
        th: u32,
        max_pixels: u64,
        wire: Wire,
    ) -> Option<Result<Letterboxed, Failure>> {
        let tj = self.tj.as_mut()?;
        let header = tj.read_header(bytes).ok()?;
        let (w, h) = match jpeg_size(&header, max_pixels)? {
            Ok(size) => size,
            Err(e) => return Some(Err(e)),
        };
        let orientation = exif::jpeg_orientation(bytes);
        let (uw, uh) = if exif::swaps_axes(orientation) { (h, w) } else { (w, h) };
        let at = fit(uw, uh, tw, th);
        // Target size in stored (pre-rotation) orientation.
        let (rw, rh) =
            if exif::swaps_axes(orientation) { (at.height, at.width) } else { (at.width, at.height) };
        let factor = dct_scale((w, h), (rw, rh));
        if tj.set_scaling_factor(factor).is_err() {
            return None;
        }
        let (sw, sh) = (factor.scale(w as usize), factor.scale(h as usize));
        let _large = large_decode(sw as u64 * sh as u64 * 3);
        let stored = (w, h);
        let bytes =
            if self.splice_scans { jpegscan::splice(bytes, factor, &mut self.spliced) } else { bytes };
        if wire == Wire::I420 {
            // The file's own planes, resized: no YCbCr → RGB → YUV round trip (issue #24).
            let planes = match yuv::Planes::decompress(tj, bytes, (sw, sh), header.subsamp, &mut self.raw) {
                Ok(p) => p,
                Err(e) => return Some(Err(decode_err(format!("JPEG: {e}")))),
            };
            let data = yuv::planes_to_i420(
                &planes,
                (at.width, at.height),
                orientation,
                &mut self.resizer,
                &mut self.upright,
            );
            return Some(data.map_err(decode_err).map(|d| i420_content(d, at, orientation, stored)));
        }
        self.raw.resize(sw * sh * 3, 0);
        let out = turbojpeg::Image {
            pixels: &mut self.raw[..],
            width: sw,
            pitch: sw * 3,
            height: sh,
            format: turbojpeg::PixelFormat::RGB,
        };
        if let Err(e) = tj.decompress(bytes, out) {
            return Some(Err(decode_err(format!("JPEG: {e}"))));
        }
        let decoded = Decoded { width: sw as u32, height: sh as u32, orientation, stored };
        Some(self.place(decoded, at, wire))
    }

    /// `None` for animated WebP. The pixel cap is checked on the header, before any allocation.
    fn webp(
        &mut self,
        bytes: &[u8],
        tw: u32,
        th: u32,
        max_pixels: u64,
        wire: Wire,
    ) -> Option<Result<Letterboxed, Failure>> {
        let info = match webp::info(bytes) {
            Ok(info) => info,
            Err(e) => return Some(Err(decode_err(e))),
        };
        if info.animated {
            return None;
        }
        if info.width as u64 * info.height as u64 > max_pixels {
            return Some(Err(too_many_pixels(info.width, info.height, max_pixels)));
        }
        Some(self.webp_still(bytes, info, (tw, th), wire))
    }

    /// A still WebP through libwebp, to I420 planes or scaled RGB.
    fn webp_still(
        &mut self,
        bytes: &[u8],
        info: webp::Info,
        (tw, th): (u32, u32),
        wire: Wire,
    ) -> Result<Letterboxed, Failure> {
        let o = if webp::has_exif(bytes) { webp_orientation(bytes) } else { 1 };
        let (w, h) = (info.width, info.height);
        let swap = exif::swaps_axes(o);
        let at = if swap { fit(h, w, tw, th) } else { fit(w, h, tw, th) };
        let (rw, rh) = if swap { (at.height, at.width) } else { (at.width, at.height) };
        // For the I420 wire, pictures without alpha decode whole to planes for the SIMD resizer;
        // for RGB, lossy ones stream through libwebp's scaler. Lossless and alpha are whole.
        let to_planes = wire == Wire::I420 && !info.has_alpha;
        let whole = to_planes || info.lossless || info.has_alpha;
        // Planes take 1.5 bytes a pixel, RGB 3 (4 with alpha, briefly).
        let _large = whole.then(|| large_decode(w as u64 * h as u64 * if to_planes { 3 } else { 6 } / 2));
        if to_planes {
            webp::decode_planes(bytes, (w, h), (rw, rh), &mut self.raw).map_err(decode_err)?;
            let planes =
                yuv::Planes { pixels: &self.raw, width: w as usize, height: h as usize, subsamp: Sub2x2 };
            let mut data =
                yuv::planes_to_i420(&planes, (at.width, at.height), o, &mut self.resizer, &mut self.upright)
                    .map_err(decode_err)?;
            yuv::studio_to_full(&mut data, at.width, at.height);
            return Ok(i420_content(data, at, o, (w, h)));
        }
        webp::decode_rgb(bytes, (rw, rh), info.has_alpha, &mut self.raw).map_err(decode_err)?;
        self.place(Decoded { width: rw, height: rh, orientation: o, stored: (w, h) }, at, wire)
    }

    /// Resizes `self.raw` (as `src` describes it) and writes it upright into the canvas `at`,
    /// or, on a content wire, into an image of the content's size.
    fn place(&mut self, src: Decoded, at: Placement, wire: Wire) -> Result<Letterboxed, Failure> {
        let (o, nw, nh) = (src.orientation, at.width, at.height);
        let content = wire != Wire::Canvas;
        // The picture written, and where the content lands in it.
        let (pw, ph, px, py) = if content { (nw, nh, 0, 0) } else { (at.canvas.0, at.canvas.1, at.x, at.y) };
        let mut data = vec![0u8; (pw * ph * 3) as usize];
        let opts = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
        let (w, h) = src.stored;
        let src = ImageRef::new(src.width, src.height, &self.raw, PixelType::U8x3).map_err(decode_err)?;
        if o <= 1 {
            let mut canvas = Image::from_slice_u8(pw, ph, &mut data, PixelType::U8x3).map_err(decode_err)?;
            let mut view = CroppedImageMut::new(&mut canvas, px, py, nw, nh).map_err(decode_err)?;
            self.resizer.fir().resize(&src, &mut view, &opts).map_err(decode_err)?;
        } else {
            let (rw, rh) = if exif::swaps_axes(o) { (nh, nw) } else { (nw, nh) };
            self.upright.resize((rw * rh * 3) as usize, 0);
            let mut small =
                Image::from_slice_u8(rw, rh, &mut self.upright, PixelType::U8x3).map_err(decode_err)?;
            self.resizer.fir().resize(&src, &mut small, &opts).map_err(decode_err)?;
            let start = ((py * pw + px) * 3) as usize;
            exif::orient_into(
                &self.upright,
                (rw as usize, rh as usize, 3),
                o,
                &mut data[start..],
                (pw * 3) as usize,
            );
        }
        if wire == Wire::I420 {
            return Ok(i420_content(yuv::rgb_to_i420(&data, nw, nh), at, o, (w, h)));
        }
        let (original_width, original_height) = if exif::swaps_axes(o) { (h, w) } else { (w, h) };
        Ok(Letterboxed {
            data,
            width: pw,
            height: ph,
            format: PixelFormat::RgbUnspecified,
            canvas: None,
            scale: at.scale,
            offset_x: at.x as f32,
            offset_y: at.y as f32,
            original_width,
            original_height,
        })
    }

    fn generic(
        &mut self,
        bytes: &[u8],
        tw: u32,
        th: u32,
        max_pixels: u64,
        wire: Wire,
    ) -> Result<Letterboxed, Failure> {
        if let Some(r) = self.png(bytes, tw, th, max_pixels, wire) {
            return r;
        }
        let reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(decode_err)?;
        let Some(format) = reader.format() else {
            let head = String::from_utf8_lossy(&bytes[..bytes.len().min(16)]).into_owned();
            return Err(Failure::new(UrlStatus::NotAnImage, format!("not an image (starts with {head:?})")));
        };
        let mut decoder = reader.into_decoder().map_err(|e| decode_err(format!("{format:?}: {e}")))?;
        let (w, h) = decoder.dimensions();
        if w == 0 || h == 0 {
            return Err(decode_err("image with a zero dimension"));
        }
        // Checked on the header, before any pixel is allocated (decompression bombs).
        if w as u64 * h as u64 > max_pixels {
            return Err(too_many_pixels(w, h, max_pixels));
        }
        let _large = large_decode(w as u64 * h as u64 * 3);
        let mut limits = Limits::default();
        limits.max_alloc = Some(max_pixels * 8);
        decoder.set_limits(limits).map_err(|e| Failure::new(UrlStatus::TooLarge, e.to_string()))?;
        let orientation = decoder.orientation().ok();
        let mut img =
            DynamicImage::from_decoder(decoder).map_err(|e| decode_err(format!("{format:?}: {e}")))?;
        if let Some(o) = orientation {
            img.apply_orientation(o);
        }
        let (iw, ih) = (img.width(), img.height());
        self.raw = flatten_rgb(img);
        let decoded = Decoded { width: iw, height: ih, orientation: 1, stored: (iw, ih) };
        self.place(decoded, fit(iw, ih, tw, th), wire)
    }

    /// The common PNG through `png.rs`; `None` leaves it (and its errors) to the generic route.
    fn png(
        &mut self,
        bytes: &[u8],
        tw: u32,
        th: u32,
        max_pixels: u64,
        wire: Wire,
    ) -> Option<Result<Letterboxed, Failure>> {
        let h = png::header(bytes)?;
        let pixels = h.width as u64 * h.height as u64;
        // Up to ~16 MP the whole inflated copy pays (10 MP photos: −13% CPU, one at a time
        // behind the large-decode turn, at most 64 MiB and the file's size more RSS); above,
        // the `image` crate's row-by-row inflate wins: whole, a flat 24 MP PNG
        // (bench_fetch's adversarial set) cost +70 MB of RSS and twice the time, in page faults.
        if pixels > max_pixels || h.inflated_len() > PNG_WHOLE_BYTES {
            return None;
        }
        let _large = large_decode(pixels * 3);
        png::decode(bytes, h, &mut self.png, &mut self.raw)?;
        let decoded =
            Decoded { width: h.width, height: h.height, orientation: 1, stored: (h.width, h.height) };
        Some(self.place(decoded, fit(h.width, h.height, tw, th), wire))
    }
}

/// 8-bit RGB of any decoded image; transparency is composited on black (what the letterbox
/// padding is), so a transparent logo does not turn into a random colour.
fn flatten_rgb(img: DynamicImage) -> Vec<u8> {
    if !img.color().has_alpha() {
        return img.into_rgb8().into_raw();
    }
    let rgba = img.into_rgba8();
    let mut out = Vec::with_capacity((rgba.width() * rgba.height() * 3) as usize);
    for p in rgba.pixels() {
        out.extend(png::over_black(p.0));
    }
    out
}

/// EXIF orientation of an extended WebP (the `image` crate reads its chunks, not its pixels).
fn webp_orientation(bytes: &[u8]) -> u8 {
    image::codecs::webp::WebPDecoder::new(Cursor::new(bytes))
        .and_then(|mut d| d.orientation())
        .map_or(1, |o| o.to_exif())
}

/// The I420 content `data` (upright, `at.width`×`at.height`) of an image stored as `stored`
/// with EXIF orientation `o`, for the detector to pad into `at.canvas`.
fn i420_content(data: Vec<u8>, at: Placement, o: u8, (w, h): (u32, u32)) -> Letterboxed {
    let (original_width, original_height) = if exif::swaps_axes(o) { (h, w) } else { (w, h) };
    Letterboxed {
        data,
        width: at.width,
        height: at.height,
        format: PixelFormat::I420,
        canvas: Some(at.canvas),
        scale: at.scale,
        offset_x: at.x as f32,
        offset_y: at.y as f32,
        original_width,
        original_height,
    }
}

/// The stored size of a JPEG libjpeg-turbo should decode: `None` for what it declines
/// (CMYK/YCCK), an error for a size refused outright.
fn jpeg_size(header: &turbojpeg::DecompressHeader, max_pixels: u64) -> Option<Result<(u32, u32), Failure>> {
    if matches!(header.colorspace, turbojpeg::Colorspace::CMYK | turbojpeg::Colorspace::YCCK) {
        return None;
    }
    let (w, h) = (header.width as u32, header.height as u32);
    if w == 0 || h == 0 {
        return Some(Err(decode_err("JPEG with a zero dimension")));
    }
    if w as u64 * h as u64 > max_pixels {
        return Some(Err(too_many_pixels(w, h, max_pixels)));
    }
    Some(Ok((w, h)))
}

fn too_many_pixels(w: u32, h: u32, max: u64) -> Failure {
    Failure::new(UrlStatus::TooLarge, format!("{w}x{h} exceeds the {max}-pixel cap"))
}

/// One-off convenience (tests, tools); hot paths keep a `Decoder` per thread.
pub fn decode_letterbox(bytes: &[u8], tw: u32, th: u32, max_pixels: u64) -> Result<Letterboxed, Failure> {
    Decoder::default().decode_letterbox(bytes, tw, th, max_pixels)
}

#[cfg(test)]
#[path = "decode_tests.rs"]
mod tests;
