//! `facesweep`: run the whole face-detection pipeline from one command.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use facesweep_cli::bench;
use facesweep_cli::datadir::InUse;
use facesweep_cli::ondemand::{self, Need};
use facesweep_cli::output::{Format, Out};
use facesweep_cli::{client, errors, httpserve, inputs, live, run_job, Mesh};

mod args;
use args::*;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if std::env::var_os("RUST_LOG").is_none() {
        // Progress bars, not logs, for interactive commands: the services a command runs
        // in-process (drain notices, pool releases, health changes) are not news to its user;
        // what matters reaches them as the command's own error line.
        let quiet = "error";
        let up = facesweep_common::telemetry::DEFAULT_LOG;
        std::env::set_var("RUST_LOG", if matches!(cli.cmd, Cmd::Up { .. }) { up } else { quiet });
    }
    if let Some(t) = &cli.admin_token {
        // Read by every client this process makes (client::AdminToken).
        std::env::set_var("FACESWEEP_ADMIN_TOKEN", t);
    }
    let _telemetry = match facesweep_common::telemetry::init("facesweep") {
        Ok(t) => t,
        Err(e) => return fail(&e, None),
    };
    let mut cmd = cli.cmd;
    if let Err(e) = precheck(&cmd) {
        return fail(&e, None);
    }
    let started = match on_demand(&mut cmd, &cli.data_dir).await {
        Ok(s) => s,
        Err(e) => return fail(&e, None),
    };
    let target = client_target(&mut cmd).map(|(service, addr, job, _)| errors::Target {
        service,
        addr: addr.clone(),
        job,
    });
    // Ctrl-C during a run: say how to go on (the embedded mesh stops as it is dropped).
    let interruptible = matches!(cmd, Cmd::Run { dry_run: false, .. });
    // Biased: the handler is installed before the run starts (Postgres starts blocking).
    let result = tokio::select! {
        biased;
        _ = tokio::signal::ctrl_c(), if interruptible => Err(Interrupted.into()),
        r = dispatch(cmd, &cli.data_dir) => r,
    };
    if result.as_ref().is_err_and(|e| e.is::<Interrupted>()) {
        // `select!` has dropped the run, and with it the mesh: Postgres is stopped.
        drop(_telemetry);
        interrupted();
    }
    if let Some(s) = started {
        if let Err(e) = s.stop().await {
            eprintln!("warning: stopping the services started for this command: {e:#}");
        }
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e, target.as_ref()),
    }
}

/// Ctrl-C ended the command.
#[derive(Debug)]
struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted — run the same command again to resume (finished URLs are kept)")
    }
}

impl std::error::Error for Interrupted {}

/// Clears the progress bar's line, says how to resume, and ends as a shell does for SIGINT.
fn interrupted() -> ! {
    use std::io::{IsTerminal, Write};
    if std::io::stderr().is_terminal() {
        eprint!("\r\x1b[2K");
    }
    eprintln!("{Interrupted}");
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // Not a return from main: the detector's model thread (not joinable, possibly mid
    // forward pass) would run on while exit() runs LibTorch's static destructors, and
    // the process died with SIGSEGV. _exit runs no destructors; nothing left needs one.
    // SAFETY: _exit only ends the process.
    unsafe { libc::_exit(errors::EXIT_INTERRUPTED.into()) }
}

/// Prints what went wrong and what to do (errors.rs), and the exit status to end with.
/// A closed stdout (`| head`) is a normal end, as for other command-line tools.
fn fail(e: &anyhow::Error, target: Option<&errors::Target>) -> ExitCode {
    if errors::broken_pipe(e) {
        return ExitCode::SUCCESS;
    }
    eprintln!("error: {}", errors::explain(e, target));
    ExitCode::from(errors::exit_code(e))
}

/// A client command's service (`delegator`/`results`), its address, job and what it needs.
fn client_target(cmd: &mut Cmd) -> Option<(&'static str, &mut String, Option<String>, Need)> {
    use facesweep_cli::jobs::LifecycleCmd as L;
    let (d, r, control) = ("delegator", "results", Need::Control);
    Some(match cmd {
        Cmd::Import { dry_run: true, .. } => return None,
        Cmd::Import { job, delegator, .. } => (d, delegator, Some(job.clone()), control),
        Cmd::Progress { job, wait, delegator } => {
            (d, delegator, Some(job.clone()), if *wait { Need::Full } else { control })
        }
        Cmd::Retry { job, delegator, .. } | Cmd::Delete { job, delegator } => {
            (d, delegator, Some(job.clone()), control)
        }
        Cmd::Export { job, results, .. } => (r, results, Some(job.clone()), control),
        Cmd::Sheet(a) => (r, &mut a.results, Some(a.job.clone()), control),
        Cmd::Lifecycle(L::Jobs { delegator }) => (d, delegator, None, control),
        Cmd::Lifecycle(
            L::Pause { job, delegator }
            | L::Resume { job, delegator }
            | L::Cancel { job, delegator }
            | L::Priority { job, delegator, .. },
        ) => (d, delegator, Some(job.clone()), control),
        Cmd::Lifecycle(L::Watch { job, results, .. }) => (r, results, Some(job.clone()), Need::Full),
        _ => return None,
    })
}

