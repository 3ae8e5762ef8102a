//! The whole mesh in one process: embedded Postgres (unless a URL is given) and the four
//! services on loopback. Used by `facesweep up/run/demo` and by the end-to-end tests.

use std::net::SocketAddr;

use facesweep_common::grpc::Running;
use facesweep_common::Shutdown;
use facesweep_pgembed::PgEmbed;

use crate::datadir::DataDirLock;
use crate::embedded;
pub use crate::options::MeshOptions;

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
    /// Held while the embedded Postgres runs: no second process starts or stops it.
    _lock: Option<DataDirLock>,
}

impl Mesh {
    pub async fn start(o: MeshOptions) -> anyhow::Result<Mesh> {
        let (pg, database_url, mut lock) = match &o.database_url {
            Some(url) => (None, url.clone(), None),
            None => {
                // Before Postgres: starting it stops any postmaster on these files, which
                // is only right when no live facesweep process uses them (datadir.rs).
                let lock = DataDirLock::claim(&o.data_dir, &o.command)?;
                let dir = o.data_dir.clone();
                let pg = tokio::task::block_in_place(|| PgEmbed::start(&dir, o.durability))?;
                let url = pg.url();
                (Some(pg), url, Some(lock))
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
        if let Some(l) = lock.as_mut() {
            l.publish(&delegator.addr.to_string(), &results.addr.to_string())?;
        }
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
            _lock: lock,
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
