//! Serving helpers: every service answers grpc.health.v1 and reflection (v1 and v1alpha).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::server::Router;
use tonic::transport::{Channel, Endpoint, Server};
use tonic_health::server::{HealthReporter, HealthService};

use crate::consul::Announce;
use crate::tls::{Tls, TlsConfig};
use crate::Shutdown;

/// A server builder with the settings every facesweep service uses; mTLS when `tls` is set.
fn server(tls: Option<&Tls>) -> anyhow::Result<Server> {
    let builder = Server::builder()
        .trace_fn(crate::propagation::server_span)
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)));
    Ok(match tls {
        Some(tls) => builder.tls_config(tls.server())?,
        None => builder,
    })
}

type HealthServer = tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService>;

/// What every server sets up the same way: its mTLS material, a health reporter that starts
/// NOT_SERVING (also served alone and plaintext when asked: kubelet and Consul's agent hold no
/// client certificate), and a router with health and reflection.
pub struct Frontend {
    pub tls: Option<Tls>,
    pub health: HealthReporter,
    health_svc: HealthServer,
    plain_health: Option<SocketAddr>,
}

impl Frontend {
    pub async fn start(tls: &TlsConfig, shutdown: &Shutdown) -> anyhow::Result<Frontend> {
        let loaded = tls.load()?;
        let (health, _) = tonic_health::server::health_reporter();
        // tonic starts the overall "" entry SERVING; probes must not pass before we are ready.
        health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
        let health_svc = HealthServer::new(HealthService::from_health_reporter(health.clone()));
        let plain_health = match tls.plaintext_health_listen {
            Some(listen) => Some(serve_plain_health(listen, health_svc.clone(), shutdown.clone()).await?),
            None => None,
        };
        Ok(Frontend { tls: loaded, health, health_svc, plain_health })
    }

    /// A router serving health and reflection (listing `services` too); mTLS when configured.
    pub fn router(&self, services: &[&str]) -> anyhow::Result<Router> {
        let server = server(self.tls.as_ref())?.add_service(self.health_svc.clone());
        Ok(with_reflection(server, services))
    }

    /// What Consul is told about this `role` server, bound at `addr`.
    pub fn announce(&self, role: &'static str, addr: SocketAddr) -> Announce {
        Announce::new(role, addr, self.tls.is_some(), self.plain_health)
    }
}

/// Serves `health` alone, plaintext, on `listen` until `shutdown`; returns the bound address.
async fn serve_plain_health(
    listen: SocketAddr,
    health: HealthServer,
    shutdown: Shutdown,
) -> anyhow::Result<SocketAddr> {
    let listener = bind(listen).await?;
    let addr = listener.local_addr()?;
    let router = Server::builder().add_service(health);
    tokio::spawn(async move {
        let incoming = TcpListenerStream::new(listener);
        if let Err(e) = router.serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned()).await {
            tracing::warn!(error = %e, "plaintext health server failed");
        }
    });
    Ok(addr)
}

/// Adds both reflection versions: grpcurl 1.8 only speaks v1alpha, newer clients v1.
/// `services` are the fully qualified names this server serves (health is always added).
pub fn with_reflection<L>(router: Router<L>, services: &[&str]) -> Router<L> {
    let builder = || {
        let mut b = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(facesweep_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
        // Listing exactly what is served: the descriptor set holds every facesweep service.
        for name in services.iter().copied().chain(SERVED_BY_ALL) {
            b = b.with_service_name(name);
        }
        b
    };
    let v1 = builder().build_v1().expect("valid descriptor set");
    let v1alpha = builder().build_v1alpha().expect("valid descriptor set");
    router.add_service(v1).add_service(v1alpha)
}

const SERVED_BY_ALL: [&str; 3] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// A server running in the background: its bound address and its task.
pub struct Running {
    pub addr: SocketAddr,
    pub task: JoinHandle<anyhow::Result<()>>,
    /// Where `/metrics` is served, when enabled.
    pub metrics: Option<SocketAddr>,
}

impl Running {
    pub async fn join(self) -> anyhow::Result<()> {
        self.task.await?
    }

    /// Makes `join` also wait for `side` (e.g. Consul deregistration) once the server is done.
    pub fn also_awaiting(mut self, side: Option<JoinHandle<()>>) -> Self {
        if let Some(side) = side {
            let task = self.task;
            self.task = tokio::spawn(async move {
                let served = task.await;
                let _ = side.await;
                served?
            });
        }
        self
    }
}

/// Binds `addr` (port 0 picks a free one).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("bind {addr}: {e}"))
}

