//! A rogue fetcher running throughout a chaos test: it knows lease tokens (live ones read
//! from Postgres, and guesses: job ids, chunk numbers, tokens near the sequence's current
//! value) but not their secrets, and tries Record (a fake face marked by its score),
//! RenewLease, CompleteLease, ReleaseLease and — when it has its own identity (mTLS) —
//! ReleaseFetcherLeases with other fetchers' ids. Every call that succeeds is forged.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use facesweep_proto::delegator_service_client::DelegatorServiceClient;
use facesweep_proto::results_service_client::ResultsServiceClient;
use facesweep_proto::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;

/// The score of the rogue's fake faces: any face with it in the database is forged.
pub const MARKER_SCORE: f32 = 0.031337;

#[derive(Debug, Default)]
pub struct RogueReport {
    pub calls: usize,
    /// Calls that succeeded, by RPC.
    pub forged: Vec<(String, usize)>,
}

impl RogueReport {
    pub fn forged_calls(&self) -> usize {
        self.forged.iter().map(|f| f.1).sum()
    }

    fn hit(&mut self, rpc: &str) {
        match self.forged.iter_mut().find(|f| f.0 == rpc) {
            Some(f) => f.1 += 1,
            None => self.forged.push((rpc.to_string(), 1)),
        }
    }
}

pub struct Rogue {
    pub delegators: Vec<Channel>,
    pub results: Vec<Channel>,
    pub pool: sqlx::PgPool,
    /// Other fetchers' ids, for ReleaseFetcherLeases; empty without an identity of its own.
    pub victims: Vec<String>,
    pub seed: u64,
}

/// (job_id, chunk_no, token, owner, a URL of the job without a result)
type Guess = (i64, i64, i64, String, i64);

impl Rogue {
    pub fn spawn(self, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<RogueReport> {
        tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(self.seed);
            let mut report = RogueReport::default();
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(rng.gen_range(20..120))).await;
                let Some(g) = self.guess(&mut rng).await else { continue };
                self.try_once(&mut rng, g, &mut report).await;
            }
            report
        })
    }

    async fn guess(&self, rng: &mut StdRng) -> Option<Guess> {
        let live = rng.gen_bool(0.6);
        let sql = if live {
            // A live lease, exactly: only the secret is missing.
            "SELECT c.job_id, c.chunk_no, c.token, coalesce(c.lease_owner, ''),
                    coalesce((SELECT u.id FROM urls u LEFT JOIN url_results r ON r.url_id = u.id
                              WHERE u.job_id = c.job_id AND r.url_id IS NULL LIMIT 1), 0)
             FROM chunks c WHERE c.state = 'leased' ORDER BY random() LIMIT 1"
        } else {
            "SELECT j.id, (random() * 60)::bigint,
                    (SELECT last_value FROM lease_tokens) - (random() * 30)::bigint, '',
                    (j.id << 40) + (random() * 500)::bigint
             FROM jobs j ORDER BY random() LIMIT 1"
        };
        let q = sqlx::query_as::<_, Guess>(sql).fetch_optional(&self.pool);
        tokio::time::timeout(Duration::from_secs(3), q).await.ok()?.ok()?
    }

    async fn try_once(&self, rng: &mut StdRng, g: Guess, report: &mut RogueReport) {
        let (job_id, chunk_no, fencing_token, owner, url_id) = g;
        let secret = if rng.gen_bool(0.5) { String::new() } else { format!("{:032x}", rng.gen::<u128>()) };
        let fetcher_id = if owner.is_empty() || rng.gen_bool(0.3) { "rogue".to_string() } else { owner };
        let lease = LeaseRef { job_id, chunk_no, fencing_token, secret, fetcher_id };
        let d = || DelegatorServiceClient::new(self.delegators[rng_index(self.delegators.len())].clone());
        let pick = rng.gen_range(0..if self.victims.is_empty() { 4 } else { 5 });
        report.calls += 1;
        let within = Duration::from_secs(3);
        let ok = match pick {
            0 => {
                let face = Face {
                    x1: 1.0,
                    y1: 1.0,
                    x2: 9.0,
                    y2: 9.0,
                    score: MARKER_SCORE,
                    landmarks: vec![5.0; 10],
                };
                let result = UrlResult {
                    url_id,
                    job_id,
                    status: UrlStatus::Ok as i32,
                    faces: vec![face],
                    width: 10,
                    height: 10,
                    model_id: "retinaface-mnet025-v1".into(),
                    ..Default::default()
                };
                let mut r = ResultsServiceClient::new(self.results[rng_index(self.results.len())].clone());
                let call = r.record(RecordRequest { results: vec![result], lease: Some(lease) });
                matches!(tokio::time::timeout(within, call).await, Ok(Ok(a)) if a.get_ref().inserted > 0)
            }
            1 => {
                ok(tokio::time::timeout(within, d().renew_lease(RenewLeaseRequest { lease: Some(lease) }))
                    .await)
            }
            2 => ok(tokio::time::timeout(
                within,
                d().complete_lease(CompleteLeaseRequest { lease: Some(lease) }),
            )
            .await),
            3 => {
                let req = ReleaseLeaseRequest { lease: Some(lease), failure: String::new() };
                ok(tokio::time::timeout(within, d().release_lease(req)).await)
            }
            _ => {
                let fetcher_id = self.victims[rng.gen_range(0..self.victims.len())].clone();
                let mut d = d();
                let call = d.release_fetcher_leases(ReleaseFetcherLeasesRequest { fetcher_id });
                matches!(tokio::time::timeout(within, call).await, Ok(Ok(a)) if a.get_ref().released > 0)
            }
        };
        if ok {
            let rpc = ["Record", "RenewLease", "CompleteLease", "ReleaseLease", "ReleaseFetcherLeases"][pick];
            eprintln!("rogue: forged {rpc} on job {job_id} chunk {chunk_no} token {fencing_token}");
            report.hit(rpc);
        }
    }
}

fn ok<T>(r: Result<Result<T, tonic::Status>, tokio::time::error::Elapsed>) -> bool {
    matches!(r, Ok(Ok(_)))
}

fn rng_index(n: usize) -> usize {
    rand::thread_rng().gen_range(0..n)
}

/// Faces carrying the rogue's marker score.
pub async fn marker_faces(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM faces WHERE abs(score - $1) < 1e-6")
        .bind(MARKER_SCORE)
        .fetch_one(pool)
        .await
        .expect("count marker faces")
}
