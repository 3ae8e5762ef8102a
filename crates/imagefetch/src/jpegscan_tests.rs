use super::*;
use turbojpeg::ScalingFactor;

fn eighths(n: usize) -> ScalingFactor {
    ScalingFactor::new(n, 8)
}

/// A 256×192 photo-like picture (smooth gradients plus texture) as JPEG, 4:2:0, quality 90.
fn jpeg(progressive: bool) -> Vec<u8> {
    jpeg_as(progressive, turbojpeg::Subsamp::Sub2x2)
}

/// `jpeg` with another chroma subsampling.
fn jpeg_as(progressive: bool, subsamp: turbojpeg::Subsamp) -> Vec<u8> {
    let (w, h) = (256usize, 192usize);
    let mut px = vec![0u8; w * h * 3];
    let mut seed = 7u32;
    for (i, p) in px.iter_mut().enumerate() {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let (x, y, c) = ((i / 3) % w, (i / 3) / w, i % 3);
        *p = ((x * (c + 1) + y * 2) / 3 % 256) as u8 ^ ((seed >> 28) as u8);
    }
    let mut c = turbojpeg::Compressor::new().unwrap();
    c.set_quality(90).unwrap();
    c.set_subsamp(subsamp).unwrap();
    c.set_progressive(progressive).unwrap();
    let image = turbojpeg::Image {
        pixels: &px[..],
        width: w,
        pitch: w * 3,
        height: h,
        format: turbojpeg::PixelFormat::RGB,
    };
    c.compress_to_vec(image).unwrap()
}

/// Decodes at `eighths`/8 to grey; Err if libjpeg-turbo reports an error or a warning.
pub(super) fn grey(bytes: &[u8], eighths: usize) -> Result<Vec<u8>, turbojpeg::Error> {
    pixels(bytes, eighths, turbojpeg::PixelFormat::GRAY)
}

/// Decodes at `eighths`/8 to RGB; panics on an error or a warning.
fn rgb(bytes: &[u8], eighths: usize) -> Vec<u8> {
    pixels(bytes, eighths, turbojpeg::PixelFormat::RGB).unwrap()
}

fn pixels(bytes: &[u8], eighths: usize, format: turbojpeg::PixelFormat) -> Result<Vec<u8>, turbojpeg::Error> {
    let mut d = turbojpeg::Decompressor::new()?;
    let factor = turbojpeg::ScalingFactor::new(eighths, 8);
    d.set_scaling_factor(factor)?;
    let header = d.read_header(bytes)?;
    let (w, h) = (factor.scale(header.width), factor.scale(header.height));
    let mut px = vec![0u8; w * h * format.size()];
    let out = turbojpeg::Image { pixels: &mut px[..], width: w, pitch: w * format.size(), height: h, format };
    d.decompress(bytes, out)?;
    Ok(px)
}

pub(super) fn psnr(a: &[u8], b: &[u8]) -> f64 {
    let mse = a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum::<f64>() / a.len() as f64;
    10.0 * (255.0 * 255.0 / mse.max(1e-9)).log10()
}

#[test]
fn a_spliced_progressive_jpeg_decodes_cleanly_and_close_to_the_whole_file() {
    let full = jpeg(true);
    let mut out = Vec::new();
    let spliced = splice(&full, eighths(3), &mut out).to_vec();
    // libjpeg's standard script: 10 scans, the last four the final-bit refinements (DC, Cr,
    // Cb, Y), the one before them Y's refinement 2→1; the five first scans stay.
    let (full_scans, kept_scans) = (parse(&full).unwrap().scans, parse(&spliced).unwrap().scans);
    assert_eq!(full_scans.len(), 10);
    assert!(full_scans[6..].iter().all(|s| s.ah == 1 && s.al == 0), "{full_scans:?}");
    assert_eq!((full_scans[5].ah, full_scans[5].al), (2, 1));
    assert_eq!(kept_scans.len(), 5);
    assert!(spliced.len() < full.len() * 9 / 10, "{} of {} bytes", spliced.len(), full.len());
    let (a, b) = (grey(&full, 3).unwrap(), grey(&spliced, 3).unwrap());
    let p = psnr(&a, &b);
    assert!(p > 30.0, "PSNR {p:.1} dB");
}

