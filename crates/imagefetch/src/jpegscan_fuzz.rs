//! `splice` on hostile bytes: mutation fuzzing of it and of the whole JPEG decode path, plus
//! the malformed files that fuzzing and review turned up. Deterministic (xorshift, fixed
//! seed); work is bounded by counting (scans, components), never by the wall clock.

use super::*;
use crate::decode::{Decoder, Wire};
use turbojpeg::ScalingFactor;

/// xorshift64*: no dependency, same sequence on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len())]
    }
}

/// A small textured progressive JPEG (libjpeg's standard script: 10 scans, 6 for grey).
pub(crate) fn progressive(w: usize, h: usize, subsamp: turbojpeg::Subsamp) -> Vec<u8> {
    let mut rng = Rng(w as u64 * 31 + h as u64);
    let px: Vec<u8> =
        (0..w * h * 3).map(|i| ((i / 3 % w + i / 3 / w) as u8) ^ (rng.next() >> 60) as u8).collect();
    let mut c = turbojpeg::Compressor::new().unwrap();
    c.set_quality(85).unwrap();
    c.set_subsamp(subsamp).unwrap();
    c.set_progressive(true).unwrap();
    let image = turbojpeg::Image {
        pixels: &px[..],
        width: w,
        pitch: w * 3,
        height: h,
        format: turbojpeg::PixelFormat::RGB,
    };
    c.compress_to_vec(image).unwrap()
}

/// Offsets of every 0xFF that starts a marker (entropy-coded RSTs included).
fn markers(b: &[u8]) -> Vec<usize> {
    (0..b.len().saturating_sub(1)).filter(|&i| b[i] == 0xFF && !matches!(b[i + 1], 0x00 | 0xFF)).collect()
}

/// One random structural or byte-level change.
fn mutate(rng: &mut Rng, b: &mut Vec<u8>) {
    let m = markers(b);
    let at = |rng: &mut Rng| if m.is_empty() { 2.min(b.len()) } else { rng.pick(&m) };
    let seg = |rng: &mut Rng| {
        let i = rng.below(m.len().max(1));
        let start = m.get(i).copied().unwrap_or(0);
        (start, m.get(i + 1).copied().unwrap_or(b.len()))
    };
    match rng.below(9) {
        0 => {
            let i = rng.below(b.len());
            b[i] ^= 1 << rng.below(8);
        }
        1 => {
            let i = rng.below(b.len());
            let r = rng.next() as u8;
            b[i] = rng.pick(&[0x00, 0xFF, 0xD9, 0xDA, r]);
        }
        2 => b.truncate(2 + rng.below(b.len() - 1)),
        3 => {
            let (s, e) = seg(rng);
            b.drain(s..e);
        }
        4 => {
            let ((s, e), to) = (seg(rng), at(rng));
            let copy = b[s..e].to_vec();
            b.splice(to..to, copy);
        }
        5 => {
            let ins = stray_segment(rng);
            let to = at(rng);
            b.splice(to..to, ins);
        }
        6 => {
            let i = at(rng) + 2;
            let r = rng.next() as u16;
            let len: u16 = rng.pick(&[0, 1, 2, 0xFFFF, r]);
            if let Some(l) = b.get_mut(i..i + 2) {
                l.copy_from_slice(&len.to_be_bytes());
            }
        }
        7 => poke_sos_header(rng, b, &m),
        _ => {
            // Many copies of one scan: the scan cap.
            let (s, e) = seg(rng);
            let copy = b[s..e].repeat(rng.pick(&[2, 50, 600]));
            b.splice(e..e, copy);
        }
    }
}

/// A marker segment of a random kind with a length that may lie about its size.
fn stray_segment(rng: &mut Rng) -> Vec<u8> {
    let marker =
        rng.pick(&[0x00, 0x01, 0xC0, 0xC2, 0xC4, 0xC8, 0xD0, 0xD8, 0xD9, 0xDA, 0xDC, 0xDD, 0xE1, 0xF0, 0xFE]);
    let r = rng.next() as u16 % 64;
    let len: u16 = rng.pick(&[0, 1, 2, 3, 8, 0xFFFF, r]);
    let mut ins = vec![0xFF, marker, (len >> 8) as u8, len as u8];
    ins.extend((0..rng.below(12)).map(|_| rng.next() as u8));
    ins
}

