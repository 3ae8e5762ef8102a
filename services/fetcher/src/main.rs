use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = facesweep_fetcher::Args::parse().into_config()?;
    let telemetry = facesweep_common::telemetry::init("facesweep-fetcher")?;
    let result = facesweep_fetcher::run(config, facesweep_common::shutdown::on_signal()).await;
    telemetry.shutdown();
    result
}
