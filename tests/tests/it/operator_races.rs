//! Operators acting mid-job and callers who guess (issue #20), on real delegator and results
//! services over a real Postgres: lease secrets, Record racing DeleteJob, the job state
//! machine (retry on a cancelled job, interrupted cancel/delete finished by the sweeper,
//! finished jobs `done`). Race windows are opened by observing the database, not by sleeping.

use facesweep_common::Shutdown;
use facesweep_proto::*;
use facesweep_tests::services::*;
use facesweep_tests::*;
use tonic::Code;

fn ok_face(id: i64) -> UrlResult {
    let face = Face { x1: 1.0, y1: 2.0, x2: 30.0, y2: 40.0, score: 0.9, landmarks: vec![5.0; 10] };
    UrlResult {
        url_id: id,
        status: UrlStatus::Ok as i32,
        faces: vec![face.clone(), face],
        ..Default::default()
    }
}

fn all_ok(l: &Lease) -> RecordRequest {
    RecordRequest { results: l.urls.iter().map(|u| ok_face(u.id)).collect(), lease: lref(l) }
}

/// Rows any table still holds for job `id` (every table keyed by job or URL id).
async fn rows_of_job(pool: &sqlx::PgPool, id: i64) -> i64 {
    sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM urls WHERE job_id = $1)
              + (SELECT count(*) FROM url_results WHERE job_id = $1)
              + (SELECT count(*) FROM faces WHERE url_id BETWEEN url_id($1, 0) AND url_id($1 + 1, 0) - 1)
              + (SELECT count(*) FROM url_attempts WHERE url_id BETWEEN url_id($1, 0) AND url_id($1 + 1, 0) - 1)
              + (SELECT count(*) FROM chunks WHERE job_id = $1)
              + (SELECT count(*) FROM job_status_counts WHERE job_id = $1)
              + (SELECT count(*) FROM job_chunk_counts WHERE job_id = $1)
              + (SELECT count(*) FROM job_model_counts WHERE job_id = $1)
              + (SELECT count(*) FROM job_minute_counts WHERE job_id = $1)
              + (SELECT count(*) FROM jobs WHERE id = $1)",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lease_is_authorized_by_its_secret_and_holder_not_its_token() {
    let db = TestDb::start();
    let stop = Shutdown::new();
    let mut d = delegator(&db, 0, 1, 60, &stop).await;
    let mut r = results(&db, &stop).await;
    import(&mut d, "guarded", 10, 10).await;
    let lease = acquire(&mut d, "fetcher-a").await.unwrap();
    assert_eq!(lease.secret.len(), 32, "128 bits, hex");
    assert_eq!(lease.fetcher_id, "fetcher-a");
    let real = lref(&lease).unwrap();
    // The right (job, chunk, token) with a wrong, empty or another fetcher's credentials.
    let forged = [
        LeaseRef { secret: "0".repeat(32), ..real.clone() },
        LeaseRef { secret: String::new(), ..real.clone() },
        LeaseRef { fetcher_id: "fetcher-b".into(), ..real.clone() },
    ];
    for bad in forged {
        let e = r.record(RecordRequest { lease: Some(bad.clone()), ..all_ok(&lease) }).await.unwrap_err();
        assert!(matches!(e.code(), Code::FailedPrecondition | Code::InvalidArgument), "{e:?}");
        let e = d.renew_lease(RenewLeaseRequest { lease: Some(bad.clone()) }).await.unwrap_err();
        assert!(matches!(e.code(), Code::FailedPrecondition | Code::InvalidArgument), "{e:?}");
        let e = d.complete_lease(CompleteLeaseRequest { lease: Some(bad.clone()) }).await.unwrap_err();
        assert!(matches!(e.code(), Code::FailedPrecondition | Code::InvalidArgument), "{e:?}");
        let release = ReleaseLeaseRequest { lease: Some(bad), failure: "forged".into() };
        let e = d.release_lease(release).await.unwrap_err();
        assert!(matches!(e.code(), Code::FailedPrecondition | Code::InvalidArgument), "{e:?}");
    }
    // Only the hash is stored.
    let pool = db.pool().await;
    let stored: Vec<u8> = sqlx::query_scalar("SELECT secret_hash FROM chunks WHERE token = $1")
        .bind(lease.fencing_token)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored.len(), 32);
    assert!(!String::from_utf8_lossy(&stored).contains(&lease.secret));
    // The holder's own calls work, and nothing forged was stored.
    d.renew_lease(RenewLeaseRequest { lease: Some(real.clone()) }).await.unwrap();
    let out = r.record(all_ok(&lease)).await.unwrap().into_inner();
    assert_eq!((out.inserted, out.duplicates, out.unknown), (10, 0, 0));
    assert!(d.complete_lease(CompleteLeaseRequest { lease: Some(real) }).await.unwrap().into_inner().done);
    stop.cancel();
}

