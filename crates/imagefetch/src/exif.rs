//! EXIF orientation for JPEG (turbojpeg does not apply it) and the pixel remapping it implies.

/// Orientation tag (1..=8) from a JPEG's APP1/Exif segment; 1 when absent or malformed.
pub fn jpeg_orientation(jpeg: &[u8]) -> u8 {
    let mut i = 2;
    while i + 4 <= jpeg.len() && jpeg[i] == 0xFF {
        let marker = jpeg[i + 1];
        let len = u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]) as usize;
        if marker == 0xDA || len < 2 || i + 2 + len > jpeg.len() {
            break; // start of scan: no more metadata
        }
        let seg = &jpeg[i + 4..i + 2 + len];
        if marker == 0xE1 && seg.starts_with(b"Exif\0\0") {
            return tiff_orientation(&seg[6..]).unwrap_or(1);
        }
        i += 2 + len;
    }
    1
}

fn tiff_orientation(t: &[u8]) -> Option<u8> {
    let le = match t.get(0..2)? {
        b"II" => true,
        b"MM" => false,
        _ => return None,
    };
    let u16_at = |o: usize| {
        t.get(o..o + 2).map(|b| {
            if le {
                u16::from_le_bytes([b[0], b[1]])
            } else {
                u16::from_be_bytes([b[0], b[1]])
            }
        })
    };
    let u32_at = |o: usize| {
        t.get(o..o + 4).map(|b| {
            if le {
                u32::from_le_bytes([b[0], b[1], b[2], b[3]])
            } else {
                u32::from_be_bytes([b[0], b[1], b[2], b[3]])
            }
        })
    };
    let ifd = u32_at(4)? as usize;
    let n = u16_at(ifd)? as usize;
    for e in 0..n.min(256) {
        let at = ifd + 2 + e * 12;
        if u16_at(at)? == 0x0112 {
            let v = u16_at(at + 8)?;
            return (1..=8).contains(&v).then_some(v as u8);
        }
    }
    None
}

/// Whether the orientation swaps width and height (the transposing ones).
pub fn swaps_axes(o: u8) -> bool {
    (5..=8).contains(&o)
}

/// Writes the stored (`w`×`h`, `px` bytes a pixel: 3 for RGB, 1 for a plane) image `src`
/// upright into `dst` (row stride `dst_stride` bytes), whose upright size is `w`×`h` or `h`×`w`
/// when axes swap.
pub fn orient_into(src: &[u8], (w, h, px): (usize, usize, usize), o: u8, dst: &mut [u8], dst_stride: usize) {
    let (ow, oh) = if swaps_axes(o) { (h, w) } else { (w, h) };
    for y in 0..oh {
        for x in 0..ow {
            // Source coordinates of upright pixel (x, y), per EXIF orientation.
            let (sx, sy) = match o {
                2 => (w - 1 - x, y),
                3 => (w - 1 - x, h - 1 - y),
                4 => (x, h - 1 - y),
                5 => (y, x),
                6 => (y, h - 1 - x),
                7 => (w - 1 - y, h - 1 - x),
                8 => (w - 1 - y, x),
                _ => (x, y),
            };
            let s = (sy * w + sx) * px;
            let d = y * dst_stride + x * px;
            dst[d..d + px].copy_from_slice(&src[s..s + px]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal JPEG prefix: SOI + APP1 with an EXIF orientation tag, then SOS.
    pub fn jpeg_with_orientation(o: u16, le: bool) -> Vec<u8> {
        let mut tiff = Vec::new();
        let w16 = |v: u16, t: &mut Vec<u8>| t.extend(if le { v.to_le_bytes() } else { v.to_be_bytes() });
        let w32 = |v: u32, t: &mut Vec<u8>| t.extend(if le { v.to_le_bytes() } else { v.to_be_bytes() });
        tiff.extend(if le { b"II" } else { b"MM" });
        w16(42, &mut tiff);
        w32(8, &mut tiff);
        w16(1, &mut tiff);
        w16(0x0112, &mut tiff);
        w16(3, &mut tiff);
        w32(1, &mut tiff);
        w16(o, &mut tiff);
        w16(0, &mut tiff);
        w32(0, &mut tiff);
        let mut seg = b"Exif\0\0".to_vec();
        seg.extend(tiff);
        let mut j = vec![0xFF, 0xD8, 0xFF, 0xE1];
        j.extend(((seg.len() + 2) as u16).to_be_bytes());
        j.extend(seg);
        j.extend([0xFF, 0xDA, 0x00, 0x02]);
        j
    }

    #[test]
    fn reads_orientation_in_both_byte_orders() {
        assert_eq!(jpeg_orientation(&jpeg_with_orientation(6, true)), 6);
        assert_eq!(jpeg_orientation(&jpeg_with_orientation(8, false)), 8);
        assert_eq!(jpeg_orientation(&[0xFF, 0xD8, 0xFF, 0xDA, 0, 2]), 1);
        assert_eq!(jpeg_orientation(&jpeg_with_orientation(9, true)), 1, "out of range");
    }

    #[test]
    fn rotation_moves_pixels_where_expected() {
        // 2x1 image: red, green. Orientation 6 (rotate 90 CW) gives a 1x2 image: red on top.
        let src = [255, 0, 0, 0, 255, 0];
        let mut dst = [0u8; 6];
        orient_into(&src, (2, 1, 3), 6, &mut dst, 3);
        assert_eq!(dst, [255, 0, 0, 0, 255, 0]);
        orient_into(&src, (2, 1, 3), 8, &mut dst, 3);
        assert_eq!(dst, [0, 255, 0, 255, 0, 0]);
        let mut flip = [0u8; 6];
        orient_into(&src, (2, 1, 3), 2, &mut flip, 6);
        assert_eq!(flip, [0, 255, 0, 255, 0, 0]);
    }
}
