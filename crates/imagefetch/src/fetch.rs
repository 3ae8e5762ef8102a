//! One URL from address to letterboxed tensor: politeness, download, decode.

use std::sync::Arc;
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

/// Hears of every fetch (to count them, say); each method's default does nothing. The caller
/// owns it and hands it to [`Fetcher::new`], so two fetchers in one process count apart.
pub trait FetchObserver: Send + Sync {
    /// A fetch began.
    fn started(&self) {}
    /// A fetch ended: `failure` is `None` for an image, and `stats` what it measured.
    fn finished(&self, _failure: Option<&Failure>, _stats: &Stats) {}
}

/// Observes nothing: for callers that count no fetches.
impl FetchObserver for () {}

pub struct Fetcher {
    client: reqwest::Client,
    observer: Arc<dyn FetchObserver>,
    cfg: FetchConfig,
    hosts: HostLimits,
    budget: BodyBudget,
    pool: DecodePool,
}

impl Fetcher {
    pub fn new(cfg: FetchConfig, observer: Arc<dyn FetchObserver>) -> anyhow::Result<Self> {
        let threads = if cfg.decode_threads == 0 {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
        } else {
            cfg.decode_threads
        };
        // A budget below the body cap would make a large body wait forever.
        let budget_bytes = cfg.body_budget_bytes.max(cfg.download.max_body_bytes * 2);
        Ok(Fetcher {
            client: download::client(&cfg.download)?,
            observer,
            hosts: HostLimits::new(cfg.per_host),
            // Waiting for memory is bounded like the download itself.
            budget: BodyBudget::new(budget_bytes, cfg.download.total_timeout),
            pool: DecodePool::new(threads, cfg.decode_timeout),
            cfg,
        })
    }

    /// Downloads and letterboxes `url` for a detector pool taking `shape`.
    pub async fn fetch(&self, url: &str, shape: Shape) -> (Result<Letterboxed, Failure>, Stats) {
        self.observer.started();
        let (r, stats) = self.fetch_inner(url, shape).await;
        self.observer.finished(r.as_ref().err(), &stats);
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
        // The server's answer is part of a decode failure's record (it was 200, the body bad).
        let r = r.map_err(|f| Failure { http_status: stats.http_status, ..f });
        (r, stats)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use facesweep_proto::UrlStatus;

    use super::*;
    use crate::net::IpPolicy;

    /// Records each event as a line.
    #[derive(Default)]
    struct Log(Mutex<Vec<String>>);

    impl FetchObserver for Log {
        fn started(&self) {
            self.0.lock().unwrap().push("started".into());
        }
        fn finished(&self, failure: Option<&Failure>, stats: &Stats) {
            let status = failure.map_or("ok", |f| f.status.short_name());
            self.0.lock().unwrap().push(format!("finished {status} {}", stats.bytes));
        }
    }

    #[tokio::test]
    async fn the_observer_hears_a_fetch_begin_and_end_with_its_failure() {
        let second = Duration::from_secs(1);
        let download = DownloadConfig {
            connect_timeout: second,
            first_byte_timeout: second,
            total_timeout: second,
            max_body_bytes: 1 << 20,
            max_redirects: 0,
            user_agent: "test".into(),
            retries: 0,
            retry_base: second,
            max_retry_after: second,
            policy: IpPolicy::default(),
            proxy: None,
        };
        let cfg = FetchConfig {
            download,
            max_pixels: 1 << 20,
            decode_threads: 1,
            per_host: 1,
            body_budget_bytes: 1 << 21,
            decode_timeout: second,
        };
        let log = Arc::new(Log::default());
        let f = Fetcher::new(cfg, log.clone()).unwrap();
        let (r, _) = f.fetch("ftp://example.com/a.jpg", Shape::canvas(8, 8)).await;
        assert_eq!(r.unwrap_err().status, UrlStatus::InvalidUrl);
        let want = ["started".to_string(), format!("finished {} 0", UrlStatus::InvalidUrl.short_name())];
        assert_eq!(*log.0.lock().unwrap(), want);
    }
}