#[test]
fn without_its_final_bits_a_file_is_rescaled_so_libjpeg_sees_it_whole() {
    let full = jpeg(true);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let plain = splice_as(&full, eighths(3), &mut a, Depth::Plain).to_vec();
    let rescaled = splice_as(&full, eighths(3), &mut b, Depth::FinalBit).to_vec();
    let (p, r) = (parse(&plain).unwrap(), parse(&rescaled).unwrap());
    // Every kept scan one bit lower (the Y refinement 2→1 becomes 1→0), every table 16-bit.
    let bits = |s: &Scan| (s.ah, s.al);
    assert_eq!(
        p.scans.iter().map(bits).collect::<Vec<_>>(),
        [(0, 1), (0, 2), (0, 1), (0, 1), (0, 2), (2, 1)]
    );
    assert_eq!(
        r.scans.iter().map(bits).collect::<Vec<_>>(),
        [(0, 0), (0, 1), (0, 0), (0, 0), (0, 1), (1, 0)]
    );
    assert!(r.tables.iter().all(|t| rescaled[t.start + 4] >> 4 == 1), "{:?}", r.tables);
    // The same coefficients reach the IDCT; only libjpeg's block smoothing (estimating the
    // missing bit) no longer runs, and the picture stays as close to the whole file.
    let (whole, plain, rescaled) =
        (grey(&full, 3).unwrap(), grey(&plain, 3).unwrap(), grey(&rescaled, 3).unwrap());
    assert_ne!(plain, rescaled, "smoothing should have changed something");
    let (pp, pr) = (psnr(&whole, &plain), psnr(&whole, &rescaled));
    assert!(
        psnr(&plain, &rescaled) > 40.0 && pr > pp - 1.0,
        "whole vs plain {pp:.1} dB, vs rescaled {pr:.1} dB"
    );
}

/// A table the rescale cannot double (a 16-bit quantizer over 32767) leaves the file spliced
/// but not rescaled; so does a DQT after the first scan.
#[test]
fn tables_that_cannot_be_doubled_leave_the_splice_as_it_was() {
    assert_eq!(scaled_dqt(&[0xFF, 0xDB, 0, 3, 0x10], &[[1; 64]; 4]), None, "short table");
    let mut wide = vec![0xFF, 0xDB, 0, 2 + 1 + 128, 0x11];
    wide.extend([0x3F, 0xFF].repeat(64));
    let doubled = scaled_dqt(&wide, &[[1; 64]; 4]).unwrap();
    assert_eq!(&doubled[5..7], &[0x7F, 0xFE]);
    assert_eq!(scaled_dqt(&wide, &[[2; 64]; 4]), None, "0x3FFF times four passes 32767");
    wide[5] = 0x40;
    assert_eq!(scaled_dqt(&wide, &[[1; 64]; 4]), None, "0x40FF doubled passes 32767");
    let eight = [&[0xFF, 0xDB, 0, 67, 0x01][..], &[255; 64]].concat();
    let doubled = scaled_dqt(&eight, &[[1; 64]; 4]).unwrap();
    assert_eq!((doubled[3], doubled[4], &doubled[5..7]), (2 + 129, 0x11, &[1, 0xFE][..]));
    // A table redefined between scans: libjpeg latched the old one for the first scan.
    let full = jpeg(true);
    let p = parse(&full).unwrap();
    let at = p.scans[1].start;
    let late = [&full[..at], &full[p.tables[0].clone()], &full[at..]].concat();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    assert_eq!(splice(&late, eighths(3), &mut a), splice_as(&late, eighths(3), &mut b, Depth::Plain));
    assert!(parse(&late).unwrap().late_tables);
}

