//! Honest per-service metrics and the dashboard and alert rules over them, on a live embedded
//! mesh (`facesweep up/run`): each service's `/metrics` port serves its own families and no
//! other's, and every metric a Grafana panel or an alert rule names exists in a scrape.

use std::collections::{BTreeMap, BTreeSet};

use facesweep_cli::client::UrlInput;
use facesweep_cli::{run_job, Mesh, MeshOptions};
use facesweep_pgembed::Durability;
use facesweep_tests::site::Site;
use facesweep_tests::*;
use serde_json::Value;

/// Each port of `Mesh::metrics` (delegator, detector, results, fetcher) and the family name
/// prefixes that service owns.
const OWNERS: [(&str, &[&str]); 4] = [
    ("delegator", &["facesweep_leases_", "facesweep_backlog_", "facesweep_urls_"]),
    ("detector", &["facesweep_detector_"]),
    ("results", &["facesweep_results_"]),
    ("fetcher", &["facesweep_fetch_", "facesweep_discovery_"]),
];

/// Family name -> type, from the `# TYPE` lines of a scrape.
fn families(text: &str) -> BTreeMap<String, String> {
    let types = text.lines().filter_map(|l| l.strip_prefix("# TYPE "));
    types.filter_map(|t| t.split_once(' ')).map(|(n, k)| (n.to_string(), k.to_string())).collect()
}

/// Every `facesweep_…` identifier in `text` (PromQL parsed loosely).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("facesweep_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

/// `name` as a scraped family: a histogram's `_bucket`/`_sum`/`_count` series name its family.
fn family_of<'a>(name: &'a str, scraped: &BTreeMap<String, String>) -> Option<&'a str> {
    if scraped.contains_key(name) {
        return Some(name);
    }
    let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s))?;
    (scraped.get(base).map(String::as_str) == Some("histogram")).then_some(base)
}

/// The dashboard's shape as Grafana needs it; returns every PromQL expression in it.
fn dashboard_exprs(d: &Value) -> Vec<String> {
    let vars = d["templating"]["list"].as_array().expect("templating.list");
    assert!(
        vars.iter().any(|v| v["type"] == "datasource" && v["name"] == "datasource"),
        "no datasource variable"
    );
    let mut exprs: Vec<String> =
        vars.iter().filter_map(|v| v["definition"].as_str().map(String::from)).collect();
    let mut ids = BTreeSet::new();
    for p in d["panels"].as_array().expect("panels") {
        let title = p["title"].as_str().expect("every panel has a title");
        assert!(ids.insert(p["id"].as_u64().expect("numeric id")), "duplicate panel id in {title}");
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_u64().unwrap(), g["w"].as_u64().unwrap());
        assert!(x + w <= 24 && g["h"].as_u64().unwrap() > 0, "{title}: gridPos {g} outside the 24 columns");
        if p["type"] == "row" {
            continue;
        }
        assert!(["timeseries", "stat"].contains(&p["type"].as_str().unwrap()), "{title}: type {}", p["type"]);
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}: datasource");
        let targets = p["targets"].as_array().filter(|t| !t.is_empty()).expect("a panel has targets");
        for t in targets {
            let e = t["expr"].as_str().filter(|e| !e.is_empty()).expect("a target has an expr");
            assert!(t["refId"].is_string(), "{title}: target without refId");
            exprs.push(e.to_string());
        }
    }
    exprs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_port_serves_its_own_families_and_every_panel_and_alert_metric_exists() {
    let site = Site::start(1).await;
    let dir = tmp_dir();
    let mut opts = MeshOptions::new(dir.path(), model_path());
    opts.durability = Durability::Ephemeral;
    opts.metrics = true;
    opts.chunk_size = 4; // several leases: lease and result series move
    opts.timeout_ms = 10_000;
    let mesh = Mesh::start(opts).await.unwrap();
    assert_eq!(mesh.metrics.len(), 4, "metrics ports: {:?}", mesh.metrics);
    let list = dir.path().join("urls.txt");
    std::fs::write(&list, site.urls().join("\n")).unwrap();
    let out = dir.path().join("out.jsonl");
    run_job(&mesh, "dash", &UrlInput::File(list), &out, true).await.unwrap();

    let mut all = BTreeMap::new();
    let mut seen_on: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for (addr, (service, prefixes)) in mesh.metrics.iter().zip(OWNERS) {
        let text = http_get(&addr.to_string(), "/metrics").await.expect("a scrape");
        let fams = families(&text);
        assert!(!fams.is_empty(), "{service} ({addr}) serves no metrics");
        for name in fams.keys() {
            assert!(prefixes.iter().any(|p| name.starts_with(p)), "{service}'s port serves {name}");
            seen_on.entry(name.clone()).or_default().push(service);
        }
        for p in prefixes {
            assert!(fams.keys().any(|n| n.starts_with(p)), "{service}'s port has no {p}* family:\n{text}");
        }
        all.extend(fams);
    }
    let twice: Vec<_> = seen_on.iter().filter(|(_, s)| s.len() > 1).collect();
    assert!(twice.is_empty(), "families on more than one port: {twice:?}");

    let root = repo_root().join("docs/grafana");
    let dash: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("facesweep.json")).unwrap()).unwrap();
    let exprs = dashboard_exprs(&dash);
    let alerts = std::fs::read_to_string(root.join("alerts.yaml")).unwrap();
    for a in [
        "FacesweepNoProgress",
        "FacesweepAbandonedRate",
        "FacesweepDetectorNotServing",
        "FacesweepLeaseExpiries",
    ] {
        assert!(alerts.contains(&format!("alert: {a}\n")), "alerts.yaml has no {a}");
    }
    let used: BTreeSet<String> =
        exprs.iter().map(|e| metric_names(e)).chain([metric_names(&alerts)]).flatten().collect();
    assert!(used.len() >= 15, "the dashboard and alerts name only {used:?}");
    let missing: Vec<_> = used.iter().filter(|n| family_of(n, &all).is_none()).collect();
    assert!(
        missing.is_empty(),
        "named by a panel or alert but not scraped: {missing:?}\nscraped: {:?}",
        all.keys()
    );
    println!(
        "{} families on 4 ports, each on one; {} metric names in panels and alerts, all scraped",
        all.len(),
        used.len()
    );
    mesh.stop().await.unwrap();
}

