//! The fetch tier alone, end to end (`fetch`) or as a decode floor (`decode`): shared by
//! `facesweep bench fetch|decode` and `facesweep-fetch-bench`, the same without LibTorch
//! (what `make bench-fetch` runs: like the fetcher service, it does not load the detector's
//! libraries, whose start-up the CLI pays on every run).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use facesweep_common::config::parse_flags_only;
use facesweep_imagefetch::decode::{Shape, Wire};
use facesweep_imagefetch::fetch::Fetcher;
use futures::StreamExt;

/// `bench fetch`: download, decode and letterbox every URL of a list (tensors discarded).
#[derive(clap::Args, Debug)]
pub struct FetchArgs {
    /// URL list: one per line (`facesweep bench fetch` also takes CSV with a `url` column).
    pub urls: PathBuf,
    /// Letterbox size (the default model's input).
    #[arg(long, default_value_t = 640)]
    pub size: u32,
    /// The fetcher's own flags (`facesweep-fetcher --help`), e.g.
    /// `-- --concurrency 256 --allow-networks 127.0.0.0/8`.
    #[arg(last = true)]
    pub fetcher: Vec<String>,
}

/// `bench decode`: decode + letterbox the images of a folder from memory on every core.
#[derive(clap::Args, Debug)]
pub struct DecodeArgs {
    /// Folder of JPEG/PNG/WebP images.
    pub dir: PathBuf,
    /// Times each image is decoded.
    #[arg(long, default_value_t = 3)]
    pub passes: usize,
    /// Letterbox size (the default model's input).
    #[arg(long, default_value_t = 640)]
    pub size: u32,
    /// How the images would travel to the detector.
    #[arg(long, value_enum, default_value_t = Wire::I420)]
    pub wire: Wire,
}

impl FetchArgs {
    /// Fetches the URLs `read` finds in `self.urls` and prints what it cost.
    pub async fn run(self, read: impl FnOnce(&Path) -> anyhow::Result<Vec<String>>) -> anyhow::Result<()> {
        let urls = read(&self.urls)?;
        let args = std::iter::once("fetcher".to_string()).chain(self.fetcher);
        let config = parse_flags_only::<crate::Args>(args)?.into_config()?;
        let before = rss_mib();
        let FetchRun { ok, failed, secs, wire_bytes } = fetch(urls, config, (self.size, self.size)).await?;
        let peak = peak_rss_mib();
        println!(
            "peak RSS {peak:.0} MiB, {before:.0} MiB before fetching: fetch tier {:.0} MiB",
            peak - before
        );
        println!(
            "fetched {ok} ok, {failed} failed in {secs:.2} s: {:.1} URLs/s, {:.1} img/s",
            (ok + failed) as f64 / secs,
            ok as f64 / secs
        );
        println!("to the detector: {:.0} bytes/image on average", wire_bytes as f64 / ok.max(1) as f64);
        Ok(())
    }
}

impl DecodeArgs {
    pub async fn run(self) -> anyhow::Result<()> {
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let (n, secs) = decode(&self.dir, self.passes, threads, (self.size, self.size), self.wire).await?;
        println!("decoded {n} images on {threads} threads in {secs:.2} s: {:.1} img/s", n as f64 / secs);
        Ok(())
    }
}

/// One URL per line; blank lines and `#` comments skipped.
pub fn read_url_lines(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read the URL list {}: {e}", path.display()))?;
    let urls: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    anyhow::ensure!(!urls.is_empty(), "no URLs in {}: one per line", path.display());
    Ok(urls)
}

/// Peak resident memory of this process, MiB (VmHWM).
fn peak_rss_mib() -> f64 {
    status_mib("VmHWM:")
}

/// Current resident memory, MiB (VmRSS).
fn rss_mib() -> f64 {
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
struct FetchRun {
    ok: usize,
    failed: usize,
    secs: f64,
    wire_bytes: u64,
}

/// Downloads, decodes and letterboxes every URL (tensors discarded, their bytes counted).
async fn fetch(urls: Vec<String>, config: crate::Config, target: (u32, u32)) -> anyhow::Result<FetchRun> {
    config.validate()?;
    // No detector to ask: `auto` means what a GPU detector prefers.
    let wire = config.wire.resolve(&[facesweep_proto::PixelFormat::I420 as i32]);
    let shape = Shape { width: target.0, height: target.1, wire };
    let fetcher = Arc::new(Fetcher::new(config.fetch_config(), Arc::new(()))?);
    let started = Instant::now();
    // In a task on the runtime's workers, as the fetcher's lease loop runs (worker.rs): polled
    // from the main thread instead, every body chunk would wake a thread outside the pool.
    let concurrency = config.concurrency;
    let results: Vec<_> = tokio::spawn(async move {
        futures::stream::iter(urls)
            .map(|u| {
                let f = fetcher.clone();
                async move { f.fetch(&u, shape).await.0.map(|lb| lb.data.len()) }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await
    })
    .await?;
    let secs = started.elapsed().as_secs_f64();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let wire_bytes = results.iter().filter_map(|r| r.as_ref().ok()).map(|n| *n as u64).sum();
    let mut failures = std::collections::BTreeMap::<String, usize>::new();
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
async fn decode(
    dir: &Path,
    passes: usize,
    threads: usize,
    target: (u32, u32),
    wire: Wire,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_lists_skip_blanks_and_comments_and_refuse_to_be_empty() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("urls.txt");
        std::fs::write(&list, "# corpus\n\n  http://a.example/1.jpg  \nhttp://a.example/2.png\n").unwrap();
        assert_eq!(read_url_lines(&list).unwrap(), ["http://a.example/1.jpg", "http://a.example/2.png"]);
        std::fs::write(&list, "# nothing\n\n").unwrap();
        let empty = read_url_lines(&list).unwrap_err().to_string();
        assert!(empty.contains("no URLs") && empty.contains("one per line"), "{empty}");
        let missing = read_url_lines(&dir.path().join("absent.txt")).unwrap_err().to_string();
        assert!(missing.contains("cannot read the URL list"), "{missing}");
    }

    #[test]
    fn images_are_told_by_their_bytes() {
        assert!(is_image(b"\xFF\xD8\xFF\xE0rest"));
        assert!(is_image(b"\x89PNG\r\n\x1a\n"));
        assert!(is_image(b"RIFF\0\0\0\0WEBPVP8 "));
        assert!(!is_image(b"RIFF\0\0\0\0WAVEfmt "));
        assert!(!is_image(b"<html>"));
    }
}
