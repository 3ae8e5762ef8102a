//! Client side of the CLI: import, progress, export against a running mesh.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use facesweep_proto::*;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

/// Messages read ahead of the network.
const IMPORT_AHEAD: usize = 2;

/// Where a job's URLs come from: a file read lazily (any size), or a list already in memory
/// (the demo, tests).
pub enum UrlInput {
    File(PathBuf),
    List(Vec<String>),
}

use crate::inputs::{Start, UrlIter};

impl UrlInput {
    /// The URLs with their carried columns, one at a time (`inputs`: lines, CSV, TSV or
    /// Parquet; empty, comment, invalid and repeated lines skipped).
    pub fn urls(&self) -> anyhow::Result<UrlIter> {
        match self {
            UrlInput::List(v) => Ok(Box::new(v.clone().into_iter().map(|u| Ok(u.into())))),
            UrlInput::File(p) => crate::inputs::urls(p),
        }
    }

    /// "sha256:<hex>" of a file's bytes (read in blocks), so a changed file is noticed.
    pub fn digest(&self) -> anyhow::Result<String> {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        match self {
            UrlInput::List(v) => v.iter().for_each(|u| {
                h.update(u.as_bytes());
                h.update(b"\n");
            }),
            UrlInput::File(p) => {
                let mut f = std::fs::File::open(p).with_context(|| format!("open {}", p.display()))?;
                std::io::copy(&mut f, &mut h)?;
            }
        }
        Ok(format!("sha256:{:x}", h.finalize()))
    }
}

/// Reads all of a (small) URL file into memory; `UrlInput::urls` streams instead.
pub fn read_urls(path: &Path) -> anyhow::Result<Vec<String>> {
    UrlInput::File(path.to_path_buf()).urls()?.map(|r| r.map(|r| r.url)).collect()
}

pub use crate::connect::{delegator, results, AdminChannel, AdminToken};

/// What an import did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Imported {
    /// URLs of the input, including those skipped.
    pub received: i64,
    /// URLs the delegator did not hold before.
    pub inserted: i64,
    /// Leading URLs not sent: the delegator already held ordinals 0..skipped.
    pub skipped: i64,
}

/// How an import names and checks its job.
#[derive(Default)]
pub struct ImportOptions {
    /// Refuse to add to a job made from another input (see `UrlInput::digest`).
    pub digest: Option<String>,
    pub quiet: bool,
    /// The job's models (a new job; an existing one must have these or none given).
    pub models: Option<ModelSplit>,
}

/// `--model`, `--ab-model`, `--ab-share`: which model a new job's URLs go to.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct ModelArgs {
    /// Model for the job's URLs (a detector pool serving it must exist; default: the
    /// detectors' default model).
    #[arg(long)]
    pub model: Option<String>,
    /// A second model for an A/B comparison, given --ab-share of the URLs (fixed per URL).
    #[arg(long, requires = "ab_share")]
    pub ab_model: Option<String>,
    /// Fraction of the URLs for --ab-model, e.g. 0.1.
    #[arg(long, requires = "ab_model")]
    pub ab_share: Option<f64>,
}

impl ModelArgs {
    pub fn split(&self) -> Option<ModelSplit> {
        (self.model.is_some() || self.ab_model.is_some()).then(|| ModelSplit {
            model_id: self.model.clone().unwrap_or_default(),
            alt_model_id: self.ab_model.clone().unwrap_or_default(),
            alt_share: self.ab_share.unwrap_or(0.0),
        })
    }
}