#[test]
fn loose_promql_parsing_finds_names_and_histogram_families() {
    let names = metric_names(
        r#"histogram_quantile(0.9, sum by (le) (rate(facesweep_x_seconds_bucket{a="b"}[5m]))) / facesweep_y"#,
    );
    assert_eq!(names, BTreeSet::from(["facesweep_x_seconds_bucket".to_string(), "facesweep_y".to_string()]));
    let scraped = BTreeMap::from([("facesweep_x_seconds".to_string(), "histogram".to_string())]);
    assert_eq!(family_of("facesweep_x_seconds_bucket", &scraped), Some("facesweep_x_seconds"));
    assert_eq!(family_of("facesweep_x_seconds_total", &scraped), None);
    let counter = BTreeMap::from([("facesweep_c".to_string(), "counter".to_string())]);
    assert_eq!(family_of("facesweep_c_sum", &counter), None);
}

/// `facesweep_leases_granted_total` as scraped from `metrics`.
async fn leases_granted(metrics: std::net::SocketAddr) -> u64 {
    let text = http_get(&metrics.to_string(), "/metrics").await.expect("a scrape");
    let value = text.lines().find_map(|l| l.strip_prefix("facesweep_leases_granted_total "));
    value.unwrap_or_else(|| panic!("no leases_granted on {metrics}:\n{text}")).parse().unwrap()
}

/// Two delegators in one process (as in an embedded mesh, or this test binary): each port
/// counts its own instance's leases, not the process's sum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_delegators_in_one_process_each_count_their_own_leases() {
    let db = TestDb::start();
    let stop = facesweep_common::Shutdown::new();
    let start = || {
        let cfg = facesweep_delegator::Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
            ..facesweep_delegator::Config::new(db.pg.url())
        };
        facesweep_delegator::spawn(cfg, stop.clone())
    };
    let (a, b) = (start().await.unwrap(), start().await.unwrap());
    let (a_metrics, b_metrics) = (a.metrics.expect("a's port"), b.metrics.expect("b's port"));
    assert_ne!(a_metrics, b_metrics);
    let channel = facesweep_common::grpc::channel(&a.addr.to_string()).unwrap();
    let mut d = facesweep_proto::delegator_service_client::DelegatorServiceClient::new(channel);
    let n = 5;
    services::import(&mut d, "apart", n * 10, 10).await;
    for _ in 0..n {
        services::acquire(&mut d, "f").await.expect("a chunk to lease");
    }
    assert_eq!(leases_granted(a_metrics).await, n as u64, "the delegator that granted them");
    assert_eq!(leases_granted(b_metrics).await, 0, "the other delegator granted none");
    stop.cancel();
}
