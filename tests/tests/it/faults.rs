//! Faults and races of the control plane on a real Postgres and real services over gRPC:
//! failures count against the URL that caused them (and only then), completion cannot race
//! RetryUrls/AppendUrls, leases fit in a message, bad input is refused, bad rows cost nothing.

use std::time::Duration;

use facesweep_common::Shutdown;
use facesweep_proto::delegator_service_client::DelegatorServiceClient;
use facesweep_proto::*;
use facesweep_tests::services::*;
use facesweep_tests::{wait_in_pg_sleep, TestDb};
use tonic::transport::Channel;
use tonic::Code;

fn ok(id: i64) -> UrlResult {
    UrlResult { url_id: id, status: UrlStatus::Ok as i32, ..Default::default() }
}

async fn release(d: &mut DelegatorServiceClient<Channel>, l: &Lease, failure: &str) {
    d.release_lease(ReleaseLeaseRequest { lease: lref(l), failure: failure.into() }).await.unwrap();
}

async fn chunk_failures(d: &mut DelegatorServiceClient<Channel>, job: &str) -> i32 {
    let r = ListLeasesRequest { job: job.into(), limit: 0, include_done: true };
    d.list_leases(r).await.unwrap().into_inner().chunks.iter().map(|c| c.failures).sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_url_that_fails_the_detector_is_isolated_and_abandoned() {
    let db = TestDb::start();
    let stop = Shutdown::new();
    let mut d = delegator_with(&db, 0, 1, 60, 1, 2, &stop).await;
    let mut r = results(&db, &stop).await;
    import(&mut d, "detfail", 4, 4).await;
    let poison = facesweep_common::url_id(1, 2);
    let mut sizes = Vec::new();
    // A fetcher whose detector errors on one image: it records the rest and releases the
    // lease with the reason, as the fetcher does. Before, a release was never a failure and
    // this looped forever.
    while let Some(l) = acquire(&mut d, "f").await {
        sizes.push(l.urls.len());
        assert!(sizes.len() < 12, "the failing URL is retried forever: {sizes:?}");
        let done: Vec<UrlResult> = l.urls.iter().filter(|u| u.id != poison).map(|u| ok(u.id)).collect();
        if !done.is_empty() {
            r.record(RecordRequest { results: done, lease: lref(&l) }).await.unwrap();
        }
        if l.urls.iter().any(|u| u.id == poison) {
            release(&mut d, &l, "detector failed on a URL: CUDA error").await;
        } else {
            d.complete_lease(CompleteLeaseRequest { lease: lref(&l) }).await.unwrap();
        }
    }
    let got = r.get_url_result(GetUrlResultRequest { url_id: poison }).await.unwrap().into_inner();
    let got = got.result.expect("the failing URL has a terminal result");
    assert_eq!(got.status(), UrlStatus::Abandoned);
    assert!(got.reason.contains("CUDA error"), "{}", got.reason);
    let p = d.get_progress(GetProgressRequest { job: "detfail".into() }).await.unwrap().into_inner();
    assert_eq!((p.done_urls, p.failed_urls), (4, 1));
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn restarts_and_drains_never_count_against_a_healthy_url() {
    let db = TestDb::start();
    let stop = Shutdown::new();
    // The strictest limits: one failure splits, one single-URL failure abandons.
    let mut d = delegator_with(&db, 0, 1, 60, 1, 1, &stop).await;
    let mut r = results(&db, &stop).await;
    import(&mut d, "healthy", 1, 1).await;
    for _ in 0..5 {
        acquire(&mut d, "fetcher-a").await.expect("lease");
        let req = ReleaseFetcherLeasesRequest { fetcher_id: "fetcher-a".into() };
        assert_eq!(d.release_fetcher_leases(req).await.unwrap().into_inner().released, 1);
        let l = acquire(&mut d, "fetcher-b").await.expect("lease");
        release(&mut d, &l, "").await; // draining
    }
    assert_eq!(chunk_failures(&mut d, "healthy").await, 0);
    let id = facesweep_common::url_id(1, 0);
    let got = r.get_url_result(GetUrlResultRequest { url_id: id }).await.unwrap().into_inner();
    assert!(got.result.is_none(), "a healthy URL got a result from restarts: {:?}", got.result);
    assert!(acquire(&mut d, "f").await.is_some(), "still leasable");
    stop.cancel();
}

/// Makes every completion that decides `done` wait 1 s after taking its snapshot, so another
/// transaction can run inside that window (the test sees it open: a backend in `pg_sleep`).
async fn widen_completion_window(pool: &sqlx::PgPool) {
    sqlx::raw_sql(
        "CREATE FUNCTION slow_done() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF NEW.state = 'done' THEN PERFORM pg_sleep(1); END IF; RETURN NEW; END $$;
         CREATE TRIGGER slow_done BEFORE UPDATE ON chunks FOR EACH ROW EXECUTE FUNCTION slow_done();",
    )
    .execute(pool)
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn completion_cannot_close_a_chunk_that_retry_or_append_reopened() {
    let db = TestDb::start();
    let stop = Shutdown::new();
    let mut d = delegator(&db, 0, 1, 60, &stop).await;
    let mut r = results(&db, &stop).await;
    let pool = db.pool().await;
    widen_completion_window(&pool).await;
    import(&mut d, "race", 2, 4).await;
    let l = acquire(&mut d, "f").await.unwrap();
    let slow = UrlResult { status: UrlStatus::Timeout as i32, reason: "slow".into(), ..ok(l.urls[1].id) };
    r.record(RecordRequest { results: vec![ok(l.urls[0].id), slow], lease: lref(&l) }).await.unwrap();
    // RetryUrls commits while the completion is between its check and its write.
    let mut d2 = d.clone();
    let completing =
        tokio::spawn(async move { d2.complete_lease(CompleteLeaseRequest { lease: lref(&l) }).await });
    wait_in_pg_sleep(&pool).await;
    let retry = RetryUrlsRequest { job: "race".into(), status: "timeout".into(), force: false };
    assert_eq!(d.retry_urls(retry).await.unwrap().into_inner().requeued, 1);
    completing.await.unwrap().unwrap();
    let again = acquire(&mut d, "f").await.expect("the retried URL must be leasable again");
    assert_eq!(again.urls.len(), 1);
    r.record(RecordRequest { results: vec![ok(again.urls[0].id)], lease: lref(&again) }).await.unwrap();
    // AppendUrls adds a URL to the chunk in the same window.
    let mut d2 = d.clone();
    let completing =
        tokio::spawn(async move { d2.complete_lease(CompleteLeaseRequest { lease: lref(&again) }).await });
    wait_in_pg_sleep(&pool).await;
    let more = AppendUrlsRequest {
        job: "race".into(),
        first_ordinal: 2,
        urls: vec!["http://x/new".into()],
        ..Default::default()
    };
    assert_eq!(d.append_urls(futures::stream::iter(vec![more])).await.unwrap().into_inner().inserted, 1);
    completing.await.unwrap().unwrap();
    let appended = acquire(&mut d, "f").await.expect("the appended URL must be leasable");
    assert_eq!(appended.urls[0].url, "http://x/new");
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn leases_fit_in_a_default_grpc_message_whatever_the_urls() {
    let db = TestDb::start();
    let stop = Shutdown::new();
    let mut d = delegator(&db, 0, 1, 60, &stop).await;
    d.create_job(CreateJobRequest {
        name: "long".into(),
        chunk_size: 1000,
        priority: 0,
        ..Default::default()
    })
    .await
    .unwrap();
    // 1,000 URLs of 7 kB (under the 8 KiB import limit): a whole-chunk lease would be 7 MB,
    // over the 4 MiB client default.
    let urls: Vec<String> = (0..1000).map(|i| format!("http://x/{i}?{}", "q".repeat(7_000))).collect();
    let msgs = urls.chunks(100).enumerate().map(|(i, c)| AppendUrlsRequest {
        job: "long".into(),
        first_ordinal: i as i64 * 100,
        urls: c.to_vec(),
        ..Default::default()
    });
    d.append_urls(futures::stream::iter(msgs.collect::<Vec<_>>())).await.unwrap();
    let r = results(&db, &stop).await;
    let mut seen = 0;
    while seen < 1000 {
        let l = acquire(&mut d, "f").await.expect("a lease that fits");
        let bytes: usize = l.urls.iter().map(|u| u.url.len()).sum();
        assert!(!l.urls.is_empty() && bytes <= 3 << 20, "{} URLs, {bytes} bytes", l.urls.len());
        assert!(l.urls.len() < 1000);
        seen += l.urls.len();
        let rows: Vec<UrlResult> = l.urls.iter().map(|u| ok(u.id)).collect();
        r.clone().record(RecordRequest { results: rows, lease: lref(&l) }).await.unwrap();
        d.complete_lease(CompleteLeaseRequest { lease: lref(&l) }).await.unwrap();
    }
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_admin_requests_are_refused_not_panicked_on() {
    let db = TestDb::start();
    let stop = Shutdown::new();
    let mut d = delegator(&db, 0, 1, 60, &stop).await;
    import(&mut d, "bad", 3, 10).await;
    for first in [i64::MAX - 1, i64::MAX, (1 << 40) - 1, -5] {
        let m = AppendUrlsRequest {
            job: "bad".into(),
            first_ordinal: first,
            urls: vec!["a".into(), "b".into()],
            ..Default::default()
        };
        let e = d.append_urls(futures::stream::iter(vec![m])).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "first_ordinal {first}: {e}");
    }
    let e = d.retry_urls(RetryUrlsRequest { job: "bad".into(), status: "ok".into(), force: false }).await;
    let e = e.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("force"), "{e}");
    let forced = RetryUrlsRequest { job: "bad".into(), status: "ok".into(), force: true };
    assert_eq!(d.retry_urls(forced).await.unwrap().into_inner().requeued, 0);
    // An unknown status names every status there is, so a grpcurl user can pick one.
    let e = d.retry_urls(RetryUrlsRequest { job: "bad".into(), status: "timeouts".into(), force: false });
    let e = e.await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("the statuses are ok, http_error, timeout,"), "{e}");
    // The server is still up and the job intact.
    let p = d.get_progress(GetProgressRequest { job: "bad".into() }).await.unwrap().into_inner();
    assert_eq!(p.total_urls, 3);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn one_bad_row_does_not_cost_its_batch() {
    let db = TestDb::start();
    let stop = Shutdown::new();
    let mut d = delegator(&db, 0, 1, 60, &stop).await;
    let mut r = results(&db, &stop).await;
    import(&mut d, "rows", 3, 10).await;
    let l = acquire(&mut d, "f").await.unwrap();
    let nan = Face { x1: 1.0, y1: 1.0, x2: 5.0, y2: 5.0, score: 0.9, landmarks: vec![f32::NAN; 10] };
    let rows = vec![ok(l.urls[0].id), UrlResult { faces: vec![nan], ..ok(l.urls[1].id) }, ok(l.urls[2].id)];
    let out = r.record(RecordRequest { results: rows, lease: lref(&l) }).await.unwrap().into_inner();
    assert_eq!((out.inserted, out.rejected), (3, 1));
    let bad = r.get_url_result(GetUrlResultRequest { url_id: l.urls[1].id }).await.unwrap().into_inner();
    let bad = bad.result.unwrap();
    assert_eq!(bad.status(), UrlStatus::DetectError);
    assert!(bad.reason.contains("non-finite"), "{}", bad.reason);
    let done = d.complete_lease(CompleteLeaseRequest { lease: lref(&l) }).await.unwrap().into_inner().done;
    assert!(done, "every URL has exactly one terminal result");
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_calls_need_the_token_once_one_is_configured() {
    use facesweep_common::grpc::channel;
    let db = TestDb::start();
    let stop = Shutdown::new();
    let mut cfg = facesweep_delegator::Config::new(db.pg.url());
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.auth.admin_token = Some("s3cret".into());
    let running = facesweep_delegator::spawn(cfg, stop.clone()).await.unwrap();
    let mut d = DelegatorServiceClient::new(channel(&running.addr.to_string()).unwrap());
    let job = || CreateJobRequest { name: "guarded".into(), ..Default::default() };
    // Loopback is no credential once a token is configured.
    let e = d.create_job(job()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");
    let with = |token: &str| {
        let mut r = tonic::Request::new(job());
        r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        r
    };
    assert_eq!(d.create_job(with("wrong")).await.unwrap_err().code(), Code::Unauthenticated);
    assert!(d.create_job(with("s3cret")).await.unwrap().into_inner().created);
    let e = d
        .retry_urls(RetryUrlsRequest { job: "guarded".into(), status: "timeout".into(), force: false })
        .await;
    assert_eq!(e.unwrap_err().code(), Code::Unauthenticated);
    // The data plane is for fetchers (in plaintext: whoever the network lets in).
    d.acquire_lease(AcquireLeaseRequest { fetcher_id: "f".into(), max_urls: 0 }).await.unwrap();
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lease_that_makes_no_progress_is_given_back_and_its_url_abandoned() {
    use facesweep_cli::options::FetcherTweak;
    use facesweep_cli::{client, Mesh, MeshOptions};
    // A server that accepts and never answers; with 60 s download timeouts only the
    // watchdog can end the lease (its renewals would keep it alive forever).
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let dir = facesweep_tests::tmp_dir();
    let mut opts = MeshOptions::new(dir.path(), facesweep_tests::model_path());
    opts.durability = facesweep_pgembed::Durability::Ephemeral;
    opts.timeout_ms = 60_000;
    opts.idle_poll_ms = 100;
    opts.fetcher_tweak = Some(FetcherTweak::new(|c| (c.lease_stall_secs, c.retries) = (1, 0)));
    let mesh = Mesh::start(opts).await.unwrap();
    let input = client::UrlInput::List(vec![format!("http://{addr}/never.jpg")]);
    let d = mesh.delegator.to_string();
    client::import(&d, "stalled", &input, client::ImportOptions { quiet: true, ..Default::default() })
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let p = tokio::time::timeout(Duration::from_secs(60), client::wait(&d, "stalled", true)).await;
    let p = p.expect("the stalled URL never got a terminal result").unwrap();
    // Three stalls of 1 s, and after the first two the chunk waits 1 s, then 2 s (±50%)
    // before any fetcher gets it again: origin servers are not hammered in a loop.
    assert!(started.elapsed() >= Duration::from_millis(4400), "no back-off: {:?}", started.elapsed());
    assert_eq!(
        p.by_status.iter().map(|s| (s.status.as_str(), s.count)).collect::<Vec<_>>(),
        [("abandoned", 1)]
    );
    let out = dir.path().join("out.jsonl");
    client::export(&mesh.results.to_string(), "stalled", &out).await.unwrap();
    let line = &facesweep_tests::read_jsonl(&out)[0];
    assert!(line["reason"].as_str().unwrap().contains("no URL of the lease finished"), "{line}");
    mesh.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_job_leaves_nothing_and_its_holders_are_refused() {
    let db = TestDb::start();
    let stop = Shutdown::new();
    let mut d = delegator(&db, 0, 1, 60, &stop).await;
    let mut r = results(&db, &stop).await;
    import(&mut d, "gone", 5, 10).await;
    import(&mut d, "kept", 2, 10).await;
    let l = acquire(&mut d, "f").await.unwrap();
    let face = Face { x1: 1.0, y1: 1.0, x2: 9.0, y2: 9.0, score: 0.9, landmarks: vec![2.0; 10] };
    let first = UrlResult { faces: vec![face], ..ok(l.urls[0].id) };
    r.record(RecordRequest { results: vec![first], lease: lref(&l) }).await.unwrap();
    let job = if l.job_name == "gone" { "gone" } else { "kept" };
    let n = d.delete_job(DeleteJobRequest { job: job.into() }).await.unwrap().into_inner().urls_deleted;
    assert_eq!(n, if job == "gone" { 5 } else { 2 });
    // The holder of a lease on the deleted job can neither record nor complete.
    let late = RecordRequest { results: vec![ok(l.urls[1].id)], lease: lref(&l) };
    assert_eq!(r.record(late).await.unwrap_err().code(), Code::FailedPrecondition);
    let done = d.complete_lease(CompleteLeaseRequest { lease: lref(&l) }).await;
    assert_eq!(done.unwrap_err().code(), Code::FailedPrecondition);
    let e = d.get_progress(GetProgressRequest { job: job.into() }).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let pool = db.pool().await;
    let left: (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM urls), (SELECT count(*) FROM url_results), (SELECT count(*) FROM faces),
                (SELECT count(*) FROM chunks)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let other = if job == "gone" { 2 } else { 5 };
    assert_eq!(left, (other, 0, 0, 1), "only the other job's URLs and chunk remain");
    // The name is free again.
    import(&mut d, job, 1, 10).await;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_and_delete_reach_ordinals_past_the_url_count() {
    let db = TestDb::start();
    let stop = Shutdown::new();
    let mut d = delegator(&db, 0, 1, 60, &stop).await;
    let mut r = results(&db, &stop).await;
    d.create_job(CreateJobRequest { name: "sparse".into(), chunk_size: 10, ..Default::default() })
        .await
        .unwrap();
    // Three URLs, one of them at ordinal 100,000: ordinals have gaps.
    let msgs = vec![
        AppendUrlsRequest {
            job: "sparse".into(),
            first_ordinal: 0,
            urls: vec!["http://x/0".into(), "http://x/1".into()],
            ..Default::default()
        },
        AppendUrlsRequest {
            job: "sparse".into(),
            first_ordinal: 100_000,
            urls: vec!["http://x/far".into()],
            ..Default::default()
        },
    ];
    d.append_urls(futures::stream::iter(msgs)).await.unwrap();
    while let Some(l) = acquire(&mut d, "f").await {
        let slow = l.urls.iter().map(|u| UrlResult {
            status: UrlStatus::Timeout as i32,
            reason: "slow".into(),
            ..ok(u.id)
        });
        r.record(RecordRequest { results: slow.collect(), lease: lref(&l) }).await.unwrap();
        d.complete_lease(CompleteLeaseRequest { lease: lref(&l) }).await.unwrap();
    }
    let retry = RetryUrlsRequest { job: "sparse".into(), status: "timeout".into(), force: false };
    assert_eq!(d.retry_urls(retry).await.unwrap().into_inner().requeued, 3);
    let deleted = d.delete_job(DeleteJobRequest { job: "sparse".into() }).await.unwrap().into_inner();
    assert_eq!(deleted.urls_deleted, 3);
    stop.cancel();
}
