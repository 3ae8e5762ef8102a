//! The whole mesh in one process: embedded Postgres (unless a URL is given) and the four
//! services on loopback. Used by `facesweep up/run/demo` and by the end-to-end tests.

use std::net::SocketAddr;
use std::path::Path;

use facesweep_common::grpc::Running;
use facesweep_common::Shutdown;
use facesweep_pgembed::PgEmbed;
use facesweep_proto::ModelSplit;

use crate::datadir::DataDirLock;
use crate::embedded;
pub use crate::options::MeshOptions;

pub struct Mesh {
    pub delegator: SocketAddr,
    pub detector: SocketAddr,
    pub results: SocketAddr,
    pub fetcher_addr: SocketAddr,
    pub database_url: String,
    /// Model ids served: the embedded detector's and those of `--model-detector`.
    pub models: Vec<String>,
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
            facesweep_results::spawn(embedded::results(&o, &database_url), shutdown.clone()).await?;
        let delegator =
            facesweep_delegator::spawn(embedded::delegator(&o, &database_url), shutdown.clone()).await?;
        let detector = facesweep_detector::spawn(embedded::detector(&o), shutdown.clone()).await?;
        let fetcher_cfg = embedded::fetcher(&o, delegator.addr, detector.addr, results.addr)?;
        let fetcher = facesweep_fetcher::spawn(fetcher_cfg, fetcher_stop.clone()).await?;
        let metrics = [&delegator, &detector, &results, &fetcher].iter().filter_map(|r| r.metrics).collect();
        let models = served_models(detector.addr, &o.fetcher.model_detector).await;
        if let Some(l) = lock.as_mut() {
            l.publish(&delegator.addr.to_string(), &results.addr.to_string(), &models)?;
        }
        Ok(Mesh {
            metrics,
            delegator: delegator.addr,
            detector: detector.addr,
            results: results.addr,
            fetcher_addr: fetcher.addr,
            database_url,
            models,
            shutdown,
            fetcher_stop,
            fetcher: Some(fetcher),
            tasks: vec![detector, delegator, results],
            pg,
            _lock: lock,
        })
    }

    /// Refuses a job naming a model the data dir's mesh does not serve, when that mesh is
    /// the one listening at `delegator` (it published its models in the owner file).
    pub fn check_served(data_dir: &Path, delegator: &str, split: Option<&ModelSplit>) -> anyhow::Result<()> {
        let (Some(split), Some(owner)) = (split, crate::datadir::read_owner(data_dir)) else { return Ok(()) };
        if owner.delegator.as_deref() != Some(delegator) || owner.models.is_empty() {
            return Ok(());
        }
        for m in [&split.model_id, &split.alt_model_id] {
            anyhow::ensure!(
                m.is_empty() || owner.models.contains(m),
                "no detector serves model {m}; served here: {} (a detector for another model is \
                 given to `up`/`run` as --model-detector {m}=HOST:PORT)",
                owner.models.join(", ")
            );
        }
        Ok(())
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

/// The model ids this mesh serves: its detector's (asked) and the `MODEL=TARGET` keys; an
/// empty list when the detector does not say (then nothing is refused).
async fn served_models(detector: SocketAddr, others: &[String]) -> Vec<String> {
    use facesweep_proto::detector_service_client::DetectorServiceClient;
    let Ok(ch) = facesweep_common::grpc::channel(&detector.to_string()) else { return Vec::new() };
    let info = DetectorServiceClient::new(ch).model_info(facesweep_proto::ModelInfoRequest {}).await;
    let Ok(info) = info else { return Vec::new() };
    let mut ids = vec![info.into_inner().model_id];
    ids.extend(others.iter().filter_map(|m| m.split_once('=').map(|(id, _)| id.to_string())));
    ids
}
