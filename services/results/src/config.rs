//! Results service configuration: clap [`Args`] (flags and environment, for the binary)
//! parsed once into a plain [`Config`] that `spawn` runs with.

use std::net::SocketAddr;

use facesweep_common::auth::{AuthArgs, AuthConfig};
use facesweep_common::consul::{ConsulArgs, ConsulConfig};
use facesweep_common::tls::{TlsArgs, TlsConfig};

/// Results service configuration (`facesweep-results --help`).
#[derive(Clone, Debug, clap::Parser)]
#[command(name = "facesweep-results", version, about)]
pub struct Args {
    /// Address to serve gRPC on.
    #[arg(long, env = "RESULTS_LISTEN", default_value = "0.0.0.0:50053")]
    pub listen: SocketAddr,
    /// Postgres URL.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// Serve Prometheus metrics at http://ADDR/metrics (off when absent).
    #[arg(long, env = "RESULTS_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Maximum Postgres connections in the pool.
    #[arg(long, env = "RESULTS_DB_CONNECTIONS", default_value_t = 16)]
    pub db_connections: u32,
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

/// What a results service runs with: plain data, from [`Args`] (the binary) or built field by
/// field (embedders), so no environment variable reaches an embedded one. See [`Args`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub listen: SocketAddr,
    pub database_url: String,
    pub metrics_listen: Option<SocketAddr>,
    pub db_connections: u32,
    pub consul: ConsulConfig,
    pub tls: TlsConfig,
    pub auth: AuthConfig,
}

impl Config {
    /// The documented defaults (`--help`) with this Postgres URL.
    pub fn new(database_url: impl Into<String>) -> Self {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 50053)),
            database_url: database_url.into(),
            metrics_listen: None,
            db_connections: 16,
            consul: ConsulConfig::default(),
            tls: TlsConfig::default(),
            auth: AuthConfig::default(),
        }
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.db_connections >= 1, "--db-connections must be at least 1");
        Ok(())
    }
}

impl Args {
    /// The plain, validated configuration.
    pub fn into_config(self) -> anyhow::Result<Config> {
        let config = Config {
            listen: self.listen,
            database_url: self.database_url,
            metrics_listen: self.metrics_listen,
            db_connections: self.db_connections,
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
        let args: Args = parse_flags_only(["r", "--database-url", "postgres://x"]).unwrap();
        assert_eq!(args.into_config().unwrap(), Config::new("postgres://x"));
    }
}
