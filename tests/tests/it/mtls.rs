//! Mutual TLS: a CA and one certificate per service generated here (rcgen); the four services
//! run with mTLS and a job completes with faces. Plaintext clients, clients without a
//! certificate, clients with a certificate from another CA, and a server whose certificate
//! names another role are all refused; grpc.health.v1 alone is also served plaintext.

use std::path::Path;
use std::time::Duration;

use facesweep_cli::httpserve::{serve, Routes};
use facesweep_common::discovery::Target;
use facesweep_common::grpc::{channel, channel_to};
use facesweep_common::tls::{server_name, TlsConfig};
use facesweep_common::Shutdown;
use facesweep_proto::delegator_service_client::DelegatorServiceClient;
use facesweep_proto::results_service_client::ResultsServiceClient;
use facesweep_proto::*;
use facesweep_tests::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose};

struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        Ca { issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap() }
    }

    /// Writes `<name>.pem`, `<name>.key` and `ca.pem` under `dir` for a certificate naming `dns`.
    fn issue(&self, dir: &Path, name: &str, dns: &str) -> TlsConfig {
        let key = KeyPair::generate().unwrap();
        let cert =
            CertificateParams::new(vec![dns.to_string()]).unwrap().signed_by(&key, &self.issuer).unwrap();
        let (c, k, ca) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
            dir.join(format!("{name}-ca.pem")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        std::fs::write(&ca, self.issuer.pem()).unwrap();
        TlsConfig { cert: Some(c), key: Some(k), ca: Some(ca), ..Default::default() }
    }
}

async fn progress(ch: tonic::transport::Channel) -> Result<GetProgressResponse, tonic::Status> {
    let r = progress_once(ch).await;
    if let Err(e) = &r {
        eprintln!("refused: {e}");
    }
    r
}

