//! Fetcher: leases URLs, downloads, decodes, letterboxes, detects, records.

mod budget;
pub mod decode;
mod delegators;
mod detect_client;
pub mod download;
mod exif;
pub mod fetch;
pub mod metrics;
pub mod models;
pub mod net;
pub mod outcome;
mod pool;
mod renewal;
mod worker;
mod yuv;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use facesweep_common::discovery::{self, Target};
use facesweep_common::grpc::{self, Frontend, Running};
use facesweep_common::Shutdown;
use facesweep_proto::detector_service_client::DetectorServiceClient;
use facesweep_proto::results_service_client::ResultsServiceClient;

use decode::Wire;
use download::DownloadConfig;
use fetch::{FetchConfig, Fetcher};
use net::IpPolicy;

/// Fetcher configuration (`facesweep-fetcher --help`).
#[derive(Clone, Debug, clap::Parser)]
// A flag given twice takes its last value (embedders append overrides to their defaults).
#[command(name = "facesweep-fetcher", version, about, args_override_self = true)]
pub struct Config {
    /// Address to serve gRPC health and reflection on.
    #[arg(long, env = "FETCHER_LISTEN", default_value = "0.0.0.0:50054")]
    pub listen: SocketAddr,
    /// Delegators, one per shard: host:port[,host:port…] or consul://<service>.
    #[arg(long, env = "FETCHER_DELEGATOR", default_value = "127.0.0.1:50051")]
    pub delegator: Target,
    /// Detectors, balanced: host:port[,host:port…] or consul://<service>. They serve the
    /// default model; with Consul, other models' detectors are the instances tagged model-<id>.
    #[arg(long, env = "FETCHER_DETECTOR", default_value = "127.0.0.1:50052")]
    pub detector: Target,
    /// Detectors of other models (jobs naming a model, A/B): MODEL=TARGET, several separated
    /// by `;`, e.g. `retinaface-mnet025-320-v1=10.0.0.7:50052`.
    #[arg(long, env = "FETCHER_MODEL_DETECTORS", value_delimiter = ';', value_parser = models::parse_model_target)]
    pub model_detector: Vec<(String, Target)>,
    /// Results replicas, balanced: host:port[,host:port…] or consul://<service>.
    #[arg(long, env = "FETCHER_RESULTS", default_value = "127.0.0.1:50053")]
    pub results: Target,
    /// Name this fetcher gives the delegator as lease owner (default: hostname-pid).
    #[arg(long, env = "FETCHER_ID")]
    pub id: Option<String>,
    /// Leases worked on at once.
    #[arg(long, env = "FETCHER_LEASES", default_value_t = 2)]
    pub leases: usize,
    /// Downloads in flight per lease.
    #[arg(long, env = "FETCHER_CONCURRENCY", default_value_t = 64)]
    pub concurrency: usize,
    /// Decodes at once (0 = number of cores).
    #[arg(long, env = "FETCHER_DECODE_THREADS", default_value_t = 0)]
    pub decode_threads: usize,
    /// Most URLs asked for per lease (0 = the whole chunk).
    #[arg(long, env = "FETCHER_LEASE_MAX_URLS", default_value_t = 0)]
    pub lease_max_urls: i32,
    /// TCP connect timeout, milliseconds.
    #[arg(long, env = "FETCHER_CONNECT_TIMEOUT_MS", default_value_t = 5_000)]
    pub connect_timeout_ms: u64,
    /// Whole-download timeout (headers and body), milliseconds.
    #[arg(long, env = "FETCHER_TIMEOUT_MS", default_value_t = 30_000)]
    pub timeout_ms: u64,
    /// Time allowed until the response headers arrive, milliseconds.
    #[arg(long, env = "FETCHER_FIRST_BYTE_TIMEOUT_MS", default_value_t = 10_000)]
    pub first_byte_timeout_ms: u64,
    /// Extra attempts after a transient failure (connect error, timeout, 429, 5xx).
    #[arg(long, env = "FETCHER_RETRIES", default_value_t = 2)]
    pub retries: u32,
    /// Base of the jittered exponential backoff between attempts, milliseconds.
    #[arg(long, env = "FETCHER_RETRY_BASE_MS", default_value_t = 500)]
    pub retry_base_ms: u64,
    /// Longest Retry-After honoured, seconds; longer ones fail the URL now.
    #[arg(long, env = "FETCHER_MAX_RETRY_AFTER_SECS", default_value_t = 10)]
    pub max_retry_after_secs: u64,
    /// Downloads in flight to one host.
    #[arg(long, env = "FETCHER_PER_HOST", default_value_t = 16)]
    pub per_host: usize,
    /// Networks that may be fetched although private/loopback (SSRF guard), e.g. 10.0.0.0/8.
    #[arg(long, env = "FETCHER_ALLOW_NETWORKS", value_delimiter = ',')]
    pub allow_networks: Vec<ipnet::IpNet>,
    /// Forward proxy for downloads, e.g. http://proxy:3128 (then the proxy resolves names, so
    /// the private-address guard cannot see them). HTTP(S)_PROXY from the environment is ignored.
    #[arg(long, env = "FETCHER_PROXY")]
    pub proxy: Option<String>,
    /// Bytes of image bodies held in memory at once, MiB (bounds RSS at any concurrency).
    #[arg(long, env = "FETCHER_BODY_BUDGET_MIB", default_value_t = 64)]
    pub body_budget_mib: u64,
    /// Largest body accepted, bytes.
    #[arg(long, env = "FETCHER_MAX_BODY_BYTES", default_value_t = 32 << 20)]
    pub max_body_bytes: u64,
    /// How images travel to detectors: `i420` sends only the resized content as YUV 4:2:0
    /// (~3x fewer bytes, padded and converted on the detector's device); `canvas` the whole
    /// letterboxed RGB canvas; `auto` takes the detector's preference from ModelInfo (GPU
    /// detectors prefer i420, CPU ones the canvas). Pin
    /// `canvas` while a detector fleet is part-way through an upgrade from before i420.
    #[arg(long, env = "FETCHER_WIRE", value_enum, default_value_t = WireChoice::Auto)]
    pub wire: WireChoice,
    /// Largest decoded image accepted, pixels (decompression-bomb guard).
    #[arg(long, env = "FETCHER_MAX_PIXELS", default_value_t = 25_000_000)]
    pub max_pixels: u64,
    /// Longest one image may take to decode (waiting for a decode thread included), milliseconds.
    #[arg(long, env = "FETCHER_DECODE_TIMEOUT_MS", default_value_t = 20_000)]
    pub decode_timeout_ms: u64,
    /// Redirects followed before giving up.
    #[arg(long, env = "FETCHER_MAX_REDIRECTS", default_value_t = 5)]
    pub max_redirects: usize,
    /// User-Agent header sent with every download.
    #[arg(long, env = "FETCHER_USER_AGENT", default_value = concat!("facesweep/", env!("CARGO_PKG_VERSION")))]
    pub user_agent: String,
    /// Serve Prometheus metrics at http://ADDR/metrics (off when absent).
    #[arg(long, env = "FETCHER_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// On shutdown, how long a lease in progress may keep working before it is released, seconds.
    #[arg(long, env = "FETCHER_DRAIN_GRACE_SECS", default_value_t = 20)]
    pub drain_grace_secs: u64,
    /// Pause between polls when there is no work, milliseconds.
    #[arg(long, env = "FETCHER_IDLE_POLL_MS", default_value_t = 500)]
    pub idle_poll_ms: u64,
    /// Longest a delegator or results call may take, milliseconds.
    #[arg(long, env = "FETCHER_RPC_TIMEOUT_MS", default_value_t = 10_000)]
    pub rpc_timeout_ms: u64,
    /// Longest one image waits for its detection (queue and inference included), milliseconds.
    #[arg(long, env = "FETCHER_DETECT_TIMEOUT_MS", default_value_t = 60_000)]
    pub detect_timeout_ms: u64,
    /// A lease in which no URL finishes for this long is given back (watchdog), seconds.
    #[arg(long, env = "FETCHER_LEASE_STALL_SECS", default_value_t = 300)]
    pub lease_stall_secs: u64,
    /// Results sent to the results service per call: a batch goes when it holds this many
    /// URLs or its oldest result is --record-interval-ms old, whichever comes first, so
    /// results show up live and a kill or cancel loses at most one batch of work.
    #[arg(long, env = "FETCHER_RECORD_BATCH", default_value_t = 64)]
    pub record_batch: usize,
    /// Longest a finished result waits in the fetcher before it is recorded, milliseconds.
    #[arg(long, env = "FETCHER_RECORD_INTERVAL_MS", default_value_t = 1_000)]
    pub record_interval_ms: u64,
    /// Mean pause after giving a lease back because no detector answered, milliseconds
    /// (jittered ±50%). A failed chunk's own pause is the delegator's --failure-backoff-ms.
    #[arg(long, env = "FETCHER_RELEASE_BACKOFF_MS", default_value_t = 2_000)]
    pub release_backoff_ms: u64,
    /// Consul registration (off unless --consul-addr / CONSUL_HTTP_ADDR is set).
    #[command(flatten)]
    pub consul: facesweep_common::consul::ConsulArgs,
    /// Mutual TLS for gRPC (off unless --tls-cert, --tls-key and --tls-ca are all set).
    #[command(flatten)]
    pub tls: facesweep_common::tls::TlsArgs,
}