/// Creates the job if needed and streams the URLs in bounded messages, reading the input
/// lazily. Ordinals make re-sending harmless; an input the job already holds (in part)
/// resumes after the part it holds, any other input is appended whole (`inputs`).
pub async fn import(
    addr: &str,
    job: &str,
    input: &UrlInput,
    opts: ImportOptions,
) -> anyhow::Result<Imported> {
    let mut d = delegator(addr).await?;
    let req = CreateJobRequest {
        name: job.into(),
        input_digest: opts.digest.clone().unwrap_or_default(),
        models: opts.models.clone(),
        ..Default::default()
    };
    // A job made from another input: errors::reworded says what to do.
    d.create_job(req).await?;
    let held = d.list_job_inputs(ListJobInputsRequest { job: job.into() }).await?.into_inner();
    let urls = input.urls()?;
    let (plan, start) = tokio::task::spawn_blocking(move || crate::inputs::plan(urls, &held)).await??;
    let start = match start {
        Some(s) => s,
        None => {
            let (urls, p) = (input.urls()?, plan.clone());
            let reopened = tokio::task::spawn_blocking(move || Start::reopened(urls, &p)).await??;
            // The input shrank since it was planned: nothing of it is left to send.
            let skipped = plan.resume_at;
            let Some(s) = reopened else { return Ok(Imported { received: skipped, inserted: 0, skipped }) };
            s
        }
    };
    let skip = plan.resume_at;
    let bar = if opts.quiet { ProgressBar::hidden() } else { spinner("import") };
    bar.set_position(skip as u64);
    let (tx, rx) = tokio::sync::mpsc::channel(IMPORT_AHEAD);
    let reader = crate::inputs::read_messages(start, job.to_string(), plan, tx);
    let reading = tokio::task::spawn_blocking(reader);
    let b = bar.clone();
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx).inspect(move |m| b.inc(m.urls.len() as u64));
    let sent = d.append_urls(stream).await;
    bar.finish_and_clear();
    let read = reading.await??;
    let resp = sent?.into_inner();
    anyhow::ensure!(resp.received == read, "delegator received {} of {read} URLs", resp.received);
    Ok(Imported { received: resp.received + skip, inserted: resp.inserted, skipped: skip })
}

fn spinner(what: &str) -> ProgressBar {
    let b = ProgressBar::new_spinner();
    // indicatif's {per_sec} prints every digit it has (182,145.6817/s): live::rate's instead.
    let style = ProgressStyle::with_template("{prefix:>8} {pos} URLs {rate}/s").expect("template").with_key(
        "rate",
        |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{}", crate::live::rate(s.per_sec()));
        },
    );
    b.set_style(style);
    b.set_prefix(what.to_string());
    b
}

pub async fn progress(addr: &str, job: &str) -> anyhow::Result<GetProgressResponse> {
    Ok(delegator(addr).await?.get_progress(GetProgressRequest { job: job.into() }).await?.into_inner())
}

pub fn describe(p: &GetProgressResponse) -> String {
    let statuses: Vec<String> = p.by_status.iter().map(|s| format!("{}={}", s.status, s.count)).collect();
    let eta = if p.eta_seconds < 0.0 { "unknown".to_string() } else { format!("{:.0}s", p.eta_seconds) };
    format!(
        "{}/{} URLs done; chunks pending={} leased={} done={}; re-issued leases={}; {} URLs/s; eta {eta}; {}",
        p.done_urls,
        p.total_urls,
        p.chunks_pending,
        p.chunks_leased,
        p.chunks_done,
        p.leases_reissued,
        crate::live::rate(p.rate_per_second),
        statuses.join(" ")
    ) + &by_model(p)
}

/// `; model M: N ok, F faces` per model, for jobs that used more than one.
fn by_model(p: &GetProgressResponse) -> String {
    if p.by_model.len() < 2 {
        return String::new();
    }
    let per: Vec<String> = p
        .by_model
        .iter()
        .map(|m| format!("model {}: {} ok, {} faces", m.model_id, m.ok_urls, m.faces))
        .collect();
    format!("; {}", per.join("; "))
}

/// A delegator briefly unreachable (restart, overload) does not end the wait; one that stays
/// unreachable this long does.
const WAIT_UNREACHABLE: Duration = Duration::from_secs(60);

/// Progress polls between two looks at the job's state (paused, cancelled).
const STATE_EVERY: u32 = 4;

/// What `wait_for` does when the job is paused (nothing would ever finish).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnPause {
    /// End with `Paused` (`run`).
    Fail,
    /// Say so once on stderr and keep waiting (`progress --wait`: a resume elsewhere ends it).
    Say,
}

/// A wait that found its job paused.
#[derive(Debug)]
pub struct Paused(pub String);

