//! Job commands: list, pause, resume, cancel, priority, and watching results live.

use facesweep_proto::*;

use crate::client;

#[derive(Debug, clap::Subcommand)]
pub enum LifecycleCmd {
    /// List every job with its state, counts and priority.
    Jobs {
        /// Delegator address (host:port).
        #[arg(long, env = "FACESWEEP_DELEGATOR", default_value = "127.0.0.1:50051")]
        delegator: String,
    },
    /// Stop leasing a job's URLs; leases already out finish.
    Pause {
        /// Job name (`facesweep jobs` lists them).
        #[arg(long)]
        job: String,
        /// Delegator address (host:port).
        #[arg(long, env = "FACESWEEP_DELEGATOR", default_value = "127.0.0.1:50051")]
        delegator: String,
    },
    /// Lease a paused job's URLs again.
    Resume {
        /// Job name (`facesweep jobs` lists them).
        #[arg(long)]
        job: String,
        /// Delegator address (host:port).
        #[arg(long, env = "FACESWEEP_DELEGATOR", default_value = "127.0.0.1:50051")]
        delegator: String,
    },
    /// Stop a job for good: revoke its leases and give every URL without a result the status
    /// `cancelled` (results already stored are kept).
    Cancel {
        /// Job name (`facesweep jobs` lists them).
        #[arg(long)]
        job: String,
        /// Delegator address (host:port).
        #[arg(long, env = "FACESWEEP_DELEGATOR", default_value = "127.0.0.1:50051")]
        delegator: String,
    },
    /// Print a job's results as JSON Lines as they are stored, each with its `cursor`; ends
    /// when every URL has a result. `--after CURSOR` resumes after that line.
    Watch {
        /// Job name (`facesweep jobs` lists them).
        #[arg(long)]
        job: String,
        /// Resume after the line with this `cursor` (default: from the start).
        #[arg(long, default_value = "")]
        after: String,
        /// Results service address (host:port).
        #[arg(long, env = "FACESWEEP_RESULTS", default_value = "127.0.0.1:50053")]
        results: String,
    },
    /// Change a job's scheduling weight (also while it runs).
    Priority {
        /// Job name (`facesweep jobs` lists them).
        #[arg(long)]
        job: String,
        /// Scheduling weight: priority 3 gets about three times the leases of priority 1 (below 1
        /// counts as 1).
        #[arg(long, allow_negative_numbers = true)]
        priority: i32,
        /// Delegator address (host:port).
        #[arg(long, env = "FACESWEEP_DELEGATOR", default_value = "127.0.0.1:50051")]
        delegator: String,
    },
}

pub async fn run(cmd: LifecycleCmd) -> anyhow::Result<()> {
    let summary = match cmd {
        LifecycleCmd::Jobs { delegator } => {
            let jobs =
                client::delegator(&delegator).await?.list_jobs(ListJobsRequest {}).await?.into_inner().jobs;
            println!(
                "{:<24} {:<10} {:>8} {:>14} {:>14} {:>10}",
                "JOB", "STATE", "PRIORITY", "DONE", "TOTAL", "FAILED"
            );
            for j in &jobs {
                println!("{}", line(j));
            }
            return Ok(());
        }
        LifecycleCmd::Watch { job, after, results } => return watch(&results, job, after).await,
        LifecycleCmd::Pause { job, delegator } => {
            client::delegator(&delegator).await?.pause_job(PauseJobRequest { job }).await?.into_inner().job
        }
        LifecycleCmd::Resume { job, delegator } => {
            client::delegator(&delegator).await?.resume_job(ResumeJobRequest { job }).await?.into_inner().job
        }
        LifecycleCmd::Cancel { job, delegator } => {
            let r =
                client::delegator(&delegator).await?.cancel_job(CancelJobRequest { job }).await?.into_inner();
            println!("{} marked cancelled", crate::live::urls(r.urls_cancelled));
            r.job
        }
        LifecycleCmd::Priority { job, priority, delegator } => {
            let req = SetJobPriorityRequest { job, priority };
            client::delegator(&delegator).await?.set_job_priority(req).await?.into_inner().job
        }
    };
    if let Some(j) = summary {
        println!("{}", line(&j));
    }
    Ok(())
}

/// Streams the job's results to stdout, one JSON line each, flushed per line.
async fn watch(results: &str, job: String, after: String) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stream =
        client::results(results)?.watch_results(WatchResultsRequest { job, after }).await?.into_inner();
    let mut out = std::io::stdout().lock();
    while let Some(msg) = stream.message().await? {
        let line = ExportResultsResponse { url: msg.url, result: msg.result, ..Default::default() };
        let mut v = client::export_line(&line);
        v["cursor"] = msg.cursor.into();
        writeln!(out, "{}", crate::output::ordered(&v))?;
        out.flush()?;
    }
    Ok(())
}

/// One job as a table row.
fn line(j: &JobSummary) -> String {
    let (name, priority) = j.job.as_ref().map_or(("?", 0), |job| (job.name.as_str(), job.priority));
    let state = j.state().as_str_name().trim_start_matches("JOB_STATE_").to_lowercase();
    format!(
        "{name:<24} {state:<10} {priority:>8} {:>14} {:>14} {:>10}",
        j.done_urls, j.total_urls, j.failed_urls
    )
}