impl Config {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.leases >= 1, "--leases must be at least 1");
        let consul = self.consul.addr.is_some();
        let named =
            [("--delegator", &self.delegator), ("--detector", &self.detector), ("--results", &self.results)];
        let per_model = self.model_detector.iter().map(|(_, t)| ("--model-detector", t));
        for (flag, t) in named.into_iter().chain(per_model) {
            anyhow::ensure!(consul || !matches!(t, Target::Consul { .. }), "{flag} {t} needs --consul-addr");
        }
        anyhow::ensure!(self.concurrency >= 1, "--concurrency must be at least 1");
        // The results service refuses larger Record calls.
        anyhow::ensure!(
            (1..=10_000).contains(&self.record_batch),
            "--record-batch must be between 1 and 10000 (the results service's largest Record)"
        );
        anyhow::ensure!(self.max_body_bytes >= 1, "--max-body-bytes must be at least 1");
        if let Some(p) = &self.proxy {
            reqwest::Proxy::all(p).map_err(|e| anyhow::anyhow!("--proxy {p:?}: {e}"))?;
        }
        for (flag, v) in [
            ("--rpc-timeout-ms", self.rpc_timeout_ms),
            ("--detect-timeout-ms", self.detect_timeout_ms),
            ("--lease-stall-secs", self.lease_stall_secs),
            ("--decode-timeout-ms", self.decode_timeout_ms),
            ("--record-interval-ms", self.record_interval_ms),
        ] {
            anyhow::ensure!(v >= 1, "{flag} must be at least 1 (every wait is bounded)");
        }
        Ok(())
    }

    pub fn worker_config(&self) -> worker::WorkerConfig {
        worker::WorkerConfig {
            id: self.id.clone().unwrap_or_else(default_id),
            concurrency: self.concurrency,
            lease_max_urls: self.lease_max_urls,
            idle_poll: Duration::from_millis(self.idle_poll_ms),
            drain_grace: Duration::from_secs(self.drain_grace_secs),
            rpc_timeout: Duration::from_millis(self.rpc_timeout_ms),
            detect_timeout: Duration::from_millis(self.detect_timeout_ms),
            stall_timeout: Duration::from_secs(self.lease_stall_secs),
            record_batch: self.record_batch,
            record_interval: Duration::from_millis(self.record_interval_ms),
            release_backoff: Duration::from_millis(self.release_backoff_ms),
        }
    }

    pub fn fetch_config(&self) -> FetchConfig {
        FetchConfig {
            download: DownloadConfig {
                connect_timeout: Duration::from_millis(self.connect_timeout_ms),
                first_byte_timeout: Duration::from_millis(self.first_byte_timeout_ms),
                total_timeout: Duration::from_millis(self.timeout_ms),
                max_body_bytes: self.max_body_bytes,
                max_redirects: self.max_redirects,
                user_agent: self.user_agent.clone(),
                retries: self.retries,
                retry_base: Duration::from_millis(self.retry_base_ms),
                max_retry_after: Duration::from_secs(self.max_retry_after_secs),
                policy: IpPolicy { allow: self.allow_networks.clone() },
                proxy: self.proxy.clone(),
            },
            max_pixels: self.max_pixels,
            decode_threads: self.decode_threads,
            per_host: self.per_host,
            body_budget_bytes: self.body_budget_mib << 20,
            decode_timeout: Duration::from_millis(self.decode_timeout_ms),
        }
    }
}

