//! Progressive JPEG scans a reduced-scale decode can do without, spliced out before libjpeg-turbo
//! sees the bytes (issue #24: progressive entropy decoding was the largest decode cost).
//!
//! A progressive JPEG with scans missing still decodes: coefficients no scan delivered stay
//! zero. Scans go, never one that a kept later scan refines:
//! - AC scans whose whole band lies outside the coefficients the scaled IDCT reads and those
//!   (1..=9) libjpeg's block smoothing looks at (exact);
//! - when decoding at half size or less, the refinement scans (Ah > 0): the last bit of every
//!   coefficient, DC included, and in libjpeg's standard script (Pillow's, most encoders')
//!   also Y's second-last AC bit. They are its costliest scans, and the downscale all but
//!   erases those bits (Y PSNR of the letterboxed picture ≥ 41 dB on the web corpus; the
//!   detector's faces do not move: tests/tests/it/progressive.rs).
//!   A script whose first scans stop above Al = 2 keeps all but its final bits. At 5/8–7/8
//!   the loss shows more (Y PSNR down to 32 dB for the final bits alone) and those files are
//!   small and cheap anyway, so they keep everything.
//!
//! The kept scans are then rescaled: each one's header lowered by the bits its coefficients
//! lost, their quantizers multiplied to match (`Plan`). The IDCT gets the same products, and
//! libjpeg sees every coefficient it gets as whole, so it does not run block smoothing to
//! estimate the missing bits (a sixth of the decode CPU that was left; it still runs for a
//! component that got none of coefficients 1..=9).
//!
//! Anything unexpected (baseline, arithmetic coding, malformed markers, truncation) returns
//! the input untouched, so libjpeg-turbo decides about it as before.

/// Progressive JPEGs with more scans fail: each scan re-walks the whole image, so thousands of
/// tiny scans hold a decode thread for minutes (libjpeg-turbo's own advice is a limit of ~500).
pub const MAX_JPEG_SCANS: u32 = 500;

/// Files with more scans go to the decoder untouched, which refuses them: splicing must not
/// let one in.
const MAX_SCANS: usize = MAX_JPEG_SCANS as usize;

/// One SOS segment and its entropy-coded data: `bytes[start..end]`.
#[derive(Debug, Clone, PartialEq)]
struct Scan {
    start: usize,
    end: usize,
    /// Component indices (positions in the frame header), not ids.
    comps: Vec<usize>,
    ss: u8,
    se: u8,
    ah: u8,
    al: u8,
    /// Where the Ah/Al byte of its header is.
    ahal_at: usize,
}

/// What `parse` finds: the frame's components, the scans in order, and the DQT segments.
struct Parsed {
    comps: Vec<Component>,
    scans: Vec<Scan>,
    tables: Vec<std::ops::Range<usize>>,
    /// A DQT after the first scan: libjpeg has latched the earlier tables by then.
    late_tables: bool,
}

/// A frame component's sampling factors.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Component {
    id: u8,
    h: u8,
    v: u8,
    /// Its quantization table.
    tq: u8,
}

/// Final-bit refinements go only at this scale (in eighths) or below.
const LAST_BIT_MAX_EIGHTHS: u32 = 4;

/// The highest zigzag index libjpeg's block smoothing reads (`SAVED_COEFS` - 1): dropping any
/// of them would change what it estimates, even for coefficients the IDCT reads.
const SMOOTHING_READS: u8 = 9;

/// Row-major position of each zigzag index.
const ZIGZAG_TO_NATURAL: [u8; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7,
    14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39,
    46, 53, 60, 61, 54, 47, 55, 62, 63,
];

/// How far a splice goes (`splice` uses `FirstScans`; the others are its fallbacks, and tests').
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(not(test), allow(dead_code, reason = "Plain and FinalBit are chosen by tests only"))]
pub(crate) enum Depth {
    /// Scans dropped, headers untouched: libjpeg's block smoothing estimates what is missing.
    Plain,
    /// Final bits dropped, then every kept scan one bit lower and every quantizer doubled.
    FinalBit,
    /// Every refinement dropped, then each first scan rescaled to Al = 0 (its quantizers
    /// multiplied by 2^Al): one bit more of the standard script's Y AC goes than `FinalBit`.
    FirstScans,
}

