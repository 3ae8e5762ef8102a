use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = facesweep_results::Args::parse().into_config()?;
    let telemetry = facesweep_common::telemetry::init("facesweep-results")?;
    let result = facesweep_results::run(config, facesweep_common::shutdown::on_signal()).await;
    telemetry.shutdown();
    result
}
