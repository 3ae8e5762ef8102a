//! The `facesweep` command line as a library, so tests drive exactly what users run.

pub mod bench;
pub mod client;
pub mod connect;
pub mod datadir;
pub mod embedded;
pub mod errors;
pub mod httpserve;
pub mod inputs;
pub mod jobs;
pub mod live;
pub mod mesh;
pub mod ondemand;
pub mod options;
pub mod output;
pub mod parquet_out;
pub mod sheet;
pub mod status;

use std::path::{Path, PathBuf};

pub use mesh::{Mesh, MeshOptions};

/// What `facesweep run` reports at the end.
#[derive(Debug)]
pub struct RunSummary {
    pub job: String,
    pub export: client::ExportSummary,
    pub progress: facesweep_proto::GetProgressResponse,
    pub seconds: f64,
}

/// Imports `input` as `job` on a running mesh, waits for every result, exports to `out`
/// (a path: the format by its extension; or `output::Out` with a format).
/// A file input is checked against the job's digest: a changed file needs a new job name.
pub async fn run_job<'a>(
    mesh: &Mesh,
    job: &str,
    input: &client::UrlInput,
    out: impl Into<output::Out<'a>>,
    quiet: bool,
) -> anyhow::Result<RunSummary> {
    run_job_at(&mesh.delegator.to_string(), &mesh.results.to_string(), job, input, out, quiet).await
}

/// `run_job` through services at these addresses (a mesh another process runs).
pub async fn run_job_at<'a>(
    delegator: &str,
    results: &str,
    job: &str,
    input: &client::UrlInput,
    out: impl Into<output::Out<'a>>,
    quiet: bool,
) -> anyhow::Result<RunSummary> {
    let out = out.into();
    let started = std::time::Instant::now();
    let digest = match input {
        client::UrlInput::File(_) => Some(input.digest()?),
        client::UrlInput::List(_) => None,
    };
    client::import(delegator, job, input, client::ImportOptions { digest, quiet, models: None }).await?;
    let before = client::progress(delegator, job).await?;
    if !quiet && before.done_urls > 0 {
        // A rerun: the bar starts part way, and the summary counts the whole job.
        let (done, total) = (before.done_urls, before.total_urls);
        eprintln!("job {job}: resuming — {done} of {} already done", live::urls(total));
    }
    let progress = client::wait_for(delegator, job, quiet, client::OnPause::Fail).await?;
    let export = export(results, job, out.path, out.format).await?;
    Ok(RunSummary { job: job.into(), export, progress, seconds: started.elapsed().as_secs_f64() })
}

/// Job name for a file: its stem, so re-running on the same file resumes the same job.
pub fn job_name_for(path: &Path) -> String {
    path.file_stem().and_then(|s| s.to_str()).unwrap_or("job").to_string()
}

/// Where setup puts sample photos (outside the clone, shared between clones).
pub fn default_samples_dir() -> PathBuf {
    std::env::var_os("FACESWEEP_SAMPLES").map(PathBuf::from).unwrap_or_else(|| cache_dir().join("samples"))
}

/// The JPEG and PNG photos in `dir`, sorted by name.
pub fn photos_in(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "jpg" || e == "png"))
        .collect();
    paths.sort();
    Ok(paths)
}

pub fn cache_dir() -> PathBuf {
    std::env::var_os("FACESWEEP_CACHE").map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| "/tmp".into());
        home.join(".cache/facesweep")
    })
}

/// The job's export to `out` in `format`.
pub async fn export(
    addr: &str,
    what: impl Into<facesweep_proto::ExportResultsRequest>,
    out: &Path,
    format: output::Format,
) -> anyhow::Result<output::ExportSummary> {
    match format {
        output::Format::Jsonl => output::jsonl(addr, what, out).await,
        output::Format::Parquet => crate::parquet_out::export(addr, what, out).await,
    }
}