/// `bytes` without the scans a decode at `scale` (≤ 1) does not need (see the module doc),
/// written into `out`; `bytes` itself when nothing goes or the file is not a plain
/// progressive Huffman JPEG.
pub fn splice<'a>(bytes: &'a [u8], scale: turbojpeg::ScalingFactor, out: &'a mut Vec<u8>) -> &'a [u8] {
    splice_as(bytes, scale, out, Depth::FirstScans)
}

/// `splice`, going at most as far as `depth` (each depth falls back to the one before it
/// when the file does not allow it).
pub(crate) fn splice_as<'a>(
    bytes: &'a [u8],
    scale: turbojpeg::ScalingFactor,
    out: &'a mut Vec<u8>,
    depth: Depth,
) -> &'a [u8] {
    let Some(p) = parse(bytes) else { return bytes };
    let eighths = (scale.num() * 8 / scale.denom().max(1)).clamp(1, 8) as u32;
    let plan = plan(bytes, &p, eighths, depth);
    if plan.keep.iter().all(|&k| k) {
        return bytes;
    }
    write(bytes, &p, &plan, out);
    out
}

/// `bytes` as `plan` says, into `out`.
fn write(bytes: &[u8], p: &Parsed, plan: &Plan, out: &mut Vec<u8>) {
    let mut cuts: Vec<(std::ops::Range<usize>, &[u8])> = Vec::new();
    for (range, table) in p.tables.iter().zip(plan.tables.iter().flatten()) {
        cuts.push((range.clone(), table));
    }
    for ((s, &k), &d) in p.scans.iter().zip(&plan.keep).zip(&plan.lower) {
        if !k {
            cuts.push((s.start..s.end, &[]));
        } else if d > 0 {
            cuts.push((
                s.ahal_at..s.ahal_at + 1,
                &LOWERED_AHAL[d as usize - 1][bytes[s.ahal_at] as usize..][..1],
            ));
        }
    }
    out.clear();
    let mut from = 0;
    for (range, with) in cuts {
        out.extend_from_slice(&bytes[from..range.start]);
        out.extend_from_slice(with);
        from = range.end;
    }
    out.extend_from_slice(&bytes[from..]);
}

/// The most bits a coefficient may lose to `Depth::FirstScans`: the standard script's Y AC
/// first scans stop at Al = 2 (a script with coarser first scans keeps its refinements).
const MAX_LOST_BITS: u8 = 2;

/// Each Ah/Al byte with both `d` (1..=MAX_LOST_BITS, the index plus one) bits lower: what a
/// scan's header becomes when its coefficients count in units of 2^d.
const LOWERED_AHAL: [[u8; 256]; MAX_LOST_BITS as usize] = {
    let mut t = [[0u8; 256]; MAX_LOST_BITS as usize];
    let mut d = 0;
    while d < MAX_LOST_BITS as usize {
        let mut i = 0;
        while i < 256 {
            let (ah, al) = (i as u8 >> 4, i as u8 & 15);
            t[d][i] = (ah.saturating_sub(d as u8 + 1) << 4) | al.saturating_sub(d as u8 + 1);
            i += 1;
        }
        d += 1;
    }
    t
};

/// Per quantization table, per zigzag index: by how many bits its quantizer grows.
type Shifts = [[u8; 64]; 4];

/// What a splice does: the scans kept, by how many bits each one's header goes lower, and
/// the DQT segments rewritten to match (None: tables untouched).
struct Plan {
    keep: Vec<bool>,
    lower: Vec<u8>,
    tables: Option<Vec<Vec<u8>>>,
}

