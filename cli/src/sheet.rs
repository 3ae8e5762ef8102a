//! `facesweep sheet`: a contact sheet of a random sample of a job's images with their boxes,
//! landmarks and scores drawn, so quality is judged in one glance. The sample is a reservoir
//! over the export stream (memory: `--n` rows, whatever the job's size); the images are
//! fetched again through the fetcher's own client (address policy, size and time limits).

mod font;
mod tile;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use facesweep_imagefetch::decode::Shape;
use facesweep_imagefetch::fetch::Fetcher;
use facesweep_proto::{ExportResultsRequest, Face};
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub use tile::{Layout, BOX_COLOUR, FAILED_GREY};

/// Images fetched at once.
const FETCH_AHEAD: usize = 8;

/// `facesweep sheet` options.
#[derive(clap::Args, Debug, Clone)]
pub struct SheetArgs {
    /// Job name (`facesweep jobs` lists them).
    #[arg(long)]
    pub job: String,
    /// The sheet to write: .jpg or .png.
    #[arg(long, default_value = "sheet.jpg")]
    pub out: PathBuf,
    /// Images on the sheet: a uniform random sample of the job's URLs.
    #[arg(long, env = "FACESWEEP_SHEET_N", default_value_t = 48)]
    pub n: usize,
    /// Only URLs with this status (ok, http_error, timeout, ...; pending for unfinished).
    #[arg(long)]
    pub status: Option<String>,
    /// Seed of the sample: the same seed on an unchanged job draws the same URLs.
    #[arg(long, env = "FACESWEEP_SHEET_SEED")]
    pub seed: Option<u64>,
    /// Side of one tile in pixels.
    #[arg(long, env = "FACESWEEP_SHEET_TILE", default_value_t = 256)]
    pub tile: u32,
    /// Longest wait for one image (download and decode), seconds; then a grey tile.
    #[arg(long, env = "FACESWEEP_SHEET_TIMEOUT_SECS", default_value_t = 20)]
    pub timeout_secs: u64,
    /// Results service address (host:port).
    #[arg(long, env = "FACESWEEP_RESULTS", default_value = "127.0.0.1:50053")]
    pub results: String,
    /// Private networks images may be fetched from (as for run/up; all else private is refused).
    #[arg(
        long,
        env = "FACESWEEP_ALLOW_NETWORKS",
        value_delimiter = ',',
        default_value = "127.0.0.0/8,::1/128"
    )]
    pub allow_networks: Vec<ipnet::IpNet>,
}

/// One sampled URL as exported.
#[derive(Debug, Clone)]
pub struct Sampled {
    pub url_id: i64,
    pub url: String,
    /// Short status name (`ok`, `http_error`, ..., `pending`).
    pub status: String,
    pub reason: String,
    pub faces: Vec<Face>,
}

/// What a sheet shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SheetSummary {
    /// URLs on the sheet, and URLs they were drawn from (after the status filter).
    pub shown: usize,
    pub of: u64,
    /// Tiles with a picture; the rest are grey.
    pub pictures: usize,
    pub seed: u64,
}

/// Algorithm R: a uniform sample of `cap` items from a stream of unknown length.
pub struct Reservoir<T> {
    cap: usize,
    seen: u64,
    items: Vec<T>,
    rng: StdRng,
}

impl<T> Reservoir<T> {
    pub fn new(cap: usize, seed: u64) -> Self {
        Reservoir { cap, seen: 0, items: Vec::with_capacity(cap.min(4096)), rng: StdRng::seed_from_u64(seed) }
    }

    /// Counts one more item; where it goes in the sample, or None to drop it (asked before the
    /// item is built, so dropped rows cost no allocation).
    pub fn slot(&mut self) -> Option<usize> {
        self.seen += 1;
        if self.items.len() < self.cap {
            return Some(self.items.len());
        }
        let j = self.rng.gen_range(0..self.seen);
        (j < self.cap as u64).then_some(j as usize)
    }

    /// Places an item where `slot` said.
    pub fn put(&mut self, at: usize, item: T) {
        if at == self.items.len() {
            self.items.push(item);
        } else {
            self.items[at] = item;
        }
    }

    pub fn seen(&self) -> u64 {
        self.seen
    }

    pub fn into_items(self) -> Vec<T> {
        self.items
    }
}

/// Draws the sample from the job's export stream; sorted by URL id (input order) for reading.
pub async fn sample(args: &SheetArgs, seed: u64) -> anyhow::Result<(Vec<Sampled>, u64)> {
    let mut client = crate::client::results(&args.results)?;
    let req = ExportResultsRequest { job: args.job.clone(), model_id: String::new() };
    let mut stream = client
        .export_results(req)
        .await
        .with_context(|| format!("export job {:?} from results at {}", args.job, args.results))?
        .into_inner();
    let mut r = Reservoir::new(args.n, seed);
    while let Some(row) = stream.next().await {
        let row = row?;
        let status = row.result.as_ref().map_or(crate::status::PENDING, |res| res.status().short_name());
        if args.status.as_deref().is_some_and(|s| s != status) {
            continue;
        }
        let Some(at) = r.slot() else { continue };
        let item = match row.result {
            Some(res) => Sampled {
                url_id: res.url_id,
                url: row.url,
                status: status.to_string(),
                reason: res.reason,
                faces: res.faces,
            },
            None => Sampled {
                url_id: row.pending_url_id,
                url: row.url,
                status: status.into(),
                reason: String::new(),
                faces: Vec::new(),
            },
        };
        r.put(at, item);
    }
    let seen = r.seen();
    let mut items = r.into_items();
    items.sort_by_key(|s| s.url_id);
    Ok((items, seen))
}

