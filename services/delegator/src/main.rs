use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = facesweep_delegator::Args::parse().into_config()?;
    let telemetry = facesweep_common::telemetry::init("facesweep-delegator")?;
    let result = facesweep_delegator::run(config, facesweep_common::shutdown::on_signal()).await;
    telemetry.shutdown();
    result
}
