//! What a JPEG's header says before libjpeg-turbo decodes it: the DCT scale to decode at,
//! and whether the file reaches its end-of-image marker.

/// libjpeg-turbo's downscaling factors (≤ 1), asked once rather than per image.
static DOWNSCALES: std::sync::LazyLock<Vec<turbojpeg::ScalingFactor>> = std::sync::LazyLock::new(|| {
    turbojpeg::Decompressor::supported_scaling_factors()
        .into_iter()
        .filter(|f| f.num() <= f.denom())
        .collect()
});

/// The smallest DCT scale whose output still covers `(rw, rh)`: decoding fewer pixels is
/// the cheapest resize there is.
pub(crate) fn dct_scale((w, h): (u32, u32), (rw, rh): (u32, u32)) -> turbojpeg::ScalingFactor {
    DOWNSCALES
        .iter()
        .copied()
        .filter(|f| f.scale(w as usize) >= rw as usize && f.scale(h as usize) >= rh as usize)
        .min_by_key(|f| f.scale(w as usize) * f.scale(h as usize))
        .unwrap_or(turbojpeg::ScalingFactor::ONE)
}

/// Whether an end-of-image marker follows the first scan. Junk of any length after EOI is
/// common on the web; an EXIF thumbnail's own EOI sits before the first scan, so it does not
/// hide a cut file. A header that cannot be walked is left to libjpeg-turbo.
pub(crate) fn has_jpeg_end(bytes: &[u8]) -> bool {
    let Some(scan) = first_scan(bytes) else { return true };
    bytes[scan..].windows(2).rev().any(|w| w == [0xFF, 0xD9])
}

/// Offset of the first SOS marker, walking the header's segments by their lengths.
fn first_scan(b: &[u8]) -> Option<usize> {
    let mut i = 2;
    loop {
        while b.get(i..i + 2)? == [0xFF, 0xFF] {
            i += 1; // fill bytes
        }
        if b[i] != 0xFF {
            return None;
        }
        if b[i + 1] == 0xDA {
            return Some(i);
        }
        let len = u16::from_be_bytes([*b.get(i + 2)?, *b.get(i + 3)?]) as usize;
        if len < 2 {
            return None;
        }
        i += 2 + len;
    }
}