#[test]
fn with_every_refinement_gone_each_first_scan_is_rescaled_to_its_own_bits() {
    let full = jpeg(true);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let last_bit = splice_as(&full, eighths(3), &mut a, Depth::FinalBit).to_vec();
    let first = splice(&full, eighths(3), &mut b).to_vec();
    // The standard script's five first scans (DC Al 1, Y 1-5 Al 2, Cr and Cb 1-63 Al 1, Y 6-63
    // Al 2), each now at Al 0; the Y refinement 2→1 went too.
    let p = parse(&first).unwrap();
    let bands = |s: &Scan| (s.comps.len(), s.ss, s.se, s.ah, s.al);
    let got: Vec<_> = p.scans.iter().map(bands).collect();
    assert_eq!(got, [(3, 0, 0, 0, 0), (1, 1, 5, 0, 0), (1, 1, 63, 0, 0), (1, 1, 63, 0, 0), (1, 6, 63, 0, 0)]);
    // Y's table (0): DC doubled, AC times four; the chroma table (1) doubled. TurboJPEG
    // writes one table per DQT segment.
    let (was, now) = (parse(&full).unwrap().tables, p.tables);
    let q = |seg: &[u8], id: u8, z: usize| -> u32 {
        assert_eq!(seg[4] & 15, id);
        if seg[4] >> 4 == 1 {
            u16::from_be_bytes([seg[5 + 2 * z], seg[6 + 2 * z]]) as u32
        } else {
            seg[5 + z] as u32
        }
    };
    for z in [0, 1, 12, 63] {
        let (y, c) = (
            (&full[was[0].clone()], &first[now[0].clone()]),
            (&full[was[1].clone()], &first[now[1].clone()]),
        );
        assert_eq!(q(y.1, 0, z), q(y.0, 0, z) << if z == 0 { 1 } else { 2 }, "Y {z}");
        assert_eq!(q(c.1, 1, z), q(c.0, 1, z) << 1, "chroma {z}");
    }
    let (whole, last_bit, first) =
        (grey(&full, 3).unwrap(), grey(&last_bit, 3).unwrap(), grey(&first, 3).unwrap());
    let (pl, pf) = (psnr(&whole, &last_bit), psnr(&whole, &first));
    assert!(pf > 30.0 && pf < pl, "whole vs final-bit splice {pl:.1} dB, vs first scans {pf:.1} dB");
}

#[test]
fn first_scans_stay_refined_when_they_would_lose_too_much_or_tables_disagree() {
    let frame = [Component { id: 1, h: 1, v: 1, tq: 0 }, Component { id: 2, h: 1, v: 1, tq: 0 }];
    let parsed =
        |scans: Vec<Scan>| Parsed { comps: frame.to_vec(), scans, tables: vec![], late_tables: false };
    let script = |al: u8, chroma_al: u8| {
        vec![
            scan(0, 0, 0, 0, 1),
            scan(0, 1, 63, 0, al),
            scan(1, 1, 63, 0, chroma_al),
            scan(0, 1, 63, al, al - 1),
        ]
    };
    let keep = |p: &Parsed, e: u32| first_scans_only(&[], p, &kept(&p.comps, &p.scans, e), e).map(|p| p.keep);
    assert_eq!(keep(&parsed(script(2, 2)), 3), Some(vec![true, true, true, false]));
    assert_eq!(keep(&parsed(script(2, 2)), 5), None, "above half size");
    assert_eq!(keep(&parsed(script(3, 3)), 3), None, "three bits lost");
    assert_eq!(keep(&parsed(script(2, 1)), 3), None, "one table, AC at two precisions");
    let mut own_tables = parsed(script(2, 1));
    own_tables.comps[1].tq = 1;
    assert_eq!(keep(&own_tables, 3), Some(vec![true, true, true, false]));
}