async fn progress_once(ch: tonic::transport::Channel) -> Result<GetProgressResponse, tonic::Status> {
    let mut client = DelegatorServiceClient::new(ch);
    let call = client.get_progress(GetProgressRequest { job: "tls".into() });
    match tokio::time::timeout(Duration::from_secs(10), call).await {
        Ok(r) => r.map(|r| r.into_inner()),
        Err(_) => Err(tonic::Status::deadline_exceeded("no answer in 10 s")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_speak_mutual_tls_and_refuse_everyone_else() {
    let dir = tmp_dir();
    let ca = Ca::new("facesweep test CA");
    let tls = |role: &str| ca.issue(dir.path(), role, &server_name(role));
    let db = TestDb::start();
    let stop = Shutdown::new();
    let local = "127.0.0.1:0".parse().unwrap();

    let mut routes = Routes::default();
    let names = routes.add_dir(&samples_dir()).unwrap();
    let (http, _server) = serve(routes).await.unwrap();

    let results = facesweep_results::spawn(
        facesweep_results::Config {
            listen: local,
            db_connections: 4,
            tls: tls("results"),
            ..facesweep_results::Config::new(db.pg.url())
        },
        stop.clone(),
    )
    .await
    .unwrap();
    // The plaintext health port is a number the test must know: picked free, and picked
    // again in the rare case another took it before the delegator bound it.
    let (delegator, health_port) = 'bound: {
        for _ in 0..3 {
            let health_port = free_port();
            let cfg = facesweep_delegator::Config {
                listen: local,
                tls: TlsConfig {
                    plaintext_health_listen: Some(format!("127.0.0.1:{health_port}").parse().unwrap()),
                    ..tls("delegator")
                },
                ..facesweep_delegator::Config::new(db.pg.url())
            };
            if let Ok(running) = facesweep_delegator::spawn(cfg, stop.clone()).await {
                break 'bound (running, health_port);
            }
        }
        panic!("the delegator could not bind a plaintext health port three times");
    };
    let detector_cfg = facesweep_detector::Config {
        listen: local,
        device: "cpu".into(),
        model: model_path(),
        tls: tls("detector"),
        ..Default::default()
    };
    let detector = facesweep_detector::spawn(detector_cfg, stop.clone()).await.unwrap();
    let fetcher_stop = Shutdown::new();
    let fetcher_cfg = facesweep_fetcher::Config {
        listen: local,
        allow_networks: vec!["127.0.0.0/8".parse().unwrap()],
        idle_poll_ms: 100,
        delegator: Target::Static(vec![delegator.addr.to_string()]),
        detector: Target::Static(vec![detector.addr.to_string()]),
        results: Target::Static(vec![results.addr.to_string()]),
        tls: tls("fetcher"),
        ..Default::default()
    };
    let fetcher = facesweep_fetcher::spawn(fetcher_cfg, fetcher_stop.clone()).await.unwrap();

    // An operator's client with its own certificate from the CA.
    let client = tls("admin").load().unwrap().unwrap();
    let d_addr = delegator.addr.to_string();
    let mut d = DelegatorServiceClient::new(channel_to(&d_addr, Some(&client), "delegator").unwrap());
    d.create_job(CreateJobRequest { name: "tls".into(), chunk_size: 4, priority: 0, ..Default::default() })
        .await
        .unwrap();
    let urls: Vec<String> = names.iter().map(|n| format!("http://{http}/{n}")).collect();
    let n = urls.len() as i64;
    d.append_urls(futures::stream::iter(vec![AppendUrlsRequest {
        job: "tls".into(),
        first_ordinal: 0,
        urls,
        ..Default::default()
    }]))
    .await
    .unwrap();
    wait_until("the job over mTLS finishes", 120, || async {
        progress(channel_to(&d_addr, Some(&client), "delegator").unwrap()).await.unwrap().done_urls == n
    })
    .await;
    // Every photo went fetcher → detector → results over mTLS and came back with faces.
    let r_ch = channel_to(&results.addr.to_string(), Some(&client), "results").unwrap();
    let mut export = ResultsServiceClient::new(r_ch)
        .export_results(ExportResultsRequest::from("tls"))
        .await
        .unwrap()
        .into_inner();
    let mut faces = 0;
    while let Some(row) = futures::StreamExt::next(&mut export).await {
        let r = row.unwrap().result.expect("terminal result");
        assert_eq!(r.status, UrlStatus::Ok as i32, "{r:?}");
        faces += r.faces.len();
    }
    assert!(faces > 0, "faces found over mTLS");

    // Refused: plaintext, TLS without a client certificate, a certificate from another CA.
    assert!(progress(channel(&d_addr).unwrap()).await.is_err(), "plaintext client refused");
    let ca_only = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(
            std::fs::read(dir.path().join("admin-ca.pem")).unwrap(),
        ))
        .domain_name(server_name("delegator"));
    let no_cert = tonic::transport::Endpoint::from_shared(format!("https://{d_addr}"))
        .unwrap()
        .tls_config(ca_only)
        .unwrap();
    assert!(progress(no_cert.connect_lazy()).await.is_err(), "client without a certificate refused");
    let other_dir = tmp_dir();
    // It trusts our CA (so only the server's check of its certificate can fail).
    let stranger = TlsConfig {
        ca: Some(dir.path().join("admin-ca.pem")),
        ..Ca::new("another CA").issue(other_dir.path(), "stranger", "facesweep-fetcher")
    };
    let stranger = stranger.load().unwrap().unwrap();
    assert!(
        progress(channel_to(&d_addr, Some(&stranger), "delegator").unwrap()).await.is_err(),
        "certificate from another CA refused"
    );
    // The server's certificate must name the role the client asked for.
    assert!(
        progress(channel_to(&d_addr, Some(&client), "results").unwrap()).await.is_err(),
        "delegator's certificate does not pass as the results service"
    );
    assert!(progress(channel_to(&d_addr, Some(&client), "delegator").unwrap()).await.is_ok());

    // Roles: a certificate opens only the calls its role makes.
    let as_role = |role: &str| tls(role).load().unwrap().unwrap();
    let fetcher_id = as_role("fetcher");
    let e = progress(channel_to(&d_addr, Some(&fetcher_id), "delegator").unwrap()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "a fetcher is no admin: {e}");
    let mut as_admin = DelegatorServiceClient::new(channel_to(&d_addr, Some(&client), "delegator").unwrap());
    let e = as_admin
        .acquire_lease(AcquireLeaseRequest { fetcher_id: "x".into(), max_urls: 0 })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "leases are for fetchers: {e}");
    let detector_id = as_role("detector");
    let mut forger = ResultsServiceClient::new(
        channel_to(&results.addr.to_string(), Some(&detector_id), "results").unwrap(),
    );
    let forged = UrlResult { url_id: 1, status: UrlStatus::Ok as i32, ..Default::default() };
    let e = forger.record(RecordRequest { results: vec![forged], lease: None }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "only fetchers record: {e}");

    // Kubelet probes and Consul checks hold no certificate: health alone is served plaintext.
    let plain = channel(&format!("127.0.0.1:{health_port}")).unwrap();
    let req = tonic_health::pb::HealthCheckRequest { service: String::new() };
    let status = tonic_health::pb::health_client::HealthClient::new(plain.clone()).check(req).await.unwrap();
    assert_eq!(
        status.into_inner().status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let other =
        DelegatorServiceClient::new(plain).get_progress(GetProgressRequest { job: "tls".into() }).await;
    assert_eq!(other.unwrap_err().code(), tonic::Code::Unimplemented, "only health is served plaintext");

    fetcher_stop.cancel();
    fetcher.join().await.unwrap();
    stop.cancel();
    for s in [delegator, detector, results] {
        s.join().await.unwrap();
    }
}
