//! The `facesweep` command line: every command, flag and environment variable (clap), kept
//! apart from what the commands do (main.rs).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use facesweep_cli::output::Format;
use facesweep_cli::{client, MeshOptions};

#[derive(Parser)]
#[command(name = "facesweep", version, about = "Image URLs in, face coordinates out.")]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) cmd: Cmd,
    /// Bearer token for admin calls to services started with --admin-token.
    #[arg(long, global = true, env = "FACESWEEP_ADMIN_TOKEN", hide_env_values = true)]
    pub(crate) admin_token: Option<String>,
    /// Where the embedded PostgreSQL cluster lives (kept between runs); client commands
    /// start it on demand when no service answers at the default address.
    #[arg(long, global = true, env = "FACESWEEP_DATA_DIR", default_value = ".facesweep")]
    pub(crate) data_dir: PathBuf,
}

#[derive(Args, Clone)]
pub(crate) struct MeshArgs {
    /// Use this Postgres instead of the embedded one.
    #[arg(long, env = "DATABASE_URL")]
    pub(crate) database_url: Option<String>,
    /// TorchScript detector (its .json contract sits beside it); default: the installed
    /// retinaface_mnet025.pt (next to the binary, the image's, or ~/.cache/facesweep/models).
    #[arg(long, env = "FACESWEEP_MODEL")]
    pub(crate) model: Option<PathBuf>,
    /// Private networks the fetcher may download from (everything private is refused otherwise).
    #[arg(
        long,
        env = "FACESWEEP_ALLOW_NETWORKS",
        value_delimiter = ',',
        default_value = "127.0.0.0/8,::1/128"
    )]
    pub(crate) allow_networks: Vec<ipnet::IpNet>,
    #[command(flatten)]
    pub(crate) fetcher: facesweep_cli::options::FetcherKnobs,
}

impl MeshArgs {
    pub(crate) fn options(&self, data_dir: &std::path::Path) -> anyhow::Result<MeshOptions> {
        let model = facesweep_cli::options::resolve_model(self.model.as_deref())?;
        let mut o = MeshOptions::new(data_dir, model);
        o.database_url = self.database_url.clone();
        o.allow_networks = self.allow_networks.clone();
        o.fetcher = self.fetcher.clone();
        Ok(o)
    }
}