/// What can be refused before the data dir's services start on demand for a command: a bad
/// input file (read again by the import; stdin is checked there), a bad `--out`, a status
/// `retry` cannot re-queue.
fn precheck(cmd: &Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Import { file, dry_run: false, .. } if file != Path::new("-") => inputs::check(file).map(drop),
        Cmd::Export { out, format, .. } => facesweep_cli::output::check_out(out, *format),
        Cmd::Retry { status, .. } => facesweep_cli::status::retryable(status),
        Cmd::Sheet(a) => a.status.as_deref().map_or(Ok(()), |s| facesweep_cli::status::parse(s).map(drop)),
        _ => Ok(()),
    }
}

/// For a client command whose service does not answer at its default address: the data
/// dir's services, started for the command or published by the process holding it.
async fn on_demand(cmd: &mut Cmd, data_dir: &Path) -> anyhow::Result<Option<ondemand::Services>> {
    let Some((service, addr, _, need)) = client_target(cmd) else { return Ok(None) };
    let default = if service == "results" { DEFAULT_RESULTS } else { DEFAULT_DELEGATOR };
    if addr != default || ondemand::answers(addr).await {
        return Ok(None);
    }
    let Some(s) = ondemand::services(data_dir, need, "on-demand").await? else { return Ok(None) };
    *addr = if service == "results" { s.results.clone() } else { s.delegator.clone() };
    Ok(Some(s))
}

const DEFAULT_DELEGATOR: &str = "127.0.0.1:50051";
const DEFAULT_RESULTS: &str = "127.0.0.1:50053";

/// Runs one command.
async fn dispatch(cmd: Cmd, data_dir: &Path) -> anyhow::Result<()> {
    match cmd {
        Cmd::Up { mesh, port } => up(mesh, data_dir, port).await,
        Cmd::Import { job, file, dry_run, models, delegator } => {
            import(data_dir, &job, &file, dry_run, &models, &delegator).await
        }
        Cmd::Progress { job, wait, delegator } => {
            let p = if wait {
                client::wait(&delegator, &job, false).await?
            } else {
                client::progress(&delegator, &job).await?
            };
            println!("{}", client::describe(&p));
            if let Some(note) = client::state_note(&delegator, &job).await {
                println!("{note}");
            }
            Ok(())
        }
        Cmd::Retry { job, status, force, delegator } => {
            let req = facesweep_proto::RetryUrlsRequest { job: job.clone(), status: status.clone(), force };
            let n = client::delegator(&delegator).await?.retry_urls(req).await?.into_inner().requeued;
            println!("job {job}: {} with status {status} re-queued", live::urls(n));
            Ok(())
        }
        Cmd::Lifecycle(cmd) => facesweep_cli::jobs::run(cmd).await,
        Cmd::Delete { job, delegator } => {
            let req = facesweep_proto::DeleteJobRequest { job: job.clone() };
            let n = client::delegator(&delegator).await?.delete_job(req).await?.into_inner().urls_deleted;
            println!("job {job}: deleted with its {}", live::urls(n));
            Ok(())
        }
        Cmd::Export { job, out, format, model, results } => {
            let what = facesweep_proto::ExportResultsRequest { job, model_id: model.unwrap_or_default() };
            let sum = facesweep_cli::export(&results, what, &out, Format::for_path(&out, format)).await?;
            // Not on stdout when the export itself goes there.
            eprintln!("wrote {} rows to {}", sum.lines, out.display());
            Ok(())
        }
        Cmd::Run { file, out, format, dry_run, job, mesh } => {
            run(mesh, data_dir, job, &file, dry_run, (&out, format)).await
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
        Cmd::Demo { mesh, samples, out } => demo(mesh, data_dir, samples, out).await,
    }
}

/// `facesweep import`: the whole input checked first (`--dry-run` stops there).
async fn import(
    data_dir: &Path,
    job: &str,
    file: &Path,
    dry_run: bool,
    models: &client::ModelArgs,
    delegator: &str,
) -> anyhow::Result<()> {
    let file = inputs::resolve(file)?;
    let counts = file.check()?;
    if dry_run {
        println!("{}: {} (dry run: nothing imported)", file.name, counts.describe());
        return Ok(());
    }
    let input = client::UrlInput::File(file.path.clone());
    Mesh::check_served(data_dir, delegator, models.split().as_ref())?;
    let opts = client::ImportOptions { models: models.split(), ..Default::default() };
    let r = client::import(delegator, job, &input, opts).await?;
    let resumed = if r.skipped > 0 { format!(", resumed after {}", r.skipped) } else { String::new() };
    println!("job {job}: received {}, {} new{resumed}", live::urls(r.received), r.inserted);
    println!("{}: {}", file.name, counts.describe());
    Ok(())
}

/// `facesweep run`: the input and --out are checked before anything starts (a bad input
/// leaves no job; a bad --out is not found only after the whole job ran), then the job runs
/// in a mesh and is exported.
async fn run(
    mesh: MeshArgs,
    data_dir: &Path,
    job: Option<String>,
    file: &Path,
    dry_run: bool,
    (out, format): (&Path, Option<Format>),
) -> anyhow::Result<()> {
    let file = inputs::resolve(file)?;
    let counts = file.check()?;
    if dry_run {
        println!("{}: {} (dry run: nothing started)", file.name, counts.describe());
        return Ok(());
    }
    facesweep_cli::output::check_out(out, format)?;
    let job = job.unwrap_or_else(|| file.job_name());
    let input = client::UrlInput::File(file.path.clone());
    let s = in_mesh(mesh, data_dir, "run", &job, &input, Out::new(out, format)).await?;
    print_summary(&s, out);
    say(out, &format!("{}: {}", file.name, counts.describe()));
    errors::some_ok(&s, out)
}

/// `facesweep up`: the four services on fixed ports until a signal.
async fn up(mesh: MeshArgs, data_dir: &Path, port: u16) -> anyhow::Result<()> {
    let mut o = mesh.options(data_dir)?;
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
    let grace = facesweep_cli::embedded::UP_DRAIN_GRACE_SECS;
    println!(
        "facesweep up: stopping — URLs in flight get {grace} s to finish, the rest of their leases go back"
    );
    m.stop().await
}

/// Runs one job in an embedded mesh, stopping the mesh whatever the outcome. When another
/// facesweep process holds the data dir, the job runs through its services instead.
async fn in_mesh(
    mesh: MeshArgs,
    data_dir: &Path,
    command: &str,
    job: &str,
    input: &client::UrlInput,
    out: Out<'_>,
) -> anyhow::Result<facesweep_cli::RunSummary> {
    let mut o = mesh.options(data_dir)?;
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
    out: Out<'_>,
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
        BenchCmd::Fetch(a) => a.run(client::read_urls).await?,
        BenchCmd::Scale(o) => {
            bench::scale::run(&o).await?;
        }
        BenchCmd::Gpu(o) => {
            bench::gpu::run(&o).await?;
            println!("report: {}", o.out.join("report.md").display());
        }
        BenchCmd::Decode(a) => a.run().await?,
    }
    Ok(())
}

