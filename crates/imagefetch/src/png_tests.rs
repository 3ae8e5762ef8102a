//! The PNG fast path against the `image` crate's decode, byte for byte (PNG is lossless).

use super::*;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{ExtendedColorType, ImageEncoder};

/// A picture with edges, gradients and noise, so every filter has something to predict.
fn pixels(w: u32, h: u32, bpp: usize) -> Vec<u8> {
    let mut s = 0x9E37_79B9u32;
    let mut v = Vec::with_capacity((w * h) as usize * bpp);
    for y in 0..h {
        for x in 0..w {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            let noise = (s % 7) as u8;
            for ch in 0..bpp as u32 {
                let base = if (x / 9 + y / 5) % 2 == 0 { x * 3 + ch * 40 } else { y * 2 + ch * 90 };
                v.push((base as u8).wrapping_add(noise));
            }
        }
    }
    v
}

fn encode(w: u32, h: u32, bpp: usize, filter: FilterType) -> Vec<u8> {
    let mut out = Vec::new();
    let color = if bpp == 3 { ExtendedColorType::Rgb8 } else { ExtendedColorType::Rgba8 };
    PngEncoder::new_with_quality(&mut out, CompressionType::Fast, filter)
        .write_image(&pixels(w, h, bpp), w, h, color)
        .unwrap();
    out
}

fn via_image(bytes: &[u8]) -> Vec<u8> {
    let img = image::load_from_memory(bytes).unwrap();
    if !img.color().has_alpha() {
        return img.into_rgb8().into_raw();
    }
    img.into_rgba8().pixels().flat_map(|p| over_black(p.0)).collect()
}

#[test]
fn every_filter_and_both_colour_types_match_the_image_crate() {
    let filters = [FilterType::NoFilter, FilterType::Sub, FilterType::Up, FilterType::Avg, FilterType::Paeth];
    for filter in filters.into_iter().chain([FilterType::Adaptive]) {
        for bpp in [3, 4] {
            for (w, h) in [(1, 1), (1, 7), (2, 2), (37, 23), (200, 3), (5, 64)] {
                let png = encode(w, h, bpp, filter);
                let hd = header(&png).unwrap_or_else(|| panic!("{filter:?} {bpp} {w}x{h}: no header"));
                assert_eq!((hd.width, hd.height), (w, h));
                let mut ours = vec![9; 5]; // a kept buffer: its old bytes must not show
                decode(&png, hd, &mut Scratch::default(), &mut ours).expect("fast path declined a plain PNG");
                assert_eq!(ours, via_image(&png), "{filter:?} bpp {bpp} {w}x{h}");
            }
        }
    }
}

#[test]
fn anything_unusual_is_left_to_the_generic_route() {
    let png = encode(40, 30, 3, FilterType::Paeth);
    let hd = header(&png).unwrap();
    // Truncated: the stream no longer inflates to the header's size.
    assert_eq!(decode(&png[..png.len() / 2], hd, &mut Scratch::default(), &mut Vec::new()), None);
    // A greyscale PNG is not taken at all.
    let mut grey = Vec::new();
    PngEncoder::new(&mut grey).write_image(&[7; 12], 4, 3, ExtendedColorType::L8).unwrap();
    assert_eq!(header(&grey), None);
    // Interlaced (byte 12 of IHDR's data) and a colour key (tRNS) are declined.
    let mut laced = png.clone();
    laced[8 + 8 + 12] = 1;
    assert_eq!(header(&laced), None);
    let declined = |bytes: &[u8]| decode(bytes, hd, &mut Scratch::default(), &mut Vec::new()).is_none();
    assert!(!declined(&png));
    let iend = png.len() - 12;
    assert!(declined(&with_chunk(&png, iend, b"tRNS", &[0, 1, 0, 2, 0, 3])), "a colour key");
    // What the png crate refuses, refused here too: the generic route words the error.
    let mut bad_crc = png.clone();
    bad_crc[iend - 1] ^= 1;
    assert!(declined(&bad_crc), "a bad CRC");
    assert!(declined(&png[..iend]), "no IEND");
    assert!(declined(&with_chunk(&png, iend, b"ZZZZ", b"?")), "an unknown critical chunk");
    assert!(!declined(&with_chunk(&png, iend, b"tEXt", b"a\0b")), "an ancillary chunk is fine");
    let (first, _) = idat(&png);
    let split = with_chunk(&png, first, b"tEXt", b"a\0b");
    assert!(!declined(&split), "text before the image data is fine");
    let second = with_chunk(&png, iend, b"IDAT", &[]);
    let apart = with_chunk(&second, iend, b"tEXt", b"a\0b");
    assert!(declined(&apart), "image data restarted after another chunk");
    // The zlib header is checked (a preset dictionary is declined); Adler-32 is not, as in
    // the png crate, so a wrong one still decodes, the same on both routes.
    let (at, len) = idat(&png);
    let patched = |i: usize, v: u8| {
        let mut p = png.clone();
        p[at + 8 + i] = v;
        let crc = crc32fast::hash(&p[at + 4..at + 8 + len]);
        p[at + 8 + len..at + 12 + len].copy_from_slice(&crc.to_be_bytes());
        p
    };
    let dict = (png[at + 9] | 0x20) & 0xE0; // FDICT set, FCHECK made valid again
    let dict = dict + (31 - ((png[at + 8] as u16) << 8 | dict as u16) % 31) as u8 % 31;
    assert!(declined(&patched(1, dict)), "a preset dictionary");
    assert!(declined(&patched(0, 0x79)), "not DEFLATE");
    let adler = patched(len - 1, png[at + 8 + len - 1] ^ 0x55);
    let mut ours = Vec::new();
    decode(&adler, hd, &mut Scratch::default(), &mut ours).expect("a wrong Adler-32 is ignored");
    assert_eq!(ours, via_image(&adler));
    // A bad filter byte.
    assert_eq!(unfilter::<3>(5, &[], &mut [1, 2, 3]), None);
    // Not a PNG, and a chunk length past the end.
    assert_eq!(header(b"GIF89a"), None);
    assert_eq!(header(&png[..20]), None);
}

/// `png` with a chunk (valid CRC) inserted at byte `at`, a chunk boundary.
fn with_chunk(png: &[u8], at: usize, kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut c = (data.len() as u32).to_be_bytes().to_vec();
    c.extend_from_slice(kind);
    c.extend_from_slice(data);
    c.extend_from_slice(&crc32fast::hash(&c[4..]).to_be_bytes());
    [&png[..at], &c, &png[at..]].concat()
}

/// Where the first IDAT chunk starts, and its length.
fn idat(png: &[u8]) -> (usize, usize) {
    let at = png.windows(4).position(|w| w == b"IDAT").unwrap() - 4;
    (at, u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize)
}
