//! One URL from address to letterboxed tensor: politeness, download, decode.

use std::time::{Duration, Instant};

use tracing::Instrument;

use crate::budget::BodyBudget;
use crate::decode::{Letterboxed, Shape};
use crate::download::{self, DownloadConfig};
use crate::net::HostLimits;
use crate::outcome::Failure;
use crate::pool::DecodePool;

#[derive(Clone, Debug)]
pub struct FetchConfig {
    pub download: DownloadConfig,
    pub max_pixels: u64,
    pub decode_threads: usize,
    pub per_host: usize,
    /// Bytes of bodies held at once (downloading or waiting for decode).
    pub body_budget_bytes: u64,
    /// Longest one image may take to decode, queue included.
    pub decode_timeout: Duration,
}

/// What a fetch produced, and what it measured on the way (also on failure).
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub http_status: u32,
    pub bytes: u64,
    pub download: Duration,
    pub decode: Duration,
}

pub struct Fetcher {
    client: reqwest::Client,
    cfg: FetchConfig,
    hosts: HostLimits,
    budget: BodyBudget,
    pool: DecodePool,
}

impl Fetcher {
    pub fn new(cfg: FetchConfig) -> anyhow::Result<Self> {
        let threads = if cfg.decode_threads == 0 {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
        } else {
            cfg.decode_threads
        };
        // A budget below the body cap would make a large body wait forever.
        let budget_bytes = cfg.body_budget_bytes.max(cfg.download.max_body_bytes * 2);
        Ok(Fetcher {
            client: download::client(&cfg.download)?,
            hosts: HostLimits::new(cfg.per_host),
            // Waiting for memory is bounded like the download itself.
            budget: BodyBudget::new(budget_bytes, cfg.download.total_timeout),
            pool: DecodePool::new(threads, cfg.decode_timeout),
            cfg,
        })
    }

    /// Downloads and letterboxes `url` for a detector pool taking `shape`.
    pub async fn fetch(&self, url: &str, shape: Shape) -> (Result<Letterboxed, Failure>, Stats) {
        use crate::metrics as m;
        m::FETCH_IN_FLIGHT.inc();
        let (r, stats) = self.fetch_inner(url, shape).await;
        m::FETCH_IN_FLIGHT.dec();
        let status = match &r {
            Ok(_) => "ok",
            Err(f) => f.status.short_name(),
        };
        m::FETCH_RESULTS.with_label_values(&[status]).inc();
        if stats.bytes > 0 {
            m::FETCH_BYTES.inc_by(stats.bytes);
            m::FETCH_DOWNLOAD_SECONDS.observe(stats.download.as_secs_f64());
            m::FETCH_DECODE_SECONDS.observe(stats.decode.as_secs_f64());
        }
        (r, stats)
    }

    async fn fetch_inner(&self, url: &str, shape: Shape) -> (Result<Letterboxed, Failure>, Stats) {
        let mut stats = Stats::default();
        let parsed = match download::check_url(url, &self.cfg.download.policy) {
            Ok(u) => u,
            Err(f) => return (Err(f), stats),
        };
        let got = {
            let _slot = self.hosts.acquire(parsed.host_str().unwrap_or_default()).await;
            download::download(&self.client, &self.cfg.download, &self.budget, &parsed)
                .instrument(tracing::info_span!("download"))
                .await
        };
        let got = match got {
            Ok(g) => g,
            Err(f) => {
                stats.http_status = f.http_status;
                return (Err(f), stats);
            }
        };
        stats.http_status = got.http_status;
        stats.bytes = got.body.len() as u64;
        stats.download = got.elapsed;
        let started = Instant::now();
        // The body's budget is held until decoding is done with it.
        let r = self
            .pool
            .decode(got.body.clone(), shape, self.cfg.max_pixels)
            .instrument(tracing::info_span!("decode"))
            .await;
        drop(got);
        stats.decode = started.elapsed();
        (r, stats)
    }
}
