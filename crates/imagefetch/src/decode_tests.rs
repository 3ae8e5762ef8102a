//! Decoding and letterboxing on real and generated images (`decode.rs`).

use super::*;

fn encode(img: &DynamicImage, f: image::ImageFormat) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), f).unwrap();
    out
}

fn solid(w: u32, h: u32) -> DynamicImage {
    DynamicImage::ImageRgb8(image::RgbImage::from_pixel(w, h, image::Rgb([200, 10, 10])))
}

fn px(lb: &Letterboxed, x: u32, y: u32) -> [u8; 3] {
    let i = ((y * lb.width + x) * 3) as usize;
    [lb.data[i], lb.data[i + 1], lb.data[i + 2]]
}

#[test]
fn letterbox_keeps_aspect_and_centres() {
    let lb = decode_letterbox(&encode(&solid(200, 100), image::ImageFormat::Png), 64, 64, 1 << 30).unwrap();
    assert_eq!((lb.width, lb.height, lb.scale), (64, 64, 0.32));
    assert_eq!((lb.offset_x, lb.offset_y), (0.0, 16.0));
    assert_eq!(px(&lb, 0, 0), [0, 0, 0], "padding is black");
    assert_eq!(px(&lb, 32, 32), [200, 10, 10]);
    assert_eq!((lb.original_width, lb.original_height), (200, 100));
}

#[test]
fn large_jpegs_take_the_dct_scaled_path_and_keep_their_geometry() {
    let jpg = encode(&solid(3000, 2000), image::ImageFormat::Jpeg);
    let mut d = Decoder::default();
    let lb = d.decode_letterbox(&jpg, 640, 640, 1 << 30).unwrap();
    assert_eq!((lb.original_width, lb.original_height), (3000, 2000));
    assert_eq!((lb.offset_x, lb.offset_y), (0.0, 106.0));
    // 1/4 scale (750x500) is the smallest that still covers 640x427.
    assert_eq!(d.raw.len(), 750 * 500 * 3);
    let c = px(&lb, 320, 320);
    assert!(c[0] > 180 && c[1] < 40 && c[2] < 40, "{c:?}");
}

#[test]
fn bad_bodies_get_their_class() {
    let f = |b: &[u8]| decode_letterbox(b, 64, 64, 1 << 30).unwrap_err().status;
    assert_eq!(f(b""), UrlStatus::NotAnImage);
    assert_eq!(f(b"<!doctype html><html></html>"), UrlStatus::NotAnImage);
    let p = encode(&solid(10, 10), image::ImageFormat::Png);
    assert_eq!(f(&p[..p.len() / 2]), UrlStatus::DecodeError);
    let j = encode(&solid(64, 64), image::ImageFormat::Jpeg);
    assert_eq!(f(&j[..j.len() / 2]), UrlStatus::DecodeError);
    let big = encode(&solid(100, 100), image::ImageFormat::Png);
    assert_eq!(decode_letterbox(&big, 64, 64, 5_000).unwrap_err().status, UrlStatus::TooLarge);
    let bigj = encode(&solid(100, 100), image::ImageFormat::Jpeg);
    assert_eq!(decode_letterbox(&bigj, 64, 64, 5_000).unwrap_err().status, UrlStatus::TooLarge);
}

#[test]
fn alpha_is_composited_on_black_and_16_bit_and_gray_work() {
    let mut rgba = image::RgbaImage::from_pixel(8, 8, image::Rgba([255, 255, 255, 0]));
    rgba.put_pixel(4, 4, image::Rgba([255, 255, 255, 255]));
    let lb =
        decode_letterbox(&encode(&DynamicImage::ImageRgba8(rgba), image::ImageFormat::Png), 8, 8, 1 << 20)
            .unwrap();
    assert_eq!(px(&lb, 0, 0), [0, 0, 0], "transparent white must become black");
    let g16 = DynamicImage::ImageRgb16(image::ImageBuffer::from_pixel(8, 8, image::Rgb([65535u16, 0, 0])));
    let lb = decode_letterbox(&encode(&g16, image::ImageFormat::Png), 8, 8, 1 << 20).unwrap();
    assert_eq!(px(&lb, 4, 4), [255, 0, 0]);
    let gray = DynamicImage::ImageLuma8(image::GrayImage::from_pixel(16, 16, image::Luma([128])));
    let lb = decode_letterbox(&encode(&gray, image::ImageFormat::Jpeg), 16, 16, 1 << 20).unwrap();
    let c = px(&lb, 8, 8);
    assert!(c.iter().all(|v| (120..=136).contains(v)), "{c:?}");
}

/// A thread's decoder lives for the whole crawl: a file libjpeg-turbo fails on must not change
/// how the next one decodes (this fixture, found by jpegscan's fuzz, did: 50 dB off).
#[test]
fn a_failed_jpeg_leaves_the_decoder_as_fresh() {
    let bad =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pollutes_decoder.jpg")).unwrap();
    let good = crate::jpegscan::fuzz::progressive(96, 64, turbojpeg::Subsamp::Sub2x2);
    let fresh = Decoder::default().decode(&good, 24, 24, 1 << 30, Wire::Canvas).unwrap();
    let mut reused = Decoder::default();
    let _ = reused.decode(&bad, 200, 200, 1 << 30, Wire::I420);
    let after = reused.decode(&good, 24, 24, 1 << 30, Wire::Canvas).unwrap();
    assert!(after.data == fresh.data, "the decoder kept state from a failed file");
}

/// Junk after the end-of-image marker is common on the web and of any length; a file cut
/// short is refused even when an EXIF thumbnail (a JPEG of its own, EOI included) precedes
/// its scans.
#[test]
fn junk_after_the_end_is_fine_and_a_cut_file_is_refused_despite_its_thumbnail() {
    let photo = encode(&solid(96, 64), image::ImageFormat::Jpeg);
    for junk in [vec![0u8; 5000], (0..20_000u32).map(|i| (i * 7919 % 251) as u8).collect()] {
        let padded = [photo.clone(), junk].concat();
        assert!(
            decode_letterbox(&padded, 32, 32, 1 << 20).is_ok(),
            "{} junk bytes after EOI",
            padded.len() - photo.len()
        );
    }
    let thumb = encode(&solid(8, 8), image::ImageFormat::Jpeg);
    let mut app1 = vec![0xFF, 0xE1];
    app1.extend_from_slice(&((thumb.len() + 2 + 6) as u16).to_be_bytes());
    app1.extend_from_slice(b"Exif\0\0");
    app1.extend_from_slice(&thumb);
    let with_thumb = [&photo[..2], &app1[..], &photo[2..]].concat();
    assert!(decode_letterbox(&with_thumb, 32, 32, 1 << 20).is_ok());
    let cut = &with_thumb[..with_thumb.len() - 40];
    let err = decode_letterbox(cut, 32, 32, 1 << 20).expect_err("a cut file decodes grey, not whole");
    assert!(err.reason.contains("truncated"), "{}", err.reason);
}
