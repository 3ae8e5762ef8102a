//! What an embedded mesh is made of and how it is sized (`facesweep up/run/demo`, tests).

use std::path::PathBuf;

use facesweep_pgembed::Durability;

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
    /// What this mesh is for (`up`, `run`, `demo`), told to a second process on the data dir.
    pub command: String,
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
            command: "mesh".into(),
        }
    }
}
