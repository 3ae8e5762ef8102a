//! `facesweep bench fetch|decode`: the fetch tier alone, end to end or as a decode floor.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use facesweep_imagefetch::decode::Shape;
use facesweep_imagefetch::fetch::Fetcher;
use futures::StreamExt;

/// Peak resident memory of this process, MiB (VmHWM).
pub fn peak_rss_mib() -> f64 {
    status_mib("VmHWM:")
}

/// Current resident memory, MiB (VmRSS).
pub fn rss_mib() -> f64 {
    status_mib("VmRSS:")
}

fn status_mib(key: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// What a fetch-tier run did: images ready, failures, seconds, and bytes the images would
/// have put on the wire to the detector.
pub struct FetchRun {
    pub ok: usize,
    pub failed: usize,
    pub secs: f64,
    pub wire_bytes: u64,
}

/// Downloads, decodes and letterboxes every URL (tensors discarded, their bytes counted).
pub async fn fetch(
    urls: Vec<String>,
    config: facesweep_fetcher::Config,
    target: (u32, u32),
) -> anyhow::Result<FetchRun> {
    config.validate()?;
    // No detector to ask: `auto` means what a GPU detector prefers.
    let wire = config.wire.resolve(&[facesweep_proto::PixelFormat::I420 as i32]);
    let shape = Shape { width: target.0, height: target.1, wire };
    let fetcher = Arc::new(Fetcher::new(config.fetch_config(), Arc::new(()))?);
    let started = Instant::now();
    let mut failures = std::collections::BTreeMap::<String, usize>::new();
    let results: Vec<_> = futures::stream::iter(urls)
        .map(|u| {
            let f = fetcher.clone();
            async move { f.fetch(&u, shape).await.0.map(|lb| lb.data.len()) }
        })
        .buffer_unordered(config.concurrency)
        .collect()
        .await;
    let secs = started.elapsed().as_secs_f64();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let wire_bytes = results.iter().filter_map(|r| r.as_ref().ok()).map(|n| *n as u64).sum();
    for r in &results {
        if let Err(e) = r {
            *failures.entry(e.status.short_name().to_string()).or_default() += 1;
        }
    }
    if !failures.is_empty() {
        eprintln!("failures by class: {failures:?}");
    }
    Ok(FetchRun { ok, failed: results.len() - ok, secs, wire_bytes })
}

/// The floor: decode + letterbox of the same files from memory on every core, `passes` times.
pub async fn decode(
    dir: &Path,
    passes: usize,
    threads: usize,
    target: (u32, u32),
    wire: facesweep_imagefetch::decode::Wire,
) -> anyhow::Result<(usize, f64)> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        // Any corpus: images are told by their bytes, not their names.
        if p.is_file() && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')) {
            let body = std::fs::read(&p)?;
            if is_image(&body) {
                files.push(bytes::Bytes::from(body));
            }
        }
    }
    anyhow::ensure!(!files.is_empty(), "no JPEG/PNG/WebP/GIF/BMP files in {}", dir.display());
    let files = Arc::new(files);
    let n = files.len() * passes;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (files, next) = (files.clone(), next.clone());
            std::thread::spawn(move || {
                let mut d = facesweep_imagefetch::decode::Decoder::default();
                let mut failed = 0;
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n {
                        return failed;
                    }
                    failed += d
                        .decode(&files[i % files.len()], target.0, target.1, 100_000_000, wire)
                        .is_err() as usize;
                }
            })
        })
        .collect();
    let mut failed = 0;
    for w in workers {
        failed += w.join().map_err(|_| anyhow::anyhow!("decode thread panicked"))?;
    }
    let secs = started.elapsed().as_secs_f64();
    if failed > 0 {
        // Counted in the rate (a failure costs a decode too) but worth knowing about.
        eprintln!("{failed} of {n} decodes failed");
    }
    Ok((n, secs))
}

/// JPEG, PNG, WebP, GIF or BMP by their magic bytes.
fn is_image(b: &[u8]) -> bool {
    b.starts_with(&[0xFF, 0xD8, 0xFF])
        || b.starts_with(b"\x89PNG")
        || (b.starts_with(b"RIFF") && b.get(8..12) == Some(b"WEBP"))
        || b.starts_with(b"GIF8")
        || b.starts_with(b"BM")
}