/// Shifts follow each coefficient's own first scan, in the zigzag order DQT tables are
/// written in: Y 1-5 at Al 1 and 6-63 at Al 2 on one table.
#[test]
fn each_quantizer_grows_by_the_bits_its_own_coefficient_lost() {
    let bytes = [&[0xFF, 0xDB, 0, 67, 0x00][..], &(1..=64).collect::<Vec<u8>>()].concat();
    let frame = vec![Component { id: 1, h: 1, v: 1, tq: 0 }];
    let scans = vec![scan(0, 0, 0, 0, 0), scan(0, 1, 5, 0, 1), scan(0, 6, 63, 0, 2), scan(0, 6, 63, 2, 1)];
    let whole = std::iter::once(0..bytes.len()).collect(); // the one DQT segment
    let p = Parsed { comps: frame, scans, tables: whole, late_tables: false };
    let plan = first_scans_only(&bytes, &p, &kept(&p.comps, &p.scans, 3), 3).unwrap();
    assert_eq!((plan.keep, plan.lower), (vec![true, true, true, false], vec![0, 1, 2, 0]));
    let table = &plan.tables.unwrap()[0];
    let q: Vec<u16> = table[5..].chunks(2).map(|b| u16::from_be_bytes([b[0], b[1]])).collect();
    let want: Vec<u16> =
        (0..64u16).map(|z| (z + 1) << [0, 1, 1, 1, 1, 1].get(z as usize).unwrap_or(&2)).collect();
    assert_eq!(q, want);
}

/// What libjpeg would refuse stays for it to refuse: two first scans of one coefficient (a
/// bogus progression that lowering both to Al 0 would hide) are not rescaled, and a frame
/// with two components of one id (which libjpeg matches to scans its own way) is not touched.
#[test]
fn bogus_progressions_and_repeated_component_ids_are_left_to_libjpeg() {
    let frame = [Component { id: 1, h: 1, v: 1, tq: 0 }];
    let parsed =
        |scans: Vec<Scan>| Parsed { comps: frame.to_vec(), scans, tables: vec![], late_tables: false };
    let twice =
        parsed(vec![scan(0, 0, 0, 0, 1), scan(0, 1, 63, 0, 1), scan(0, 6, 9, 0, 1), scan(0, 1, 63, 1, 0)]);
    let keep = kept(&twice.comps, &twice.scans, 3);
    assert!(delivered_twice(&twice, &keep));
    assert!(first_scans_only(&[], &twice, &keep, 3).is_none());
    assert!(plan(&[], &twice, 3, Depth::FinalBit).tables.is_none(), "not rescaled");
    let once =
        parsed(vec![scan(0, 0, 0, 0, 1), scan(0, 1, 5, 0, 1), scan(0, 6, 63, 0, 1), scan(0, 1, 63, 1, 0)]);
    assert!(!delivered_twice(&once, &kept(&once.comps, &once.scans, 3)));
    assert!(plan(&[], &once, 3, Depth::FinalBit).tables.is_some());

    let full = jpeg(true);
    let sof = full.windows(2).position(|w| w == [0xFF, 0xC2]).unwrap();
    let mut same_ids = full.clone();
    same_ids[sof + 10 + 6] = same_ids[sof + 10 + 3]; // Cr takes Cb's id
    assert_eq!(frame_components(&full[sof + 4..]).map(|c| c.len()), Some(3));
    assert!(frame_components(&same_ids[sof + 4..]).is_none());
    let mut out = Vec::new();
    assert!(std::ptr::eq(splice(&same_ids, eighths(3), &mut out), &same_ids[..]));
}

/// The rescale is exact: a rewritten file decodes to the very pixels of the same kept scans
/// with headers untouched, transcoded to a sequential file (libjpeg keeps each coefficient as
/// delivered, its missing bits zero, and does not smooth a sequential file).
#[test]
fn rescaled_files_decode_exactly_as_their_kept_coefficients() {
    for subsamp in [turbojpeg::Subsamp::Sub2x2, turbojpeg::Subsamp::None, turbojpeg::Subsamp::Gray] {
        let full = jpeg_as(true, subsamp);
        let p = parse(&full).unwrap();
        for (depth, n) in
            [Depth::FinalBit, Depth::FirstScans].into_iter().flat_map(|d| (1..=4).map(move |n| (d, n)))
        {
            let plan = plan(&full, &p, n as u32, depth);
            assert!(plan.tables.is_some(), "{subsamp:?} {depth:?} {n}/8 not rescaled");
            let (mut rescaled, mut kept_only) = (Vec::new(), Vec::new());
            write(&full, &p, &plan, &mut rescaled);
            let unscaled = Plan { keep: plan.keep.clone(), lower: vec![0; plan.keep.len()], tables: None };
            write(&full, &p, &unscaled, &mut kept_only);
            let sequential =
                turbojpeg::transform(&turbojpeg::Transform::op(turbojpeg::TransformOp::None), &kept_only)
                    .unwrap()
                    .to_vec();
            assert!(parse(&sequential).is_none(), "transcoded to a sequential file");
            let (a, b) = (rgb(&rescaled, n), rgb(&sequential, n));
            assert!(a == b, "{subsamp:?} {depth:?} {n}/8: PSNR {:.1} dB", psnr(&a, &b));
        }
    }
}