/// `facesweep demo`: the sample photos from a loopback server through an embedded mesh.
async fn demo(mesh: MeshArgs, data_dir: &Path, samples: Option<PathBuf>, out: PathBuf) -> anyhow::Result<()> {
    let dir = samples.unwrap_or_else(facesweep_cli::default_samples_dir);
    let mut routes = httpserve::Routes::default();
    let names = routes.add_dir(&dir).unwrap_or_default();
    anyhow::ensure!(
        !names.is_empty(),
        "no sample photos in {}: run scripts/setup.sh in a facesweep checkout, or pass --samples DIR \
         (or FACESWEEP_SAMPLES)",
        dir.display()
    );
    let (addr, _server) = httpserve::serve(routes).await?;
    let urls: Vec<String> = names.iter().map(|n| format!("http://{addr}/{n}")).collect();
    // A fresh job per demo: the loopback port changes every run.
    let job =
        format!("demo-{}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs());
    let s =
        in_mesh(mesh, data_dir, "demo", &job, &client::UrlInput::List(urls), out.as_path().into()).await?;
    // A handful of lines: read back from the export to show them.
    for l in std::fs::read_to_string(&out)?.lines() {
        print_line(&serde_json::from_str(l)?);
    }
    print_summary(&s, &out);
    errors::some_ok(&s, &out)
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
    let done = format!(
        "job {}: {}, {} in {:.1} s -> {}",
        s.job,
        live::urls(s.export.lines as i64),
        live::count(s.export.faces as i64, "face"),
        s.seconds,
        out.display()
    );
    say(out, &done);
    say(out, &client::describe(&s.progress));
}

/// A summary line: on stderr when the results themselves go to stdout (`--out -`).
fn say(out: &std::path::Path, line: &str) {
    if out == std::path::Path::new("-") {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every flag and positional of every command says what it is for.
    #[test]
    fn every_arg_has_help() {
        fn walk(c: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in c.get_arguments() {
                let id = a.get_id().as_str();
                if id != "help" && id != "version" && a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for s in c.get_subcommands() {
                walk(s, &format!("{path} {}", s.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "facesweep", &mut missing);
        assert!(missing.is_empty(), "arguments without help: {missing:?}");
    }

    #[test]
    fn negative_priorities_parse() {
        let cli = Cli::try_parse_from(["facesweep", "priority", "--job", "a", "--priority", "-3"]).unwrap();
        let Cmd::Lifecycle(facesweep_cli::jobs::LifecycleCmd::Priority { priority, .. }) = cli.cmd else {
            panic!("not priority")
        };
        assert_eq!(priority, -3);
    }
}
