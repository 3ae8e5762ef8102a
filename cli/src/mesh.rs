//! The whole mesh in one process: embedded Postgres (unless a URL is given) and the four
//! services on loopback. Used by `facesweep up/run/demo` and by the end-to-end tests.

use std::net::SocketAddr;
use std::path::PathBuf;

use facesweep_common::grpc::Running;
use facesweep_common::Shutdown;
use facesweep_pgembed::{Durability, PgEmbed};

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

fn stable_id(dir: &std::path::Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf()).hash(&mut h);
    format!("{:012x}", h.finish() & 0xffff_ffff_ffff)
}

fn metrics_addr(o: &MeshOptions, offset: u16) -> Option<SocketAddr> {
    o.metrics.then(|| addr(if o.base_port == 0 { 0 } else { o.base_port + 10 }, offset))
}

fn addr(base: u16, offset: u16) -> SocketAddr {
    let port = if base == 0 { 0 } else { base + offset };
    SocketAddr::from(([127, 0, 0, 1], port))
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
        let results = facesweep_results::spawn(
            facesweep_results::Config {
                listen: addr(o.base_port, 2),
                database_url: database_url.clone(),
                db_connections: 8,
                metrics_listen: metrics_addr(&o, 2),
                consul: Default::default(),
                tls: Default::default(),
                auth: Default::default(),
            },
            shutdown.clone(),
        )
        .await?;
        let delegator = facesweep_delegator::spawn(
            facesweep_delegator::Config {
                listen: addr(o.base_port, 0),
                database_url: database_url.clone(),
                shard_index: 0,
                shard_count: 1,
                lease_ttl_secs: o.lease_ttl_secs,
                default_chunk_size: o.chunk_size,
                db_connections: 8,
                metrics_listen: metrics_addr(&o, 0),
                split_after: 3,
                abandon_after: 3,
                failure_backoff_ms: 1_000,
                consul: Default::default(),
                tls: Default::default(),
                auth: Default::default(),
            },
            shutdown.clone(),
        )
        .await?;
        let detector = facesweep_detector::spawn(
            facesweep_detector::Config {
                listen: addr(o.base_port, 1),
                model: o.model.clone(),
                device: "auto".into(),
                fp32: false,
                max_batch: o.detector_max_batch,
                max_delay_us: 2000,
                queue: 1024,
                queue_mib: 1024,
                threads: 0,
                metrics_listen: metrics_addr(&o, 1),
                consul: Default::default(),
                tls: Default::default(),
                auth: Default::default(),
            },
            shutdown.clone(),
        )
        .await?;
        let fetcher = facesweep_fetcher::spawn(
            embedded_fetcher_config(&o, &delegator, &detector, &results)?,
            fetcher_stop.clone(),
        )
        .await?;
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

/// The fetcher of an embedded mesh: the binary's defaults (one home for them), pointed at the
/// in-process services and sized by the mesh's options.
fn embedded_fetcher_config(
    o: &MeshOptions,
    delegator: &Running,
    detector: &Running,
    results: &Running,
) -> anyhow::Result<facesweep_fetcher::Config> {
    let nets: Vec<String> = o.allow_networks.iter().map(ToString::to_string).collect();
    let mut argv: Vec<String> = [
        ("--listen", addr(o.base_port, 3).to_string()),
        ("--delegator", delegator.addr.to_string()),
        ("--detector", detector.addr.to_string()),
        ("--results", results.addr.to_string()),
        // Stable per data dir: a restarted `run` reclaims its killed predecessor's leases.
        ("--id", format!("embedded-{}", stable_id(&o.data_dir))),
        ("--drain-grace-secs", "10".into()),
        ("--leases", o.fetcher_leases.to_string()),
        ("--concurrency", o.fetcher_concurrency.to_string()),
        ("--per-host", o.fetcher_concurrency.to_string()),
        ("--connect-timeout-ms", 5_000.min(o.timeout_ms).to_string()),
        ("--timeout-ms", o.timeout_ms.to_string()),
        ("--first-byte-timeout-ms", o.timeout_ms.min(10_000).to_string()),
        ("--retries", "1".into()),
        ("--retry-base-ms", "200".into()),
        // The embedded mesh fetches from loopback (demo, tests) and the LAN.
        ("--allow-networks", nets.join(",")),
        ("--body-budget-mib", "128".into()),
        ("--idle-poll-ms", o.idle_poll_ms.to_string()),
        ("--release-backoff-ms", o.idle_poll_ms.max(100).to_string()),
    ]
    .into_iter()
    .flat_map(|(k, v)| [k.to_string(), v])
    .collect();
    if let Some(m) = metrics_addr(o, 3) {
        argv.extend(["--metrics-listen".into(), m.to_string()]);
    }
    // The binary's own defaults stay the one home for the rest; extra flags come last and win.
    let argv = std::iter::once("facesweep-fetcher".to_string()).chain(argv).chain(o.fetcher_args.clone());
    Ok(<facesweep_fetcher::Config as clap::Parser>::try_parse_from(argv)?)
}
