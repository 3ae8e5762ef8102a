//! An operator acting at random on jobs of its own while chaos goes on: pause/resume,
//! SetJobPriority, AppendUrls to running jobs, RetryUrls of a failure class, CancelJob, and
//! DeleteJob of a job made (and re-made under the same name) for that purpose. It tolerates
//! refusals (FAILED_PRECONDITION: counted apart) and unreachable delegators (retried through
//! another one), and reports what each job's fate must be for the checker.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use facesweep_proto::delegator_service_client::DelegatorServiceClient;
use facesweep_proto::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;
use tonic::Code;

/// What must hold for a job at the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Every URL exactly once, the job `done`.
    Complete,
    /// Every URL `cancelled` or with exactly one other terminal result.
    Cancelled,
    /// No row left anywhere.
    Deleted,
}

#[derive(Clone, Debug)]
pub struct JobFate {
    pub name: String,
    pub id: i64,
    pub urls: i64,
    pub fate: Fate,
}

#[derive(Debug, Default)]
pub struct OpReport {
    pub actions: usize,
    pub refused: usize,
    pub errors: usize,
    pub jobs: Vec<JobFate>,
}

/// The URL for ordinal `i` of job `job`.
pub type UrlFn = Arc<dyn Fn(&str, usize) -> String + Send + Sync>;

pub struct Operator {
    delegators: Vec<Channel>,
    url: UrlFn,
    rng: StdRng,
    size: usize,
    report: OpReport,
    /// name → (id, URLs appended so far)
    live: Vec<(String, i64, i64)>,
    paused: BTreeSet<String>,
    deleting: Option<String>,
    del_round: usize,
    cancelled: bool,
}

const RUNNING: [&str; 2] = ["op-a", "op-b"];
const CANCEL: &str = "op-cancel";
const DELETE: &str = "op-del";
const RPC: Duration = Duration::from_secs(5);

type Rpc<T> = Result<T, tonic::Status>;

impl Operator {
    pub fn new(delegators: Vec<Channel>, url: UrlFn, seed: u64, size: usize) -> Operator {
        Operator {
            delegators,
            url,
            rng: StdRng::seed_from_u64(seed),
            size,
            report: OpReport::default(),
            live: Vec::new(),
            paused: BTreeSet::new(),
            deleting: None,
            del_round: 0,
            cancelled: false,
        }
    }

