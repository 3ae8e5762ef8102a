//! `facesweep`: run the whole face-detection pipeline from one command.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use facesweep_cli::bench;
use facesweep_cli::datadir::InUse;
use facesweep_cli::{client, httpserve, job_name_for, run_job, Mesh, MeshOptions};

#[derive(Parser)]
#[command(name = "facesweep", version, about = "Image URLs in, face coordinates out.")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Bearer token for admin calls to services started with --admin-token.
    #[arg(long, global = true, env = "FACESWEEP_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
}

#[derive(Args, Clone)]
struct MeshArgs {
    /// Where the embedded PostgreSQL cluster lives (kept between runs).
    #[arg(long, env = "FACESWEEP_DATA_DIR", default_value = ".facesweep")]
    data_dir: PathBuf,
    /// Use this Postgres instead of the embedded one.
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// TorchScript detector (its .json contract sits beside it).
    #[arg(long, env = "FACESWEEP_MODEL", default_value = "models/retinaface_mnet025.pt")]
    model: PathBuf,
    /// Private networks the fetcher may download from (everything private is refused otherwise).
    #[arg(
        long,
        env = "FACESWEEP_ALLOW_NETWORKS",
        value_delimiter = ',',
        default_value = "127.0.0.0/8,::1/128"
    )]
    allow_networks: Vec<ipnet::IpNet>,
}

