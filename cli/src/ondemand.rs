//! Services on demand: a client command (`export`, `progress`, `retry`, `jobs`…) whose
//! default loopback service does not answer, run from a data dir an embedded mesh used,
//! starts that data dir's database and services for the length of the command — or uses
//! those of the process holding the data dir (datadir.rs).

use std::path::Path;
use std::time::{Duration, Instant};

use facesweep_common::grpc::Running;
use facesweep_common::Shutdown;
use facesweep_pgembed::PgEmbed;

use crate::datadir::{read_owner, DataDirLock, InUse};
use crate::{embedded, Mesh, MeshOptions};

/// What a command needs running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Delegator and results: reads and operator actions.
    Control,
    /// The whole mesh: commands that wait for URLs to be processed.
    Full,
}

/// Where the command's services listen, and what was started for it (stopped by `stop`).
pub struct Services {
    pub delegator: String,
    pub results: String,
    started: Option<Started>,
}

enum Started {
    Control(Box<Control>),
    Full(Box<Mesh>),
}

/// Postgres, delegator and results of a data dir, held for one command.
struct Control {
    shutdown: Shutdown,
    /// Delegator, then results.
    tasks: Vec<Running>,
    pg: PgEmbed,
    _lock: DataDirLock,
}

/// Whether `addr` answers a TCP connect within a second.
pub async fn answers(addr: &str) -> bool {
    let connect = tokio::net::TcpStream::connect(addr);
    matches!(tokio::time::timeout(Duration::from_secs(1), connect).await, Ok(Ok(_)))
}

/// The services of `dir`: its holder's when another process holds it, else started here.
/// None when no embedded mesh ever ran on `dir`.
pub async fn services(dir: &Path, need: Need, command: &str) -> anyhow::Result<Option<Services>> {
    if !crate::datadir::has_cluster(dir) {
        return Ok(None);
    }
    let started = match start(dir, need, command).await {
        Ok(s) => s,
        Err(e) => return held_by_another(e).await.map(Some),
    };
    let (delegator, results) = match &started {
        Started::Control(c) => (c.tasks[0].addr.to_string(), c.tasks[1].addr.to_string()),
        Started::Full(m) => (m.delegator.to_string(), m.results.to_string()),
    };
    eprintln!("started the database and services of {} for this command", dir.display());
    Ok(Some(Services { delegator, results, started: Some(started) }))
}

async fn start(dir: &Path, need: Need, command: &str) -> anyhow::Result<Started> {
    if need == Need::Full {
        let model = std::env::var_os("FACESWEEP_MODEL").map(std::path::PathBuf::from);
        let mut o = MeshOptions::new(dir, crate::options::resolve_model(model.as_deref())?);
        o.command = command.into();
        return Ok(Started::Full(Box::new(Mesh::start(o).await?)));
    }
    let mut lock = DataDirLock::claim(dir, command)?;
    let owned = dir.to_path_buf();
    let pg = tokio::task::block_in_place(|| PgEmbed::start(&owned, facesweep_pgembed::Durability::Durable))?;
    let o = MeshOptions::new(dir, "");
    let shutdown = Shutdown::new();
    let db = pg.url();
    let delegator = facesweep_delegator::spawn(embedded::delegator(&o, &db), shutdown.clone()).await?;
    let results = facesweep_results::spawn(embedded::results(&o, &db), shutdown.clone()).await?;
    lock.publish(&delegator.addr.to_string(), &results.addr.to_string(), &[])?;
    Ok(Started::Control(Box::new(Control { shutdown, tasks: vec![delegator, results], pg, _lock: lock })))
}

/// The published services of the process holding the data dir, if `e` says one does.
async fn held_by_another(e: anyhow::Error) -> anyhow::Result<Services> {
    let Some(InUse { dir, .. }) = e.downcast_ref::<InUse>() else { return Err(e) };
    // A holder still starting publishes its addresses once its services listen.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(o) = read_owner(dir) {
            if let (Some(delegator), Some(results)) = (o.delegator, o.results) {
                return Ok(Services { delegator, results, started: None });
            }
        }
        if Instant::now() > deadline {
            return Err(e);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

impl Services {
    /// Stops what was started for the command (servers, then Postgres).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        match self.started.take() {
            None => Ok(()),
            Some(Started::Full(m)) => m.stop().await,
            Some(Started::Control(c)) => {
                let Control { shutdown, tasks, mut pg, _lock } = *c;
                shutdown.cancel();
                for t in tasks {
                    t.join().await?;
                }
                tokio::task::block_in_place(|| pg.stop());
                Ok(())
            }
        }
    }
}
