//! Logging and tracing set-up; OTLP export only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;

/// Flushes pending spans when dropped or shut down.
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    pub fn shutdown(mut self) {
        self.flush();
    }

    fn flush(&mut self) {
        if let Some(p) = self.provider.take() {
            // The subscriber may be gone at exit: stderr is the place left to say it.
            if let Err(e) = p.shutdown() {
                eprintln!("flushing spans at shutdown failed: {e}");
            }
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        self.flush();
    }
}

/// The log filter without RUST_LOG: INFO, less Postgres NOTICEs (an `IF NOT EXISTS` that
/// skipped is not news to an operator).
pub const DEFAULT_LOG: &str = "info,sqlx::postgres::notice=warn";

/// Installs the global subscriber once; later calls in the same process are no-ops.
/// An OTLP endpoint that is set but unusable is an error for the caller to report.
pub fn init(service_name: &str) -> anyhow::Result<TelemetryGuard> {
    crate::propagation::install();
    // Logs follow RUST_LOG; spans for tracing are kept at INFO whatever the log level.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG));
    // Colour codes only for a terminal: a log file or a pipe gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt =
        tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi).with_filter(filter);
    let provider = otlp_provider(service_name)?;
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("facesweep"))
            .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
    });
    // A second call in one process (tests, embedded meshes) keeps the first subscriber.
    if let Err(e) = tracing_subscriber::registry().with(fmt).with(otel).try_init() {
        tracing::debug!(error = %e, "tracing already initialised");
    }
    Ok(TelemetryGuard { provider })
}

fn otlp_provider(service_name: &str) -> anyhow::Result<Option<SdkTracerProvider>> {
    if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_none() {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .map_err(|e| anyhow::anyhow!("OTEL_EXPORTER_OTLP_ENDPOINT is set but unusable: {e}"))?;
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(service_name.to_string()).build();
    Ok(Some(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build()))
}
