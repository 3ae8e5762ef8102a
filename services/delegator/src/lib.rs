//! Delegator: durable, expiring leases on chunks of URLs, sharded by `chunk_no % N`.

mod import;
mod service;
pub mod store;

use std::net::SocketAddr;
use std::time::Duration;

use facesweep_common::grpc::{self, Running};
use facesweep_common::Shutdown;
use facesweep_proto::delegator_service_server::DelegatorServiceServer;

pub use store::{Shard, Store};

/// Delegator configuration (`facesweep-delegator --help`).
#[derive(Clone, Debug, clap::Parser)]
#[command(name = "facesweep-delegator", version, about)]
pub struct Config {
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
    /// Lease lifetime without renewal, in seconds.
    #[arg(long, env = "DELEGATOR_LEASE_TTL_SECS", default_value_t = 60)]
    pub lease_ttl_secs: u64,
    /// URLs per chunk for jobs created without an explicit chunk size.
    #[arg(long, env = "DELEGATOR_DEFAULT_CHUNK_SIZE", default_value_t = 500)]
    pub default_chunk_size: u32,
    /// Maximum Postgres connections in the pool.
    #[arg(long, env = "DELEGATOR_DB_CONNECTIONS", default_value_t = 16)]
    pub db_connections: u32,
}

impl Config {
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
            (1..=1_000_000).contains(&self.default_chunk_size),
            "--default-chunk-size must be in 1..=1000000"
        );
        Ok(())
    }

    pub fn shard(&self) -> Shard {
        Shard { index: self.shard_index, count: self.shard_count }
    }
}

/// Starts serving in the background; returns once the port is bound and Postgres is ready.
pub async fn spawn(config: Config, shutdown: Shutdown) -> anyhow::Result<Running> {
    config.validate()?;
    let listener = grpc::bind(config.listen).await?;
    let pool = facesweep_common::db::connect(&config.database_url, config.db_connections).await?;
    let store = Store::new(pool, config.shard(), Duration::from_secs(config.lease_ttl_secs));
    let svc = service::DelegatorSvc::new(store, config.default_chunk_size);
    let (health, health_svc) = grpc::health();
    health.set_serving::<DelegatorServiceServer<service::DelegatorSvc>>().await;
    let router =
        grpc::with_reflection(grpc::server().add_service(health_svc), &["facesweep.v1.DelegatorService"])
            .add_service(DelegatorServiceServer::new(svc).max_decoding_message_size(64 << 20));
    tracing::info!(shard = ?config.shard(), "delegator serving");
    Ok(grpc::spawn_router(router, listener, shutdown))
}

/// Serves until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    spawn(config, shutdown).await?.join().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn config_parses_and_validates() {
        let c = Config::try_parse_from([
            "d",
            "--database-url",
            "postgres://x",
            "--shard-index",
            "1",
            "--shard-count",
            "2",
        ])
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.shard(), Shard { index: 1, count: 2 });
        let bad = Config::try_parse_from([
            "d",
            "--database-url",
            "postgres://x",
            "--shard-index",
            "2",
            "--shard-count",
            "2",
        ])
        .unwrap();
        assert!(bad.validate().is_err());
    }
}
