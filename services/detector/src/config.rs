//! Detector configuration: clap [`Args`] (flags and environment, for the binary) parsed once
//! into a plain [`Config`] that `spawn` runs with.

use std::net::SocketAddr;
use std::path::PathBuf;

use facesweep_common::auth::{AuthArgs, AuthConfig};
use facesweep_common::consul::{ConsulArgs, ConsulConfig};
use facesweep_common::tls::{TlsArgs, TlsConfig};

/// Detector configuration (`facesweep-detector --help`).
#[derive(Clone, Debug, clap::Parser)]
#[command(name = "facesweep-detector", version, about)]
pub struct Args {
    /// Address to serve gRPC on.
    #[arg(long, env = "DETECTOR_LISTEN", default_value = "0.0.0.0:50052")]
    pub listen: SocketAddr,
    /// TorchScript model; its contract is read from the `.json` beside it.
    #[arg(long, env = "DETECTOR_MODEL", default_value = "models/retinaface_mnet025.pt")]
    pub model: PathBuf,
    /// `auto` (CUDA when present), `cpu`, or `cuda:N`.
    #[arg(long, env = "DETECTOR_DEVICE", default_value = "auto")]
    pub device: String,
    /// Run fp32 on CUDA instead of the default fp16.
    #[arg(long, env = "DETECTOR_FP32")]
    pub fp32: bool,
    /// Largest batch handed to the model.
    #[arg(long, env = "DETECTOR_MAX_BATCH", default_value_t = 32)]
    pub max_batch: usize,
    /// Longest the first image of a batch waits for company, in microseconds.
    #[arg(long, env = "DETECTOR_MAX_DELAY_US", default_value_t = 2000)]
    pub max_delay_us: u64,
    /// Images queued across all streams before new work waits (streams) or is refused (unary).
    #[arg(long, env = "DETECTOR_QUEUE", default_value_t = 1024)]
    pub queue: usize,
    /// Pixels queued per device at most, MiB (bounds memory whatever the image sizes).
    #[arg(long, env = "DETECTOR_QUEUE_MIB", default_value_t = 1024)]
    pub queue_mib: u64,
    /// Serve Prometheus metrics at http://ADDR/metrics (off when absent).
    #[arg(long, env = "DETECTOR_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// CPU threads for LibTorch; 0 = number of cores.
    #[arg(long, env = "DETECTOR_THREADS", default_value_t = 0)]
    pub threads: usize,
    /// Consul registration (off unless --consul-addr / CONSUL_HTTP_ADDR is set).
    #[command(flatten)]
    pub consul: ConsulArgs,
    /// Mutual TLS for gRPC (off unless --tls-cert, --tls-key and --tls-ca are all set).
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Credentials for admin calls (off: loopback callers only).
    #[command(flatten)]
    pub auth: AuthArgs,
}

/// What a detector runs with: plain data, from [`Args`] (the binary) or built field by field
/// from [`Config::default`] (embedders), so no environment variable reaches an embedded
/// detector. See [`Args`] for each field's meaning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub listen: SocketAddr,
    pub model: PathBuf,
    pub device: String,
    pub fp32: bool,
    pub max_batch: usize,
    pub max_delay_us: u64,
    pub queue: usize,
    pub queue_mib: u64,
    pub metrics_listen: Option<SocketAddr>,
    pub threads: usize,
    pub consul: ConsulConfig,
    pub tls: TlsConfig,
    pub auth: AuthConfig,
}

/// The documented defaults (`--help`).
impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 50052)),
            model: "models/retinaface_mnet025.pt".into(),
            device: "auto".into(),
            fp32: false,
            max_batch: 32,
            max_delay_us: 2000,
            queue: 1024,
            queue_mib: 1024,
            metrics_listen: None,
            threads: 0,
            consul: ConsulConfig::default(),
            tls: TlsConfig::default(),
            auth: AuthConfig::default(),
        }
    }
}

impl Config {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!((1..=1024).contains(&self.max_batch), "--max-batch must be in 1..=1024");
        anyhow::ensure!(self.queue >= self.max_batch, "--queue must be at least --max-batch");
        anyhow::ensure!(
            self.model.exists(),
            "model {} not found (run scripts/setup.sh)",
            self.model.display()
        );
        Ok(())
    }

    pub fn torch_device(&self) -> anyhow::Result<tch::Device> {
        Ok(match self.device.as_str() {
            "auto" => tch::Device::cuda_if_available(),
            "cpu" => tch::Device::Cpu,
            "cuda" => tch::Device::Cuda(0),
            d => match d.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
                Some(n) => tch::Device::Cuda(n),
                None => anyhow::bail!("--device must be auto, cpu, cuda or cuda:N, got {d:?}"),
            },
        })
    }
}

impl Args {
    /// The plain, validated configuration.
    pub fn into_config(self) -> anyhow::Result<Config> {
        let config = Config {
            listen: self.listen,
            model: self.model,
            device: self.device,
            fp32: self.fp32,
            max_batch: self.max_batch,
            max_delay_us: self.max_delay_us,
            queue: self.queue,
            queue_mib: self.queue_mib,
            metrics_listen: self.metrics_listen,
            threads: self.threads,
            consul: self.consul.into(),
            tls: self.tls.into(),
            auth: self.auth.into(),
        };
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use facesweep_common::config::parse_flags_only;

    #[test]
    fn plain_defaults_are_the_flag_defaults() {
        let args: Args = parse_flags_only(["d"]).unwrap();
        let model = args.model.clone();
        let err = args.into_config().unwrap_err().to_string();
        assert!(err.contains("not found"), "validated on the way: {err}");
        let args: Args = parse_flags_only(["d", "--model", "Cargo.toml"]).unwrap();
        let expected = Config { model: "Cargo.toml".into(), ..Config::default() };
        assert_eq!(args.into_config().unwrap(), expected);
        assert_eq!(model, Config::default().model);
    }
}
