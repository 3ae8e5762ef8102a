//! The backlog gauge that fetcher autoscaling follows (the chart's KEDA ScaledObject): URLs
//! of running jobs without a result, as served on a real delegator's /metrics (its own
//! registry: no other delegator of the test binary moves this gauge).

use facesweep_common::Shutdown;
use facesweep_proto::*;
use facesweep_tests::services::{acquire, lref, results};
use facesweep_tests::*;

async fn backlog(metrics: &str) -> Option<i64> {
    let body = http_get(metrics, "/metrics").await?;
    body.lines().find_map(|l| l.strip_prefix("facesweep_backlog_urls ")).map(|v| v.parse().unwrap())
}

/// Waits (bounded: the sweeper publishes every 200 ms here) for the gauge to read `want`.
async fn expect_backlog(metrics: &str, want: i64) {
    let what = format!("facesweep_backlog_urls reads {want}");
    wait_until(&what, 20, || async { backlog(metrics).await == Some(want) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_counts_unfinished_urls_of_running_jobs_only() {
    let db = TestDb::start();
    let stop = Shutdown::new();
    let cfg = facesweep_delegator::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        lease_ttl_secs: 1,
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..facesweep_delegator::Config::new(db.pg.url())
    };
    let running = facesweep_delegator::spawn(cfg, stop.clone()).await.unwrap();
    let metrics = running.metrics.unwrap().to_string();
    let mut d = delegator_service_client::DelegatorServiceClient::new(
        facesweep_common::grpc::channel(&running.addr.to_string()).unwrap(),
    );
    expect_backlog(&metrics, 0).await;
    for job in ["a", "b"] {
        services::import(&mut d, job, 30, 10).await;
    }
    expect_backlog(&metrics, 60).await;

    // Ten results recorded: ten fewer URLs waiting.
    let lease = acquire(&mut d, "f").await.unwrap();
    let done = lease.urls.iter().map(|u| UrlResult { url_id: u.id, status: 1, ..Default::default() });
    let mut r = results(&db, &stop).await;
    r.record(RecordRequest { results: done.collect(), lease: lref(&lease) }).await.unwrap();
    expect_backlog(&metrics, 50).await;

    // A paused job is no work for fetchers; resumed, it is again.
    d.pause_job(PauseJobRequest { job: "b".into() }).await.unwrap();
    let b: i64 =
        sqlx::query_scalar("SELECT id FROM jobs WHERE name = 'b'").fetch_one(&db.pool().await).await.unwrap();
    let b_left = if lease.job_id == b { 20 } else { 30 };
    expect_backlog(&metrics, 50 - b_left).await;
    d.resume_job(ResumeJobRequest { job: "b".into() }).await.unwrap();
    expect_backlog(&metrics, 50).await;
    stop.cancel();
}
