//! Prometheus plumbing: a `Registry` per component instance, metric constructors that
//! register in it, and the `GET /metrics` server for one registry. Each service's `spawn`
//! builds its own metrics struct (the services' `metrics.rs`) and hands it to the parts that
//! record, so when one process runs several instances (the embedded mesh of `facesweep
//! up/run`, the integration tests) each port serves that instance's series, never a
//! process-wide sum. No metric lives in a `static`. Names: docs/operations.md.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    TextEncoder,
};

use crate::Shutdown;

/// One component instance's metrics: what its `/metrics` port serves. Clones share series.
#[derive(Clone, Default)]
pub struct Registry(prometheus::Registry);

impl Registry {
    /// Adds `c`; a name registered twice in one component is a bug, logged, not fatal.
    pub fn add<C: Collector + Clone + 'static>(&self, c: &C) {
        if let Err(e) = self.0.register(Box::new(c.clone())) {
            tracing::error!(error = %e, "metric not registered");
        }
    }

    pub fn counter(&self, name: &str, help: &str) -> IntCounter {
        let c = IntCounter::new(name, help).expect("valid metric");
        self.add(&c);
        c
    }

    pub fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
        self.add(&c);
        c
    }

    pub fn gauge(&self, name: &str, help: &str) -> IntGauge {
        let g = IntGauge::new(name, help).expect("valid metric");
        self.add(&g);
        g
    }

    pub fn float_gauge(&self, name: &str, help: &str) -> Gauge {
        let g = Gauge::new(name, help).expect("valid metric");
        self.add(&g);
        g
    }

    pub fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
        self.add(&g);
        g
    }

    pub fn histogram(&self, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
        let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).expect("valid metric");
        self.add(&h);
        h
    }

    /// This registry in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.0.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

pub fn seconds() -> Vec<f64> {
    prometheus::exponential_buckets(0.0005, 2.0, 16).expect("valid buckets")
}

/// Serves `registry` on `addr` when given; for a service's `run`.
pub async fn maybe_serve(
    addr: Option<SocketAddr>,
    registry: &Registry,
    shutdown: Shutdown,
) -> anyhow::Result<Option<SocketAddr>> {
    match addr {
        Some(a) => Ok(Some(serve(a, registry.clone(), shutdown).await?)),
        None => Ok(None),
    }
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

/// `GET path`'s answer: the registry on /metrics, 404 elsewhere.
fn respond(registry: &Registry, path: &str) -> hyper::Response<Full<Bytes>> {
    let (status, body) =
        if path == "/metrics" { (200, registry.render()) } else { (404, "see /metrics\n".into()) };
    hyper::Response::builder()
        .status(status)
        .header("content-type", "text/plain; version=0.0.4")
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}

/// Serves `registry` as `GET /metrics` on `addr` (port 0 picks a free one) until shutdown;
/// returns the bound address. Bound before returning: a scrape right after cannot miss it.
pub async fn serve(addr: SocketAddr, registry: Registry, shutdown: Shutdown) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tracing::info!(addr = %bound, "serving /metrics");
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                _ = shutdown.cancelled() => return,
                s = accept_or_pause(&listener) => match s { Some(s) => s, None => continue },
            };
            let registry = registry.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    std::future::ready(Ok::<_, Infallible>(respond(&registry, req.uri().path())))
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

    #[test]
    fn each_registry_renders_only_its_own_metrics() {
        let (a, b) = (Registry::default(), Registry::default());
        a.counter("facesweep_test_a_total", "a").inc();
        b.gauge("facesweep_test_b", "b").set(2);
        let (ra, rb) = (a.render(), b.render());
        assert!(ra.contains("facesweep_test_a_total 1") && !ra.contains("facesweep_test_b"), "{ra}");
        assert!(rb.contains("facesweep_test_b 2") && !rb.contains("facesweep_test_a"), "{rb}");
    }

    #[test]
    fn two_instances_of_one_metric_count_apart() {
        let (a, b) = (Registry::default(), Registry::default());
        let (ca, _cb) = (a.counter("facesweep_test_total", "t"), b.counter("facesweep_test_total", "t"));
        ca.inc_by(3);
        assert!(a.render().contains("facesweep_test_total 3"), "{}", a.render());
        assert!(b.render().contains("facesweep_test_total 0"), "{}", b.render());
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