/// Starts the lease workers and the health server in the background.
pub async fn spawn(config: Config, shutdown: Shutdown) -> anyhow::Result<Running> {
    metrics::register();
    config.validate()?;
    let front = Frontend::start(&config.tls, &shutdown).await?;
    let tls = front.tls.clone();
    let listener = grpc::bind(config.listen).await?;
    let router = front.router(&[])?;
    let server = grpc::spawn_router(router, listener, shutdown.clone());
    // Discovery outlives the lease loops' drain: it stops when the fetcher's task ends (or
    // when start-up fails and this guard drops).
    let discovery_stop = Shutdown::new();
    let stop_discovery = discovery_stop.clone().drop_guard();
    let members = |t: &Target| discovery::members(t, &config.consul, discovery_stop.clone());
    let models = detector_models(&config, tls.clone(), &discovery_stop, &shutdown).await?;
    let worker = Arc::new(worker::Worker::new(
        config.worker_config(),
        delegators::Delegators::new(members(&config.delegator)?, tls.clone()),
        models,
        ResultsServiceClient::new(discovery::balanced(members(&config.results)?, tls.clone(), "results")),
        Fetcher::new(config.fetch_config())?,
    ));
    worker.reclaim().await;
    grpc::health_follows(front.health.clone(), "", Duration::from_secs(5), shutdown.clone(), || async {
        true
    });
    let addr = server.addr;
    let me = front.announce("fetcher", addr);
    let registration = facesweep_common::consul::register_self(&config.consul, me, shutdown.clone())?;
    let shutdown_metrics = shutdown.clone();
    let task = tokio::spawn(async move {
        let _stop_discovery = stop_discovery;
        let loops: Vec<_> =
            (0..config.leases).map(|_| tokio::spawn(worker.clone().lease_loop(shutdown.clone()))).collect();
        for l in loops {
            let _ = l.await;
        }
        server.join().await
    });
    let metrics =
        facesweep_common::metrics::maybe_serve(config.metrics_listen, &metrics::REGISTRY, shutdown_metrics)
            .await?;
    Ok(Running { addr, task, metrics }.also_awaiting(registration))
}

