//! Cooperative shutdown: one token cancelled by a signal or by the embedding process.

pub use tokio_util::sync::CancellationToken as Shutdown;

/// Resolves on SIGINT or SIGTERM.
pub async fn signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// A shutdown token cancelled on SIGINT/SIGTERM, for thin `main`s.
pub fn on_signal() -> Shutdown {
    let token = Shutdown::new();
    let t = token.clone();
    tokio::spawn(async move {
        signal().await;
        tracing::info!("signal received, shutting down");
        t.cancel();
    });
    token
}
