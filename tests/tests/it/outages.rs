//! What a lost lease and an outage cost, on the whole mesh (issue #20): a revoked lease's
//! downloads stop within one renewal interval and free their slots; a results outage longer
//! than any retry window costs the job's URLs nothing (no failure counted, none abandoned).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use facesweep_cli::options::FetcherTweak;
use facesweep_cli::{client, Mesh, MeshOptions};
use facesweep_common::Shutdown;
use facesweep_proto::*;
use facesweep_tests::wait_until;

/// A web server that accepts and never answers; counts the connections open now.
async fn silent_server() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let open = Arc::new(AtomicUsize::new(0));
    let counter = open.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let open = counter.clone();
            open.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut buf = [0u8; 1024];
                // Until the client closes the connection.
                while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
                open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (addr, open)
}

fn mesh_options(dir: &std::path::Path) -> MeshOptions {
    let mut o = MeshOptions::new(dir, facesweep_tests::model_path());
    o.durability = facesweep_pgembed::Durability::Ephemeral;
    o.idle_poll_ms = 100;
    o
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_jobs_downloads_stop_within_one_renewal_interval() {
    let (addr, open) = silent_server().await;
    let dir = facesweep_tests::tmp_dir();
    let mut o = mesh_options(dir.path());
    // Renewals every second; downloads that would otherwise hang for a minute.
    o.lease_ttl_secs = 3;
    o.timeout_ms = 60_000;
    o.fetcher_concurrency = 8;
    let mesh = Mesh::start(o).await.unwrap();
    let d = mesh.delegator.to_string();
    let urls = (0..200).map(|i| format!("http://{addr}/{i}.jpg")).collect();
    let quiet = client::ImportOptions { quiet: true, ..Default::default() };
    client::import(&d, "hung", &client::UrlInput::List(urls), quiet).await.unwrap();
    wait_until("downloads in flight", 30, || async { open.load(Ordering::SeqCst) >= 8 }).await;
    let mut dc = client::delegator(&d).await.unwrap();
    dc.cancel_job(CancelJobRequest { job: "hung".into() }).await.unwrap();
    // One renewal interval is 1 s; allow scheduling slack, far below the 60 s downloads.
    let took = wait_until("revoked downloads closed", 5, || async { open.load(Ordering::SeqCst) == 0 }).await;
    println!("revoked lease's downloads closed {took:?} after the cancel");
    // The freed slots take a new job at once.
    let photo = facesweep_tests::samples_dir().join("grace_hopper.jpg");
    let mut routes = facesweep_cli::httpserve::Routes::default();
    routes.add("/face.jpg", 200, "image/jpeg", std::fs::read(photo).unwrap());
    let (site, _server) = facesweep_cli::httpserve::serve(routes).await.unwrap();
    let next = client::UrlInput::List(vec![format!("http://{site}/face.jpg")]);
    let quiet = client::ImportOptions { quiet: true, ..Default::default() };
    client::import(&d, "next", &next, quiet).await.unwrap();
    let p = tokio::time::timeout(Duration::from_secs(30), client::wait(&d, "next", true)).await;
    assert_eq!(p.expect("the next job waited behind a revoked lease").unwrap().done_urls, 1);
    mesh.stop().await.unwrap();
}

/// A results service on `port` of its own, stopped by `stop`.
async fn results_on(db: &str, port: u16, stop: &Shutdown) -> facesweep_common::grpc::Running {
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let cfg = facesweep_results::Config { listen, ..facesweep_results::Config::new(db) };
    facesweep_results::spawn(cfg, stop.clone()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_results_outage_longer_than_any_retry_costs_the_urls_nothing() {
    let site = facesweep_tests::site::Site::start(4).await;
    let dir = facesweep_tests::tmp_dir();
    let port = facesweep_tests::free_port();
    let mut o = mesh_options(dir.path());
    o.chunk_size = 4;
    o.fetcher_concurrency = 2;
    // The fetcher records to a results service this test stops and restarts.
    let results = facesweep_common::discovery::Target::Static(vec![format!("127.0.0.1:{port}")]);
    o.fetcher_tweak = Some(FetcherTweak::new(move |c| c.results = results.clone()));
    let mesh = Mesh::start(o).await.unwrap();
    let stop = Shutdown::new();
    let first = results_on(&mesh.database_url, port, &stop).await;
    let d = mesh.delegator.to_string();
    let urls: Vec<String> = site.photos.iter().map(|(u, _)| u.clone()).collect();
    let n = urls.len() as i64;
    let quiet = client::ImportOptions { quiet: true, ..Default::default() };
    client::import(&d, "outage", &client::UrlInput::List(urls), quiet).await.unwrap();
    let pool = facesweep_store::connect(&mesh.database_url, 2).await.unwrap();
    let stored = "SELECT count(*) > 0 FROM url_results";
    wait_until("a result before the outage", 60, || async {
        sqlx::query_scalar::<_, bool>(stored).fetch_one(&pool).await.unwrap()
    })
    .await;
    stop.cancel();
    first.join().await.unwrap();
    // Longer than the ~36 s a batch used to be retried before its lease was failed.
    tokio::time::sleep(Duration::from_secs(40)).await;
    let again = Shutdown::new();
    let _second = results_on(&mesh.database_url, port, &again).await;
    let p = tokio::time::timeout(Duration::from_secs(120), client::wait(&d, "outage", true)).await;
    let p = p.expect("the job did not finish after the outage").unwrap();
    assert_eq!((p.done_urls, p.failed_urls), (n, 0), "{:?}", p.by_status);
    let (failures, attempts): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT coalesce(sum(failures), 0) FROM chunks)::bigint, (SELECT count(*) FROM url_attempts)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((failures, attempts), (0, 0), "the outage was counted against the URLs");
    again.cancel();
    mesh.stop().await.unwrap();
}