/// The deepest splice `depth` allows that this file can take.
fn plan(bytes: &[u8], p: &Parsed, eighths: u32, depth: Depth) -> Plan {
    let keep = kept(&p.comps, &p.scans, eighths);
    let plain = || Plan { lower: vec![0; keep.len()], keep: keep.clone(), tables: None };
    if depth == Depth::Plain || p.late_tables {
        return plain();
    }
    if depth == Depth::FirstScans {
        if let Some(plan) = first_scans_only(bytes, p, &keep, eighths) {
            return plan;
        }
    }
    // When every kept scan leaves its coefficients' last bit unknown (Al ≥ 1): the same
    // products reach the IDCT, and libjpeg sees those coefficients whole, so it skips block
    // smoothing (jdcoefct.c), which otherwise estimates the missing bit at ~15% of the decode.
    let lossy_everywhere = p.scans.iter().zip(&keep).all(|(s, &k)| !k || s.al >= 1);
    let ok = lossy_everywhere && !delivered_twice(p, &keep);
    match ok.then(|| scaled_tables(bytes, p, &[[1; 64]; 4])).flatten() {
        Some(tables) => Plan { lower: vec![1; keep.len()], keep, tables: Some(tables) },
        None => plain(),
    }
}

/// `Depth::FirstScans` where it applies: at half size or less, a file whose kept scans
/// include a refinement that is not the final bit, whose first scans stop at Al ≤
/// MAX_LOST_BITS, and whose shared tables serve coefficients that lost the same bits.
fn first_scans_only(bytes: &[u8], p: &Parsed, keep: &[bool], eighths: u32) -> Option<Plan> {
    let refined = p.scans.iter().zip(keep).any(|(s, &k)| k && s.ah > 0);
    if eighths > LAST_BIT_MAX_EIGHTHS || !refined {
        return None;
    }
    let keep: Vec<bool> = p.scans.iter().zip(keep).map(|(s, &k)| k && s.ah == 0).collect();
    if delivered_twice(p, &keep) {
        return None;
    }
    let mut shifts: [[Option<u8>; 64]; 4] = [[None; 64]; 4];
    for (s, _) in p.scans.iter().zip(&keep).filter(|(_, &k)| k) {
        if s.al > MAX_LOST_BITS {
            return None;
        }
        for &c in &s.comps {
            for z in s.ss..=s.se {
                let slot = &mut shifts[p.comps[c].tq as usize][z as usize];
                if slot.is_some_and(|a| a != s.al) {
                    return None;
                }
                *slot = Some(s.al);
            }
        }
    }
    let shifts = shifts.map(|t| t.map(|a| a.unwrap_or(0)));
    let lower = p.scans.iter().zip(&keep).map(|(s, &k)| if k { s.al } else { 0 }).collect();
    let tables = Some(scaled_tables(bytes, p, &shifts)?);
    Some(Plan { keep, lower, tables })
}

/// Whether two kept first scans (Ah = 0) deliver one coefficient of one component: a
/// progression libjpeg refuses, which lowering both scans' Al could hide from it.
fn delivered_twice(p: &Parsed, keep: &[bool]) -> bool {
    let mut delivered = vec![0u64; p.comps.len()];
    p.scans.iter().zip(keep).filter(|(s, &k)| k && s.ah == 0).any(|(s, _)| {
        let band = (u64::MAX >> (63 - s.se)) & (u64::MAX << s.ss);
        s.comps.iter().any(|&c| {
            let had = delivered[c] & band != 0;
            delivered[c] |= band;
            had
        })
    })
}

/// Every DQT segment with its quantizers multiplied by 2^shift; None if one is not plain.
fn scaled_tables(bytes: &[u8], p: &Parsed, shifts: &Shifts) -> Option<Vec<Vec<u8>>> {
    p.tables.iter().map(|r| scaled_dqt(&bytes[r.clone()], shifts)).collect()
}

/// One DQT segment (fill bytes, marker, length, tables) with each table's quantizers
/// multiplied by 2^shift, written at 16-bit precision; None if it is malformed or a
/// quantizer would pass 32767 (libjpeg-turbo's SIMD builds multiply by them as `short`).
fn scaled_dqt(seg: &[u8], shifts: &Shifts) -> Option<Vec<u8>> {
    let at = seg.iter().position(|&b| b != 0xFF)?;
    let body = seg.get(at + 3..)?;
    if seg[at] != 0xDB || u16::from_be_bytes([seg[at + 1], seg[at + 2]]) as usize != body.len() + 2 {
        return None;
    }
    let mut tables = Vec::with_capacity(body.len() * 2);
    let mut rest = body;
    while let Some((&pqtq, tail)) = rest.split_first() {
        let (wide, id) = (pqtq >> 4, pqtq & 15);
        let n = if wide == 0 { 64 } else { 128 };
        if wide > 1 || id > 3 || tail.len() < n {
            return None;
        }
        tables.push(0x10 | id);
        for (q, &shift) in tail[..n].chunks(1 + wide as usize).zip(&shifts[id as usize]) {
            let q = q.iter().fold(0u32, |v, &b| v << 8 | b as u32) << shift;
            tables.extend_from_slice(&i16::try_from(q).ok()?.to_be_bytes());
        }
        rest = &tail[n..];
    }
    let mut out = vec![0xFF, 0xDB];
    out.extend_from_slice(&u16::try_from(tables.len() + 2).ok()?.to_be_bytes());
    out.extend_from_slice(&tables);
    Some(out)
}