/// Backends of `pool`'s server waiting on a lock (row, transaction or advisory).
async fn lock_waiters(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_job_racing_a_record_in_flight_leaves_nothing_behind() {
    let db = TestDb::start();
    let stop = Shutdown::new();
    let mut d = delegator(&db, 0, 1, 60, &stop).await;
    let r = results(&db, &stop).await;
    import(&mut d, "racy", 10, 10).await;
    let lease = acquire(&mut d, "f").await.unwrap();
    let pool = db.pool().await;
    // Another writer holds the row of the lease's last URL uncommitted: the Record blocks
    // inside its transaction, after its lease check.
    let mut blocker = pool.begin().await.unwrap();
    let last = lease.urls.last().unwrap().id;
    sqlx::query("INSERT INTO url_results (url_id, job_id, status, reason) VALUES ($1, 1, 'timeout', 'held')")
        .bind(last)
        .execute(&mut *blocker)
        .await
        .unwrap();
    let recording = tokio::spawn({
        let (mut r, req) = (r.clone(), all_ok(&lease));
        async move { r.record(req).await }
    });
    wait_blocked(&pool, "INSERT INTO url_results").await;
    let deleting = tokio::spawn({
        let mut d = d.clone();
        async move { d.delete_job(DeleteJobRequest { job: "racy".into() }).await }
    });
    // Either the delete waits for the Record's lease lock (fixed: a second lock waiter) or it
    // runs to the end.
    wait_until("the delete blocked or finished", 20, || async {
        deleting.is_finished() || lock_waiters(&pool).await >= 2
    })
    .await;
    blocker.rollback().await.unwrap();
    let recorded = recording.await.unwrap();
    deleting.await.unwrap().unwrap();
    if let Ok(out) = &recorded {
        let out = out.get_ref();
        assert!(out.duplicates < 1000 && out.unknown < 1000, "counts from one snapshot: {out:?}");
    }
    assert_eq!(rows_of_job(&pool, 1).await, 0, "DeleteJob left rows of the job behind");
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_job_state_machine_refuses_what_cannot_finish_and_finishes_what_was_interrupted() {
    let db = TestDb::start();
    let stop = Shutdown::new();
    // A 1 s TTL: the sweeper runs every 250 ms.
    let mut d = delegator(&db, 0, 1, 1, &stop).await;
    let mut r = results(&db, &stop).await;
    let pool = db.pool().await;
    let d2 = d.clone();
    let state = |job: &'static str| {
        let mut d = d2.clone();
        async move {
            let jobs = d.list_jobs(ListJobsRequest {}).await.unwrap().into_inner().jobs;
            jobs.into_iter().find(|j| j.job.as_ref().unwrap().name == job).map(|j| j.state())
        }
    };
    // Finished jobs show `done`; new URLs make them run again.
    import(&mut d, "short", 10, 10).await;
    let l = acquire(&mut d, "f").await.unwrap();
    r.record(all_ok(&l)).await.unwrap();
    d.complete_lease(CompleteLeaseRequest { lease: lref(&l) }).await.unwrap();
    wait_until("short is done", 20, || async { state("short").await == Some(JobState::Done) }).await;
    let more = AppendUrlsRequest {
        job: "short".into(),
        first_ordinal: 10,
        urls: vec!["http://x.invalid/n".into()],
        ..Default::default()
    };
    d.append_urls(futures::stream::iter(vec![more])).await.unwrap();
    assert_eq!(state("short").await, Some(JobState::Running));
    // A cancelled job refuses retries, resumes and imports (its URLs could never finish).
    import(&mut d, "gone", 3, 10).await;
    d.cancel_job(CancelJobRequest { job: "gone".into() }).await.unwrap();
    let e =
        d.retry_urls(RetryUrlsRequest { job: "gone".into(), status: "cancelled".into(), force: false }).await;
    assert_eq!(e.unwrap_err().code(), Code::FailedPrecondition);
    let e = d.resume_job(ResumeJobRequest { job: "gone".into() }).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("cancelled"), "{}", e.message());
    // An interrupted cancel (state recorded, URLs not yet marked) is finished by the sweeper.
    import(&mut d, "half-cancelled", 25, 10).await;
    sqlx::query("UPDATE jobs SET state = 'cancelling' WHERE name = 'half-cancelled'")
        .execute(&pool)
        .await
        .unwrap();
    wait_until("cancel finished", 20, || async {
        state("half-cancelled").await == Some(JobState::Cancelled)
    })
    .await;
    let p = d.get_progress(GetProgressRequest { job: "half-cancelled".into() }).await.unwrap().into_inner();
    assert_eq!((p.done_urls, p.total_urls), (25, 25));
    // An interrupted delete is finished by the sweeper too, down to the last row.
    import(&mut d, "half-deleted", 25, 10).await;
    let id: i64 =
        sqlx::query_scalar("UPDATE jobs SET state = 'deleting' WHERE name = 'half-deleted' RETURNING id")
            .fetch_one(&pool)
            .await
            .unwrap();
    let e = d.create_job(CreateJobRequest { name: "half-deleted".into(), ..Default::default() }).await;
    assert!(e.is_err_and(|e| e.code() == Code::FailedPrecondition), "its name is not free yet");
    wait_until("delete finished", 20, || {
        let pool = pool.clone();
        async move { rows_of_job(&pool, id).await == 0 }
    })
    .await;
    stop.cancel();
}
