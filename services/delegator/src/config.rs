//! Delegator configuration: clap [`Args`] (flags and environment, for the binary) parsed once
//! into a plain [`Config`] that `spawn` runs with.

use std::net::SocketAddr;

use facesweep_common::auth::{AuthArgs, AuthConfig};
use facesweep_common::consul::{ConsulArgs, ConsulConfig};
use facesweep_common::tls::{TlsArgs, TlsConfig};

use crate::membership::Shard;

/// Delegator configuration (`facesweep-delegator --help`).
#[derive(Clone, Debug, clap::Parser)]
#[command(name = "facesweep-delegator", version, about)]
pub struct Args {
    /// Address to serve gRPC on.
    #[arg(long, env = "DELEGATOR_LISTEN", default_value = "0.0.0.0:50051")]
    pub listen: SocketAddr,
    /// Postgres URL.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// This instance's shard: it leases chunks with `chunk_no % shard_count == shard_index`.
    #[arg(long, env = "DELEGATOR_SHARD_INDEX", default_value_t = 0)]
    pub shard_index: u32,
    /// Number of delegator instances.
    #[arg(long, env = "DELEGATOR_SHARD_COUNT", default_value_t = 1)]
    pub shard_count: u32,
    /// Elastic shards: when set, (index, count) come from the delegators alive in Postgres
    /// (heartbeat every third of this), not from --shard-index/--shard-count, and a member
    /// silent this many seconds is dropped; scaling needs no restart. 0: fixed shards.
    #[arg(long, env = "DELEGATOR_MEMBERSHIP_TIMEOUT_SECS", default_value_t = 0)]
    pub membership_timeout_secs: u64,
    /// This delegator's name among members (elastic shards); default: host name and a random
    /// suffix. Give StatefulSet pods their pod name.
    #[arg(long, env = "DELEGATOR_MEMBER_ID")]
    pub member_id: Option<String>,
    /// Lease lifetime without renewal, in seconds.
    #[arg(long, env = "DELEGATOR_LEASE_TTL_SECS", default_value_t = 60)]
    pub lease_ttl_secs: u64,
    /// URLs per chunk for jobs created without an explicit chunk size.
    #[arg(long, env = "DELEGATOR_DEFAULT_CHUNK_SIZE", default_value_t = 500)]
    pub default_chunk_size: u32,
    /// Maximum Postgres connections in the pool.
    #[arg(long, env = "DELEGATOR_DB_CONNECTIONS", default_value_t = 16)]
    pub db_connections: u32,
    /// Serve Prometheus metrics at http://ADDR/metrics (off when absent).
    #[arg(long, env = "DELEGATOR_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Failures of a chunk (expired or incomplete leases) before its leases start halving.
    #[arg(long, env = "DELEGATOR_SPLIT_AFTER", default_value_t = 3)]
    pub split_after: i32,
    /// Failed single-URL leases before that URL gets the terminal status `abandoned`.
    #[arg(long, env = "DELEGATOR_ABANDON_AFTER", default_value_t = 3)]
    pub abandon_after: i32,
    /// Pause before a chunk whose lease failed is leased again, milliseconds; doubles with
    /// each failure of the chunk (at most 5 min), jittered ±50%.
    #[arg(long, env = "DELEGATOR_FAILURE_BACKOFF_MS", default_value_t = 2_000)]
    pub failure_backoff_ms: u64,
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

/// What a delegator runs with: plain data, from [`Args`] (the binary) or built field by field
/// (embedders), so no environment variable reaches an embedded delegator. See [`Args`] for
/// each field's meaning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub listen: SocketAddr,
    pub database_url: String,
    pub shard_index: u32,
    pub shard_count: u32,
    pub membership_timeout_secs: u64,
    pub member_id: Option<String>,
    pub lease_ttl_secs: u64,
    pub default_chunk_size: u32,
    pub db_connections: u32,
    pub metrics_listen: Option<SocketAddr>,
    pub split_after: i32,
    pub abandon_after: i32,
    pub failure_backoff_ms: u64,
    pub consul: ConsulConfig,
    pub tls: TlsConfig,
    pub auth: AuthConfig,
}

impl Config {
    /// The documented defaults (`--help`) with this Postgres URL.
    pub fn new(database_url: impl Into<String>) -> Self {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 50051)),
            database_url: database_url.into(),
            shard_index: 0,
            shard_count: 1,
            membership_timeout_secs: 0,
            member_id: None,
            lease_ttl_secs: 60,
            default_chunk_size: 500,
            db_connections: 16,
            metrics_listen: None,
            split_after: 3,
            abandon_after: 3,
            failure_backoff_ms: 2_000,
            consul: ConsulConfig::default(),
            tls: TlsConfig::default(),
            auth: AuthConfig::default(),
        }
    }

    /// Rejects settings that would make leasing wrong rather than slow.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.shard_count >= 1, "--shard-count must be at least 1");
        anyhow::ensure!(
            self.shard_index < self.shard_count,
            "--shard-index {} must be below --shard-count {}",
            self.shard_index,
            self.shard_count
        );
        anyhow::ensure!(self.lease_ttl_secs >= 1, "--lease-ttl-secs must be at least 1");
        anyhow::ensure!(
            self.split_after >= 1 && self.abandon_after >= 1,
            "--split-after and --abandon-after must be at least 1"
        );
        anyhow::ensure!(
            (1..=1_000_000).contains(&self.default_chunk_size),
            "--default-chunk-size must be in 1..=1000000"
        );
        Ok(())
    }

    /// The member name for elastic shards.
    pub fn member_name(&self) -> String {
        self.member_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
            format!("{}-{:08x}", host.trim(), rand::random::<u32>())
        })
    }

    pub fn shard(&self) -> Shard {
        Shard { index: self.shard_index, count: self.shard_count }
    }
}

impl Args {
    /// The plain, validated configuration.
    pub fn into_config(self) -> anyhow::Result<Config> {
        let config = Config {
            listen: self.listen,
            database_url: self.database_url,
            shard_index: self.shard_index,
            shard_count: self.shard_count,
            membership_timeout_secs: self.membership_timeout_secs,
            member_id: self.member_id,
            lease_ttl_secs: self.lease_ttl_secs,
            default_chunk_size: self.default_chunk_size,
            db_connections: self.db_connections,
            metrics_listen: self.metrics_listen,
            split_after: self.split_after,
            abandon_after: self.abandon_after,
            failure_backoff_ms: self.failure_backoff_ms,
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

    fn flags(extra: &[&str]) -> Args {
        let argv = ["d", "--database-url", "postgres://x"].iter().chain(extra);
        parse_flags_only(argv).unwrap()
    }

    #[test]
    fn config_parses_and_validates() {
        let c = flags(&["--shard-index", "1", "--shard-count", "2"]).into_config().unwrap();
        assert_eq!(c.shard(), Shard { index: 1, count: 2 });
        let err = flags(&["--shard-index", "2", "--shard-count", "2"]).into_config().unwrap_err();
        assert!(err.to_string().contains("--shard-index 2 must be below --shard-count 2"), "{err}");
    }

    #[test]
    fn plain_defaults_are_the_flag_defaults() {
        assert_eq!(flags(&[]).into_config().unwrap(), Config::new("postgres://x"));
    }
}
