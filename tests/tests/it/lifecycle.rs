//! Job lifecycle on real delegator and results services: pause hands out no lease and takes
//! back those out at their next renewal, resume hands out again, cancel revokes leases and ends every unprocessed URL with
//! `cancelled` (exactly one terminal status each), ListJobs and priorities.

use facesweep_common::Shutdown;
use facesweep_proto::*;
use facesweep_tests::services::*;
use facesweep_tests::*;
use tonic::Code;

fn ok(l: &Lease, n: usize) -> RecordRequest {
    let results = l.urls[..n]
        .iter()
        .map(|u| UrlResult { url_id: u.id, status: UrlStatus::Ok as i32, ..Default::default() })
        .collect();
    RecordRequest { results, lease: lref(l) }
}

#[tokio::test(flavor = "multi_thread")]
async fn pause_stops_new_leases_and_resume_restarts_them() {
    let db = TestDb::start();
    let stop = Shutdown::new();
    let mut d = delegator(&db, 0, 1, 60, &stop).await;
    let mut r = results(&db, &stop).await;
    import(&mut d, "pausable", 30, 10).await;
    let (out, held) = (acquire(&mut d, "f").await.unwrap(), acquire(&mut d, "g").await.unwrap());
    let paused = d.pause_job(PauseJobRequest { job: "pausable".into() }).await.unwrap().into_inner();
    assert_eq!(paused.job.unwrap().state(), JobState::Paused);
    assert!(acquire(&mut d, "f").await.is_none(), "a paused job hands out no lease");
    // A lease already out that finishes before its next renewal completes normally.
    r.record(ok(&out, 10)).await.unwrap();
    assert!(d.complete_lease(CompleteLeaseRequest { lease: lref(&out) }).await.unwrap().into_inner().done);
    // One still working is handed back at its next renewal: pause does not wait for chunks.
    r.record(ok(&held, 3)).await.unwrap();
    let e = d.renew_lease(RenewLeaseRequest { lease: lref(&held) }).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("paused") && e.message().contains("resume"), "{}", e.message());
    let e = r.record(ok(&held, 10)).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "a handed-back lease records nothing more");
    let e = d.resume_job(ResumeJobRequest { job: "nope".into() }).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    d.resume_job(ResumeJobRequest { job: "pausable".into() }).await.unwrap();
    let (x, y) = (acquire(&mut d, "f").await.unwrap(), acquire(&mut d, "f").await.unwrap());
    let again = if x.chunk_no == held.chunk_no { x } else { y };
    assert_eq!(again.chunk_no, held.chunk_no, "resumed: the handed-back chunk is leased again");
    let open: Vec<i64> = again.urls.iter().map(|u| u.id).collect();
    assert_eq!(open, held.urls[3..].iter().map(|u| u.id).collect::<Vec<_>>(), "only URLs without a result");
    // Asking for the state a job is in is a no-op, not an error.
    let again = d.resume_job(ResumeJobRequest { job: "pausable".into() }).await.unwrap().into_inner();
    assert_eq!(again.job.unwrap().state(), JobState::Running);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_revokes_leases_and_ends_every_open_url_once() {
    let db = TestDb::start();
    let stop = Shutdown::new();
    let mut d = delegator(&db, 0, 1, 60, &stop).await;
    let mut r = results(&db, &stop).await;
    import(&mut d, "doomed", 45, 10).await;
    let (a, b) = (acquire(&mut d, "f").await.unwrap(), acquire(&mut d, "f").await.unwrap());
    import(&mut d, "other", 5, 10).await;
    r.record(ok(&a, 10)).await.unwrap();
    d.complete_lease(CompleteLeaseRequest { lease: lref(&a) }).await.unwrap();
    r.record(ok(&b, 4)).await.unwrap();
    let c = d.cancel_job(CancelJobRequest { job: "doomed".into() }).await.unwrap().into_inner();
    // 45 URLs: 14 had results, 31 did not.
    assert_eq!(c.urls_cancelled, 31);
    assert_eq!(c.job.as_ref().unwrap().state(), JobState::Cancelled);
    // The revoked holder can neither record nor complete.
    let e = r.record(ok(&b, 6)).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let e = d.complete_lease(CompleteLeaseRequest { lease: lref(&b) }).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let p = d.get_progress(GetProgressRequest { job: "doomed".into() }).await.unwrap().into_inner();
    assert_eq!((p.done_urls, p.total_urls, p.chunks_done, p.chunks_leased), (45, 45, 5, 0));
    let count = |s: &str| p.by_status.iter().find(|c| c.status == s).map_or(0, |c| c.count);
    assert_eq!((count("ok"), count("cancelled")), (14, 31));
    // Exactly one result per URL, in the table itself.
    let pool = db.pool().await;
    let (rows, urls): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM url_results WHERE job_id = 1), (SELECT count(*) FROM urls WHERE job_id = 1)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((rows, urls), (45, 45));
    // Nothing of it is leased again; the other job still is. Cancelling twice is harmless;
    // a cancelled job takes no URLs and cannot be paused.
    let next = acquire(&mut d, "f").await.unwrap();
    assert_eq!(next.job_name, "other");
    let again = d.cancel_job(CancelJobRequest { job: "doomed".into() }).await.unwrap().into_inner();
    assert_eq!(again.urls_cancelled, 0);
    let more = AppendUrlsRequest {
        job: "doomed".into(),
        first_ordinal: 45,
        urls: vec!["http://x.invalid/".into()],
        ..Default::default()
    };
    let e = d.append_urls(futures::stream::iter(vec![more])).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let e = d.pause_job(PauseJobRequest { job: "doomed".into() }).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    stop.cancel();
}