impl MeshArgs {
    fn options(&self) -> MeshOptions {
        let mut o = MeshOptions::new(&self.data_dir, &self.model);
        o.database_url = self.database_url.clone();
        o.allow_networks = self.allow_networks.clone();
        o
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Run all four services on loopback (delegator :PORT, detector +1, results +2, fetcher +3;
    /// their /metrics on PORT+10…+13).
    Up {
        #[command(flatten)]
        mesh: MeshArgs,
        #[arg(long, default_value_t = 50051)]
        port: u16,
    },
    /// Import URLs (one per line, or CSV with a `url` column) into a job.
    Import {
        #[arg(long)]
        job: String,
        file: PathBuf,
        #[command(flatten)]
        models: client::ModelArgs,
        #[arg(long, env = "FACESWEEP_DELEGATOR", default_value = "127.0.0.1:50051")]
        delegator: String,
    },
    /// Show a job's progress: counts by state and status, rate, ETA.
    Progress {
        #[arg(long)]
        job: String,
        /// Wait with a progress bar until every URL has a result.
        #[arg(long)]
        wait: bool,
        #[arg(long, env = "FACESWEEP_DELEGATOR", default_value = "127.0.0.1:50051")]
        delegator: String,
    },
    /// Re-queue a job's URLs with one failure class (e.g. timeout), keeping every other result.
    Retry {
        #[arg(long)]
        job: String,
        /// Failure class as in exports: timeout, http_error, connect_error, abandoned, ...
        #[arg(long)]
        status: String,
        /// Allow `--status ok` (deletes the stored faces of every ok URL of the job).
        #[arg(long)]
        force: bool,
        #[arg(long, env = "FACESWEEP_DELEGATOR", default_value = "127.0.0.1:50051")]
        delegator: String,
    },
    #[command(flatten)]
    Lifecycle(facesweep_cli::jobs::LifecycleCmd),
    /// Delete a job and everything of it (URLs, results, faces); its name is free again.
    Delete {
        #[arg(long)]
        job: String,
        #[arg(long, env = "FACESWEEP_DELEGATOR", default_value = "127.0.0.1:50051")]
        delegator: String,
    },
    /// Export a job as JSON Lines, one line per URL.
    Export {
        #[arg(long)]
        job: String,
        #[arg(long)]
        out: PathBuf,
        /// jsonl (one JSON object per line) or parquet (one row per URL, nested faces).
        #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
        format: ExportFormat,
        /// Only the URLs this model detected (one side of an A/B job).
        #[arg(long)]
        model: Option<String>,
        #[arg(long, env = "FACESWEEP_RESULTS", default_value = "127.0.0.1:50053")]
        results: String,
    },
    /// The main job: start the mesh, import FILE, wait, export to --out. Re-running resumes.
    Run {
        file: PathBuf,
        #[arg(long, default_value = "results.jsonl")]
        out: PathBuf,
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
        #[arg(long)]
        samples: Option<PathBuf>,
        #[arg(long, default_value = ".facesweep/demo.jsonl")]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Download, decode and letterbox every URL of URLS_FILE (tensors discarded).
    Fetch {
        urls: PathBuf,
        /// Letterbox size (the default model's input).
        #[arg(long, default_value_t = 640)]
        size: u32,
        #[command(flatten)]
        fetcher: FetcherArgs,
    },
    /// Decode + letterbox the images of DIR from memory on every core: the floor for `fetch`.
    Decode {
        dir: PathBuf,
        #[arg(long, default_value_t = 3)]
        passes: usize,
        #[arg(long, default_value_t = 640)]
        size: u32,
        /// How the images would travel to the detector.
        #[arg(long, value_enum, default_value_t = facesweep_fetcher::decode::Wire::I420)]
        wire: facesweep_fetcher::decode::Wire,
    },
    /// The control plane alone at scale: real delegator and results on a durable Postgres,
    /// synthetic fetchers (no HTTP, no detector). `make bench-scale`.
    Scale(facesweep_cli::scale::ScaleOptions),
    /// Every detector-tier measurement in one run (`make gpu-check`): fp16 parity, batch
    /// sweep, gRPC throughput and ingest ceiling, the whole mesh; report.md + report.json.
    Gpu(facesweep_cli::gpucheck::GpuCheckOptions),
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum ExportFormat {
    Jsonl,
    Parquet,
}

/// The fetcher's own flags (`facesweep-fetcher --help`), minus the service addresses.
#[derive(Args)]
struct FetcherArgs {
    /// Extra fetcher flags, e.g. `-- --concurrency 256 --allow-networks 127.0.0.0/8`.
    #[arg(last = true)]
    extra: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if std::env::var_os("RUST_LOG").is_none() {
        // Progress bars, not logs, for interactive commands.
        std::env::set_var("RUST_LOG", if matches!(cli.cmd, Cmd::Up { .. }) { "info" } else { "warn" });
    }
    if let Some(t) = &cli.admin_token {
        // Read by every client this process makes (client::AdminToken).
        std::env::set_var("FACESWEEP_ADMIN_TOKEN", t);
    }
    let _telemetry = facesweep_common::telemetry::init("facesweep")?;
    dispatch(cli.cmd).await
}

/// Runs one command.
async fn dispatch(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Up { mesh, port } => up(mesh, port).await,
        Cmd::Import { job, file, models, delegator } => {
            let input = client::UrlInput::File(file);
            let opts = client::ImportOptions { models: models.split(), ..Default::default() };
            let r = client::import(&delegator, &job, &input, opts).await?;
            let resumed =
                if r.skipped > 0 { format!(", resumed after {}", r.skipped) } else { String::new() };
            println!("job {job}: received {} URLs, {} new{resumed}", r.received, r.inserted);
            Ok(())
        }
        Cmd::Progress { job, wait, delegator } => {
            let p = if wait {
                client::wait(&delegator, &job, false).await?
            } else {
                client::progress(&delegator, &job).await?
            };
            println!("{}", client::describe(&p));
            Ok(())
        }
        Cmd::Retry { job, status, force, delegator } => {
            let req = facesweep_proto::RetryUrlsRequest { job: job.clone(), status: status.clone(), force };
            let n = client::delegator(&delegator).await?.retry_urls(req).await?.into_inner().requeued;
            println!("job {job}: {n} URLs with status {status} re-queued");
            Ok(())
        }
        Cmd::Lifecycle(cmd) => facesweep_cli::jobs::run(cmd).await,
        Cmd::Delete { job, delegator } => {
            let req = facesweep_proto::DeleteJobRequest { job: job.clone() };
            let n = client::delegator(&delegator).await?.delete_job(req).await?.into_inner().urls_deleted;
            println!("job {job}: deleted with its {n} URLs");
            Ok(())
        }
        Cmd::Export { job, out, format, model, results } => {
            let what = facesweep_proto::ExportResultsRequest { job, model_id: model.unwrap_or_default() };
            let sum = match format {
                ExportFormat::Jsonl => client::export(&results, what, &out).await?,
                ExportFormat::Parquet => facesweep_cli::parquet_out::export(&results, what, &out).await?,
            };
            println!("wrote {} rows to {}", sum.lines, out.display());
            Ok(())
        }
        Cmd::Run { file, out, job, mesh } => {
            let job = job.unwrap_or_else(|| job_name_for(&file));
            let s = in_mesh(mesh, "run", &job, &client::UrlInput::File(file), &out).await?;
            print_summary(&s, &out);
            Ok(())
        }
        Cmd::Sheet(args) => {
            let s = facesweep_cli::sheet::run(&args).await?;
            println!(
                "{}: {} of {} URLs (seed {}), {} pictures, {} grey",
                args.out.display(),
                s.shown,
                s.of,
                s.seed,
                s.pictures,
                s.shown - s.pictures
            );
            Ok(())
        }
        Cmd::Bench(b) => bench_cmd(b).await,
        Cmd::Demo { mesh, samples, out } => demo(mesh, samples, out).await,
    }
}

/// `facesweep up`: the four services on fixed ports until a signal.
async fn up(mesh: MeshArgs, port: u16) -> anyhow::Result<()> {
    let mut o = mesh.options();
    o.base_port = port;
    o.metrics = true;
    o.command = "up".into();
    let m = Mesh::start(o).await?;
    println!(
        "facesweep up: delegator {} detector {} results {} fetcher {}",
        m.delegator, m.detector, m.results, m.fetcher_addr
    );
    println!("database: {}", m.database_url);
    facesweep_common::shutdown::signal().await;
    m.stop().await
}

/// Runs one job in an embedded mesh, stopping the mesh whatever the outcome. When another
/// facesweep process holds the data dir, the job runs through its services instead.
async fn in_mesh(
    mesh: MeshArgs,
    command: &str,
    job: &str,
    input: &client::UrlInput,
    out: &std::path::Path,
) -> anyhow::Result<facesweep_cli::RunSummary> {
    let mut o = mesh.options();
    o.command = command.into();
    let m = match Mesh::start(o).await {
        Ok(m) => m,
        Err(e) => return attach(e, job, input, out).await,
    };
    let s = run_job(&m, job, input, out, false).await;
    m.stop().await?;
    s
}

/// A job through the services of the process holding the data dir, if that is why the
/// mesh could not start (and it has published them); `e` otherwise.
async fn attach(
    e: anyhow::Error,
    job: &str,
    input: &client::UrlInput,
    out: &std::path::Path,
) -> anyhow::Result<facesweep_cli::RunSummary> {
    let Some(InUse { dir, .. }) = e.downcast_ref::<InUse>() else { return Err(e) };
    // A holder still starting publishes its addresses once its services listen.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let owner = loop {
        match facesweep_cli::datadir::read_owner(dir) {
            Some(o) if o.delegator.is_some() && o.results.is_some() => break o,
            _ if std::time::Instant::now() > deadline => return Err(e),
            _ => tokio::time::sleep(std::time::Duration::from_millis(250)).await,
        }
    };
    let (Some(d), Some(r)) = (&owner.delegator, &owner.results) else { return Err(e) };
    eprintln!(
        "facesweep pid {} (`{}`) runs this data dir: using its services (delegator {d}, results {r})",
        owner.pid, owner.command
    );
    facesweep_cli::run_job_at(d, r, job, input, out, false).await
}

async fn bench_cmd(b: BenchCmd) -> anyhow::Result<()> {
    match b {
        BenchCmd::Fetch { urls, size, fetcher } => {
            let list = client::read_urls(&urls)?;
            let args = std::iter::once("fetcher".to_string()).chain(fetcher.extra);
            let config = <facesweep_fetcher::Config as clap::Parser>::try_parse_from(args)?;
            // This CLI links LibTorch (the detector); the fetcher service binary does not.
            let before = bench::rss_mib();
            let bench::FetchRun { ok, failed, secs, wire_bytes } =
                bench::fetch(list, config, (size, size)).await?;
            let peak = bench::peak_rss_mib();
            println!(
                "peak RSS {peak:.0} MiB, {before:.0} MiB before fetching: fetch tier {:.0} MiB",
                peak - before
            );
            println!(
                "fetched {ok} ok, {failed} failed in {secs:.2} s: {:.1} img/s",
                (ok + failed) as f64 / secs
            );
            println!("to the detector: {:.0} bytes/image on average", wire_bytes as f64 / ok.max(1) as f64);
        }
        BenchCmd::Scale(o) => {
            facesweep_cli::scale::run(&o).await?;
        }
        BenchCmd::Gpu(o) => {
            facesweep_cli::gpucheck::run(&o).await?;
            println!("report: {}", o.out.join("report.md").display());
        }
        BenchCmd::Decode { dir, passes, size, wire } => {
            let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
            let (n, secs) = bench::decode(&dir, passes, threads, (size, size), wire).await?;
            println!("decoded {n} images on {threads} threads in {secs:.2} s: {:.1} img/s", n as f64 / secs);
        }
    }
    Ok(())
}

/// `facesweep demo`: the sample photos from a loopback server through an embedded mesh.
async fn demo(mesh: MeshArgs, samples: Option<PathBuf>, out: PathBuf) -> anyhow::Result<()> {
    let dir = samples.unwrap_or_else(facesweep_cli::default_samples_dir);
    let mut routes = httpserve::Routes::default();
    let names = routes.add_dir(&dir)?;
    anyhow::ensure!(!names.is_empty(), "no sample photos in {} (run scripts/setup.sh)", dir.display());
    let (addr, _server) = httpserve::serve(routes).await?;
    let urls: Vec<String> = names.iter().map(|n| format!("http://{addr}/{n}")).collect();
    // A fresh job per demo: the loopback port changes every run.
    let job =
        format!("demo-{}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs());
    let s = in_mesh(mesh, "demo", &job, &client::UrlInput::List(urls), &out).await?;
    // A handful of lines: read back from the export to show them.
    for l in std::fs::read_to_string(&out)?.lines() {
        print_line(&serde_json::from_str(l)?);
    }
    print_summary(&s, &out);
    Ok(())
}

fn print_line(l: &serde_json::Value) {
    let name = l["url"].as_str().unwrap_or("").rsplit('/').next().unwrap_or("");
    let faces = l["faces"].as_array().map(Vec::len).unwrap_or(0);
    println!("{name:<40} {:>4}x{:<4} {faces} face(s)", l["width"], l["height"]);
    for f in l["faces"].as_array().into_iter().flatten() {
        let b: Vec<String> = f["box"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| format!("{:.0}", v.as_f64().unwrap_or(0.0)))
            .collect();
        println!("    box [{}] score {:.3}", b.join(", "), f["score"].as_f64().unwrap_or(0.0));
    }
}

fn print_summary(s: &facesweep_cli::RunSummary, out: &std::path::Path) {
    println!(
        "job {}: {} URLs, {} faces in {:.1} s -> {}",
        s.job,
        s.export.lines,
        s.export.faces,
        s.seconds,
        out.display()
    );
    println!("{}", client::describe(&s.progress));
}