impl std::fmt::Display for Paused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "job {0} is paused — `facesweep resume --job {0}`", self.0)
    }
}

impl std::error::Error for Paused {}

/// Polls progress until every URL has a terminal result (a paused job: said once, waited on).
pub async fn wait(addr: &str, job: &str, quiet: bool) -> anyhow::Result<GetProgressResponse> {
    wait_for(addr, job, quiet, OnPause::Say).await
}

/// `wait`, with what to do when the job is paused; a cancelled job ends the wait.
pub async fn wait_for(
    addr: &str,
    job: &str,
    quiet: bool,
    on_pause: OnPause,
) -> anyhow::Result<GetProgressResponse> {
    let mut p = progress(addr, job).await?;
    let bar = if quiet { ProgressBar::hidden() } else { crate::live::bar(p.total_urls as u64, "detect") };
    let rate = crate::live::Rate::new(p.done_urls);
    let mut lines = crate::live::Lines::new(quiet);
    let mut last_answer = std::time::Instant::now();
    let (mut polls, mut said) = (0u32, false);
    loop {
        bar.set_length(p.total_urls as u64);
        bar.set_position(p.done_urls as u64);
        bar.set_message(rate.describe(p.done_urls, p.total_urls));
        lines.note("detect", p.done_urls, p.total_urls, &rate);
        if p.done_urls >= p.total_urls {
            bar.finish_and_clear();
            return Ok(p);
        }
        if polls % STATE_EVERY == 0 {
            match job_state(addr, job).await {
                Some(JobState::Paused) if on_pause == OnPause::Fail => {
                    bar.finish_and_clear();
                    return Err(Paused(job.into()).into());
                }
                Some(JobState::Paused) if !said => {
                    said = true;
                    bar.suspend(|| eprintln!("{}", Paused(job.into())));
                }
                Some(JobState::Cancelled) => {
                    bar.finish_and_clear();
                    return Ok(p);
                }
                _ => {}
            }
        }
        polls += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
        match progress(addr, job).await {
            Ok(next) => (p, last_answer) = (next, std::time::Instant::now()),
            Err(e) if last_answer.elapsed() < WAIT_UNREACHABLE && transient(&e) => {
                tracing::debug!(error = %e, "progress unavailable; still waiting");
            }
            Err(e) => return Err(e),
        }
    }
}

/// What `progress` adds for a job that is not leasing: paused (with the way on) or cancelled;
/// its rate and ETA are those of the last minutes, not of what comes.
pub async fn state_note(addr: &str, job: &str) -> Option<String> {
    match job_state(addr, job).await? {
        JobState::Paused => Some(Paused(job.into()).to_string()),
        JobState::Cancelled | JobState::Cancelling => {
            Some(format!("job {job} is cancelled: nothing more is leased; its finished URLs are kept"))
        }
        _ => None,
    }
}

/// The job's state from `ListJobs`; `None` when it cannot be read (the wait goes on).
async fn job_state(addr: &str, job: &str) -> Option<JobState> {
    let jobs = delegator(addr).await.ok()?.list_jobs(ListJobsRequest {}).await.ok()?.into_inner().jobs;
    let j = jobs.into_iter().find(|j| j.job.as_ref().is_some_and(|x| x.name == job))?;
    Some(j.state())
}

fn transient(e: &anyhow::Error) -> bool {
    use tonic::Code;
    let code = e.downcast_ref::<tonic::Status>().map(tonic::Status::code);
    matches!(code, Some(Code::Unavailable | Code::DeadlineExceeded | Code::Aborted | Code::ResourceExhausted))
        || e.downcast_ref::<tonic::transport::Error>().is_some()
}

/// One JSON object per URL, in the documented export format (`output`).
pub use crate::output::{export_line, ExportSummary};

/// Writes the job's export (`what`: a job name, or a request with a model filter) to `out`
/// as JSON Lines (`output::jsonl`: `-` is stdout, a device is written in place).
pub async fn export(
    addr: &str,
    what: impl Into<ExportResultsRequest>,
    out: &Path,
) -> anyhow::Result<ExportSummary> {
    crate::output::jsonl(addr, what, out).await
}
