//! Results are live per URL, not per lease: a watcher sees each result about a second after
//! its download ends while the rest of the lease is still downloading, and a cancel keeps
//! the work already finished (it loses at most one small batch).

use std::time::{Duration, Instant};

use facesweep_cli::httpserve::{serve, Routes};
use facesweep_cli::{Mesh, MeshOptions};
use facesweep_pgembed::Durability;
use facesweep_proto::delegator_service_client::DelegatorServiceClient;
use facesweep_proto::results_service_client::ResultsServiceClient;
use facesweep_proto::*;
use facesweep_tests::*;

const FAST: usize = 4;
const SLOW: usize = 4;
/// Far longer than detecting the fast photos takes, shorter than the fetcher's first-byte
/// timeout (10 s): the slow URLs are still downloading when the fast results must show.
const SLOW_DELAY: Duration = Duration::from_secs(8);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn results_reach_watchers_per_url_while_the_lease_runs_and_cancel_keeps_them() {
    let photo = std::fs::read(samples_dir().join("grace_hopper.jpg")).unwrap();
    let mut routes = Routes::default();
    for i in 0..FAST {
        routes.add(&format!("/fast{i}.jpg"), 200, "image/jpeg", photo.clone());
    }
    for i in 0..SLOW {
        routes.add_slow(&format!("/slow{i}.jpg"), "image/jpeg", photo.clone(), SLOW_DELAY);
    }
    let served = routes.served();
    let (addr, _site) = serve(routes).await.unwrap();

    let dir = tmp_dir();
    let mut opts = MeshOptions::new(dir.path(), small_model(dir.path()));
    opts.durability = Durability::Ephemeral;
    let mesh = Mesh::start(opts).await.unwrap();
    let mut d = DelegatorServiceClient::connect(format!("http://{}", mesh.delegator)).await.unwrap();
    let r = ResultsServiceClient::connect(format!("http://{}", mesh.results)).await.unwrap();

    // One chunk, so one lease holds the fast and the slow URLs together.
    let create = CreateJobRequest { name: "live".into(), chunk_size: 100, ..Default::default() };
    d.create_job(create).await.unwrap();
    let urls: Vec<String> = (0..FAST)
        .map(|i| format!("http://{addr}/fast{i}.jpg"))
        .chain((0..SLOW).map(|i| format!("http://{addr}/slow{i}.jpg")))
        .collect();
    let msg = AppendUrlsRequest { job: "live".into(), urls, ..Default::default() };
    d.append_urls(futures::stream::iter(vec![msg])).await.unwrap();

    let watch = WatchResultsRequest { job: "live".into(), after: String::new() };
    let mut stream = r.clone().watch_results(watch).await.unwrap().into_inner();
    let mut latencies = Vec::new();
    while latencies.len() < FAST {
        let m = tokio::time::timeout(SLOW_DELAY, stream.message())
            .await
            .expect("the fast URLs' results arrive while the slow ones still download")
            .unwrap()
            .expect("the stream stays open while the job runs");
        let seen = Instant::now();
        let path = m.url.rsplit_once('/').map(|(_, p)| format!("/{p}")).unwrap();
        assert!(path.starts_with("/fast"), "{path} came before the fast URLs' results");
        let answered = served.lock().unwrap().iter().find(|(p, _)| *p == path).map(|(_, t)| *t).unwrap();
        latencies.push(seen.duration_since(answered));
    }
    let slow_done = served.lock().unwrap().iter().filter(|(p, _)| p.starts_with("/slow")).count();
    assert_eq!(slow_done, 0, "the fast results waited for the slow downloads");
    latencies.sort();
    println!("download end → watch, per fast URL: {latencies:?}");

    // Cancelling now keeps what is done: the fast URLs stay ok, only the slow ones are cancelled.
    d.cancel_job(CancelJobRequest { job: "live".into() }).await.unwrap();
    let export = ExportResultsRequest { job: "live".into(), model_id: String::new() };
    let mut lines = r.clone().export_results(export).await.unwrap().into_inner();
    let (mut ok, mut cancelled) = (0, 0);
    while let Some(l) = lines.message().await.unwrap() {
        match l.result.map(|r| r.status()) {
            Some(UrlStatus::Ok) if l.url.contains("/fast") => ok += 1,
            Some(UrlStatus::Cancelled) if l.url.contains("/slow") => cancelled += 1,
            other => panic!("{}: {other:?}", l.url),
        }
    }
    assert_eq!((ok, cancelled), (FAST, SLOW), "cancel kept the finished work");
    mesh.stop().await.unwrap();
}
