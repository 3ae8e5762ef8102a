//! `facesweep bench fetch|decode` in a binary that, like the fetcher service, does not link
//! LibTorch: the fetch tier's cost without the CLI's ~0.3 s of detector start-up on each run
//! (`make bench-fetch` measures with it).

use clap::Parser;
use facesweep_fetcher::bench::{read_url_lines, DecodeArgs, FetchArgs};

#[derive(Parser)]
#[command(
    name = "facesweep-fetch-bench",
    version,
    about = "The fetch tier alone: `fetch` a URL list end to end, or `decode` a folder (the floor)"
)]
enum Cmd {
    /// Download, decode and letterbox every URL of a list (tensors discarded).
    Fetch(FetchArgs),
    /// Decode + letterbox the images of a folder from memory on every core: the floor for `fetch`.
    Decode(DecodeArgs),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let r = match Cmd::parse() {
        Cmd::Fetch(a) => a.run(read_url_lines).await,
        Cmd::Decode(a) => a.run().await,
    };
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // A fetcher flag clap refused: its own message, usage included.
        Err(e) if e.is::<clap::Error>() => e.downcast::<clap::Error>().map_or(2.into(), |c| c.exit()),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