/// One SOS header field set to an edge value: component count, a selector, Ss, Se or Ah/Al.
fn poke_sos_header(rng: &mut Rng, b: &mut [u8], markers: &[usize]) {
    let sos: Vec<usize> = markers.iter().copied().filter(|&i| b[i + 1] == 0xDA).collect();
    if let Some(&i) = sos.get(rng.below(sos.len())) {
        let j = (i + 4 + rng.below(10)).min(b.len() - 1);
        let r = rng.next() as u8;
        b[j] = rng.pick(&[0, 1, 4, 5, 13, 14, 63, 64, 255, r]);
    }
}

#[derive(Debug, Default)]
struct Tally {
    cases: usize,
    spliced: usize,
    /// Files rescaled (`Depth::FinalBit` or `Depth::FirstScans`).
    rescaled: usize,
    both_ok: usize,
    /// Refused whole, accepted spliced: what went held only the refusal (corrupt entropy
    /// data or a bogus progression in a dropped scan).
    rescued: usize,
    worst_psnr: f64,
}

/// The invariants on one input at one scale.
fn check_splice(bytes: &[u8], eighths: usize, t: &mut Tally) {
    let f = ScalingFactor::new(eighths, 8);
    if let Some(Parsed { scans, .. }) = parse(bytes) {
        assert!(scans.len() <= MAX_SCANS);
        assert!(scans.iter().all(|s| (1..=4).contains(&s.comps.len())), "{scans:?}");
    }
    let mut out = Vec::new();
    let got = splice_as(bytes, f, &mut out, Depth::Plain);
    assert!(got.len() <= bytes.len());
    let mut r = Vec::new();
    let rescaled = splice(bytes, f, &mut r);
    if std::ptr::eq(got, bytes) {
        return check_rescaled(bytes, rescaled, t);
    }
    t.spliced += 1;
    let once = got.to_vec();
    assert!(out.capacity() <= 2 * bytes.len(), "{} for {} bytes", out.capacity(), bytes.len());
    let mut again = Vec::new();
    assert!(
        std::ptr::eq(splice_as(&once, f, &mut again, Depth::Plain), &once[..]),
        "splicing twice removed more"
    );
    check_rescaled(&once, rescaled, t);
}

/// Rescaling touches headers only, and drops only refinements: either the same scans as the
/// plain splice, each with Ah/Al one lower (`Depth::FinalBit`), or its first scans alone, each
/// at Al = 0 after losing at most MAX_LOST_BITS (`Depth::FirstScans`); DQT segments at most
/// twice as long (8 → 16 bits).
fn check_rescaled(spliced: &[u8], rescaled: &[u8], t: &mut Tally) {
    if rescaled == spliced {
        return;
    }
    t.rescaled += 1;
    assert!(rescaled.len() <= 2 * spliced.len(), "{} from {}", rescaled.len(), spliced.len());
    let (a, b) = (parse(spliced).expect("spliced parses"), parse(rescaled).expect("rescaled parses"));
    let final_bit = a.scans.len() == b.scans.len();
    let kept: Vec<&Scan> = a.scans.iter().filter(|s| final_bit || s.ah == 0).collect();
    assert_eq!(kept.len(), b.scans.len());
    for (x, y) in kept.into_iter().zip(&b.scans) {
        assert_eq!((&x.comps, x.ss, x.se), (&y.comps, y.ss, y.se));
        if final_bit {
            assert_eq!((x.ah.saturating_sub(1), x.al - 1), (y.ah, y.al));
        } else {
            assert!(x.al <= MAX_LOST_BITS && (y.ah, y.al) == (0, 0), "{x:?} became {y:?}");
        }
    }
}

/// Spliced and whole decodes agree: same geometry, nearly the same pixels, and the splice
/// never breaks a file libjpeg-turbo decodes whole.
/// Fresh decoders each time: a reused one decodes differently after some failed files.
fn check_decode(bytes: &[u8], (tw, th): (u32, u32), wire: Wire, t: &mut Tally) {
    let on = Decoder::default().decode(bytes, tw, th, 1 << 20, wire);
    let (a, b) = (on, Decoder::default().with_scan_splicing(false).decode(bytes, tw, th, 1 << 20, wire));
    match (a, b) {
        (Ok(a), Ok(b)) => {
            t.both_ok += 1;
            assert_eq!(
                (a.width, a.height, a.original_width, a.original_height),
                (b.width, b.height, b.original_width, b.original_height)
            );
            let p = super::tests::psnr(&a.data, &b.data);
            t.worst_psnr = t.worst_psnr.min(p);
        }
        (Ok(_), Err(_)) => t.rescued += 1,
        (Err(e), Ok(_)) => panic!("splicing broke a file that decodes whole: {e:?}"),
        (Err(_), Err(_)) => {}
    }
}

