//! The common PNG — 8-bit RGB or RGBA, not interlaced, no colour key — decoded whole:
//! libdeflate inflates the IDAT stream in one call (its output size is known from the header;
//! Adler-32 is left unchecked, as the `png` crate does), the rows are unfiltered in place and
//! written as RGB, alpha composited on black on the way.
//! The `image` crate's streaming route spent 36% of a PNG in inflate, 32% in Paeth and 6% in a
//! separate alpha pass (#24). Anything else — other depths, palettes, interlace, tRNS, EXIF, a
//! stream that does not inflate to exactly the header's size, and whatever the `png` crate
//! would refuse that we can see up front (a bad CRC, IDATs apart, an unknown critical chunk, no
//! IEND) — returns `None`, and the generic route decodes it (and words its errors).

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

/// The chunks of `bytes` as (type, data, CRC correct), IEND included, up to the first that
/// runs past the end.
fn chunks(bytes: &[u8]) -> impl Iterator<Item = (&[u8], &[u8], bool)> {
    let mut at = SIGNATURE.len();
    std::iter::from_fn(move || {
        let len = u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize;
        let end = (at + 8).checked_add(len)?;
        let (kind, data) = (bytes.get(at + 4..at + 8)?, bytes.get(at + 8..end)?);
        let crc = u32::from_be_bytes(bytes.get(end..end + 4)?.try_into().ok()?);
        at = end + 4;
        Some((kind, data, crc32fast::hash(&bytes[end - len - 4..end]) == crc))
    })
}

/// The IDAT data, concatenated, if every chunk is one the fast path may ignore.
fn idat_stream(bytes: &[u8], stream: &mut Vec<u8>) -> Option<()> {
    stream.clear();
    let (mut in_idat, mut idat_ended) = (false, false);
    for (kind, data, crc_ok) in chunks(bytes) {
        if !crc_ok {
            return None;
        }
        match kind {
            b"IEND" => return Some(()),
            b"IDAT" if idat_ended => return None, // the png crate refuses a restarted sequence
            b"IDAT" => {
                in_idat = true;
                stream.extend_from_slice(data)
            }
            // A colour key or EXIF orientation: the generic route applies them.
            b"tRNS" | b"eXIf" => return None,
            b"IHDR" | b"PLTE" => idat_ended = in_idat,
            // An unknown critical chunk (upper-case first letter): the png crate refuses it.
            k if k[0].is_ascii_uppercase() => return None,
            _ => idat_ended = in_idat,
        }
    }
    None // no IEND
}

/// The DEFLATE data inside the zlib stream, if its header is one zlib accepts without a
/// preset dictionary. Its Adler-32 trailer is left unchecked, as the `png` crate does by
/// default: every chunk's CRC has been checked already (Adler-32 was 2% of a PNG's decode).
fn deflate_data(zlib: &[u8]) -> Option<&[u8]> {
    let (cmf, flg) = (*zlib.first()?, *zlib.get(1)?);
    let valid = cmf & 0x0F == 8 && cmf >> 4 <= 7 && (u16::from(cmf) << 8 | u16::from(flg)) % 31 == 0;
    (valid && flg & 0x20 == 0).then(|| &zlib[2..])
}

/// The header, if this is a PNG the fast path takes.
pub(crate) fn header(bytes: &[u8]) -> Option<Header> {
    if !bytes.starts_with(SIGNATURE) {
        return None;
    }
    let (kind, d, _) = chunks(bytes).next()?;
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
    idat_stream(bytes, stream)?;
    // Every byte of both is written below (inflate checks its length), so resizing a kept
    // buffer zeroes only what it grows by.
    rows.resize(h.inflated_len(), 0);
    let n = libdeflater::Decompressor::new().deflate_decompress(deflate_data(stream)?, rows).ok()?;
    if n != rows.len() {
        return None;
    }
    out.resize(h.width as usize * h.height as usize * 3, 0);
    match h.bpp {
        3 => rows_to_rgb::<3>(rows, h.width as usize, out),
        _ => rows_to_rgb::<4>(rows, h.width as usize, out),
    }
}