/// `facesweep sheet`: sample, fetch, draw, write `args.out`.
pub async fn run(args: &SheetArgs) -> anyhow::Result<SheetSummary> {
    // The sheet is one image in memory: 1,024 tiles of 256 px are ~200 MB already.
    anyhow::ensure!(
        (1..=1024).contains(&args.n),
        "--n must be between 1 and 1024 (one sheet); draw several with --seed"
    );
    anyhow::ensure!((32..=2048).contains(&args.tile), "--tile must be between 32 and 2048 pixels");
    anyhow::ensure!(args.timeout_secs >= 1, "--timeout-secs must be at least 1 (every wait is bounded)");
    let format = tile::OutFormat::for_path(&args.out)?;
    if let Some(s) = &args.status {
        crate::status::parse(s)?;
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    let (samples, seen) = sample(args, seed).await?;
    if samples.is_empty() {
        let which = args.status.as_ref().map(|s| format!(" with status {s}")).unwrap_or_default();
        anyhow::bail!(
            "job {:?} has no URLs{which}: check the name with `facesweep jobs` or drop --status",
            args.job
        );
    }
    let tiles = fetch_tiles(args, &samples).await?;
    let pictures = tiles.iter().filter(|t| matches!(t, tile::Tile::Picture(_))).count();
    let sheet = tile::compose(&samples, &tiles, Layout::new(samples.len(), args.tile));
    write(&sheet, &args.out, format)?;
    Ok(SheetSummary { shown: samples.len(), of: seen, pictures, seed })
}

/// Every sampled ok URL downloaded again (a few at a time, each within the timeout); failed
/// and unfinished URLs become grey tiles without a download.
async fn fetch_tiles(args: &SheetArgs, samples: &[Sampled]) -> anyhow::Result<Vec<tile::Tile>> {
    let cfg = facesweep_fetcher::Config {
        allow_networks: args.allow_networks.clone(),
        timeout_ms: args.timeout_secs * 1000,
        ..Default::default()
    };
    let fetcher = Fetcher::new(cfg.fetch_config(), std::sync::Arc::new(()))?;
    let (shape, limit) = (Shape::canvas(args.tile, args.tile), Duration::from_secs(args.timeout_secs));
    let tiles = futures::stream::iter(samples)
        .map(|s| {
            let fetcher = &fetcher;
            async move {
                if s.status != "ok" {
                    return tile::Tile::Failed { status: s.status.clone(), reason: s.reason.clone() };
                }
                match tokio::time::timeout(limit, fetcher.fetch(&s.url, shape)).await {
                    Ok((Ok(lb), _)) => tile::Tile::picture(lb),
                    Ok((Err(f), _)) => tile::Tile::Failed {
                        status: format!("now {}", f.status.short_name()),
                        reason: f.reason,
                    },
                    Err(_) => tile::Tile::Failed {
                        status: "now timeout".into(),
                        reason: format!("no image within {} s", limit.as_secs()),
                    },
                }
            }
        })
        .buffered(FETCH_AHEAD)
        .collect()
        .await;
    Ok(tiles)
}

/// Writes the sheet under a temporary name, then renames it: never a half-written sheet.
fn write(img: &image::RgbImage, out: &Path, format: tile::OutFormat) -> anyhow::Result<()> {
    let tmp = out.with_extension("sheet.tmp");
    let file = std::fs::File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
    let mut w = std::io::BufWriter::new(file);
    match format {
        tile::OutFormat::Jpeg => {
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut w, 92).encode_image(img)?
        }
        tile::OutFormat::Png => img.write_to(&mut w, image::ImageFormat::Png)?,
    }
    std::io::Write::flush(&mut w)?;
    drop(w);
    std::fs::rename(&tmp, out).with_context(|| format!("write {}", out.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservoir_keeps_cap_items_and_samples_uniformly() {
        let mut hits = [0u32; 10];
        for seed in 0..2000 {
            let mut r = Reservoir::new(3, seed);
            for i in 0..10usize {
                if let Some(at) = r.slot() {
                    r.put(at, i);
                }
            }
            assert_eq!(r.seen(), 10);
            let items = r.into_items();
            assert_eq!(items.len(), 3);
            items.iter().for_each(|&i| hits[i] += 1);
        }
        // Each of 10 items is kept with probability 3/10: 600 of 2000 draws, give or take.
        assert!(hits.iter().all(|&h| (500..700).contains(&h)), "{hits:?}");
    }

    #[test]
    fn reservoir_is_deterministic_per_seed_and_keeps_short_streams_whole() {
        let draw = |seed| {
            let mut r = Reservoir::new(4, seed);
            (0..100).for_each(|i| r.slot().into_iter().for_each(|at| r.put(at, i)));
            r.into_items()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        let mut r = Reservoir::new(10, 1);
        (0..3).for_each(|i| r.slot().into_iter().for_each(|at| r.put(at, i)));
        assert_eq!(r.into_items(), vec![0, 1, 2]);
    }
}
