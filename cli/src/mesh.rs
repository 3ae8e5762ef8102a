//! The whole mesh in one process: embedded Postgres (unless a URL is given) and the four
//! services on loopback. Used by `facesweep up/run/demo` and by the end-to-end tests.

use std::net::SocketAddr;
use std::path::PathBuf;

use facesweep_common::grpc::Running;
use facesweep_common::Shutdown;
use facesweep_pgembed::{Durability, PgEmbed};

use crate::embedded;

#[derive(Clone, Debug)]
pub struct MeshOptions {
    /// Holds the embedded cluster (`<data_dir>/pg`) and run files.
    pub data_dir: PathBuf,
    /// External Postgres; when absent an embedded cluster is started in `data_dir`.
    pub database_url: Option<String>,
    pub model: PathBuf,
    /// Base port: delegator, detector, results, fetcher get base..base+3 (0 = ephemeral).
    pub base_port: u16,
    pub durability: Durability,
    pub lease_ttl_secs: u64,
    pub chunk_size: u32,
    pub fetcher_concurrency: usize,
    pub fetcher_leases: usize,
    pub detector_max_batch: usize,
    pub idle_poll_ms: u64,
    pub timeout_ms: u64,
    /// Private networks the fetcher may reach (SSRF guard); loopback by default here.
    pub allow_networks: Vec<ipnet::IpNet>,
    /// Serve /metrics per service (base_port + 10 + offset, or ephemeral).
    pub metrics: bool,
    /// Extra `facesweep-fetcher` flags, applied last (e.g. `--lease-stall-secs 60`).
    pub fetcher_args: Vec<String>,
}

impl MeshOptions {
    pub fn new(data_dir: impl Into<PathBuf>, model: impl Into<PathBuf>) -> Self {
        MeshOptions {
            data_dir: data_dir.into(),
            database_url: None,
            model: model.into(),
            base_port: 0,
            durability: Durability::Durable,
            lease_ttl_secs: 60,
            chunk_size: 500,
            fetcher_concurrency: 64,
            fetcher_leases: 2,
            detector_max_batch: 16,
            idle_poll_ms: 200,
            timeout_ms: 30_000,
            allow_networks: vec!["127.0.0.0/8".parse().expect("valid"), "::1/128".parse().expect("valid")],
            metrics: false,
            fetcher_args: Vec::new(),
        }
    }
}

pub struct Mesh {
    pub delegator: SocketAddr,
    pub detector: SocketAddr,
    pub results: SocketAddr,
    pub fetcher_addr: SocketAddr,
    pub database_url: String,
    /// /metrics addresses (delegator, detector, results, fetcher) when enabled.
    pub metrics: Vec<SocketAddr>,
    shutdown: Shutdown,
    fetcher_stop: Shutdown,
    fetcher: Option<Running>,
    tasks: Vec<Running>,
    pg: Option<PgEmbed>,
}

pub(crate) fn stable_id(dir: &std::path::Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf()).hash(&mut h);
    format!("{:012x}", h.finish() & 0xffff_ffff_ffff)
}

impl Mesh {
    pub async fn start(o: MeshOptions) -> anyhow::Result<Mesh> {
        let (pg, database_url) = match &o.database_url {
            Some(url) => (None, url.clone()),
            None => {
                let dir = o.data_dir.clone();
                let pg = tokio::task::block_in_place(|| PgEmbed::start(&dir, o.durability))?;
                let url = pg.url();
                (Some(pg), url)
            }
        };
        let shutdown = Shutdown::new();
        // Fetchers stop first so their last results still reach running services.
        let fetcher_stop = Shutdown::new();
        let results =
            facesweep_results::spawn(embedded::results(&o, &database_url)?, shutdown.clone()).await?;
        let delegator =
            facesweep_delegator::spawn(embedded::delegator(&o, &database_url)?, shutdown.clone()).await?;
        let detector = facesweep_detector::spawn(embedded::detector(&o)?, shutdown.clone()).await?;
        let fetcher_cfg = embedded::fetcher(&o, delegator.addr, detector.addr, results.addr)?;
        let fetcher = facesweep_fetcher::spawn(fetcher_cfg, fetcher_stop.clone()).await?;
        let metrics = [&delegator, &detector, &results, &fetcher].iter().filter_map(|r| r.metrics).collect();
        Ok(Mesh {
            metrics,
            delegator: delegator.addr,
            detector: detector.addr,
            results: results.addr,
            fetcher_addr: fetcher.addr,
            database_url,
            shutdown,
            fetcher_stop,
            fetcher: Some(fetcher),
            tasks: vec![detector, delegator, results],
            pg,
        })
    }

    pub fn shutdown_token(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Stops fetchers first (they finish their leases), then servers, then Postgres.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.fetcher_stop.cancel();
        if let Some(f) = self.fetcher.take() {
            f.join().await?;
        }
        self.shutdown.cancel();
        for t in self.tasks.drain(..) {
            t.join().await?;
        }
        if let Some(mut pg) = self.pg.take() {
            tokio::task::block_in_place(|| pg.stop());
        }
        Ok(())
    }
}
