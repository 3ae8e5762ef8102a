//! What an embedded mesh is made of and how it is sized (`facesweep up/run/demo`, tests),
//! and where an installed facesweep finds its model.

use std::path::{Path, PathBuf};

use facesweep_pgembed::Durability;

/// The default model's file name.
pub const MODEL_FILE: &str = "retinaface_mnet025.pt";
/// Where the container image keeps its models (scripts/container/Containerfile).
pub const IMAGE_MODELS: &str = "/opt/facesweep/models";

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
    /// The fetcher's typed knobs (`run`/`up` flags); unset ones keep the embedded defaults.
    pub fetcher: FetcherKnobs,
    /// A change to the embedded fetcher's configuration, applied last (tests: a short stall
    /// timeout, a results service of their own).
    pub fetcher_tweak: Option<FetcherTweak>,
    /// What this mesh is for (`up`, `run`, `demo`), told to a second process on the data dir.
    pub command: String,
}

/// See [`MeshOptions::fetcher_tweak`].
#[derive(Clone)]
pub struct FetcherTweak(pub std::sync::Arc<dyn Fn(&mut facesweep_fetcher::Config) + Send + Sync>);

impl FetcherTweak {
    pub fn new(f: impl Fn(&mut facesweep_fetcher::Config) + Send + Sync + 'static) -> Self {
        FetcherTweak(std::sync::Arc::new(f))
    }
}

impl std::fmt::Debug for FetcherTweak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FetcherTweak(..)")
    }
}

/// Fetcher settings a job may need, as `run`/`up` flags (the fetcher's own names).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct FetcherKnobs {
    /// Detectors of other models for jobs naming one: MODEL=HOST:PORT[,HOST:PORT], several
    /// separated by `;` (the embedded detector serves the default model).
    #[arg(long, env = "FACESWEEP_MODEL_DETECTORS", value_delimiter = ';', value_parser = model_target)]
    pub model_detector: Vec<String>,
    /// Leases the fetcher works on at once (default 2).
    #[arg(long, env = "FACESWEEP_LEASES")]
    pub leases: Option<usize>,
    /// Downloads in flight per lease (default 64).
    #[arg(long, env = "FACESWEEP_CONCURRENCY")]
    pub concurrency: Option<usize>,
    /// Downloads in flight to one host (default: --concurrency).
    #[arg(long, env = "FACESWEEP_PER_HOST")]
    pub per_host: Option<usize>,
    /// Whole-download timeout, milliseconds (default 30000).
    #[arg(long, env = "FACESWEEP_TIMEOUT_MS")]
    pub timeout_ms: Option<u64>,
    /// TCP connect timeout, milliseconds (default 5000).
    #[arg(long, env = "FACESWEEP_CONNECT_TIMEOUT_MS")]
    pub connect_timeout_ms: Option<u64>,
    /// Time allowed until response headers arrive, milliseconds (default 10000).
    #[arg(long, env = "FACESWEEP_FIRST_BYTE_TIMEOUT_MS")]
    pub first_byte_timeout_ms: Option<u64>,
    /// Extra attempts after a transient failure (default 1).
    #[arg(long, env = "FACESWEEP_RETRIES")]
    pub retries: Option<u32>,
    /// Largest image body accepted, bytes (default 32 MiB).
    #[arg(long, env = "FACESWEEP_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<u64>,
    /// Forward proxy for downloads, e.g. http://proxy:3128.
    #[arg(long, env = "FACESWEEP_PROXY")]
    pub proxy: Option<String>,
    /// User-Agent header sent with every download.
    #[arg(long, env = "FACESWEEP_USER_AGENT")]
    pub user_agent: Option<String>,
}

/// `MODEL=TARGET`, checked as the fetcher checks it.
fn model_target(s: &str) -> Result<String, facesweep_fetcher::detectors::ModelTargetError> {
    facesweep_fetcher::detectors::parse_model_target(s).map(|_| s.to_string())
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
            fetcher: FetcherKnobs::default(),
            fetcher_tweak: None,
            command: "mesh".into(),
        }
    }
}

/// The model to run: `explicit` if given (it must exist), else the first default model found
/// next to the binary, in the image, in the setup cache or under the current directory.
pub fn resolve_model(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        anyhow::ensure!(p.is_file(), "model {} not found (--model / FACESWEEP_MODEL)", p.display());
        return with_contract(p);
    }
    let places = model_places();
    if let Some(found) = places.iter().find(|p| p.is_file()) {
        return with_contract(found);
    }
    let looked: Vec<String> = places.iter().map(|p| format!("  {}", p.display())).collect();
    anyhow::bail!(
        "model {MODEL_FILE} not found; looked in:\n{}\nrun scripts/setup.sh in a facesweep checkout \
         (it installs the model into {}), or pass --model PATH / FACESWEEP_MODEL",
        looked.join("\n"),
        crate::cache_dir().join("models").display()
    )
}

/// `pt` if its contract (`<model>.json` beside it) reads, checked before anything starts:
/// the detector would refuse the model only after the data dir and Postgres were set up.
fn with_contract(pt: &Path) -> anyhow::Result<PathBuf> {
    facesweep_detector::ModelConfig::for_model(pt).map_err(|e| {
        anyhow::anyhow!(
            "{e}; a model is a .pt with its .json contract beside it (scripts/export_model.py \
             writes both; scripts/setup.sh installs the default pair)"
        )
    })?;
    Ok(pt.to_path_buf())
}

/// Where the default model may be, in the order looked at.
pub fn model_places() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(exe_dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)) {
        // target/{debug,release}/facesweep in a checkout; bin/ beside models/ in an install.
        dirs.extend([exe_dir.join("../models"), exe_dir.join("../../models"), exe_dir.join("models")]);
    }
    dirs.push(PathBuf::from(IMAGE_MODELS));
    dirs.push(crate::cache_dir().join("models"));
    dirs.push(PathBuf::from("models"));
    dirs.into_iter().map(|d| clean(&d.join(MODEL_FILE))).collect()
}

/// `a/b/../c` as `a/c`, for messages (the file itself need not exist).
fn clean(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir if out.file_name().is_some() => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_model_names_every_place_looked() {
        let e = resolve_model(Some(Path::new("/nonexistent/m.pt"))).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/m.pt") && e.contains("--model"), "{e}");
        let places = model_places();
        assert!(places.iter().any(|p| p.starts_with(IMAGE_MODELS)), "{places:?}");
        assert!(places.iter().all(|p| !p.to_string_lossy().contains("..")), "{places:?}");
    }

    #[test]
    fn a_model_without_its_contract_is_refused_saying_what_a_model_is() {
        let dir = tempfile::tempdir().unwrap();
        let pt = dir.path().join("m.pt");
        std::fs::write(&pt, b"not read").unwrap();
        let e = resolve_model(Some(&pt)).unwrap_err().to_string();
        assert!(e.contains("m.json") && e.contains("beside it"), "{e}");
        std::fs::write(dir.path().join("m.json"), b"{").unwrap();
        let e = resolve_model(Some(&pt)).unwrap_err().to_string();
        assert!(e.contains("m.json") && e.contains("scripts/export_model.py"), "{e}");
    }
}