/// Which scans stay. Decided last to first: a scan may go only if no kept later scan of the
/// same component covers any of its coefficients (that scan would refine what is missing).
fn kept(comps: &[Component], scans: &[Scan], eighths: u32) -> Vec<bool> {
    // Block smoothing (jdcoefct.c) reads coefficients 1..=9 to decide what to estimate.
    let need: Vec<u8> =
        comps.iter().map(|c| highest_needed(idct_size(comps, c, eighths)).max(SMOOTHING_READS)).collect();
    let mut keep = vec![true; scans.len()];
    for i in (0..scans.len()).rev() {
        let s = &scans[i];
        let unread = s.comps.iter().all(|&c| s.ss > need[c]);
        let last_bit = eighths <= LAST_BIT_MAX_EIGHTHS && s.ah > 0 && s.al == 0;
        if !(unread || last_bit) {
            continue;
        }
        let refined_later = scans[i + 1..].iter().zip(&keep[i + 1..]).any(|(later, &k)| {
            k && later.comps.iter().any(|c| s.comps.contains(c)) && later.ss <= s.se && s.ss <= later.se
        });
        keep[i] = refined_later;
    }
    keep
}

/// The IDCT size libjpeg-turbo gives component `c` at `eighths`/8 (jdmaster.c: subsampled
/// components are scaled up by the IDCT, in powers of two, rather than upsampled).
fn idct_size(comps: &[Component], c: &Component, eighths: u32) -> u32 {
    let max_h = comps.iter().map(|c| c.h as u32).max().unwrap_or(1);
    let max_v = comps.iter().map(|c| c.v as u32).max().unwrap_or(1);
    let mut size = eighths;
    while size < 8
        && (max_h * eighths).is_multiple_of(c.h as u32 * size * 2)
        && (max_v * eighths).is_multiple_of(c.v as u32 * size * 2)
    {
        size *= 2;
    }
    size
}

/// The highest zigzag index an IDCT of `size`×`size` output reads. The 3/5/6/7-point IDCTs
/// (jidctint.c) read the top-left corner only; the 2- and 4-point ones (jidctred.c) read odd
/// rows and columns up to 7, so everything counts for them.
fn highest_needed(size: u32) -> u8 {
    match size {
        1 => 0,
        3 | 5 | 6 | 7 => (0..64u8)
            .filter(|&z| {
                let n = ZIGZAG_TO_NATURAL[z as usize] as u32;
                n / 8 < size && n % 8 < size
            })
            .max()
            .unwrap_or(63),
        _ => 63,
    }
}

