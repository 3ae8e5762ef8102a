//! The `facesweep` command line as a library, so tests drive exactly what users run.

pub mod bench;
pub mod client;
pub mod httpserve;
pub mod mesh;

use std::path::{Path, PathBuf};

pub use mesh::{Mesh, MeshOptions};

/// What `facesweep run` reports at the end.
#[derive(Debug)]
pub struct RunSummary {
    pub job: String,
    pub lines: Vec<serde_json::Value>,
    pub progress: facesweep_proto::GetProgressResponse,
    pub seconds: f64,
}

/// Imports `urls` as `job` on a running mesh, waits for every result, exports to `out`.
pub async fn run_job(
    mesh: &Mesh,
    job: &str,
    urls: Vec<String>,
    out: &Path,
    quiet: bool,
) -> anyhow::Result<RunSummary> {
    let started = std::time::Instant::now();
    let delegator = mesh.delegator.to_string();
    client::import(&delegator, job, urls, quiet).await?;
    let progress = client::wait(&delegator, job, quiet).await?;
    let lines = client::export(&mesh.results.to_string(), job, out).await?;
    Ok(RunSummary { job: job.into(), lines, progress, seconds: started.elapsed().as_secs_f64() })
}

/// Job name for a file: its stem, so re-running on the same file resumes the same job.
pub fn job_name_for(path: &Path) -> String {
    path.file_stem().and_then(|s| s.to_str()).unwrap_or("job").to_string()
}

/// Where setup puts sample photos (outside the clone, shared between clones).
pub fn default_samples_dir() -> PathBuf {
    std::env::var_os("FACESWEEP_SAMPLES").map(PathBuf::from).unwrap_or_else(|| cache_dir().join("samples"))
}

pub fn cache_dir() -> PathBuf {
    std::env::var_os("FACESWEEP_CACHE").map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| "/tmp".into());
        home.join(".cache/facesweep")
    })
}
