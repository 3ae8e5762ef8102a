//! Prometheus metrics: every service serves the process registry at `GET /metrics`.
//! Names and meanings: docs/operations.md.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::LazyLock;

use bytes::Bytes;
use http_body_util::Full;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, TextEncoder,
};

use crate::Shutdown;

fn counter(name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    let _ = prometheus::register(Box::new(c.clone()));
    c
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    let _ = prometheus::register(Box::new(c.clone()));
    c
}

fn gauge(name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    let _ = prometheus::register(Box::new(g.clone()));
    g
}

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    let _ = prometheus::register(Box::new(g.clone()));
    g
}

fn histogram(name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).expect("valid metric");
    let _ = prometheus::register(Box::new(h.clone()));
    h
}

fn seconds() -> Vec<f64> {
    prometheus::exponential_buckets(0.0005, 2.0, 16).expect("valid buckets")
}

// Delegator.
pub static LEASES_GRANTED: LazyLock<IntCounter> =
    LazyLock::new(|| counter("facesweep_leases_granted_total", "Leases handed to fetchers."));
pub static LEASES_EXPIRED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter("facesweep_leases_expired_total", "Leases returned by the sweeper after expiry.")
});
pub static LEASES_COMPLETED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "facesweep_leases_completed_total",
        "Completed leases; done=false when URLs were left open.",
        &["done"],
    )
});
pub static LEASES_RELEASED: LazyLock<IntCounter> =
    LazyLock::new(|| counter("facesweep_leases_released_total", "Leases given back unfinished."));

// Fetcher.
pub static FETCH_IN_FLIGHT: LazyLock<IntGauge> =
    LazyLock::new(|| gauge("facesweep_fetch_in_flight", "URLs being downloaded or decoded now."));
pub static FETCH_RESULTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "facesweep_fetch_results_total",
        "URLs fetched, by outcome (ok or failure class).",
        &["status"],
    )
});
pub static FETCH_DOWNLOAD_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    histogram("facesweep_fetch_download_seconds", "Download time per URL, retries included.", seconds())
});
pub static FETCH_DECODE_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    histogram("facesweep_fetch_decode_seconds", "Decode + letterbox time per image.", seconds())
});

// Detector.
pub static DETECTOR_QUEUE_DEPTH: LazyLock<IntGauge> =
    LazyLock::new(|| gauge("facesweep_detector_queue_depth", "Images queued or running on the model."));
pub static DETECTOR_IMAGES: LazyLock<IntCounter> =
    LazyLock::new(|| counter("facesweep_detector_images_total", "Images run through the model."));
pub static DETECTOR_BATCH_SIZE: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "facesweep_detector_batch_size",
        "Images per model batch.",
        prometheus::exponential_buckets(1.0, 2.0, 11).expect("buckets"),
    )
});
pub static DETECTOR_QUEUE_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    histogram("facesweep_detector_queue_seconds", "Time an image waited for its batch.", seconds())
});
pub static DETECTOR_INFERENCE_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "facesweep_detector_inference_seconds",
        "Model time per batch (upload, network, NMS).",
        seconds(),
    )
});

// Results.
pub static RESULTS_PERSISTED: LazyLock<IntCounter> =
    LazyLock::new(|| counter("facesweep_results_persisted_total", "URL results stored (first writer)."));
pub static RESULTS_DUPLICATES: LazyLock<IntCounter> = LazyLock::new(|| {
    counter("facesweep_results_duplicates_total", "URL results ignored because the URL already had one.")
});
pub static RESULTS_PERSIST_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    histogram("facesweep_results_persist_seconds", "Time to persist one Record batch.", seconds())
});

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

/// Registers every metric now, so each appears (at zero) before its first event.
pub fn register_all() {
    let _ = (&*LEASES_GRANTED, &*LEASES_EXPIRED, &*LEASES_COMPLETED, &*LEASES_RELEASED);
    let _ = (&*FETCH_IN_FLIGHT, &*FETCH_RESULTS, &*FETCH_DOWNLOAD_SECONDS, &*FETCH_DECODE_SECONDS);
    let _ = (&*DETECTOR_QUEUE_DEPTH, &*DETECTOR_IMAGES, &*DETECTOR_BATCH_SIZE);
    let _ = (&*DETECTOR_QUEUE_SECONDS, &*DETECTOR_INFERENCE_SECONDS);
    let _ = (&*RESULTS_PERSISTED, &*RESULTS_DUPLICATES, &*RESULTS_PERSIST_SECONDS);
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
    register_all();
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