/// Detector pools by model, once the default model's detectors answered ModelInfo (its
/// letterbox size and wire); other models' pools connect when a lease needs them.
async fn detector_models(
    config: &Config,
    tls: Option<facesweep_common::tls::Tls>,
    discovery_stop: &Shutdown,
    shutdown: &Shutdown,
) -> anyhow::Result<models::Models> {
    let (consul, stop) = (config.consul.clone(), discovery_stop.clone());
    let connect: models::Connect = Box::new(move |t: &Target| {
        let found = discovery::members(t, &consul, stop.clone())?;
        Ok(DetectorServiceClient::new(discovery::balanced(found, tls.clone(), "detector"))
            .max_decoding_message_size(64 << 20))
    });
    let detector = connect(&config.detector)?;
    let info = loop {
        match models::ask_info(&detector, &config.detector).await {
            Ok(i) => break i,
            Err(e) if shutdown.is_cancelled() => anyhow::bail!("shut down before a detector answered: {e}"),
            Err(e) => {
                tracing::info!(error = %e, "waiting for a detector");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let explicit = config.model_detector.iter().cloned().collect();
    Ok(models::Models::new(config.detector.clone(), detector, &info, explicit, config.wire, connect))
}

fn default_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}-{}", host.trim(), std::process::id())
}

/// Works until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    spawn(config, shutdown).await?.join().await
}

/// `--wire`: a wire format, or the best one the detector announces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum WireChoice {
    Auto,
    Canvas,
    I420,
}

impl WireChoice {
    /// The wire to use with a detector announcing `formats` (ModelInfo.pixel_formats,
    /// preferred first; empty from detectors older than the field).
    pub fn resolve(self, formats: &[i32]) -> Wire {
        use facesweep_proto::PixelFormat;
        match self {
            WireChoice::Canvas => Wire::Canvas,
            WireChoice::I420 => Wire::I420,
            WireChoice::Auto => match formats.first().and_then(|f| PixelFormat::try_from(*f).ok()) {
                Some(PixelFormat::I420) => Wire::I420,
                _ => Wire::Canvas,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_wire_follows_the_detectors_preference() {
        use facesweep_proto::PixelFormat::{RgbUnspecified as Rgb, I420};
        assert_eq!(WireChoice::Auto.resolve(&[]), Wire::Canvas, "a detector older than the field");
        assert_eq!(WireChoice::Auto.resolve(&[I420 as i32, Rgb as i32]), Wire::I420);
        assert_eq!(WireChoice::Auto.resolve(&[Rgb as i32, I420 as i32]), Wire::Canvas);
        assert_eq!(WireChoice::I420.resolve(&[]), Wire::I420, "pinned by the operator");
    }
    use clap::Parser;

    #[test]
    fn consul_targets_need_an_agent_and_static_lists_do_not() {
        let c = Config::try_parse_from(["f", "--detector", "consul://facesweep-detector"]).unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("--detector consul://facesweep-detector needs --consul-addr"), "{err}");
        let c = Config::try_parse_from(["f", "--detector", "consul://d", "--consul-addr", "127.0.0.1:8500"])
            .unwrap();
        c.validate().unwrap();
        let c = Config::try_parse_from(["f", "--delegator", "a:1,b:2"]).unwrap();
        assert_eq!(c.delegator, Target::Static(vec!["a:1".into(), "b:2".into()]));
        c.validate().unwrap();
        assert!(Config::try_parse_from(["f", "--results", "consul://"]).is_err());
    }
}
