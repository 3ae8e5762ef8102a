//! Decode (format sniffed from the bytes, not Content-Type) and letterbox to the model input.

use std::io::Cursor;

use facesweep_proto::UrlStatus;
use image::{DynamicImage, ImageDecoder, ImageReader, Limits};

use crate::download::Failure;

/// A letterboxed u8 HWC RGB tensor and how to map it back to the original image.
#[derive(Debug, Clone)]
pub struct Letterboxed {
    pub data: Vec<u8>,
    pub width: u32,
    pub height: u32,
    pub scale: f32,
    pub offset_x: f32,
    pub offset_y: f32,
    pub original_width: u32,
    pub original_height: u32,
}

/// Decodes `bytes`, applies EXIF orientation, letterboxes into `target_w` x `target_h`.
pub fn decode_letterbox(
    bytes: &[u8],
    target_w: u32,
    target_h: u32,
    max_pixels: u64,
) -> Result<Letterboxed, Failure> {
    if bytes.is_empty() {
        return Err(Failure::new(UrlStatus::NotAnImage, "empty body"));
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Failure::new(UrlStatus::DecodeError, e.to_string()))?;
    let Some(format) = reader.format() else {
        return Err(Failure::new(
            UrlStatus::NotAnImage,
            format!("not an image (starts with {:?})", sniff(bytes)),
        ));
    };
    if format == image::ImageFormat::Jpeg && !has_jpeg_end(bytes) {
        // zune-jpeg fills missing scans with grey instead of failing.
        return Err(Failure::new(UrlStatus::DecodeError, "truncated JPEG (no end-of-image marker)"));
    }
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| Failure::new(UrlStatus::DecodeError, format!("{format:?}: {e}")))?;
    let (w, h) = decoder.dimensions();
    if w == 0 || h == 0 {
        return Err(Failure::new(UrlStatus::DecodeError, "image with a zero dimension"));
    }
    // Checked on the header, before any pixel is allocated (decompression bombs).
    if w as u64 * h as u64 > max_pixels {
        return Err(Failure::new(UrlStatus::TooLarge, format!("{w}x{h} exceeds the {max_pixels}-pixel cap")));
    }
    let mut limits = Limits::default();
    limits.max_alloc = Some(max_pixels * 8);
    decoder.set_limits(limits).map_err(|e| Failure::new(UrlStatus::TooLarge, e.to_string()))?;
    let orientation = decoder.orientation().ok();
    let mut img = DynamicImage::from_decoder(decoder)
        .map_err(|e| Failure::new(UrlStatus::DecodeError, format!("{format:?}: {e}")))?;
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    Ok(letterbox(&img, target_w, target_h))
}

fn has_jpeg_end(bytes: &[u8]) -> bool {
    // Some encoders append padding after EOI; look at the tail only.
    let tail = &bytes[bytes.len().saturating_sub(4096)..];
    tail.windows(2).any(|w| w == [0xFF, 0xD9])
}

fn sniff(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(16)]).into_owned()
}

/// Scales to fit, keeping aspect, and pads with black (centred).
pub fn letterbox(img: &DynamicImage, target_w: u32, target_h: u32) -> Letterboxed {
    let (w, h) = (img.width(), img.height());
    let scale = (target_w as f32 / w as f32).min(target_h as f32 / h as f32);
    let nw = ((w as f32 * scale).round() as u32).clamp(1, target_w);
    let nh = ((h as f32 * scale).round() as u32).clamp(1, target_h);
    let rgb = img.to_rgb8();
    let resized = if (nw, nh) == (w, h) {
        rgb
    } else {
        image::imageops::resize(&rgb, nw, nh, image::imageops::FilterType::Triangle)
    };
    let (ox, oy) = ((target_w - nw) / 2, (target_h - nh) / 2);
    let mut data = vec![0u8; (target_w * target_h * 3) as usize];
    let row = (nw * 3) as usize;
    for y in 0..nh as usize {
        let dst = ((oy as usize + y) * target_w as usize + ox as usize) * 3;
        data[dst..dst + row].copy_from_slice(&resized.as_raw()[y * row..(y + 1) * row]);
    }
    Letterboxed {
        data,
        width: target_w,
        height: target_h,
        scale,
        offset_x: ox as f32,
        offset_y: oy as f32,
        original_width: w,
        original_height: h,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = DynamicImage::ImageRgb8(image::RgbImage::from_pixel(w, h, image::Rgb([200, 10, 10])));
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
        out
    }

    #[test]
    fn letterbox_keeps_aspect_and_centres() {
        let lb = decode_letterbox(&png(200, 100), 64, 64, 1 << 30).unwrap();
        assert_eq!((lb.width, lb.height, lb.scale), (64, 64, 0.32));
        assert_eq!((lb.offset_x, lb.offset_y), (0.0, 16.0));
        assert_eq!(&lb.data[0..3], &[0, 0, 0], "padding is black");
        let mid = ((32 * 64) + 32) * 3;
        assert_eq!(&lb.data[mid..mid + 3], &[200, 10, 10]);
        assert_eq!((lb.original_width, lb.original_height), (200, 100));
    }

    #[test]
    fn bad_bodies_get_their_class() {
        let f = |b: &[u8]| decode_letterbox(b, 64, 64, 1 << 30).unwrap_err().status;
        assert_eq!(f(b""), UrlStatus::NotAnImage);
        assert_eq!(f(b"<!doctype html><html></html>"), UrlStatus::NotAnImage);
        let p = png(10, 10);
        assert_eq!(f(&p[..p.len() / 2]), UrlStatus::DecodeError);
        assert_eq!(decode_letterbox(&png(100, 100), 64, 64, 5_000).unwrap_err().status, UrlStatus::TooLarge);
    }
}
