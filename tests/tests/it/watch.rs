//! WatchResults on real services: a watcher that joins mid-job, disconnects and resumes from
//! its cursor while results keep landing ends with every URL exactly once.

use std::time::Duration;

use facesweep_common::Shutdown;
use facesweep_proto::*;
use facesweep_tests::services::*;
use facesweep_tests::TestDb;
use tonic::Code;

async fn finish(
    d: &mut facesweep_proto::delegator_service_client::DelegatorServiceClient<tonic::transport::Channel>,
    r: &mut facesweep_proto::results_service_client::ResultsServiceClient<tonic::transport::Channel>,
    leases: usize,
) {
    for _ in 0..leases {
        let l = acquire(d, "f").await.unwrap();
        // Two Record calls per lease: two transactions, as a fetcher's batches are.
        for half in l.urls.chunks(5) {
            let results = half
                .iter()
                .map(|u| UrlResult { url_id: u.id, status: UrlStatus::Ok as i32, ..Default::default() })
                .collect();
            r.record(RecordRequest { results, lease: lref(&l) }).await.unwrap();
        }
        d.complete_lease(CompleteLeaseRequest { lease: lref(&l) }).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resumed_watcher_sees_every_url_exactly_once() {
    let db = TestDb::start();
    let stop = Shutdown::new();
    let mut d = delegator(&db, 0, 1, 60, &stop).await;
    let mut r = results(&db, &stop).await;
    import(&mut d, "live", 60, 10).await;
    finish(&mut d, &mut r, 2).await;

    let watch = |after: String| WatchResultsRequest { job: "live".into(), after };
    let mut first = r.clone().watch_results(watch(String::new())).await.unwrap().into_inner();
    let mut seen = Vec::new();
    let mut cursor = String::new();
    while seen.len() < 15 {
        let m = first.message().await.unwrap().expect("the first 20 results are there");
        seen.push(m.result.unwrap().url_id);
        cursor = m.cursor;
    }
    drop(first);
    // Resume from the cursor while the rest of the job is processed.
    let mut second = r.clone().watch_results(watch(cursor)).await.unwrap().into_inner();
    let reader = tokio::spawn(async move {
        let mut ids = Vec::new();
        while let Some(m) = second.message().await.unwrap() {
            assert_eq!(m.result.as_ref().unwrap().status(), UrlStatus::Ok);
            ids.push(m.result.unwrap().url_id);
        }
        ids
    });
    finish(&mut d, &mut r, 4).await;
    let rest = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("the stream ends once the job is finished")
        .unwrap();
    seen.extend(rest);
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!((seen.len(), unique.len()), (60, 60), "every URL exactly once");

    let e = r.watch_results(watch("not-a-cursor".into())).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    stop.cancel();
}
