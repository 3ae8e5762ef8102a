use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = facesweep_detector::Args::parse().into_config()?;
    let telemetry = facesweep_common::telemetry::init("facesweep-detector")?;
    let result = facesweep_detector::run(config, facesweep_common::shutdown::on_signal()).await;
    telemetry.shutdown();
    result
}
