//! Discovery against a real `consul agent -dev`: every service registers with a gRPC health
//! check, the fetcher finds delegator, results and detectors through Consul's health API and
//! balances detectors with p2c. Two detector processes share the work; one is killed (-9) and
//! the work goes on with the other; a new one is added and receives work; SIGTERM deregisters.

use std::collections::BTreeSet;
use std::time::Duration;

use facesweep_cli::httpserve::{serve, Routes};
use facesweep_common::consul::{Consul, ConsulConfig};
use facesweep_common::discovery::Target;
use facesweep_common::grpc::channel;
use facesweep_common::Shutdown;
use facesweep_proto::delegator_service_client::DelegatorServiceClient;
use facesweep_proto::results_service_client::ResultsServiceClient;
use facesweep_proto::*;
use facesweep_tests::detector::DetectorProcess;
use facesweep_tests::*;

fn consul_args(agent: &ConsulAgent) -> ConsulConfig {
    ConsulConfig { addr: Some(agent.http.clone()), check_interval_secs: 1, ..Default::default() }
}

/// The fetcher's view: the `facesweep_discovery_members` gauge for detectors on its port.
async fn known_detectors(fetcher_metrics: std::net::SocketAddr) -> Option<i64> {
    let metrics = http_get(&fetcher_metrics.to_string(), "/metrics").await?;
    let line = r#"facesweep_discovery_members{target="consul://facesweep-detector"} "#;
    metrics.lines().find_map(|l| l.strip_prefix(line)).map(|v| v.trim().parse().unwrap())
}

async fn passing(consul: &Consul, service: &str) -> BTreeSet<String> {
    consul.passing(service, None, 0, Duration::from_secs(1)).await.unwrap().0
}

/// Imports `n` URLs as job `name` and waits until every one has its terminal result.
async fn run_job(
    d: &mut DelegatorServiceClient<tonic::transport::Channel>,
    photos: &[String],
    name: &str,
    n: usize,
) {
    d.create_job(CreateJobRequest { name: name.into(), chunk_size: 4, priority: 0, ..Default::default() })
        .await
        .unwrap();
    let urls = (0..n).map(|i| format!("{}?{name}-{i}", photos[i % photos.len()])).collect();
    let msg = AppendUrlsRequest { job: name.into(), first_ordinal: 0, urls, ..Default::default() };
    d.append_urls(futures::stream::iter(vec![msg])).await.unwrap();
    wait_until(&format!("job {name}: {n} URLs done"), 240, || {
        let mut d = d.clone();
        async move {
            let p = d.get_progress(GetProgressRequest { job: name.into() }).await.unwrap().into_inner();
            p.done_urls == n as i64
        }
    })
    .await;
}

