//! One trace per lease across all four services: the services run as separate processes that
//! export OTLP/gRPC to an in-process receiver; one job later, a single trace id must hold spans
//! of delegator, fetcher, detector and results, each server span a child of a fetcher span.

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use facesweep_cli::httpserve::{serve, Routes};
use facesweep_common::grpc::channel;
use facesweep_proto::delegator_service_client::DelegatorServiceClient;
use facesweep_proto::*;
use facesweep_tests::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};

/// (service.name, trace id, span id, parent span id, span name)
type SpanRow = (String, Vec<u8>, Vec<u8>, Vec<u8>, String);

#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<SpanRow>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut rows = self.0.lock().unwrap();
        let req = req.into_inner();
        for rs in req.resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| a.value.as_ref())
                .map(|v| format!("{:?}", v.value))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    rows.push((service.clone(), s.trace_id, s.span_id, s.parent_span_id, s.name));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_trace_per_lease_spans_all_four_services() {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = listener.local_addr().unwrap();
    let r = receiver.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(r))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
    });
    {
        use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
        let mut c = TraceServiceClient::new(channel(&otlp.to_string()).unwrap());
        c.export(ExportTraceServiceRequest::default()).await.expect("receiver answers");
    }
    let db = TestDb::start();
    let mut routes = Routes::default();
    let photos = routes.add_dir(&samples_dir()).unwrap();
    let (http, _srv) = serve(routes).await.unwrap();
    let (d, det, res, fet) = (free_port(), free_port(), free_port(), free_port());
    let spawn = |name: &str, args: Vec<String>| -> Child {
        Command::new(bin(name))
            .args(args)
            .env("DATABASE_URL", db.pg.url())
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp}"))
            .env("OTEL_BSP_SCHEDULE_DELAY", "200")
            .env_remove("http_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("all_proxy")
            .env_remove("ALL_PROXY")
            .env("RUST_LOG", std::env::var("TRACE_TEST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let mut procs = vec![
        spawn("facesweep-results", s(&["--listen", &format!("127.0.0.1:{res}")])),
        spawn("facesweep-delegator", s(&["--listen", &format!("127.0.0.1:{d}")])),
        spawn(
            "facesweep-detector",
            vec![
                "--listen".into(),
                format!("127.0.0.1:{det}"),
                "--model".into(),
                model_path().display().to_string(),
                "--device".into(),
                "cpu".into(),
            ],
        ),
    ];
    let mut client = DelegatorServiceClient::new(channel(&format!("127.0.0.1:{d}")).unwrap());
    let job = CreateJobRequest { name: "traced".into(), chunk_size: 10, priority: 1, ..Default::default() };
    wait_until("the delegator comes up and creates the job", 120, || {
        let (mut c, job) = (client.clone(), job.clone());
        async move { c.create_job(job).await.is_ok() }
    })
    .await;
    let urls: Vec<String> = photos.iter().take(2).map(|p| format!("http://{http}/{p}")).collect();
    client
        .append_urls(futures::stream::iter(vec![AppendUrlsRequest {
            job: "traced".into(),
            first_ordinal: 0,
            urls,
            ..Default::default()
        }]))
        .await
        .unwrap();
    let fetcher = spawn(
        "facesweep-fetcher",
        s(&[
            "--listen",
            &format!("127.0.0.1:{fet}"),
            "--delegator",
            &format!("127.0.0.1:{d}"),
            "--detector",
            &format!("127.0.0.1:{det}"),
            "--results",
            &format!("127.0.0.1:{res}"),
            "--allow-networks",
            "127.0.0.0/8",
            "--idle-poll-ms",
            "100",
        ]),
    );
    wait_until("the traced job finishes", 120, || {
        let mut c = client.clone();
        async move {
            let p = c.get_progress(GetProgressRequest { job: "traced".into() }).await.unwrap().into_inner();
            p.done_urls == 2 && p.chunks_done == 1
        }
    })
    .await;
    // SIGTERM flushes the exporters; the fetcher first, as in production.
    procs.insert(0, fetcher);
    for p in &mut procs {
        Command::new("kill").arg("-TERM").arg(p.id().to_string()).status().unwrap();
        let _ = p.wait();
    }
    let rows = receiver.0.lock().unwrap().clone();
    let mut by_trace: HashMap<Vec<u8>, Vec<&SpanRow>> = HashMap::new();
    for r in &rows {
        by_trace.entry(r.1.clone()).or_default().push(r);
    }
    let full = by_trace.values().find(|spans| {
        let services: HashSet<&str> = spans.iter().map(|s| s.0.as_str()).collect();
        ["delegator", "fetcher", "detector", "results"]
            .iter()
            .all(|n| services.iter().any(|s| s.contains(&format!("facesweep-{n}"))))
    });
    let spans = full.unwrap_or_else(|| {
        panic!("no trace spans all four services; {} spans in {} traces", rows.len(), by_trace.len())
    });
    let fetcher_ids: HashSet<&Vec<u8>> =
        spans.iter().filter(|s| s.0.contains("facesweep-fetcher")).map(|s| &s.2).collect();
    let servers: Vec<&&SpanRow> = spans.iter().filter(|s| s.4.starts_with("/facesweep.v1.")).collect();
    for svc in [
        "DelegatorService/AcquireLease",
        "DetectorService/Detect",
        "ResultsService/Record",
        "DelegatorService/CompleteLease",
    ] {
        let span = servers
            .iter()
            .find(|s| s.4.ends_with(svc))
            .unwrap_or_else(|| panic!("no {svc} server span in the lease trace"));
        assert!(fetcher_ids.contains(&span.3), "{svc}: parent is not a fetcher span");
    }
    for stage in ["lease", "fetch", "download", "decode", "detect", "persist"] {
        assert!(
            spans.iter().any(|s| s.4 == stage && s.0.contains("fetcher")),
            "no {stage} span in the lease trace"
        );
    }
    assert!(
        rows.iter().any(|r| r.4 == "detect_batch" && r.0.contains("detector")),
        "no detect_batch span exported"
    );
}