/// Unfilters `rows` (each a filter byte and `width` pixels) in place and writes them as RGB;
/// two Paeth rows in a row go through `paeth_pair`.
fn rows_to_rgb<const BPP: usize>(rows: &mut [u8], width: usize, out: &mut [u8]) -> Option<()> {
    let (stride, n) = (1 + width * BPP, out.len() / (width * 3));
    let mut y = 0;
    while y < n {
        let (done, rest) = rows.split_at_mut(y * stride);
        let prev = if y == 0 { &[][..] } else { &done[(y - 1) * stride + 1..] };
        let rgb = &mut out[y * width * 3..];
        if y > 0 && y + 1 < n && rest[0] == 4 && rest[stride] == 4 {
            let (r0, r1) = rest.split_at_mut(stride);
            paeth_pair::<BPP>(prev, &mut r0[1..], &mut r1[1..stride]);
            let (o0, o1) = rgb.split_at_mut(width * 3);
            to_rgb::<BPP>(&r0[1..], o0);
            to_rgb::<BPP>(&r1[1..stride], &mut o1[..width * 3]);
            y += 2;
        } else {
            let (filter, cur) = rest[..stride].split_first_mut()?;
            unfilter::<BPP>(*filter, prev, cur)?;
            to_rgb::<BPP>(cur, &mut rgb[..width * 3]);
            y += 1;
        }
    }
    Some(())
}

fn to_rgb<const BPP: usize>(row: &[u8], rgb: &mut [u8]) {
    if BPP == 3 {
        rgb.copy_from_slice(row);
    } else {
        for (p, o) in row.chunks_exact(4).zip(rgb.chunks_exact_mut(3)) {
            o.copy_from_slice(&over_black([p[0], p[1], p[2], p[3]]));
        }
    }
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

/// Two consecutive Paeth rows `r0`, `r1` below `above`, unfiltered together. Paeth is a chain
/// through each row (every pixel needs the one to its left), so one row leaves the CPU waiting
/// on that chain; `r1` one pixel behind `r0` makes a second chain that shares each step. One
/// SSE2 register holds both rows' pixel, in 16-bit lanes: [r0 pixel t | r1 pixel t-1].
#[cfg(target_arch = "x86_64")]
fn paeth_pair<const BPP: usize>(above: &[u8], r0: &mut [u8], r1: &mut [u8]) {
    use std::arch::x86_64::*;
    let w = r0.len() / BPP;
    // Pixel `i` of a row as little-endian bytes, zero outside the row.
    let px = |s: &[u8], i: usize| -> u64 {
        let mut b = [0u8; 4];
        if i < w {
            b[..BPP].copy_from_slice(&s[i * BPP..(i + 1) * BPP]);
        }
        u32::from_le_bytes(b) as u64
    };
    // SAFETY: SSE2 is part of x86_64, so these intrinsics are always available; every memory
    // access is through checked slices.
    unsafe {
        let zero = _mm_setzero_si128();
        let widen = |lo: u64, hi: u64| _mm_unpacklo_epi8(_mm_cvtsi64_si128((hi << 32 | lo) as i64), zero);
        let (mut a, mut c) = (zero, zero); // [r0 t-1 | r1 t-2], [above t-1 | r0 t-2]
        for t in 0..=w {
            let b = _mm_unpacklo_epi64(widen(px(above, t), 0), a); // [above t | r0 t-1]
            let x = widen(px(r0, t), if t > 0 { px(r1, t - 1) } else { 0 });
            // stb_image's branch-free Paeth, as in `paeth` below.
            let thresh = _mm_sub_epi16(_mm_add_epi16(c, _mm_add_epi16(c, c)), _mm_add_epi16(a, b));
            let (lo, hi) = (_mm_min_epi16(a, b), _mm_max_epi16(a, b));
            let m0 = _mm_cmpgt_epi16(hi, thresh);
            let t0 = _mm_or_si128(_mm_and_si128(m0, c), _mm_andnot_si128(m0, lo));
            let m1 = _mm_cmpgt_epi16(thresh, lo);
            let pred = _mm_or_si128(_mm_and_si128(m1, t0), _mm_andnot_si128(m1, hi));
            let mut out = _mm_and_si128(_mm_add_epi16(x, pred), _mm_set1_epi16(0xFF));
            if t == 0 {
                out = _mm_unpacklo_epi64(out, zero); // r1 has no pixel -1: its left edge is zero
            }
            let bytes = _mm_cvtsi128_si64(_mm_packus_epi16(out, out)) as u64;
            if t < w {
                r0[t * BPP..(t + 1) * BPP].copy_from_slice(&(bytes as u32).to_le_bytes()[..BPP]);
            }
            if t > 0 {
                r1[(t - 1) * BPP..t * BPP].copy_from_slice(&((bytes >> 32) as u32).to_le_bytes()[..BPP]);
            }
            (a, c) = (out, b);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn paeth_pair<const BPP: usize>(above: &[u8], r0: &mut [u8], r1: &mut [u8]) {
    paeth::<BPP>(above, r0);
    paeth::<BPP>(r0, r1);
}

#[cfg(test)]
#[path = "png_tests.rs"]
mod tests;
