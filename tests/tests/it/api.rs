//! The gRPC contract of every service: malformed requests get INVALID_ARGUMENT (never a
//! panic), health reports SERVING, reflection answers in both v1 and v1alpha.

use facesweep_cli::{Mesh, MeshOptions};
use facesweep_common::grpc::channel;
use facesweep_pgembed::Durability;
use facesweep_proto::delegator_service_client::DelegatorServiceClient;
use facesweep_proto::detector_service_client::DetectorServiceClient;
use facesweep_proto::results_service_client::ResultsServiceClient;
use facesweep_proto::*;
use facesweep_tests::*;
use futures::StreamExt;
use tonic::Code;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

fn good_image() -> DetectRequest {
    DetectRequest {
        id: 2,
        data: vec![0u8; 32 * 32 * 3].into(),
        height: 32,
        width: 32,
        channels: 3,
        scale: 1.0,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_service_rejects_malformed_requests_and_serves_health_and_reflection() {
    let dir = tmp_dir();
    let mut opts = MeshOptions::new(dir.path(), model_path());
    opts.durability = Durability::Ephemeral;
    opts.metrics = true;
    let mesh = Mesh::start(opts).await.unwrap();
    let ch = |a: std::net::SocketAddr| channel(&a.to_string()).unwrap();

    let mut d = DelegatorServiceClient::new(ch(mesh.delegator));
    let e = d.create_job(CreateJobRequest { name: "".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = d
        .create_job(CreateJobRequest { name: "x".into(), chunk_size: -1, priority: 0, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = d.acquire_lease(AcquireLeaseRequest { fetcher_id: "".into(), max_urls: 0 }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = d.renew_lease(RenewLeaseRequest { lease: None }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = d.get_progress(GetProgressRequest { job: "no-such-job".into() }).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let first = AppendUrlsRequest {
        job: "".into(),
        first_ordinal: 0,
        urls: vec!["http://a/b.jpg".into()],
        ..Default::default()
    };
    let e = d.append_urls(futures::stream::iter(vec![first])).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    d.create_job(CreateJobRequest { name: "j".into(), ..Default::default() }).await.unwrap();
    let nul = AppendUrlsRequest {
        job: "j".into(),
        first_ordinal: 0,
        urls: vec!["http://a/\0.jpg".into()],
        ..Default::default()
    };
    let e = d.append_urls(futures::stream::iter(vec![nul])).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("NUL"), "{}", e.message());

    let mut r = ResultsServiceClient::new(ch(mesh.results));
    let bad = UrlResult { url_id: 0, status: 1, ..Default::default() };
    let e = r.record(RecordRequest { results: vec![bad], lease: None }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let no_lease = UrlResult { url_id: 1, status: 1, ..Default::default() };
    let e = r.record(RecordRequest { results: vec![no_lease], lease: None }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("lease"), "{}", e.message());
    let e = r.get_url_result(GetUrlResultRequest { url_id: -4 }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = r.get_url_result(GetUrlResultRequest { url_id: 12345 }).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = r.export_results(ExportResultsRequest::from("")).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let bad_model = ExportResultsRequest { job: "x".into(), model_id: "no/such model".into() };
    let e = r.export_results(bad_model).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    let mut det = DetectorServiceClient::new(ch(mesh.detector));
    let info = det.model_info(ModelInfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.model_id, "retinaface-mnet025-v1");
    assert_eq!((info.input_width, info.input_height, info.channel_order.as_str()), (640, 640, "BGR"));
    let mut short = good_image();
    short.data = vec![0u8; 10].into();
    let e = det.detect_one(DetectOneRequest { image: Some(short.clone()) }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(det.detect_one(DetectOneRequest { image: Some(good_image()) }).await.is_ok());
    let e = det.detect_one(DetectOneRequest { image: None }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    // In a stream a bad image gets its own INVALID_ARGUMENT reply and the stream goes on.
    let gray = DetectRequest { id: 3, channels: 1, data: vec![0u8; 32 * 32].into(), ..good_image() };
    let reqs = vec![DetectRequest { id: 1, ..short }, good_image(), gray];
    let mut out: Vec<DetectResponse> = det
        .detect(futures::stream::iter(reqs))
        .await
        .unwrap()
        .into_inner()
        .map(|r| r.unwrap())
        .collect()
        .await;
    out.sort_by_key(|r| r.id);
    assert_eq!(out.len(), 3);
    assert_eq!(out[0].error_code, Code::InvalidArgument as i32);
    assert!(out[0].error.contains("bytes"), "{}", out[0].error);
    assert_eq!((out[1].error_code, out[1].model_id.as_str()), (0, "retinaface-mnet025-v1"));
    assert_eq!(out[2].error_code, Code::InvalidArgument as i32);

    for (name, addr) in [
        ("delegator", mesh.delegator),
        ("detector", mesh.detector),
        ("results", mesh.results),
        ("fetcher", mesh.fetcher_addr),
    ] {
        let mut h = HealthClient::new(ch(addr));
        let s = h.check(HealthCheckRequest { service: "".into() }).await.unwrap().into_inner();
        assert_eq!(s.status, 1, "{name} overall health is not SERVING");
        let services = reflection_v1(ch(addr)).await;
        assert!(services.contains(&"grpc.health.v1.Health".to_string()), "{name}: {services:?}");
        assert!(
            services.iter().filter(|s| s.starts_with("facesweep.")).count() <= 1,
            "{name} lists services it does not serve: {services:?}"
        );
        assert_eq!(services, reflection_v1alpha(ch(addr)).await, "{name}: v1 and v1alpha disagree");
    }
    // Every service serves its own /metrics (delegator, detector, results, fetcher); the
    // detector ran images above, so its counters moved. tests/tests/it/dashboard.rs checks
    // that no port serves another service's series.
    assert_eq!(mesh.metrics.len(), 4);
    let own = [
        "facesweep_leases_granted_total",
        "facesweep_detector_batch_size",
        "facesweep_results_persist_seconds",
        "facesweep_fetch_in_flight",
    ];
    for (m, name) in mesh.metrics.iter().zip(own) {
        let body = http_get(&m.to_string(), "/metrics").await.expect("/metrics answers 200");
        assert!(body.contains(name), "{m}: {name} missing");
    }
    let body = http_get(&mesh.metrics[1].to_string(), "/metrics").await.expect("/metrics answers 200");
    let images: f64 = body
        .lines()
        .find_map(|l| l.strip_prefix("facesweep_detector_images_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(images, 2.0, "the two valid images (DetectOne + stream) reach the model");

    let svcs = reflection_v1(ch(mesh.detector)).await;
    assert!(svcs.contains(&"facesweep.v1.DetectorService".to_string()), "{svcs:?}");
    mesh.stop().await.unwrap();
}

/// Lists services through reflection `$v` (v1 or v1alpha: same shape, different packages).
macro_rules! list_services {
    ($name:ident, $v:ident) => {
        async fn $name(ch: tonic::transport::Channel) -> Vec<String> {
            use tonic_reflection::pb::$v::server_reflection_client::ServerReflectionClient;
            use tonic_reflection::pb::$v::server_reflection_request::MessageRequest;
            use tonic_reflection::pb::$v::server_reflection_response::MessageResponse;
            use tonic_reflection::pb::$v::ServerReflectionRequest;
            let req = ServerReflectionRequest {
                host: "".into(),
                message_request: Some(MessageRequest::ListServices("".into())),
            };
            let mut resp = ServerReflectionClient::new(ch)
                .server_reflection_info(futures::stream::iter(vec![req]))
                .await
                .unwrap()
                .into_inner();
            match resp.next().await.unwrap().unwrap().message_response.unwrap() {
                MessageResponse::ListServicesResponse(l) => {
                    let mut v: Vec<String> = l.service.into_iter().map(|s| s.name).collect();
                    v.sort();
                    v
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    };
}

list_services!(reflection_v1, v1);
list_services!(reflection_v1alpha, v1alpha);
