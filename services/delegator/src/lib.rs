//! Delegator: durable, expiring leases on chunks of URLs, sharded by `chunk_no % N`.

pub mod failures;
mod import;
mod lifecycle;
pub mod membership;
mod metrics;
pub mod progress;
pub mod sched;
mod service;
pub mod store;
mod upkeep;

use std::net::SocketAddr;
use std::time::Duration;

use facesweep_common::auth::Authorizer;
use facesweep_common::consul::Announce;
use facesweep_common::grpc::{self, Frontend, Running};
use facesweep_common::Shutdown;
use facesweep_proto::delegator_service_server::DelegatorServiceServer;

pub use failures::Limits;
pub use membership::Shard;
pub use store::Store;

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
    pub consul: facesweep_common::consul::ConsulArgs,
    /// Mutual TLS for gRPC (off unless --tls-cert, --tls-key and --tls-ca are all set).
    #[command(flatten)]
    pub tls: facesweep_common::tls::TlsArgs,
    /// Credentials for admin calls (off: loopback callers only).
    #[command(flatten)]
    pub auth: facesweep_common::auth::AuthArgs,
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

/// Starts serving in the background; returns once the port is bound and Postgres is ready.
pub async fn spawn(config: Config, shutdown: Shutdown) -> anyhow::Result<Running> {
    metrics::register();
    config.validate()?;
    let front = Frontend::start(&config.tls, &shutdown).await?;
    let listener = grpc::bind(config.listen).await?;
    let pool = facesweep_store::connect(&config.database_url, config.db_connections).await?;
    let limits = Limits {
        split_after: config.split_after,
        abandon_after: config.abandon_after,
        backoff: Duration::from_millis(config.failure_backoff_ms),
    };
    let db = pool.clone();
    let shard = membership::ShardCell::new(config.shard());
    if config.membership_timeout_secs > 0 {
        let (me, timeout) = (config.member_name(), Duration::from_secs(config.membership_timeout_secs));
        // Serve with a real shard from the first call.
        shard.update(membership::beat(&pool, &me, timeout).await?);
        tokio::spawn(membership::run(pool.clone(), me, timeout, shard.clone(), shutdown.clone()));
    }
    let store = Store::new(pool, shard, Duration::from_secs(config.lease_ttl_secs), limits);
    tokio::spawn(sweeper(
        store.clone(),
        Duration::from_millis((config.lease_ttl_secs * 250).clamp(200, 5_000)),
        shutdown.clone(),
    ));
    let svc = service::DelegatorSvc::new(store, config.default_chunk_size, Authorizer::new(&config.auth));
    grpc::health_follows(
        front.health.clone(),
        "facesweep.v1.DelegatorService",
        Duration::from_secs(2),
        shutdown.clone(),
        move || {
            let db = db.clone();
            async move { grpc::db_ready(&db).await }
        },
    );
    let router = front
        .router(&["facesweep.v1.DelegatorService"])?
        .add_service(DelegatorServiceServer::new(svc).max_decoding_message_size(64 << 20));
    tracing::info!(shard = ?config.shard(), "delegator serving");
    let metrics =
        facesweep_common::metrics::maybe_serve(config.metrics_listen, &metrics::REGISTRY, shutdown.clone())
            .await?;
    let running = grpc::spawn_router(router, listener, shutdown.clone());
    // Shards are not replicas: fetchers rotate over every delegator, so tag which is which.
    let me = Announce {
        tags: vec![format!("shard-{}", config.shard_index)],
        meta: vec![
            ("shard_index".into(), config.shard_index.to_string()),
            ("shard_count".into(), config.shard_count.to_string()),
        ],
        ..front.announce("delegator", running.addr)
    };
    let consul = facesweep_common::consul::register_self(&config.consul, me, shutdown)?;
    Ok(grpc::Running { metrics, ..running }.also_awaiting(consul))
}

/// Returns expired leases of this shard to pending, finishes interrupted cancels and
/// deletes, marks finished jobs `done`, folds the progress counters and publishes the
/// backlog, every `every`.
async fn sweeper(store: Store, every: Duration, shutdown: Shutdown) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match store.sweep().await {
            Ok(0) => {}
            Ok(n) => {
                crate::metrics::LEASES_EXPIRED.inc_by(n);
                tracing::info!(expired = n, "returned expired leases")
            }
            Err(e) => tracing::warn!(error = %e, "sweep failed"),
        }
        if let Err(e) = store.resume_unfinished().await {
            tracing::warn!(error = %e, "finishing an interrupted cancel or delete failed");
        }
        match store.mark_done().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(jobs = n, "jobs finished"),
            Err(e) => tracing::warn!(error = %e, "marking finished jobs failed"),
        }
        if let Err(e) = store.fold_chunk_counts().await {
            tracing::warn!(error = %e, "folding progress counters failed");
        }
        match store.backlog().await {
            Ok(n) => crate::metrics::BACKLOG_URLS.set(n),
            Err(e) => tracing::warn!(error = %e, "reading the backlog failed"),
        }
    }
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
