//! Delegator: durable, expiring leases on chunks of URLs, sharded by `chunk_no % N`.

mod config;
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

use std::time::Duration;

use facesweep_common::auth::Authorizer;
use facesweep_common::consul::Announce;
use facesweep_common::grpc::{self, Frontend, Running};
use facesweep_common::Shutdown;
use facesweep_proto::delegator_service_server::DelegatorServiceServer;

pub use config::{Args, Config};
pub use failures::Limits;
pub use membership::Shard;
pub use store::Store;

/// Starts serving in the background; returns once the port is bound and Postgres is ready.
pub async fn spawn(config: Config, shutdown: Shutdown) -> anyhow::Result<Running> {
    config.validate()?;
    let metrics = std::sync::Arc::new(metrics::Metrics::new());
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
    let ttl = Duration::from_secs(config.lease_ttl_secs);
    let store = Store::new(pool, shard, ttl, limits, metrics.urls_abandoned.clone());
    tokio::spawn(sweeper(
        store.clone(),
        Duration::from_millis((config.lease_ttl_secs * 250).clamp(200, 5_000)),
        metrics.clone(),
        shutdown.clone(),
    ));
    let auth = Authorizer::new(&config.auth);
    let svc = service::DelegatorSvc::new(store, config.default_chunk_size, auth, metrics.clone());
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
        facesweep_common::metrics::maybe_serve(config.metrics_listen, &metrics.registry, shutdown.clone())
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
async fn sweeper(
    store: Store,
    every: Duration,
    metrics: std::sync::Arc<metrics::Metrics>,
    shutdown: Shutdown,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match store.sweep().await {
            Ok(0) => {}
            Ok(n) => {
                metrics.leases_expired.inc_by(n);
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
            Ok(n) => metrics.backlog_urls.set(n),
            Err(e) => tracing::warn!(error = %e, "reading the backlog failed"),
        }
    }
}

/// Serves until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    spawn(config, shutdown).await?.join().await
}
