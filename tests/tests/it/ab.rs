//! Per-job models and A/B: one job whose URLs go to two models by a fixed share, two detector
//! processes (640×640 and 320×320 RetinaFace) found through a real Consul agent by their model
//! tags, one fetcher routing each URL to its model's detectors. Every URL ends exactly once,
//! each with the model its id chose, the share within binomial bounds; progress and export
//! split by model.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use facesweep_cli::client;
use facesweep_common::ab::model_for;
use facesweep_common::consul::ConsulConfig;
use facesweep_common::grpc::channel;
use facesweep_common::Shutdown;
use facesweep_proto::delegator_service_client::DelegatorServiceClient;
use facesweep_proto::*;
use facesweep_tests::detector::DetectorProcess;
use facesweep_tests::site::Site;
use facesweep_tests::*;
use tonic::Code;

const BIG: &str = "retinaface-mnet025-v1";
const SMALL: &str = "retinaface-mnet025-320-v1";
const SHARE: f64 = 0.25;

fn small_model() -> std::path::PathBuf {
    model_path().with_file_name("retinaface_mnet025_320.pt")
}

/// A fetcher on `delegator` and `results` with its detectors set by `detectors` and, when
/// given, a Consul agent to find them through.
async fn fetcher(
    delegator: &str,
    results: &str,
    detectors: impl FnOnce(&mut facesweep_fetcher::Config),
    agent: Option<&ConsulAgent>,
    stop: &Shutdown,
) {
    let mut cfg = facesweep_fetcher::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        delegator: delegator.parse().unwrap(),
        results: results.parse().unwrap(),
        allow_networks: vec!["127.0.0.0/8".parse().unwrap()],
        idle_poll_ms: 100,
        release_backoff_ms: 100,
        ..Default::default()
    };
    detectors(&mut cfg);
    if let Some(agent) = agent {
        cfg.consul =
            ConsulConfig { addr: Some(agent.http.clone()), check_interval_secs: 1, ..Default::default() };
    }
    facesweep_fetcher::spawn(cfg, stop.clone()).await.unwrap();
}

