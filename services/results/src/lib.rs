//! Results service: persists one terminal status per URL (first writer wins) and its faces.

mod config;
mod metrics;
mod service;
pub mod store;
mod watch;

use facesweep_common::auth::Authorizer;
use facesweep_common::consul::register_self;
use facesweep_common::grpc::{self, Frontend, Running};
use facesweep_common::Shutdown;
use facesweep_proto::results_service_server::ResultsServiceServer;

pub use config::{Args, Config};
pub use store::Store;

/// Summarises new ranges of the faces BRIN index every few seconds: autosummarize requests
/// are dropped when autovacuum is busy, and an unsummarised range matches every export page.
async fn summarize_faces(pool: sqlx::PgPool, shutdown: Shutdown) {
    let every = std::time::Duration::from_secs(5);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let run = sqlx::query("SELECT brin_summarize_new_values('faces_url_id')").execute(&pool);
        match tokio::time::timeout(every * 12, run).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "summarising the faces index failed"),
            Err(_) => tracing::warn!("summarising the faces index took over a minute"),
        }
    }
}

/// Starts serving in the background; returns once the port is bound and Postgres is ready.
pub async fn spawn(config: Config, shutdown: Shutdown) -> anyhow::Result<Running> {
    config.validate()?;
    let metrics = std::sync::Arc::new(metrics::Metrics::new());
    let front = Frontend::start(&config.tls, &shutdown).await?;
    let listener = grpc::bind(config.listen).await?;
    let pool = facesweep_store::connect(&config.database_url, config.db_connections).await?;
    tokio::spawn(summarize_faces(pool.clone(), shutdown.clone()));
    let db = pool.clone();
    grpc::health_follows(
        front.health.clone(),
        "facesweep.v1.ResultsService",
        std::time::Duration::from_secs(2),
        shutdown.clone(),
        move || {
            let db = db.clone();
            async move { grpc::db_ready(&db).await }
        },
    );
    let svc = ResultsServiceServer::new(service::ResultsSvc::new(
        Store::new(pool),
        Authorizer::new(&config.auth),
        shutdown.clone(),
        metrics.clone(),
    ))
    .max_decoding_message_size(64 << 20);
    let router = front.router(&["facesweep.v1.ResultsService"])?.add_service(svc);
    let metrics =
        facesweep_common::metrics::maybe_serve(config.metrics_listen, &metrics.registry, shutdown.clone())
            .await?;
    let running = grpc::spawn_router(router, listener, shutdown.clone());
    let consul = register_self(&config.consul, front.announce("results", running.addr), shutdown)?;
    Ok(grpc::Running { metrics, ..running }.also_awaiting(consul))
}

/// Serves until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    spawn(config, shutdown).await?.join().await
}
