//! Prometheus plumbing: metric constructors that register in the process registry, and the
//! `GET /metrics` server. Each component defines and registers its own metrics (the
//! services' `metrics.rs`; discovery's below, since discovery lives here). Names and
//! meanings: docs/operations.md.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::LazyLock;

use bytes::Bytes;
use http_body_util::Full;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, TextEncoder,
};

use crate::Shutdown;

pub fn counter(name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    let _ = prometheus::register(Box::new(c.clone()));
    c
}

pub fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    let _ = prometheus::register(Box::new(c.clone()));
    c
}

pub fn gauge(name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    let _ = prometheus::register(Box::new(g.clone()));
    g
}

pub fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    let _ = prometheus::register(Box::new(g.clone()));
    g
}

pub fn histogram(name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).expect("valid metric");
    let _ = prometheus::register(Box::new(h.clone()));
    h
}

pub fn seconds() -> Vec<f64> {
    prometheus::exponential_buckets(0.0005, 2.0, 16).expect("valid buckets")
}

// Discovery (fetcher).
pub static DISCOVERY_MEMBERS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge_vec(
        "facesweep_discovery_members",
        "Servers known for a target (static or passing in Consul).",
        &["target"],
    )
});
pub static DISCOVERY_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec("facesweep_discovery_errors_total", "Failed Consul health queries.", &["target"])
});

/// Serves metrics on `addr` when given; for a service's `run`.
pub async fn maybe_serve(addr: Option<SocketAddr>, shutdown: Shutdown) -> anyhow::Result<Option<SocketAddr>> {
    match addr {
        Some(a) => Ok(Some(serve(a, shutdown).await?)),
        None => Ok(None),
    }
}

/// The process registry in Prometheus text format.
pub fn render() -> String {
    let mut out = Vec::new();
    let _ = TextEncoder::new().encode(&prometheus::gather(), &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// Registers discovery's metrics now, so they appear (at zero) before their first event.
pub fn register_discovery() {
    let _ = (&*DISCOVERY_MEMBERS, &*DISCOVERY_ERRORS);
}

const SCRAPE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// After a failed accept (EMFILE, ENFILE, ENOBUFS…): retrying at once would spin a core.
const ACCEPT_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// One accepted connection; on error, a pause and `None`, so a loop around it never spins.
async fn accept_or_pause<A: Accept>(listener: &A) -> Option<A::Conn> {
    match listener.accept_one().await {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(error = %e, "metrics accept failed; pausing");
            tokio::time::sleep(ACCEPT_PAUSE).await;
            None
        }
    }
}

/// What `accept_or_pause` needs of a listener (a trait so a test can make accept fail).
trait Accept {
    type Conn;
    async fn accept_one(&self) -> std::io::Result<Self::Conn>;
}

impl Accept for tokio::net::TcpListener {
    type Conn = tokio::net::TcpStream;
    async fn accept_one(&self) -> std::io::Result<Self::Conn> {
        self.accept().await.map(|(s, _)| s)
    }
}

/// Serves `GET /metrics` on `addr` until shutdown; returns the bound address.
pub async fn serve(addr: SocketAddr, shutdown: Shutdown) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                _ = shutdown.cancelled() => return,
                s = accept_or_pause(&listener) => match s { Some(s) => s, None => continue },
            };
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                        let (status, body) = if req.uri().path() == "/metrics" {
                            (200, render())
                        } else {
                            (404, "see /metrics\n".into())
                        };
                        Ok::<_, Infallible>(
                            hyper::Response::builder()
                                .status(status)
                                .header("content-type", "text/plain; version=0.0.4")
                                .body(Full::new(Bytes::from(body)))
                                .expect("valid response"),
                        )
                    });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
                // A scraper that never finishes its request does not keep a task forever.
                let _ = tokio::time::timeout(SCRAPE_TIMEOUT, conn).await;
            });
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct OutOfFiles(AtomicUsize);

    impl Accept for OutOfFiles {
        type Conn = ();
        async fn accept_one(&self) -> std::io::Result<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Err(std::io::Error::from_raw_os_error(24)) // EMFILE
        }
    }

    #[tokio::test]
    async fn a_failing_accept_pauses_instead_of_spinning() {
        let l = OutOfFiles(AtomicUsize::new(0));
        let spin = async {
            loop {
                accept_or_pause(&l).await;
            }
        };
        let _ = tokio::time::timeout(std::time::Duration::from_millis(350), spin).await;
        let n = l.0.load(Ordering::SeqCst);
        assert!((1..=5).contains(&n), "{n} accepts in 350 ms");
    }
}