/// Every URL of `job` ended `ok`: no image was failed because a detector went away.
async fn assert_all_ok(results: &mut ResultsServiceClient<tonic::transport::Channel>, job: &str, n: usize) {
    let mut stream = results.export_results(ExportResultsRequest::from(job)).await.unwrap().into_inner();
    let mut ok = 0;
    while let Some(r) = futures::StreamExt::next(&mut stream).await {
        let r = r.unwrap();
        let status = r.result.as_ref().map(|x| x.status);
        assert_eq!(status, Some(UrlStatus::Ok as i32), "{job}: {r:?}");
        ok += 1;
    }
    assert_eq!(ok, n, "{job}: every URL exported once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detectors_come_and_go_through_consul() {
    let agent = ConsulAgent::start().await;
    let consul = Consul::new(&agent.http).unwrap();
    let dir = tmp_dir();
    let db = TestDb::start();
    let stop = Shutdown::new();

    let mut routes = Routes::default();
    let names = routes.add_dir(&samples_dir()).unwrap();
    let (http, _server) = serve(routes).await.unwrap();
    let photos: Vec<String> = names.iter().map(|n| format!("http://{http}/{n}")).collect();

    let results = facesweep_results::spawn(
        facesweep_results::Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            db_connections: 4,
            consul: consul_args(&agent),
            ..facesweep_results::Config::new(db.pg.url())
        },
        stop.clone(),
    )
    .await
    .unwrap();
    let delegator_cfg = facesweep_delegator::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        lease_ttl_secs: 10,
        consul: consul_args(&agent),
        ..facesweep_delegator::Config::new(db.pg.url())
    };
    let delegator = facesweep_delegator::spawn(delegator_cfg, stop.clone()).await.unwrap();

    let mut a = DetectorProcess::start(&agent, dir.path(), "detector-a", &model_path());
    let b = DetectorProcess::start(&agent, dir.path(), "detector-b", &model_path());
    // Registered only once the model is warm, and listed only once the gRPC check passes.
    wait_until("two passing detectors", 120, || async {
        passing(&consul, "facesweep-detector").await.len() == 2
    })
    .await;
    wait_until("delegator and results passing", 30, || async {
        passing(&consul, "facesweep-delegator").await.len() == 1
            && passing(&consul, "facesweep-results").await.len() == 1
    })
    .await;

    let fetcher_stop = Shutdown::new();
    let by_name = |service: &str| Target::Consul { service: service.into(), tag: None };
    let fetcher_cfg = facesweep_fetcher::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        id: Some("discovery-test".into()),
        delegator: by_name("facesweep-delegator"),
        detector: by_name("facesweep-detector"),
        results: by_name("facesweep-results"),
        allow_networks: vec!["127.0.0.0/8".parse().unwrap()],
        leases: 2,
        concurrency: 4,
        idle_poll_ms: 100,
        consul: consul_args(&agent),
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..Default::default()
    };
    let fetcher = facesweep_fetcher::spawn(fetcher_cfg, fetcher_stop.clone()).await.unwrap();
    let fetcher_metrics = fetcher.metrics.expect("the fetcher's metrics port");
    let detectors = || known_detectors(fetcher_metrics);
    wait_until("fetcher registered", 30, || async { passing(&consul, "facesweep-fetcher").await.len() == 1 })
        .await;

    let mut d = DelegatorServiceClient::new(channel(&delegator.addr.to_string()).unwrap());
    let mut r = ResultsServiceClient::new(channel(&results.addr.to_string()).unwrap());

    wait_until("fetcher sees two detectors", 30, || async { detectors().await == Some(2) }).await;

    // 1. Two detectors: p2c over in-flight streams gives both of them leases' images.
    run_job(&mut d, &photos, "both", 40).await;
    assert_all_ok(&mut r, "both", 40).await;
    let (a1, b1) = (a.images().await, b.images().await);
    eprintln!("job 'both': detector a ran {a1} images, b {b1}");
    assert!(a1 > 0 && b1 > 0, "both detectors got work: a={a1} b={b1}");

    // 2. Kill one without warning: its check fails, Consul drops it, work goes on with the other.
    a.kill9();
    wait_until("killed detector out of the passing set", 30, || async {
        passing(&consul, "facesweep-detector").await.len() == 1
    })
    .await;
    wait_until("fetcher drops the killed detector", 30, || async { detectors().await == Some(1) }).await;
    run_job(&mut d, &photos, "one", 40).await;
    assert_all_ok(&mut r, "one", 40).await;
    assert!(b.images().await >= b1 + 40, "the survivor ran the whole job: {} -> {}", b1, b.images().await);

    // 3. A new detector joins and receives work.
    let c = DetectorProcess::start(&agent, dir.path(), "detector-c", &model_path());
    wait_until("new detector passing", 120, || async {
        passing(&consul, "facesweep-detector").await.len() == 2
    })
    .await;
    wait_until("fetcher sees the new detector", 30, || async { detectors().await == Some(2) }).await;
    run_job(&mut d, &photos, "again", 40).await;
    assert_all_ok(&mut r, "again", 40).await;
    eprintln!("job 'again': detector b at {}, new detector c ran {}", b.images().await, c.images().await);
    assert!(c.images().await > 0, "the new detector got work");

    // 4. SIGTERM deregisters at once (no waiting for a failed check to be reaped).
    c.signal("-TERM");
    b.signal("-TERM");
    fetcher_stop.cancel();
    fetcher.join().await.unwrap();
    stop.cancel();
    results.join().await.unwrap();
    delegator.join().await.unwrap();
    let catalog = |service: &'static str| {
        let (http, path) = (agent.http.clone(), format!("/v1/catalog/service/{service}"));
        async move {
            let body = http_get(&http, &path).await.expect("catalog answers 200");
            serde_json::from_str::<Vec<serde_json::Value>>(&body).unwrap().len()
        }
    };
    wait_until("detectors deregistered", 30, || async { catalog("facesweep-detector").await == 1 }).await;
    for s in ["facesweep-fetcher", "facesweep-results", "facesweep-delegator"] {
        assert_eq!(catalog(s).await, 0, "{s} deregistered on shutdown");
    }
}

/// Under mTLS the agent has no client certificate: the check becomes a TCP check, and it passes.
#[tokio::test]
async fn tls_services_register_a_tcp_check() {
    let agent = ConsulAgent::start().await;
    let consul = Consul::new(&agent.http).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let reg = facesweep_common::consul::Registration {
        id: "tls-1".into(),
        name: "facesweep-tls".into(),
        addr,
        tags: vec![],
        meta: vec![],
        check_interval: Duration::from_secs(1),
        tls: true,
        plain_health: None,
    };
    consul.register(&reg).await.unwrap();
    let body = http_get(&agent.http, "/v1/agent/checks").await.expect("checks answer 200");
    let checks: serde_json::Value = serde_json::from_str(&body).unwrap();
    let check = checks.as_object().unwrap().values().find(|c| c["ServiceID"] == "tls-1").unwrap();
    assert_eq!(check["Type"], "tcp", "{check}");
    wait_until("TCP check passing", 30, || async { passing(&consul, "facesweep-tls").await.len() == 1 })
        .await;
    consul.deregister("tls-1").await.unwrap();
    assert!(!consul.is_registered("tls-1").await.unwrap());
}

/// With ACLs on (default deny), registration needs the token; `CONSUL_HTTP_TOKEN` supplies it.
#[tokio::test]
async fn acl_token_is_sent() {
    let token = "facesweep-test-master-token";
    let hcl = format!(r#"acl {{ enabled = true default_policy = "deny" tokens {{ master = "{token}" }} }}"#);
    let agent = ConsulAgent::start_with(&["-hcl", &hcl]).await;
    let reg = facesweep_common::consul::Registration {
        id: "acl-1".into(),
        name: "facesweep-acl".into(),
        addr: "127.0.0.1:9".parse().unwrap(),
        tags: vec![],
        meta: vec![],
        check_interval: Duration::from_secs(5),
        tls: false,
        plain_health: None,
    };
    let anonymous = Consul::new(&agent.http).unwrap().register(&reg).await.unwrap_err().to_string();
    assert!(anonymous.contains("403"), "{anonymous}");
    let with_token = Consul::with_token(&agent.http, Some(token)).unwrap();
    with_token.register(&reg).await.unwrap();
    assert!(with_token.is_registered("acl-1").await.unwrap());
}
