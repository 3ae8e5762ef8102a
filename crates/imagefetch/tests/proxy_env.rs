//! Proxies from the environment are ignored: through one, the proxy would resolve names and
//! connect for us, past the private-address guard. (Its own test binary: it sets process
//! environment variables.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use facesweep_imagefetch::decode::Shape;
use facesweep_imagefetch::download::DownloadConfig;
use facesweep_imagefetch::fetch::{FetchConfig, Fetcher};
use facesweep_imagefetch::net::IpPolicy;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_proxies_never_carry_a_download() {
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = proxy.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let seen = connections.clone();
    tokio::spawn(async move {
        while let Ok((_s, _)) = proxy.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
        }
    });
    for var in ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"] {
        std::env::set_var(var, format!("http://{addr}"));
    }
    let cfg = FetchConfig {
        download: DownloadConfig {
            connect_timeout: Duration::from_secs(2),
            first_byte_timeout: Duration::from_secs(2),
            total_timeout: Duration::from_secs(3),
            max_body_bytes: 1 << 20,
            max_redirects: 2,
            user_agent: "facesweep-test".into(),
            retries: 0,
            retry_base: Duration::from_millis(10),
            max_retry_after: Duration::from_secs(1),
            policy: IpPolicy::default(),
            proxy: None,
        },
        max_pixels: 1 << 20,
        decode_threads: 1,
        per_host: 4,
        body_budget_bytes: 4 << 20,
        decode_timeout: Duration::from_secs(5),
    };
    let f = Fetcher::new(cfg, Arc::new(())).unwrap();
    for url in ["http://localhost/x.jpg", "http://metadata.invalid/latest/", "https://example.invalid/a.jpg"]
    {
        let (r, _) = f.fetch(url, Shape::canvas(16, 16)).await;
        assert!(r.is_err(), "{url} must not be fetched");
    }
    assert_eq!(connections.load(Ordering::SeqCst), 0, "a download went through the environment's proxy");
}