#[derive(Subcommand)]
pub(crate) enum Cmd {
    /// Run all four services on loopback (delegator :PORT, detector +1, results +2, fetcher +3;
    /// their /metrics on PORT+10…+13).
    Up {
        #[command(flatten)]
        mesh: MeshArgs,
        /// Delegator port; detector, results and fetcher take the next three.
        #[arg(long, env = "FACESWEEP_PORT", default_value_t = 50051)]
        port: u16,
    },
    /// Import URLs (one per line; CSV, TSV or Parquet with a `url` column) into a job.
    Import {
        /// Job name (`facesweep jobs` lists them).
        #[arg(long)]
        job: String,
        /// URL list: one per line; CSV, TSV or Parquet with a `url` column (other columns are
        /// carried to the export); `-` reads stdin.
        file: PathBuf,
        /// Only read and check the input and print its counts; contact no service.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        models: client::ModelArgs,
        /// Delegator address (host:port).
        #[arg(long, env = "FACESWEEP_DELEGATOR", default_value = "127.0.0.1:50051")]
        delegator: String,
    },
    /// Show a job's progress: counts by state and status, rate, ETA.
    Progress {
        /// Job name (`facesweep jobs` lists them).
        #[arg(long)]
        job: String,
        /// Wait with a progress bar until every URL has a result.
        #[arg(long)]
        wait: bool,
        /// Delegator address (host:port).
        #[arg(long, env = "FACESWEEP_DELEGATOR", default_value = "127.0.0.1:50051")]
        delegator: String,
    },
    /// Re-queue a job's URLs with one failure class (e.g. timeout), keeping every other result.
    Retry {
        /// Job name (`facesweep jobs` lists them).
        #[arg(long)]
        job: String,
        /// Failure class as in exports: timeout, http_error, connect_error, abandoned, ...
        #[arg(long)]
        status: String,
        /// Allow `--status ok` (deletes the stored faces of every ok URL of the job).
        #[arg(long)]
        force: bool,
        /// Delegator address (host:port).
        #[arg(long, env = "FACESWEEP_DELEGATOR", default_value = "127.0.0.1:50051")]
        delegator: String,
    },
    #[command(flatten)]
    Lifecycle(facesweep_cli::jobs::LifecycleCmd),
    /// Delete a job and everything of it (URLs, results, faces); its name is free again.
    Delete {
        /// Job name (`facesweep jobs` lists them).
        #[arg(long)]
        job: String,
        /// Delegator address (host:port).
        #[arg(long, env = "FACESWEEP_DELEGATOR", default_value = "127.0.0.1:50051")]
        delegator: String,
    },
    /// Export a job, one row per URL: JSON Lines, or Parquet for a `.parquet` --out (or --format).
    Export {
        /// Job name (`facesweep jobs` lists them).
        #[arg(long)]
        job: String,
        /// File to write (replaced whole when the export is complete); `-` is stdout; a
        /// device or FIFO is written in place.
        #[arg(long)]
        out: PathBuf,
        /// Output format (default: parquet for a `.parquet` --out, else jsonl).
        #[arg(long, value_enum)]
        format: Option<Format>,
        /// Only the URLs this model detected (one side of an A/B job).
        #[arg(long)]
        model: Option<String>,
        /// Results service address (host:port).
        #[arg(long, env = "FACESWEEP_RESULTS", default_value = "127.0.0.1:50053")]
        results: String,
    },
    /// The main job: start the mesh, import FILE, wait, export to --out. Re-running resumes.
    Run {
        /// URL list: one per line; CSV, TSV or Parquet with a `url` column (other columns are
        /// carried to the export); `-` reads stdin.
        file: PathBuf,
        /// Where the results go, one JSON line per URL (`-`: stdout; `.parquet`: Parquet).
        #[arg(long, default_value = "results.jsonl")]
        out: PathBuf,
        /// Output format (default: parquet for a `.parquet` --out, else jsonl).
        #[arg(long, value_enum)]
        format: Option<Format>,
        /// Only read and check the input and print its counts; start nothing.
        #[arg(long)]
        dry_run: bool,
        /// Job name (default: the file's name without extension).
        #[arg(long)]
        job: Option<String>,
        #[command(flatten)]
        mesh: MeshArgs,
    },
    /// A contact sheet of a random sample of a job's images, boxes, landmarks and scores drawn.
    Sheet(facesweep_cli::sheet::SheetArgs),
    /// Measure the fetch tier alone (no detector, no database).
    #[command(subcommand)]
    Bench(BenchCmd),
    /// Detect faces in bundled sample photos served from a loopback HTTP server.
    Demo {
        #[command(flatten)]
        mesh: MeshArgs,
        /// Folder of sample photos (fetched by scripts/setup.sh).
        #[arg(long, env = "FACESWEEP_SAMPLES")]
        samples: Option<PathBuf>,
        /// Where the results go, one JSON line per URL.
        #[arg(long, default_value = ".facesweep/demo.jsonl")]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
pub(crate) enum BenchCmd {
    /// Download, decode and letterbox every URL of URLS_FILE (tensors discarded).
    Fetch(facesweep_fetcher::bench::FetchArgs),
    /// Decode + letterbox the images of DIR from memory on every core: the floor for `fetch`.
    Decode(facesweep_fetcher::bench::DecodeArgs),
    /// The control plane alone at scale: real delegator and results on a durable Postgres,
    /// synthetic fetchers (no HTTP, no detector). `make bench-scale`.
    Scale(facesweep_cli::bench::scale::ScaleOptions),
    /// Every detector-tier measurement in one run (`make gpu-check`): fp16 parity, batch
    /// sweep, gRPC throughput and ingest ceiling, the whole mesh; report.md + report.json.
    Gpu(facesweep_cli::bench::gpu::GpuCheckOptions),
}