/// The frame's components and the scans of a progressive Huffman JPEG; None for anything else
/// or anything malformed. Every step moves forward, so it ends on any input.
fn parse(bytes: &[u8]) -> Option<Parsed> {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    let (mut pos, mut comps, mut scans) = (2, None, Vec::new());
    let (mut tables, mut late_tables) = (Vec::new(), false);
    loop {
        let start = pos;
        if *bytes.get(pos)? != 0xFF {
            return None;
        }
        while *bytes.get(pos)? == 0xFF {
            pos += 1;
        }
        let marker = bytes[pos];
        pos += 1;
        match marker {
            0xD9 => return Some(Parsed { comps: comps?, scans, tables, late_tables }),
            0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        let len = u16::from_be_bytes([*bytes.get(pos)?, *bytes.get(pos + 1)?]) as usize;
        let seg = bytes.get(pos + 2..pos + len.checked_sub(2)? + 2)?;
        pos += len;
        match marker {
            // A second frame (libjpeg refuses it) would leave earlier scans' indices dangling.
            0xC2 if comps.is_none() => comps = Some(frame_components(seg)?),
            0xDB => {
                late_tables |= !scans.is_empty();
                tables.push(start..pos);
            }
            // DHT, DAC, DNL, DRI, APPn, COM: what libjpeg reads by their length.
            0xC4 | 0xCC | 0xDC | 0xDD | 0xE0..=0xEF | 0xFE => {}
            0xDA => {
                if scans.len() == MAX_SCANS {
                    return None;
                }
                let end = entropy_end(bytes, pos)?;
                scans.push(scan_header(seg, comps.as_deref()?, start..end, pos - len + 2)?);
                pos = end;
            }
            // Anything else libjpeg refuses, or skips some other way (FF 00 as stuffing):
            // walking it by a length could disagree with libjpeg about where scans are.
            _ => return None,
        }
    }
}

fn frame_components(seg: &[u8]) -> Option<Vec<Component>> {
    let n = *seg.get(5)? as usize;
    let list = seg.get(6..6 + 3 * n)?;
    let comps: Vec<Component> =
        list.chunks(3).map(|c| Component { id: c[0], h: c[1] >> 4, v: c[1] & 15, tq: c[2] }).collect();
    // Two components with one id: libjpeg matches a scan's ids to them in its own way
    // (jdmarker.c get_sos), which `scan_header` would have to copy to know their tables.
    let mut seen = [false; 256];
    let distinct = comps.iter().all(|c| !std::mem::replace(&mut seen[c.id as usize], true));
    let ok = comps.iter().all(|c| (1..=4).contains(&c.h) && (1..=4).contains(&c.v) && c.tq < 4);
    (ok && distinct).then_some(comps)
}

/// `seg` starts at `bytes[seg_at]`; the scan with its data spans `span`.
fn scan_header(seg: &[u8], frame: &[Component], span: std::ops::Range<usize>, seg_at: usize) -> Option<Scan> {
    // libjpeg's own checks (jdmarker.c get_sos, jdphuff.c start_pass): a scan it would refuse
    // must not be spliced away and the file let through, and `kept` is quadratic in components.
    let n = *seg.first()? as usize;
    if !(1..=4).contains(&n) || seg.len() != 2 * n + 4 {
        return None;
    }
    let ids = &seg[1..1 + 2 * n];
    let comps =
        ids.chunks(2).map(|c| frame.iter().position(|f| f.id == c[0])).collect::<Option<Vec<usize>>>()?;
    let distinct = comps.iter().enumerate().all(|(i, c)| !comps[..i].contains(c));
    let tables = ids.chunks(2).all(|c| c[1] >> 4 < 4 && c[1] & 15 < 4);
    let blocks: u32 = comps.iter().map(|&c| frame[c].h as u32 * frame[c].v as u32).sum();
    let (ss, se, ah, al) = (seg[1 + 2 * n], seg[2 + 2 * n], seg[3 + 2 * n] >> 4, seg[3 + 2 * n] & 15);
    let band = if ss == 0 { se == 0 } else { ss <= se && se < 64 && n == 1 };
    let bits = (ah == 0 || al + 1 == ah) && al <= 13;
    let ok = distinct && tables && (n == 1 || blocks <= 10) && band && bits;
    let ahal_at = seg_at + 3 + 2 * n;
    ok.then_some(Scan { start: span.start, end: span.end, comps, ss, se, ah, al, ahal_at })
}

/// Where a scan's entropy-coded data starting at `from` ends: the first marker that is neither
/// a stuffed zero nor a restart marker (fill 0xFF bytes may precede it). None if truncated.
fn entropy_end(bytes: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    loop {
        i += bytes.get(i..)?.iter().position(|&b| b == 0xFF)?;
        match *bytes.get(i + 1)? {
            0x00 | 0xD0..=0xD7 => i += 2,
            0xFF => i += 1,
            _ => return Some(i),
        }
    }
}

#[cfg(test)]
#[path = "jpegscan_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "jpegscan_fuzz.rs"]
pub(crate) mod fuzz;