/// The last completed lease makes its job `done` at once: `facesweep jobs` right after a
/// `run` says done, not running until the sweeper's next pass (5 s at this lease lifetime).
#[tokio::test(flavor = "multi_thread")]
async fn a_job_is_done_when_its_last_lease_completes() {
    let db = TestDb::start();
    let stop = Shutdown::new();
    let mut d = delegator(&db, 0, 1, 60, &stop).await;
    let mut r = results(&db, &stop).await;
    import(&mut d, "quick", 20, 10).await;
    let state = |d: &mut facesweep_proto::delegator_service_client::DelegatorServiceClient<_>| {
        let mut d = d.clone();
        async move {
            let jobs = d.list_jobs(ListJobsRequest {}).await.unwrap().into_inner().jobs;
            jobs.iter().find(|j| j.job.as_ref().unwrap().name == "quick").unwrap().state()
        }
    };
    for last in [false, true] {
        let l = acquire(&mut d, "f").await.unwrap();
        r.record(ok(&l, 10)).await.unwrap();
        d.complete_lease(CompleteLeaseRequest { lease: lref(&l) }).await.unwrap();
        let expected = if last { JobState::Done } else { JobState::Running };
        assert_eq!(state(&mut d).await, expected, "after the {} lease", if last { "last" } else { "first" });
    }
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn list_jobs_shows_state_counts_and_changed_priority() {
    let db = TestDb::start();
    let stop = Shutdown::new();
    let mut d = delegator(&db, 0, 1, 60, &stop).await;
    let mut r = results(&db, &stop).await;
    import(&mut d, "b-job", 10, 10).await;
    import(&mut d, "a-job", 7, 10).await;
    let l = acquire(&mut d, "f").await.unwrap();
    r.record(ok(&l, 3)).await.unwrap();
    d.pause_job(PauseJobRequest { job: "a-job".into() }).await.unwrap();
    let set = SetJobPriorityRequest { job: "b-job".into(), priority: 7 };
    let s = d.set_job_priority(set).await.unwrap().into_inner().job.unwrap();
    assert_eq!(s.job.unwrap().priority, 7);
    let jobs = d.list_jobs(ListJobsRequest {}).await.unwrap().into_inner().jobs;
    let view: Vec<(String, JobState, i32, i64, i64)> = jobs
        .iter()
        .map(|j| {
            let job = j.job.as_ref().unwrap();
            (job.name.clone(), j.state(), job.priority, j.done_urls, j.total_urls)
        })
        .collect();
    let done_a = if l.job_name == "a-job" { 3 } else { 0 };
    assert_eq!(
        view,
        [
            ("a-job".into(), JobState::Paused, 0, done_a, 7),
            ("b-job".into(), JobState::Running, 7, 3 - done_a, 10)
        ]
    );
    stop.cancel();
}

/// Cancel while the whole mesh is working on the job: fetchers holding revoked leases move on,
/// every URL ends with exactly one result (ok or cancelled), and the mesh keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelling_a_job_the_mesh_is_working_on_ends_every_url_once() {
    use facesweep_cli::client::{self, ImportOptions, UrlInput};
    use facesweep_cli::{httpserve, Mesh, MeshOptions};
    let mut routes = httpserve::Routes::default();
    let photos = routes.add_dir(&samples_dir()).unwrap();
    let (addr, _server) = httpserve::serve(routes).await.unwrap();
    let url = |i: usize| format!("http://{addr}/{}?n={i}", photos[i % photos.len()]);
    let dir = tmp_dir();
    let mut opts = MeshOptions::new(dir.path(), model_path());
    opts.durability = facesweep_pgembed::Durability::Ephemeral;
    opts.chunk_size = 10;
    let mesh = Mesh::start(opts).await.unwrap();
    let d = mesh.delegator.to_string();
    let quiet = ImportOptions { quiet: true, ..Default::default() };
    client::import(&d, "big", &UrlInput::List((0..300).map(url).collect()), quiet).await.unwrap();
    wait_until("10 results", 120, || async { client::progress(&d, "big").await.unwrap().done_urls >= 10 })
        .await;
    let c = client::delegator(&d)
        .await
        .unwrap()
        .cancel_job(CancelJobRequest { job: "big".into() })
        .await
        .unwrap();
    let cancelled = c.into_inner().urls_cancelled;
    assert!(cancelled > 0 && cancelled < 300, "{cancelled} URLs cancelled");
    let p = client::progress(&d, "big").await.unwrap();
    assert_eq!((p.done_urls, p.total_urls), (300, 300));
    let count = |s: &str| p.by_status.iter().find(|c| c.status == s).map_or(0, |c| c.count);
    assert_eq!(count("cancelled"), cancelled);
    let out = dir.path().join("big.jsonl");
    let sum = client::export(&mesh.results.to_string(), "big", &out).await.unwrap();
    let ids: std::collections::HashSet<i64> =
        read_jsonl(&out).iter().map(|l| l["url_id"].as_i64().unwrap()).collect();
    assert_eq!((sum.lines, ids.len()), (300, 300));
    assert_eq!(sum.by_status.get("pending"), None);
    // Fetchers whose leases were revoked carry on: the next job finishes.
    let after: Vec<String> = (1000..1008).map(url).collect();
    let out = dir.path().join("after.jsonl");
    let s = facesweep_cli::run_job(&mesh, "after", &UrlInput::List(after), &out, true).await.unwrap();
    assert_eq!(s.export.by_status.get("ok"), Some(&8));
    mesh.stop().await.unwrap();
}
