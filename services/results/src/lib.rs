//! Results service: persists one terminal status per URL (first writer wins) and its faces.

mod metrics;
mod service;
pub mod store;
mod watch;

use std::net::SocketAddr;

use facesweep_common::auth::Authorizer;
use facesweep_common::consul::register_self;
use facesweep_common::grpc::{self, Frontend, Running};
use facesweep_common::Shutdown;
use facesweep_proto::results_service_server::ResultsServiceServer;

pub use store::Store;

/// Results service configuration (`facesweep-results --help`).
#[derive(Clone, Debug, clap::Parser)]
#[command(name = "facesweep-results", version, about)]
pub struct Config {
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
    pub consul: facesweep_common::consul::ConsulArgs,
    /// Mutual TLS for gRPC (off unless --tls-cert, --tls-key and --tls-ca are all set).
    #[command(flatten)]
    pub tls: facesweep_common::tls::TlsArgs,
    /// Credentials for admin calls (off: loopback callers only).
    #[command(flatten)]
    pub auth: facesweep_common::auth::AuthArgs,
}

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
    metrics::register();
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
    ))
    .max_decoding_message_size(64 << 20);
    let router = front.router(&["facesweep.v1.ResultsService"])?.add_service(svc);
    let metrics =
        facesweep_common::metrics::maybe_serve(config.metrics_listen, &metrics::REGISTRY, shutdown.clone())
            .await?;
    let running = grpc::spawn_router(router, listener, shutdown.clone());
    let consul = register_self(&config.consul, front.announce("results", running.addr), shutdown)?;
    Ok(grpc::Running { metrics, ..running }.also_awaiting(consul))
}

/// Serves until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    spawn(config, shutdown).await?.join().await
}
