//! Elastic delegator shards with real processes: a job runs while delegators go 2 → 3 → 1
//! (one stopped with SIGTERM, one killed with SIGKILL). Every URL is leased and recorded
//! exactly once, and leasing never pauses longer than the membership timeout allows.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use facesweep_common::grpc::channel;
use facesweep_common::Shutdown;
use facesweep_proto::delegator_service_client::DelegatorServiceClient;
use facesweep_proto::*;
use facesweep_tests::services::*;
use facesweep_tests::*;
use tonic::transport::Channel;

const TIMEOUT_SECS: u64 = 2;
const URLS: usize = 600;

struct Member {
    child: Child,
    client: DelegatorServiceClient<Channel>,
}

/// A delegator process on a port picked free; when another took the port first, the process
/// exits and we try another.
async fn start(db: &TestDb, name: &str) -> Member {
    for _ in 0..3 {
        let port = free_port();
        let mut child = Command::new(bin("facesweep-delegator"))
            .args(["--listen", &format!("127.0.0.1:{port}"), "--database-url", &db.pg.url()])
            .args(["--membership-timeout-secs", &TIMEOUT_SECS.to_string(), "--member-id", name])
            .args(["--lease-ttl-secs", "5", "--default-chunk-size", "10", "--failure-backoff-ms", "0"])
            .spawn()
            .unwrap();
        let client = DelegatorServiceClient::new(channel(&format!("127.0.0.1:{port}")).unwrap());
        let pid = child.id();
        let up = wait_for(&format!("delegator {name} comes up"), 30, || {
            let mut c = client.clone();
            async move {
                if exited(pid) {
                    return Some(false);
                }
                c.list_jobs(ListJobsRequest {}).await.is_ok().then_some(true)
            }
        })
        .await;
        if up {
            return Member { child, client };
        }
        let _ = child.wait(); // it exited (port taken): reap it
    }
    panic!("delegator {name} exited on start three times");
}

/// Leases from each live member in turn, records and completes; returns URL ids recorded and
/// the longest stretch with no lease granted while work remained.
async fn work(
    members: &[&Member],
    r: &mut facesweep_proto::results_service_client::ResultsServiceClient<Channel>,
    leases: usize,
    last_lease: &mut Instant,
    longest_gap: &mut Duration,
) -> Vec<i64> {
    let mut ids = Vec::new();
    let mut granted = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while granted < leases && Instant::now() < deadline {
        let mut any = false;
        for m in members {
            let req = AcquireLeaseRequest { fetcher_id: "f".into(), max_urls: 0 };
            let Ok(resp) = m.client.clone().acquire_lease(req).await else { continue };
            let Some(l) = resp.into_inner().lease else { continue };
            *longest_gap = (*longest_gap).max(last_lease.elapsed());
            *last_lease = Instant::now();
            let results: Vec<UrlResult> = l
                .urls
                .iter()
                .map(|u| UrlResult { url_id: u.id, status: UrlStatus::Ok as i32, ..Default::default() })
                .collect();
            let rec = r.record(RecordRequest { results, lease: lref(&l) }).await.unwrap().into_inner();
            assert_eq!(rec.duplicates, 0, "a URL was recorded twice");
            ids.extend(l.urls.iter().map(|u| u.id));
            m.client.clone().complete_lease(CompleteLeaseRequest { lease: lref(&l) }).await.unwrap();
            (granted, any) = (granted + 1, true);
        }
        if !any {
            let job = GetProgressRequest { job: "elastic".into() };
            let p = members[0].client.clone().get_progress(job).await.unwrap().into_inner();
            if p.done_urls == p.total_urls {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    ids
}

#[tokio::test(flavor = "multi_thread")]
async fn delegators_scale_two_three_one_without_losing_or_repeating_a_url() {
    let db = TestDb::start();
    let stop = Shutdown::new();
    let mut r = results(&db, &stop).await;
    let (a, b) = (start(&db, "d-a").await, start(&db, "d-b").await);
    let mut admin = a.client.clone();
    import(&mut admin, "elastic", URLS, 10).await;
    let (mut last, mut gap) = (Instant::now(), Duration::ZERO);
    let mut ids = work(&[&a, &b], &mut r, 15, &mut last, &mut gap).await;
    let c = start(&db, "d-c").await;
    ids.extend(work(&[&a, &b, &c], &mut r, 15, &mut last, &mut gap).await);
    // 3 → 1: a leaves cleanly, b dies without a word.
    let mut a = a;
    Command::new("kill").arg("-TERM").arg(a.child.id().to_string()).status().unwrap();
    let mut b = b;
    b.child.kill().unwrap();
    let _ = (a.child.wait(), b.child.wait());
    ids.extend(work(&[&c], &mut r, URLS, &mut last, &mut gap).await);
    let p = c
        .client
        .clone()
        .get_progress(GetProgressRequest { job: "elastic".into() })
        .await
        .unwrap()
        .into_inner();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!((ids.len(), unique.len(), p.done_urls), (URLS, URLS, URLS as i64), "every URL exactly once");
    let bound = Duration::from_secs(TIMEOUT_SECS * 2);
    assert!(gap <= bound, "leasing stopped for {gap:?} (membership timeout {TIMEOUT_SECS} s)");
    eprintln!("longest stretch without a lease: {gap:?}");
    let mut c = c;
    c.child.kill().unwrap();
    let _ = c.child.wait();
    stop.cancel();
}
