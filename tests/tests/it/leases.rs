//! Lease semantics against a real Postgres and real delegator instances over gRPC.

use facesweep_common::Shutdown;
use facesweep_proto::*;
use facesweep_tests::services::*;
use facesweep_tests::{wait_until_sql, TestDb};
use tonic::Code;

#[tokio::test(flavor = "multi_thread")]
async fn shards_split_chunks_and_never_lease_one_twice() {
    let db = TestDb::start();
    let stop = Shutdown::new();
    let mut d0 = delegator(&db, 0, 2, 60, &stop).await;
    let mut d1 = delegator(&db, 1, 2, 60, &stop).await;
    let r = import(&mut d0, "sharded", 95, 10).await;
    assert_eq!((r.received, r.inserted), (95, 95));
    // Re-importing the same ordinals is a no-op.
    assert_eq!(import(&mut d1, "sharded", 95, 10).await.inserted, 0);

    let mut seen = std::collections::HashSet::new();
    let mut url_total = 0;
    for (d, shard) in [(&mut d0, 0), (&mut d1, 1)] {
        while let Some(l) = acquire(d, "f").await {
            assert_eq!(l.chunk_no % 2, shard, "shard {shard} leased chunk {}", l.chunk_no);
            assert!(seen.insert(l.chunk_no), "chunk {} leased twice", l.chunk_no);
            url_total += l.urls.len();
        }
    }
    assert_eq!(seen.len(), 10);
    assert_eq!(url_total, 95);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_leases_are_reissued_and_fencing_rejects_the_old_holder() {
    let db = TestDb::start();
    let stop = Shutdown::new();
    let mut d = delegator(&db, 0, 1, 1, &stop).await;
    import(&mut d, "expiry", 5, 10).await;
    let first = acquire(&mut d, "a").await.expect("a lease");
    assert_eq!(first.urls.len(), 5);
    assert!(acquire(&mut d, "b").await.is_none(), "a live lease must not be handed out again");
    // The sweeper (every 250 ms at this TTL) returns it once expired, counted as expired.
    let swept = "SELECT bool_and(state = 'pending' AND expired = 1) FROM chunks";
    wait_until_sql("the lease expired and was swept", 10, &db.pool().await, swept).await;
    let second = acquire(&mut d, "b").await.expect("the expired lease is re-issued");
    assert_eq!(second.chunk_no, first.chunk_no);
    assert!(second.fencing_token > first.fencing_token);
    // The old holder's token no longer works, for any operation.
    let e = d.renew_lease(RenewLeaseRequest { lease: lref(&first) }).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let e = d.complete_lease(CompleteLeaseRequest { lease: lref(&first) }).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    // The new holder renews, releases, and the chunk comes back.
    d.renew_lease(RenewLeaseRequest { lease: lref(&second) }).await.unwrap();
    d.release_lease(ReleaseLeaseRequest { lease: lref(&second), failure: String::new() }).await.unwrap();
    let third = acquire(&mut d, "c").await.expect("released chunk is leasable");
    let p = d.get_progress(GetProgressRequest { job: "expiry".into() }).await.unwrap().into_inner();
    assert_eq!((p.leases_reissued, p.leases_expired), (2, 1));
    assert_eq!((p.chunks_leased, p.total_urls, p.done_urls), (1, 5, 0));
    // Completing without results sends the chunk back to pending, never to done.
    let c = d.complete_lease(CompleteLeaseRequest { lease: lref(&third) }).await.unwrap().into_inner();
    assert!(!c.done);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn leases_hold_only_urls_without_results_and_results_are_idempotent() {
    let db = TestDb::start();
    let stop = Shutdown::new();
    let mut d = delegator(&db, 0, 1, 60, &stop).await;
    let mut r = results(&db, &stop).await;
    let began = std::time::Instant::now();
    import(&mut d, "idem", 4, 10).await;
    let lease = acquire(&mut d, "a").await.unwrap();
    let ids: Vec<i64> = lease.urls.iter().map(|u| u.id).collect();
    let face = |x: f32| Face { x1: x, y1: 0.0, x2: x + 10.0, y2: 10.0, score: 0.9, landmarks: vec![1.0; 10] };
    let ok = |id: i64, faces: Vec<Face>| UrlResult {
        url_id: id,
        status: UrlStatus::Ok as i32,
        faces,
        model_id: "m1".into(),
        ..Default::default()
    };
    let first = vec![ok(ids[0], vec![face(1.0), face(50.0)]), ok(ids[1], vec![])];
    let out =
        r.record(RecordRequest { results: first.clone(), lease: lref(&lease) }).await.unwrap().into_inner();
    assert_eq!((out.inserted, out.duplicates, out.unknown), (2, 0, 0));
    // A second writer (stale lease, retry) with different faces changes nothing.
    let again = vec![ok(ids[0], vec![face(99.0)]), ok(ids[0], vec![])];
    let out = r.record(RecordRequest { results: again, lease: lref(&lease) }).await.unwrap().into_inner();
    assert_eq!((out.inserted, out.duplicates, out.unknown), (0, 2, 0));
    // Results for URLs the lease does not hold, or without a live lease, are refused.
    let forged = RecordRequest { results: vec![ok(999_999, vec![])], lease: lref(&lease) };
    assert_eq!(r.record(forged).await.unwrap_err().code(), Code::FailedPrecondition);
    let stolen = LeaseRef { fencing_token: lease.fencing_token + 1000, ..lref(&lease).unwrap() };
    let forged = RecordRequest { results: vec![ok(ids[2], vec![])], lease: Some(stolen) };
    assert_eq!(r.record(forged).await.unwrap_err().code(), Code::FailedPrecondition);
    let anonymous = RecordRequest { results: vec![ok(ids[2], vec![])], lease: None };
    assert_eq!(r.record(anonymous).await.unwrap_err().code(), Code::InvalidArgument);
    let got = r.get_url_result(GetUrlResultRequest { url_id: ids[0] }).await.unwrap().into_inner();
    let faces = got.result.unwrap().faces;
    assert_eq!(faces.len(), 2);
    assert_eq!((faces[0].x1, faces[1].x1), (1.0, 50.0));
    // Completing now leaves two URLs open: the chunk goes back and the next lease holds only them.
    let c = d.complete_lease(CompleteLeaseRequest { lease: lref(&lease) }).await.unwrap().into_inner();
    assert!(!c.done);
    let next = acquire(&mut d, "b").await.unwrap();
    let left: Vec<i64> = next.urls.iter().map(|u| u.id).collect();
    assert_eq!(left, ids[2..].to_vec());
    let fail = |id: i64| UrlResult {
        url_id: id,
        status: UrlStatus::Timeout as i32,
        reason: "slow".into(),
        ..Default::default()
    };
    r.record(RecordRequest { results: vec![fail(ids[2]), fail(ids[3])], lease: lref(&next) }).await.unwrap();
    let c = d.complete_lease(CompleteLeaseRequest { lease: lref(&next) }).await.unwrap().into_inner();
    assert!(c.done);
    assert!(acquire(&mut d, "c").await.is_none());
    let p = d.get_progress(GetProgressRequest { job: "idem".into() }).await.unwrap().into_inner();
    assert_eq!((p.done_urls, p.total_urls, p.chunks_done), (4, 4, 1));
    let timeouts = p.by_status.iter().find(|s| s.status == "timeout").unwrap().count;
    assert_eq!(timeouts, 2);
    // A job of seconds reports its true rate (first lease to last result), not 4 per minute.
    let floor = 4.0 / began.elapsed().as_secs_f64();
    assert!(p.rate_per_second >= floor, "rate {} URLs/s, at least {floor} expected", p.rate_per_second);
    // Per model: the first writer's two ok URLs and two faces, not the duplicate's; a forced
    // retry of `ok` takes them back out.
    let m1 = ModelCount { model_id: "m1".into(), ok_urls: 2, faces: 2 };
    assert_eq!(p.by_model, vec![m1]);
    let redo = RetryUrlsRequest { job: "idem".into(), status: "ok".into(), force: true };
    assert_eq!(d.retry_urls(redo).await.unwrap().into_inner().requeued, 2);
    let p = d.get_progress(GetProgressRequest { job: "idem".into() }).await.unwrap().into_inner();
    assert_eq!((p.done_urls, p.by_model.len()), (2, 0), "{:?}", p.by_model);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_poison_url_is_isolated_abandoned_and_can_be_retried() {
    let db = TestDb::start();
    let stop = Shutdown::new();
    let mut d = delegator_with(&db, 0, 1, 60, 1, 2, &stop).await;
    let mut r = results(&db, &stop).await;
    import(&mut d, "poison", 8, 8).await;
    let poison = facesweep_common::url_id(1, 5);
    let mut leases = Vec::new();
    // A fetcher that finishes every URL except the poison one.
    while let Some(l) = acquire(&mut d, "f").await {
        leases.push(l.urls.len());
        let ok: Vec<UrlResult> = l
            .urls
            .iter()
            .filter(|u| u.id != poison)
            .map(|u| UrlResult { url_id: u.id, status: UrlStatus::Ok as i32, ..Default::default() })
            .collect();
        if !ok.is_empty() {
            r.record(RecordRequest { results: ok, lease: lref(&l) }).await.unwrap();
        }
        d.complete_lease(CompleteLeaseRequest { lease: lref(&l) }).await.unwrap();
        assert!(leases.len() < 10, "the poison URL keeps its chunk busy: {leases:?}");
    }
    // Whole chunk, then the poison URL alone until it is abandoned.
    assert_eq!(leases, vec![8, 1, 1]);
    let got =
        r.get_url_result(GetUrlResultRequest { url_id: poison }).await.unwrap().into_inner().result.unwrap();
    assert_eq!(got.status(), UrlStatus::Abandoned);
    assert!(got.reason.contains("abandoned after 2"), "{}", got.reason);
    let p = d.get_progress(GetProgressRequest { job: "poison".into() }).await.unwrap().into_inner();
    assert_eq!((p.done_urls, p.failed_urls, p.chunks_done), (8, 1, 1));

    // Retry re-queues only that class; the URL is leased again, the others stay done.
    let e = d
        .retry_urls(RetryUrlsRequest { job: "poison".into(), status: "bogus".into(), force: false })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let n = d
        .retry_urls(RetryUrlsRequest { job: "poison".into(), status: "abandoned".into(), force: false })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(n.requeued, 1);
    let again = acquire(&mut d, "f").await.expect("retried URL is leased again");
    assert_eq!(again.urls.iter().map(|u| u.id).collect::<Vec<_>>(), vec![poison]);
    let p = d.get_progress(GetProgressRequest { job: "poison".into() }).await.unwrap().into_inner();
    assert_eq!((p.done_urls, p.failed_urls), (7, 0));
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_share_leases_by_priority_without_starvation() {
    let db = TestDb::start();
    let stop = Shutdown::new();
    let mut d = delegator(&db, 0, 1, 60, &stop).await;
    for (job, prio) in [("high", 3), ("low", 1)] {
        d.create_job(CreateJobRequest {
            name: job.into(),
            chunk_size: 1,
            priority: prio,
            ..Default::default()
        })
        .await
        .unwrap();
        let urls: Vec<String> = (0..400).map(|i| format!("http://x/{i}")).collect();
        d.append_urls(futures::stream::iter(vec![AppendUrlsRequest {
            job: job.into(),
            first_ordinal: 0,
            urls,
            ..Default::default()
        }]))
        .await
        .unwrap();
    }
    let mut counts = std::collections::HashMap::<String, usize>::new();
    // 200 draws at 3:1: high ~ Binomial(200, 0.75) = 150 ± 6; the bar below is ~5 sigma away.
    for _ in 0..200 {
        let l = acquire(&mut d, "f").await.unwrap();
        *counts.entry(l.job_name).or_default() += 1;
    }
    let (high, low) = (counts["high"], counts.get("low").copied().unwrap_or(0));
    assert!(low > 0, "low-priority job starved: {counts:?}");
    assert!(2 * high > 3 * low, "weights 3:1 not honoured: {counts:?}");
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_fetcher_gets_its_old_leases_back_at_once() {
    let db = TestDb::start();
    let stop = Shutdown::new();
    let mut d = delegator(&db, 0, 1, 600, &stop).await;
    import(&mut d, "restart", 30, 10).await;
    for _ in 0..2 {
        acquire(&mut d, "fetcher-a").await.unwrap();
    }
    acquire(&mut d, "fetcher-b").await.unwrap();
    let e =
        d.release_fetcher_leases(ReleaseFetcherLeasesRequest { fetcher_id: "".into() }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let n = d
        .release_fetcher_leases(ReleaseFetcherLeasesRequest { fetcher_id: "fetcher-a".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(n.released, 2);
    let p = d.get_progress(GetProgressRequest { job: "restart".into() }).await.unwrap().into_inner();
    assert_eq!((p.chunks_pending, p.chunks_leased), (2, 1));
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_and_rust_encode_url_ids_alike() {
    use facesweep_common::{url_id, MAX_ORDINAL};
    let db = TestDb::start();
    let pool = db.pool().await;
    for (job, ordinal) in [(1, 0), (7, 123_456), (8_000_000, MAX_ORDINAL)] {
        let (id, back, end): (i64, i64, i64) =
            sqlx::query_as("SELECT url_id($1, $2), url_ordinal(url_id($1, $2)), job_url_id_end($1)")
                .bind(job)
                .bind(ordinal)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(id, url_id(job, ordinal));
        assert_eq!(back, ordinal);
        assert_eq!(end, url_id(job + 1, 0));
    }
}

/// Progress reads chunk-state counters that a trigger appends and upkeep folds (migration
/// 0009), never the chunk rows: through every kind of transition they equal a count of the rows.
#[tokio::test(flavor = "multi_thread")]
async fn progress_counters_equal_the_chunk_rows_through_every_transition() {
    let db = TestDb::start();
    let stop = Shutdown::new();
    // TTL 2 s: the sweeper expires leases and folds the counters every 500 ms.
    let mut d = delegator(&db, 0, 1, 2, &stop).await;
    let mut r = results(&db, &stop).await;
    let pool = db.pool().await;
    import(&mut d, "counts", 100, 10).await;
    let mut leases = Vec::new();
    for _ in 0..6 {
        leases.push(acquire(&mut d, "f").await.unwrap());
    }
    assert_counts_match(&mut d, &pool, "after leasing").await;
    for (i, l) in leases[..2].iter().enumerate() {
        let status = if i == 0 { UrlStatus::Timeout } else { UrlStatus::Ok };
        let reason = if i == 0 { "slow" } else { "" };
        let results = l.urls.iter().map(|u| UrlResult {
            url_id: u.id,
            status: status as i32,
            reason: reason.into(),
            ..Default::default()
        });
        r.record(RecordRequest { results: results.collect(), lease: lref(l) }).await.unwrap();
        assert!(d.complete_lease(CompleteLeaseRequest { lease: lref(l) }).await.unwrap().into_inner().done);
    }
    let failure = "detector refused".to_string();
    d.release_lease(ReleaseLeaseRequest { lease: lref(&leases[2]), failure }).await.unwrap();
    d.release_lease(ReleaseLeaseRequest { lease: lref(&leases[3]), failure: String::new() }).await.unwrap();
    assert_counts_match(&mut d, &pool, "after completing and releasing").await;
    // Two leases expire; new URLs open a new chunk; a failure class re-opens a done one.
    let swept =
        "SELECT count(*) FILTER (WHERE expired > 0) = 2 AND count(*) FILTER (WHERE state = 'leased') = 0
                 FROM chunks";
    wait_until_sql("the two leases expired and were swept", 20, &pool, swept).await;
    let more = AppendUrlsRequest {
        job: "counts".into(),
        first_ordinal: 100,
        urls: vec!["http://x.invalid/a".into()],
        ..Default::default()
    };
    d.append_urls(futures::stream::iter(vec![more])).await.unwrap();
    let retry = RetryUrlsRequest { job: "counts".into(), status: "timeout".into(), force: false };
    assert_eq!(d.retry_urls(retry).await.unwrap().into_inner().requeued, 10);
    let p = assert_counts_match(&mut d, &pool, "after expiry, append and retry").await;
    assert_eq!((p.chunks_pending, p.chunks_leased, p.chunks_done, p.leases_expired), (10, 0, 1, 2));
    // Upkeep folds a job's deltas into one row; deleting the job leaves none.
    let folded = "SELECT count(*) = 1 FROM job_chunk_counts";
    wait_until_sql("upkeep folds the counters into one row per job", 20, &pool, folded).await;
    assert_counts_match(&mut d, &pool, "after folding").await;
    d.delete_job(DeleteJobRequest { job: "counts".into() }).await.unwrap();
    let rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM job_chunk_counts").fetch_one(&pool).await.unwrap();
    assert_eq!(rows, 0, "a deleted job leaves no counters");
    stop.cancel();
}

async fn assert_counts_match(
    d: &mut facesweep_proto::delegator_service_client::DelegatorServiceClient<tonic::transport::Channel>,
    pool: &sqlx::PgPool,
    when: &str,
) -> GetProgressResponse {
    let p = d.get_progress(GetProgressRequest { job: "counts".into() }).await.unwrap().into_inner();
    let rows: (i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE state = 'pending'), count(*) FILTER (WHERE state = 'leased'),
                count(*) FILTER (WHERE state = 'done'), sum(reissued)::bigint, sum(expired)::bigint FROM chunks",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    let counters = (p.chunks_pending, p.chunks_leased, p.chunks_done, p.leases_reissued, p.leases_expired);
    assert_eq!(
        counters, rows,
        "{when}: progress counters (pending, leased, done, reissued, expired) vs rows"
    );
    p
}
