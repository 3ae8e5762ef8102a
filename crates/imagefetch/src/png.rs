//! The common PNG — 8-bit RGB or RGBA, not interlaced, no colour key — decoded whole:
//! libdeflate inflates the IDAT stream in one call (its output size is known from the header),
//! the rows are unfiltered in place and written as RGB, alpha composited on black on the way.
//! The `image` crate's streaming route spent 36% of a PNG in inflate, 32% in Paeth and 6% in a
//! separate alpha pass (#24). Anything else — other depths, palettes, interlace, tRNS, EXIF, a
//! stream that does not inflate to exactly the header's size — returns `None`, and the generic
//! route decodes it (and words its errors), so this path only ever changes speed.

/// What the header says, read before any pixel buffer is allocated.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Header {
    pub width: u32,
    pub height: u32,
    /// Bytes per pixel: 3 (RGB) or 4 (RGBA).
    bpp: usize,
}

const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

impl Header {
    /// Bytes of the inflated stream: a filter byte and the pixels of every row.
    pub fn inflated_len(&self) -> usize {
        self.height as usize * (1 + self.width as usize * self.bpp)
    }
}

/// The chunks of `bytes` as (type, data), up to IEND or the first malformed one.
fn chunks(bytes: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut at = SIGNATURE.len();
    std::iter::from_fn(move || {
        let len = u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize;
        let kind = bytes.get(at + 4..at + 8)?;
        let data = bytes.get(at + 8..(at + 8).checked_add(len)?)?;
        at += 12 + len;
        (kind != b"IEND").then_some((kind, data))
    })
}

/// The header, if this is a PNG the fast path takes.
pub(crate) fn header(bytes: &[u8]) -> Option<Header> {
    if !bytes.starts_with(SIGNATURE) {
        return None;
    }
    let (kind, d) = chunks(bytes).next()?;
    if kind != b"IHDR" || d.len() != 13 {
        return None;
    }
    let width = u32::from_be_bytes(d[0..4].try_into().ok()?);
    let height = u32::from_be_bytes(d[4..8].try_into().ok()?);
    let bpp = match (d[8], d[9]) {
        (8, 2) => 3,
        (8, 6) => 4,
        _ => return None,
    };
    // Compression, filter method, interlace: only the one standard combination.
    let plain = d[10] == 0 && d[11] == 0 && d[12] == 0;
    (plain && width > 0 && height > 0).then_some(Header { width, height, bpp })
}

/// Buffers kept by a decode thread between images: fresh ones cost a page fault per 4 KiB.
#[derive(Default)]
pub(crate) struct Scratch {
    stream: Vec<u8>,
    rows: Vec<u8>,
}

impl Scratch {
    /// Drops buffers grown past `keep` bytes (one huge PNG should not pin its memory).
    pub fn trim(&mut self, keep: usize) {
        for b in [&mut self.stream, &mut self.rows] {
            if b.capacity() > keep {
                *b = Vec::new();
            }
        }
    }
}

/// The pixels as 8-bit RGB (`width`×`height`×3) into `out`, or `None` for the generic route.
pub(crate) fn decode(bytes: &[u8], h: Header, scratch: &mut Scratch, out: &mut Vec<u8>) -> Option<()> {
    let Scratch { stream, rows } = scratch;
    stream.clear();
    for (kind, data) in chunks(bytes) {
        match kind {
            b"IDAT" => stream.extend_from_slice(data),
            // A colour key or EXIF orientation: the generic route applies them.
            b"tRNS" | b"eXIf" => return None,
            _ => {}
        }
    }
    // Every byte of both is written below (inflate checks its length), so resizing a kept
    // buffer zeroes only what it grows by.
    rows.resize(h.inflated_len(), 0);
    let n = libdeflater::Decompressor::new().zlib_decompress(stream, rows).ok()?;
    if n != rows.len() {
        return None;
    }
    let stride = 1 + h.width as usize * h.bpp;
    out.resize(h.width as usize * h.height as usize * 3, 0);
    let mut prev: &[u8] = &[];
    for (row, rgb) in rows.chunks_exact_mut(stride).zip(out.chunks_exact_mut(h.width as usize * 3)) {
        let (filter, cur) = row.split_first_mut()?;
        match h.bpp {
            3 => unfilter::<3>(*filter, prev, cur)?,
            _ => unfilter::<4>(*filter, prev, cur)?,
        }
        if h.bpp == 3 {
            rgb.copy_from_slice(cur);
        } else {
            for (p, o) in cur.chunks_exact(4).zip(rgb.chunks_exact_mut(3)) {
                o.copy_from_slice(&over_black([p[0], p[1], p[2], p[3]]));
            }
        }
        prev = cur;
    }
    Some(())
}

/// A pixel with straight alpha composited on black (the letterbox padding), as 8-bit RGB.
pub(crate) fn over_black(p: [u8; 4]) -> [u8; 3] {
    let a = p[3] as u16;
    [(p[0] as u16 * a / 255) as u8, (p[1] as u16 * a / 255) as u8, (p[2] as u16 * a / 255) as u8]
}

/// Undoes one row's filter in place (`prev` is the unfiltered row above, empty for the first).
fn unfilter<const BPP: usize>(filter: u8, prev: &[u8], cur: &mut [u8]) -> Option<()> {
    let up = |i: usize| prev.get(i).copied().unwrap_or(0);
    match filter {
        0 => {}
        1 => {
            for i in BPP..cur.len() {
                cur[i] = cur[i].wrapping_add(cur[i - BPP]);
            }
        }
        2 if !prev.is_empty() => {
            for (c, p) in cur.iter_mut().zip(prev) {
                *c = c.wrapping_add(*p);
            }
        }
        2 => {}
        3 => {
            for i in 0..cur.len() {
                let left = if i >= BPP { cur[i - BPP] } else { 0 };
                cur[i] = cur[i].wrapping_add(((left as u16 + up(i) as u16) / 2) as u8);
            }
        }
        4 if prev.is_empty() => unfilter::<BPP>(1, prev, cur)?,
        4 => paeth::<BPP>(prev, cur),
        _ => return None,
    }
    Some(())
}

/// Paeth, branch-free (stb_image's formulation), the left pixel carried in registers.
fn paeth<const BPP: usize>(prev: &[u8], cur: &mut [u8]) {
    let (mut a, mut c) = ([0i16; BPP], [0i16; BPP]);
    for (x, p) in cur.chunks_exact_mut(BPP).zip(prev.chunks_exact(BPP)) {
        for i in 0..BPP {
            let b = p[i] as i16;
            let thresh = c[i] * 3 - (a[i] + b);
            let (lo, hi) = (a[i].min(b), a[i].max(b));
            let t0 = if hi <= thresh { lo } else { c[i] };
            let pred = if thresh <= lo { hi } else { t0 };
            x[i] = x[i].wrapping_add(pred as u8);
            a[i] = x[i] as i16;
            c[i] = b;
        }
    }
}

#[cfg(test)]
#[path = "png_tests.rs"]
mod tests;