    /// Acts every 0.2–1.2 s until `stop`, then leaves its jobs able to finish.
    pub fn spawn(mut self, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<OpReport> {
        tokio::spawn(async move {
            for name in RUNNING.iter().chain([&CANCEL]) {
                self.create(name, self.size).await;
            }
            let mut rounds = 0usize;
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(self.rng.gen_range(200..1200))).await;
                rounds += 1;
                self.act(rounds).await;
            }
            self.finish().await;
            self.report
        })
    }

    fn client(&mut self) -> DelegatorServiceClient<Channel> {
        let i = self.rng.gen_range(0..self.delegators.len());
        DelegatorServiceClient::new(self.delegators[i].clone())
    }

    /// A call retried through random delegators while it fails for reasons other than an
    /// answer (unreachable, timeout), for up to 60 s.
    async fn call<T, F, Fut>(&mut self, f: F) -> Rpc<T>
    where
        F: Fn(DelegatorServiceClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Rpc<tonic::Response<T>>>,
    {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = match tokio::time::timeout(RPC, f(self.client())).await {
                Ok(r) => r.map(|r| r.into_inner()),
                Err(_) => Err(tonic::Status::deadline_exceeded("operator call timed out")),
            };
            match &r {
                Ok(_) => self.report.actions += 1,
                Err(e) if e.code() == Code::FailedPrecondition => self.report.refused += 1,
                Err(e) if transient(e.code()) && Instant::now() < deadline => {
                    self.report.errors += 1;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    continue;
                }
                Err(_) => self.report.errors += 1,
            }
            return r;
        }
    }

    async fn act(&mut self, round: usize) {
        match self.rng.gen_range(0..10) {
            0 | 1 => self.toggle_pause().await,
            2 | 3 => {
                let job = self.pick();
                let priority = self.rng.gen_range(0..10);
                let _ = self
                    .call(|mut d| {
                        let job = job.clone();
                        async move { d.set_job_priority(SetJobPriorityRequest { job, priority }).await }
                    })
                    .await;
            }
            4 | 5 => {
                let job = RUNNING[self.rng.gen_range(0..2)];
                let n = self.rng.gen_range(5..25);
                self.append(job, n).await;
            }
            6 => {
                let job = RUNNING[self.rng.gen_range(0..2)].to_string();
                let classes = ["http_error", "not_an_image", "decode_error", "connect_error"];
                let status = classes[self.rng.gen_range(0..classes.len())].to_string();
                let _ = self
                    .call(|mut d| {
                        let (job, status) = (job.clone(), status.clone());
                        async move { d.retry_urls(RetryUrlsRequest { job, status, force: false }).await }
                    })
                    .await;
            }
            7 if round > 15 && !self.cancelled => self.cancel().await,
            _ => self.delete_cycle().await,
        }
    }

    fn pick(&mut self) -> String {
        let all = [RUNNING[0], RUNNING[1], CANCEL];
        all[self.rng.gen_range(0..all.len())].to_string()
    }

    async fn create(&mut self, name: &str, n: usize) -> Option<i64> {
        let job = name.to_string();
        let r = self
            .call(|mut d| {
                let req =
                    CreateJobRequest { name: job.clone(), chunk_size: 20, priority: 1, ..Default::default() };
                async move { d.create_job(req).await }
            })
            .await;
        let id = r.ok()?.job?.id;
        self.live.retain(|j| j.0 != name);
        self.live.push((name.to_string(), id, 0));
        self.append(name, n).await;
        Some(id)
    }

    /// `n` more URLs after the last ones; a failed append is repeated at the same ordinals
    /// (idempotent) so the count stays exact.
    async fn append(&mut self, name: &str, n: usize) {
        let Some(at) = self.live.iter().position(|j| j.0 == name) else { return };
        let first = self.live[at].2;
        let urls: Vec<String> = (0..n).map(|i| (self.url)(name, first as usize + i)).collect();
        let job = name.to_string();
        let r = self
            .call(|mut d| {
                let req = AppendUrlsRequest {
                    job: job.clone(),
                    first_ordinal: first,
                    urls: urls.clone(),
                    ..Default::default()
                };
                async move { d.append_urls(futures::stream::iter(vec![req])).await }
            })
            .await;
        match r {
            Ok(_) => self.live[at].2 += n as i64,
            Err(e) => eprintln!("operator: append to {name} refused: {e}"),
        }
    }

    async fn toggle_pause(&mut self) {
        let job = self.pick();
        if self.paused.contains(&job) {
            let j = job.clone();
            let r = self
                .call(|mut d| {
                    let job = j.clone();
                    async move { d.resume_job(ResumeJobRequest { job }).await }
                })
                .await;
            if r.is_ok() || r.as_ref().is_err_and(|e| e.code() == Code::FailedPrecondition) {
                self.paused.remove(&job);
            }
        } else {
            let j = job.clone();
            let r = self
                .call(|mut d| {
                    let job = j.clone();
                    async move { d.pause_job(PauseJobRequest { job }).await }
                })
                .await;
            if r.is_ok() {
                self.paused.insert(job);
            }
        }
    }

    async fn cancel(&mut self) {
        let r = self
            .call(|mut d| async move { d.cancel_job(CancelJobRequest { job: CANCEL.into() }).await })
            .await;
        // Refused: already cancelled, or finished first; either way its fate is decided.
        self.cancelled = r.is_ok() || r.is_err_and(|e| e.code() == Code::FailedPrecondition);
        if self.cancelled {
            self.paused.remove(CANCEL);
        }
    }

    /// Creates `op-del` (again) with URLs, or deletes the one there is.
    async fn delete_cycle(&mut self) {
        if self.deleting.is_none() {
            self.del_round += 1;
            if self.create(DELETE, self.size / 2).await.is_some() {
                self.deleting = Some(DELETE.into());
            }
            return;
        }
        let r = self
            .call(|mut d| async move { d.delete_job(DeleteJobRequest { job: DELETE.into() }).await })
            .await;
        // NotFound: an earlier, unanswered delete went through.
        if r.is_ok() || r.is_err_and(|e| e.code() == Code::NotFound) {
            if let Some(at) = self.live.iter().position(|j| j.0 == DELETE) {
                let (name, id, urls) = self.live.remove(at);
                self.report.jobs.push(JobFate { name, id, urls, fate: Fate::Deleted });
            }
            self.deleting = None;
        }
    }

    /// Resumes what is paused, deletes a pending `op-del`, cancels if it never happened, and
    /// records every job's fate.
    async fn finish(&mut self) {
        for job in std::mem::take(&mut self.paused) {
            let j = job.clone();
            let r = self
                .call(|mut d| {
                    let job = j.clone();
                    async move { d.resume_job(ResumeJobRequest { job }).await }
                })
                .await;
            assert!(
                r.is_ok() || r.as_ref().is_err_and(|e| e.code() == Code::FailedPrecondition),
                "operator could not resume {job}: {r:?}"
            );
        }
        if !self.cancelled {
            self.cancel().await;
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.deleting.is_some() && Instant::now() < deadline {
            self.delete_cycle().await;
        }
        for (name, id, urls) in std::mem::take(&mut self.live) {
            let fate = match name.as_str() {
                CANCEL => Fate::Cancelled,
                _ => Fate::Complete,
            };
            self.report.jobs.push(JobFate { name, id, urls, fate });
        }
    }
}

fn transient(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Cancelled | Code::Internal
    )
}
