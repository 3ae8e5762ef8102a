//! Fetcher: leases URLs, fetches them (download, decode, letterbox: `facesweep_imagefetch`),
//! detects, records.

pub mod bench;
mod config;
mod delegators;
mod detect_client;
pub mod detectors;
pub mod metrics;
mod renewal;
mod worker;

use std::sync::Arc;
use std::time::Duration;

use facesweep_common::discovery::{self, DiscoveryMetrics, Target};
use facesweep_common::grpc::{self, Frontend, Running};
use facesweep_common::Shutdown;
use facesweep_proto::detector_service_client::DetectorServiceClient;
use facesweep_proto::results_service_client::ResultsServiceClient;

pub use config::{Args, Config};
use facesweep_imagefetch::decode::Wire;
use facesweep_imagefetch::fetch::Fetcher;

/// Starts the lease workers and the health server in the background.
pub async fn spawn(config: Config, shutdown: Shutdown) -> anyhow::Result<Running> {
    config.validate()?;
    let metrics = Arc::new(metrics::Metrics::new());
    let front = Frontend::start(&config.tls, &shutdown).await?;
    let tls = front.tls.clone();
    let listener = grpc::bind(config.listen).await?;
    let router = front.router(&[])?;
    let server = grpc::spawn_router(router, listener, shutdown.clone());
    // Discovery outlives the lease loops' drain: it stops when the fetcher's task ends (or
    // when start-up fails and this guard drops).
    let discovery_stop = Shutdown::new();
    let stop_discovery = discovery_stop.clone().drop_guard();
    let members =
        |t: &Target| discovery::members(t, &config.consul, discovery_stop.clone(), &metrics.discovery);
    let models =
        detector_models(&config, tls.clone(), &discovery_stop, &metrics.discovery, &shutdown).await?;
    let worker = Arc::new(worker::Worker::new(
        config.worker_config(),
        delegators::Delegators::new(members(&config.delegator)?, tls.clone()),
        models,
        ResultsServiceClient::new(discovery::balanced(members(&config.results)?, tls.clone(), "results")),
        Fetcher::new(config.fetch_config(), metrics.clone())?,
    ));
    worker.reclaim().await;
    grpc::health_follows(front.health.clone(), "", Duration::from_secs(5), shutdown.clone(), || async {
        true
    });
    let addr = server.addr;
    let me = front.announce("fetcher", addr);
    let registration = facesweep_common::consul::register_self(&config.consul, me, shutdown.clone())?;
    let shutdown_metrics = shutdown.clone();
    let task = tokio::spawn(async move {
        let _stop_discovery = stop_discovery;
        let loops: Vec<_> =
            (0..config.leases).map(|_| tokio::spawn(worker.clone().lease_loop(shutdown.clone()))).collect();
        for l in loops {
            let _ = l.await;
        }
        server.join().await
    });
    let metrics =
        facesweep_common::metrics::maybe_serve(config.metrics_listen, &metrics.registry, shutdown_metrics)
            .await?;
    Ok(Running { addr, task, metrics }.also_awaiting(registration))
}

/// Detector pools by model, once the default model's detectors answered ModelInfo (its
/// letterbox size and wire); other models' pools connect when a lease needs them.
async fn detector_models(
    config: &Config,
    tls: Option<facesweep_common::tls::Tls>,
    discovery_stop: &Shutdown,
    counted: &DiscoveryMetrics,
    shutdown: &Shutdown,
) -> anyhow::Result<detectors::Models> {
    let (consul, stop, counted) = (config.consul.clone(), discovery_stop.clone(), counted.clone());
    let connect: detectors::Connect = Box::new(move |t: &Target| {
        let found = discovery::members(t, &consul, stop.clone(), &counted)?;
        Ok(DetectorServiceClient::new(discovery::balanced(found, tls.clone(), "detector"))
            .max_decoding_message_size(64 << 20))
    });
    let detector = connect(&config.detector)?;
    let info = loop {
        match detectors::ask_info(&detector, &config.detector).await {
            Ok(i) => break i,
            Err(e) if shutdown.is_cancelled() => anyhow::bail!("shut down before a detector answered: {e}"),
            Err(e) => {
                tracing::info!(error = %e, "waiting for a detector");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let explicit = config.model_detector.iter().cloned().collect();
    Ok(detectors::Models::new(config.detector.clone(), detector, &info, explicit, config.wire, connect))
}

/// Works until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    spawn(config, shutdown).await?.join().await
}

/// `--wire`: a wire format, or the best one the detector announces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum WireChoice {
    Auto,
    Canvas,
    I420,
}

impl WireChoice {
    /// The wire to use with a detector announcing `formats` (ModelInfo.pixel_formats,
    /// preferred first; empty from detectors older than the field).
    pub fn resolve(self, formats: &[i32]) -> Wire {
        use facesweep_proto::PixelFormat;
        match self {
            WireChoice::Canvas => Wire::Canvas,
            WireChoice::I420 => Wire::I420,
            WireChoice::Auto => match formats.first().and_then(|f| PixelFormat::try_from(*f).ok()) {
                Some(PixelFormat::I420) => Wire::I420,
                _ => Wire::Canvas,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_wire_follows_the_detectors_preference() {
        use facesweep_proto::PixelFormat::{RgbUnspecified as Rgb, I420};
        assert_eq!(WireChoice::Auto.resolve(&[]), Wire::Canvas, "a detector older than the field");
        assert_eq!(WireChoice::Auto.resolve(&[I420 as i32, Rgb as i32]), Wire::I420);
        assert_eq!(WireChoice::Auto.resolve(&[Rgb as i32, I420 as i32]), Wire::Canvas);
        assert_eq!(WireChoice::I420.resolve(&[]), Wire::I420, "pinned by the operator");
    }
}