/// Waits (bounded) until every URL of `job` has its result.
async fn wait_job(delegator: &str, job: &str) -> GetProgressResponse {
    let waited = tokio::time::timeout(Duration::from_secs(240), client::wait(delegator, job, true)).await;
    waited.unwrap_or_else(|_| panic!("job {job} did not end in 240 s")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ab_job_splits_by_url_id_and_each_model_serves_its_share() {
    let agent = ConsulAgent::start().await;
    let dir = tmp_dir();
    let big = DetectorProcess::start(&agent, dir.path(), "detector-640", &model_path());
    let small = DetectorProcess::start(&agent, dir.path(), "detector-320", &small_model());
    let db = TestDb::start();
    let stop = Shutdown::new();
    let delegator = services::delegator_addr(&db, &stop).await;
    let results = services::results_addr(&db, &stop).await;
    let by_tag = |c: &mut facesweep_fetcher::Config| {
        c.detector = "consul://facesweep-detector".parse().unwrap();
        c.concurrency = 8;
    };
    fetcher(&delegator, &results, by_tag, Some(&agent), &stop).await;
    let mut d = DelegatorServiceClient::new(channel(&delegator).unwrap());

    // Malformed model choices are refused before anything is stored.
    for bad in [
        ModelSplit { model_id: "a b".into(), ..Default::default() },
        ModelSplit { alt_model_id: SMALL.into(), alt_share: 1.5, ..Default::default() },
        ModelSplit { alt_share: 0.5, ..Default::default() },
        ModelSplit { model_id: BIG.into(), alt_model_id: BIG.into(), alt_share: 0.5 },
    ] {
        let req = CreateJobRequest { name: "bad".into(), models: Some(bad), ..Default::default() };
        assert_eq!(d.create_job(req).await.unwrap_err().code(), Code::InvalidArgument);
    }

    let site = Site::start(30).await;
    let urls = site.urls();
    let list = dir.path().join("urls.txt");
    std::fs::write(&list, urls.join("\n")).unwrap();
    let split = ModelSplit { model_id: BIG.into(), alt_model_id: SMALL.into(), alt_share: SHARE };
    let opts = client::ImportOptions { quiet: true, models: Some(split.clone()), ..Default::default() };
    client::import(&delegator, "ab", &client::UrlInput::File(list.clone()), opts).await.unwrap();
    // The same job with other models is refused; with the same ones it is the same job.
    let other = ModelSplit { alt_share: 0.5, ..split.clone() };
    let again = |m| CreateJobRequest { name: "ab".into(), models: Some(m), ..Default::default() };
    assert_eq!(d.create_job(again(other)).await.unwrap_err().code(), Code::FailedPrecondition);
    assert!(!d.create_job(again(split.clone())).await.unwrap().into_inner().created);

    let p = wait_job(&delegator, "ab").await;

    let out = dir.path().join("ab.jsonl");
    client::export(&results, "ab", &out).await.unwrap();
    let lines = read_jsonl(&out);
    let ids: HashSet<i64> = lines.iter().map(|l| l["url_id"].as_i64().unwrap()).collect();
    assert_eq!((lines.len(), ids.len()), (urls.len(), urls.len()), "every URL exactly once");
    // Each photo went to the model its id chose, and was detected there.
    let mut per_model: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let photos: HashSet<&str> = site.photos.iter().map(|(u, _)| u.as_str()).collect();
    for l in lines.iter().filter(|l| photos.contains(l["url"].as_str().unwrap())) {
        let id = l["url_id"].as_i64().unwrap();
        assert_eq!(l["status"], "ok", "{l}");
        assert_eq!(l["model_id"], model_for(id, BIG, SMALL, SHARE), "{l}");
        let e = per_model.entry(l["model_id"].as_str().unwrap().to_string()).or_default();
        *e = (e.0 + 1, e.1 + l["faces"].as_array().unwrap().len() as i64);
    }
    // The share: Binomial(n, 0.25) within 4.5 standard deviations.
    let n = photos.len() as f64;
    let small_n = per_model.get(SMALL).map_or(0, |m| m.0) as f64;
    let bound = 4.5 * (n * SHARE * (1.0 - SHARE)).sqrt();
    assert!(
        (small_n - n * SHARE).abs() <= bound,
        "{small_n} of {n} photos to {SMALL}, want {} ± {bound:.0}",
        n * SHARE
    );
    // Each detector process ran only its own model's images.
    assert_eq!(small.images().await as f64, small_n, "the 320 detector ran exactly its share");
    assert_eq!(big.images().await as f64, n - small_n, "the 640 detector ran the rest");

    // Progress and export split by model, and agree with the export.
    let got: BTreeMap<String, (i64, i64)> =
        p.by_model.iter().map(|m| (m.model_id.clone(), (m.ok_urls, m.faces))).collect();
    assert_eq!(got, per_model, "GetProgress by_model");
    let only_small = dir.path().join("small.jsonl");
    let req = ExportResultsRequest { job: "ab".into(), model_id: SMALL.into() };
    client::export(&results, req, &only_small).await.unwrap();
    let small_lines = read_jsonl(&only_small);
    assert_eq!(small_lines.len() as f64, small_n);
    assert!(small_lines.iter().all(|l| l["model_id"] == SMALL));
    eprintln!("A/B: {n} photos, {small_n} to {SMALL}; by model {per_model:?}");
    stop.cancel();
}

/// A detector in this process serving `model`; its address.
async fn detector_serving(model: &std::path::Path, stop: &Shutdown) -> String {
    let cfg = facesweep_detector::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        model: model.to_path_buf(),
        device: "cpu".into(),
        max_batch: 4,
        ..Default::default()
    };
    facesweep_detector::spawn(cfg, stop.clone()).await.unwrap().addr.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn static_model_detectors_route_without_consul_and_an_unserved_model_ends_abandoned() {
    let db = TestDb::start();
    let stop = Shutdown::new();
    // Failed leases retried at once, a URL abandoned after two: the unserved model ends fast.
    let tweak = |c: &mut facesweep_delegator::Config| {
        (c.default_chunk_size, c.failure_backoff_ms, c.split_after, c.abandon_after) = (5, 0, 1, 2);
    };
    let delegator = services::delegator_tweaked(&db, tweak, &stop).await;
    let results = services::results_addr(&db, &stop).await;
    let (big, small) =
        (detector_serving(&model_path(), &stop).await, detector_serving(&small_model(), &stop).await);
    let routes = |c: &mut facesweep_fetcher::Config| {
        c.detector = big.parse().unwrap();
        c.model_detector = vec![(SMALL.to_string(), small.parse().unwrap())];
    };
    fetcher(&delegator, &results, routes, None, &stop).await;

    let site = Site::start(2).await;
    let photos: Vec<String> = site.photos.iter().map(|(u, _)| u.clone()).collect();
    let jobs = [
        ("half", ModelSplit { alt_model_id: SMALL.into(), alt_share: 0.5, ..Default::default() }),
        ("unserved", ModelSplit { model_id: "no-such-model".into(), ..Default::default() }),
    ];
    for (job, models) in &jobs {
        let opts = client::ImportOptions { quiet: true, models: Some(models.clone()), ..Default::default() };
        client::import(&delegator, job, &client::UrlInput::List(photos.clone()), opts).await.unwrap();
    }
    for (job, models) in &jobs {
        let p = wait_job(&delegator, job).await;
        assert_eq!(p.done_urls, photos.len() as i64);
        let out = std::path::PathBuf::from(format!("{}/{job}.jsonl", tmp_dir().keep().display()));
        client::export(&results, *job, &out).await.unwrap();
        for l in read_jsonl(&out) {
            let id = l["url_id"].as_i64().unwrap();
            if models.model_id.is_empty() {
                // "" is the detectors' default: the --detector pool's own model.
                assert_eq!(l["status"], "ok", "{l}");
                assert_eq!(l["model_id"], model_for(id, BIG, SMALL, models.alt_share), "{l}");
            } else {
                assert_eq!(l["status"], "abandoned", "{l}");
                assert!(l["reason"].as_str().unwrap().contains("no detector serves model"), "{l}");
            }
        }
    }
    stop.cancel();
}