#[test]
fn mutated_progressive_jpegs_never_panic_grow_or_break_the_decode() {
    use turbojpeg::Subsamp::*;
    let seeds = [
        progressive(96, 64, Sub2x2),
        progressive(80, 48, None),
        progressive(64, 64, Gray),
        progressive(72, 40, Sub4x1),
    ];
    let (mut rng, mut t) =
        (Rng(0x5EED_1234_ABCD_0001), Tally { worst_psnr: f64::INFINITY, ..Tally::default() });
    for case in 0..CASES {
        let mut b = seeds[case % seeds.len()].clone();
        for _ in 0..1 + rng.below(3) {
            mutate(&mut rng, &mut b);
        }
        check_splice(&b, 1 + rng.below(8), &mut t);
        check_splice(&b, 2, &mut t);
        let (target, wire) =
            (rng.pick(&[(16, 16), (24, 24), (40, 40), (200, 200)]), rng.pick(&[Wire::Canvas, Wire::I420]));
        // Decoding costs ~100× splicing: every DECODE_EVERY-th case.
        if case % DECODE_EVERY == 0 {
            check_decode(&b, target, wire, &mut t);
        }
        t.cases += 1;
    }
    eprintln!("{t:?}");
    // The mutations must reach the interesting paths, or the test proves nothing.
    assert!(t.spliced > CASES / 20 && t.rescaled > CASES / 40, "{t:?}");
    assert!(t.both_ok > CASES / DECODE_EVERY / 20, "{t:?}");
    assert!(t.worst_psnr > 25.0, "{t:?}");
}

const CASES: usize = 20_000;
const DECODE_EVERY: usize = 8;

/// `bytes` with `ins` inserted before its final EOI.
fn before_eoi(bytes: &[u8], ins: &[u8]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b.splice(b.len() - 2..b.len() - 2, ins.iter().copied());
    b
}

#[test]
fn a_second_frame_header_after_the_scans_leaves_the_file_untouched() {
    // Was a panic: `kept` indexed the one-component frame with the first frame's indices.
    let full = progressive(96, 64, turbojpeg::Subsamp::Sub2x2);
    let b = before_eoi(&full, &[0xFF, 0xC2, 0, 11, 8, 0, 64, 0, 96, 1, 1, 0x11, 0]);
    assert!(std::ptr::eq(splice(&b, ScalingFactor::new(2, 8), &mut Vec::new()), &b[..]));
}

#[test]
fn scans_libjpeg_would_refuse_are_never_spliced_away() {
    let full = progressive(96, 64, turbojpeg::Subsamp::Sub2x2);
    // The last scan (Y's final bit, which 1/4 drops) with one stray byte in its header:
    // libjpeg refuses the file (bad SOS length), so it must reach libjpeg as it is.
    let sos = markers(&full).into_iter().rfind(|&i| full[i + 1] == 0xDA).unwrap();
    let mut bad = full.clone();
    bad[sos + 3] += 1;
    bad.insert(sos + 2 + 8, 0);
    assert!(super::tests::grey(&bad, 2).is_err());
    assert!(std::ptr::eq(splice(&bad, ScalingFactor::new(2, 8), &mut Vec::new()), &bad[..]));
    // Five components in one scan (libjpeg allows four): `kept` compares component lists
    // pairwise, so up to 255 per scan made it quadratic in them.
    let five = before_eoi(&full, &[0xFF, 0xDA, 0, 16, 5, 1, 0, 2, 0, 3, 0, 1, 0, 2, 0, 0, 0, 0, 0]);
    assert!(parse(&five).is_none());
    // FF 00 where a marker belongs: libjpeg skips it as stuffing, not by a length.
    let mut stuffed = full.clone();
    stuffed.splice(2..2, [0xFF, 0x00, 0, 4, 0xFF, 0xD9]);
    assert!(parse(&stuffed).is_none());
}