#[test]
fn nothing_goes_above_half_size_and_baseline_files_stay_untouched() {
    let (prog, base) = (jpeg(true), jpeg(false));
    let mut out = Vec::new();
    // Above 1/2 only unread bands could go, and every AC scan of libjpeg's standard script
    // touches coefficients 1..=9 (block smoothing reads them).
    for (bytes, n) in [(&prog, 8), (&prog, 5), (&base, 3), (&base, 1)] {
        let got = splice(bytes, eighths(n), &mut out);
        assert!(std::ptr::eq(got, &bytes[..]), "{n}/8: input not returned as is");
    }
}

fn scan(comp: usize, ss: u8, se: u8, ah: u8, al: u8) -> Scan {
    Scan { start: 0, end: 0, comps: vec![comp], ss, se, ah, al, ahal_at: 0 }
}

#[test]
fn a_scan_that_a_kept_later_scan_refines_is_kept() {
    let frame = [Component { id: 1, h: 1, v: 1, tq: 0 }];
    // At 3/8 the IDCT reads zigzag 0..=12: band 13-63 alone is unread, but the kept refinement
    // 1-63 (Al = 1, not the final bit) refines it, so it must stay; the final bit may go.
    let scans = [scan(0, 0, 0, 0, 0), scan(0, 13, 63, 0, 2), scan(0, 1, 63, 2, 1), scan(0, 1, 63, 1, 0)];
    assert_eq!(kept(&frame, &scans, 3), [true, true, true, false]);
    // Without the refinement at Al = 1, band 13-63 goes with the final bit that refines it.
    let scans = [scan(0, 0, 0, 0, 0), scan(0, 1, 12, 0, 1), scan(0, 13, 63, 0, 1), scan(0, 1, 63, 1, 0)];
    assert_eq!(kept(&frame, &scans, 3), [true, true, false, false]);
    // Above half size the final bit stays, and with it the band it refines.
    assert_eq!(kept(&frame, &scans, 5), [true; 4]);
    // The 4-point IDCT (jidctred.c) reads odd rows and columns up to 7: 13-63 is read there.
    assert_eq!(kept(&frame, &scans, 4), [true, true, true, false]);
    // At 1/8 the IDCT reads DC alone, but smoothing reads 1..=9: only 13-63 could go alone.
    let scans = [scan(0, 0, 0, 0, 0), scan(0, 1, 9, 0, 0), scan(0, 10, 63, 0, 0)];
    assert_eq!(kept(&frame, &scans, 1), [true, true, false]);
}

#[test]
fn truncated_or_garbage_input_never_panics_and_comes_back_as_is() {
    let full = jpeg(true);
    let mut out = Vec::new();
    for cut in 0..full.len() - 1 {
        let head = &full[..cut];
        assert!(std::ptr::eq(splice(head, eighths(3), &mut out), head), "cut at {cut}");
    }
    let mut seed = 1u32;
    for n in 0..300 {
        let mut junk: Vec<u8> = full[..2 + n * 7 % 600].to_vec();
        for b in junk.iter_mut().skip(2 + n % 50) {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            *b = if seed >> 30 == 0 { 0xFF } else { (seed >> 16) as u8 };
        }
        splice(&junk, eighths(1 + n % 8), &mut out);
    }
    let ff = [0xFF; 64];
    assert!(std::ptr::eq(splice(&ff, eighths(3), &mut out), &ff[..]));
}
