//! Fetcher configuration: clap [`Args`] (flags and environment, for the binary) parsed once
//! into a plain [`Config`] that `spawn` runs with.

use std::net::SocketAddr;
use std::time::Duration;

use facesweep_common::consul::{ConsulArgs, ConsulConfig};
use facesweep_common::discovery::Target;
use facesweep_common::tls::{TlsArgs, TlsConfig};

use crate::{worker, WireChoice};
use facesweep_imagefetch::download::DownloadConfig;
use facesweep_imagefetch::fetch::FetchConfig;
use facesweep_imagefetch::net::IpPolicy;

/// Fetcher configuration (`facesweep-fetcher --help`).
#[derive(Clone, Debug, clap::Parser)]
// A flag given twice takes its last value.
#[command(name = "facesweep-fetcher", version, about, args_override_self = true)]
pub struct Args {
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
    #[arg(long, env = "FETCHER_MODEL_DETECTORS", value_delimiter = ';', value_parser = crate::detectors::parse_model_target)]
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
    pub consul: ConsulArgs,
    /// Mutual TLS for gRPC (off unless --tls-cert, --tls-key and --tls-ca are all set).
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// What a fetcher runs with: plain data, from [`Args`] (the binary) or built field by field
/// from [`Config::default`] (embedders), so no environment variable reaches an embedded
/// fetcher. See [`Args`] for each field's meaning.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub listen: SocketAddr,
    pub delegator: Target,
    pub detector: Target,
    pub model_detector: Vec<(String, Target)>,
    pub results: Target,
    pub id: Option<String>,
    pub leases: usize,
    pub concurrency: usize,
    pub decode_threads: usize,
    pub lease_max_urls: i32,
    pub connect_timeout_ms: u64,
    pub timeout_ms: u64,
    pub first_byte_timeout_ms: u64,
    pub retries: u32,
    pub retry_base_ms: u64,
    pub max_retry_after_secs: u64,
    pub per_host: usize,
    pub allow_networks: Vec<ipnet::IpNet>,
    pub proxy: Option<String>,
    pub body_budget_mib: u64,
    pub max_body_bytes: u64,
    pub wire: WireChoice,
    pub max_pixels: u64,
    pub decode_timeout_ms: u64,
    pub max_redirects: usize,
    pub user_agent: String,
    pub metrics_listen: Option<SocketAddr>,
    pub drain_grace_secs: u64,
    pub idle_poll_ms: u64,
    pub rpc_timeout_ms: u64,
    pub detect_timeout_ms: u64,
    pub lease_stall_secs: u64,
    pub record_batch: usize,
    pub record_interval_ms: u64,
    pub release_backoff_ms: u64,
    pub consul: ConsulConfig,
    pub tls: TlsConfig,
}

/// Loopback `port` as a one-address target.
fn local(port: u16) -> Target {
    Target::Static(vec![format!("127.0.0.1:{port}")])
}

/// The documented defaults (`--help`).
impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 50054)),
            delegator: local(50051),
            detector: local(50052),
            model_detector: Vec::new(),
            results: local(50053),
            id: None,
            leases: 2,
            concurrency: 64,
            decode_threads: 0,
            lease_max_urls: 0,
            connect_timeout_ms: 5_000,
            timeout_ms: 30_000,
            first_byte_timeout_ms: 10_000,
            retries: 2,
            retry_base_ms: 500,
            max_retry_after_secs: 10,
            per_host: 16,
            allow_networks: Vec::new(),
            proxy: None,
            body_budget_mib: 64,
            max_body_bytes: 32 << 20,
            wire: WireChoice::Auto,
            max_pixels: 25_000_000,
            decode_timeout_ms: 20_000,
            max_redirects: 5,
            user_agent: concat!("facesweep/", env!("CARGO_PKG_VERSION")).into(),
            metrics_listen: None,
            drain_grace_secs: 20,
            idle_poll_ms: 500,
            rpc_timeout_ms: 10_000,
            detect_timeout_ms: 60_000,
            lease_stall_secs: 300,
            record_batch: 64,
            record_interval_ms: 1_000,
            release_backoff_ms: 2_000,
            consul: ConsulConfig::default(),
            tls: TlsConfig::default(),
        }
    }
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

impl Args {
    /// The plain, validated configuration.
    pub fn into_config(self) -> anyhow::Result<Config> {
        let config = Config {
            listen: self.listen,
            delegator: self.delegator,
            detector: self.detector,
            model_detector: self.model_detector,
            results: self.results,
            id: self.id,
            leases: self.leases,
            concurrency: self.concurrency,
            decode_threads: self.decode_threads,
            lease_max_urls: self.lease_max_urls,
            connect_timeout_ms: self.connect_timeout_ms,
            timeout_ms: self.timeout_ms,
            first_byte_timeout_ms: self.first_byte_timeout_ms,
            retries: self.retries,
            retry_base_ms: self.retry_base_ms,
            max_retry_after_secs: self.max_retry_after_secs,
            per_host: self.per_host,
            allow_networks: self.allow_networks,
            proxy: self.proxy,
            body_budget_mib: self.body_budget_mib,
            max_body_bytes: self.max_body_bytes,
            wire: self.wire,
            max_pixels: self.max_pixels,
            decode_timeout_ms: self.decode_timeout_ms,
            max_redirects: self.max_redirects,
            user_agent: self.user_agent,
            metrics_listen: self.metrics_listen,
            drain_grace_secs: self.drain_grace_secs,
            idle_poll_ms: self.idle_poll_ms,
            rpc_timeout_ms: self.rpc_timeout_ms,
            detect_timeout_ms: self.detect_timeout_ms,
            lease_stall_secs: self.lease_stall_secs,
            record_batch: self.record_batch,
            record_interval_ms: self.record_interval_ms,
            release_backoff_ms: self.release_backoff_ms,
            consul: self.consul.into(),
            tls: self.tls.into(),
        };
        config.validate()?;
        Ok(config)
    }
}

fn default_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}-{}", host.trim(), std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;
    use facesweep_common::config::parse_flags_only;

    fn flags(argv: &[&str]) -> anyhow::Result<Config> {
        parse_flags_only::<Args>(std::iter::once(&"f").chain(argv))?.into_config()
    }

    #[test]
    fn consul_targets_need_an_agent_and_static_lists_do_not() {
        let err = flags(&["--detector", "consul://facesweep-detector"]).unwrap_err().to_string();
        assert!(err.contains("--detector consul://facesweep-detector needs --consul-addr"), "{err}");
        flags(&["--detector", "consul://d", "--consul-addr", "127.0.0.1:8500"]).unwrap();
        let c = flags(&["--delegator", "a:1,b:2"]).unwrap();
        assert_eq!(c.delegator, Target::Static(vec!["a:1".into(), "b:2".into()]));
        assert!(flags(&["--results", "consul://"]).is_err());
    }

    #[test]
    fn plain_defaults_are_the_flag_defaults() {
        assert_eq!(flags(&[]).unwrap(), Config::default());
    }
}