/// Serves `router` on `listener` until `shutdown`, then drains in-flight calls.
pub fn spawn_router<L>(router: Router<L>, listener: TcpListener, shutdown: Shutdown) -> Running
where
    Router<L>: ServeRouter,
{
    let addr = listener.local_addr().expect("bound listener");
    let task = tokio::spawn(router.serve_until(listener, shutdown));
    Running { addr, task, metrics: None }
}

/// Lets `spawn_router` stay generic over tower layers without naming their bounds.
pub trait ServeRouter: Send + 'static {
    fn serve_until(
        self,
        listener: TcpListener,
        shutdown: Shutdown,
    ) -> futures::future::BoxFuture<'static, anyhow::Result<()>>;
}

impl ServeRouter for Router<tower::layer::util::Identity> {
    fn serve_until(
        self,
        listener: TcpListener,
        shutdown: Shutdown,
    ) -> futures::future::BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            self.serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown.cancelled_owned())
                .await?;
            Ok(())
        })
    }
}

/// Bounds a client call, whatever the peer does: DEADLINE_EXCEEDED after `limit`.
pub async fn within<T>(
    limit: Duration,
    call: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> Result<T, tonic::Status> {
    tokio::time::timeout(limit, call)
        .await
        .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded(format!("no answer within {limit:?}"))))
}

/// A lazily connecting plaintext channel to `addr` (`host:port` or `http://host:port`).
pub fn channel(addr: &str) -> anyhow::Result<Channel> {
    channel_to(addr, None, "")
}

/// A lazily connecting channel to a `role` server at `addr`; mTLS when `tls` is set.
pub fn channel_to(addr: &str, tls: Option<&Tls>, role: &str) -> anyhow::Result<Channel> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let uri = match addr.split_once("://") {
        Some((_, rest)) => format!("{scheme}://{rest}"),
        None => format!("{scheme}://{addr}"),
    };
    let mut endpoint = Endpoint::from_shared(uri)?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_while_idle(true);
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls.client(role))?;
    }
    Ok(endpoint.connect_lazy())
}

/// Keeps `service` (and the overall "" entry) SERVING only while `ready` holds, checked every
/// `every`; NOT_SERVING from the moment shutdown starts, so balancers stop sending work.
pub fn health_follows<F, Fut>(
    reporter: tonic_health::server::HealthReporter,
    service: &'static str,
    every: Duration,
    shutdown: Shutdown,
    ready: F,
) where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    use tonic_health::ServingStatus::{NotServing, Serving};
    tokio::spawn(async move {
        let mut last = None;
        loop {
            let ok = !shutdown.is_cancelled() && ready().await;
            let status = if ok { Serving } else { NotServing };
            if last != Some(status) {
                if last.is_some() {
                    tracing::warn!(service, ?status, "health changed");
                }
                reporter.set_service_status(service, status).await;
                reporter.set_service_status("", status).await;
                last = Some(status);
            }
            if shutdown.is_cancelled() {
                return;
            }
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(every) => {}
            }
        }
    });
}

/// Whether Postgres answers within two seconds.
pub async fn db_ready(pool: &sqlx::PgPool) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(2), sqlx::query("SELECT 1").execute(pool)).await,
        Ok(Ok(_))
    )
}
