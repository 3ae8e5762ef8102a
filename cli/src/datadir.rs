//! One facesweep process per data dir. The embedded PostgreSQL of a data dir belongs to the
//! process holding `<dir>/.facesweep.lock` (flock, released by the kernel when the process
//! ends however it ends); `<dir>/.facesweep.owner` says who that is and where its services
//! listen, so a second `run` can use them instead of starting (and later stopping) a second
//! Postgres on the same files.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

const LOCK: &str = ".facesweep.lock";
const OWNER: &str = ".facesweep.owner";

/// Who holds a data dir.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub pid: u32,
    /// The command it runs (`up`, `run`, `demo`).
    pub command: String,
    /// Its services' addresses, once they listen.
    pub delegator: Option<String>,
    pub results: Option<String>,
    /// Model ids its detectors serve (empty: not known).
    #[serde(default)]
    pub models: Vec<String>,
}

/// The data dir is held by another process.
#[derive(Debug)]
pub struct InUse {
    pub dir: PathBuf,
    /// None when the holder has not said who it is yet (it is starting).
    pub owner: Option<Owner>,
}

impl std::fmt::Display for InUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dir = self.dir.display();
        match &self.owner {
            Some(Owner { pid, command, delegator: Some(d), results: Some(r), .. }) => write!(
                f,
                "data dir {dir} is in use by facesweep pid {pid} (`{command}`, delegator {d}, results {r}): \
                 pass --delegator {d} / --results {r} to `import`/`progress`/`export` to use it, \
                 or stop it first"
            ),
            Some(Owner { pid, command, .. }) => write!(
                f,
                "data dir {dir} is in use by facesweep pid {pid} (`{command}`, still starting): \
                 try again in a moment, stop it first, or pass another --data-dir"
            ),
            None => write!(f, "data dir {dir} is in use by another facesweep process: stop it first, or pass another --data-dir"),
        }
    }
}

impl std::error::Error for InUse {}

/// The data dir, held for as long as this value lives.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    dir: PathBuf,
    owner: Owner,
}

impl DataDirLock {
    /// Takes `dir` for this process, or fails with `InUse` saying who holds it.
    pub fn claim(dir: &Path, command: &str) -> anyhow::Result<DataDirLock> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(LOCK);
        let file = OpenOptions::new().create(true).truncate(false).write(true).open(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(InUse { dir: dir.to_path_buf(), owner: read_owner(dir) }.into());
            }
            Err(TryLockError::Error(e)) => return Err(anyhow::anyhow!("lock {}: {e}", path.display())),
        }
        let owner = Owner { pid: std::process::id(), command: command.into(), ..Default::default() };
        let lock = DataDirLock { _file: file, dir: dir.to_path_buf(), owner };
        lock.write()?;
        Ok(lock)
    }

    /// Records where this process's services listen, for a second process to use them.
    pub fn publish(&mut self, delegator: &str, results: &str, models: &[String]) -> anyhow::Result<()> {
        self.owner.delegator = Some(delegator.into());
        self.owner.results = Some(results.into());
        self.owner.models = models.to_vec();
        self.write()
    }

    fn write(&self) -> anyhow::Result<()> {
        // Written aside and renamed: a reader never sees half a file.
        let tmp = self.dir.join(format!("{OWNER}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec(&self.owner)?)?;
        std::fs::rename(&tmp, self.dir.join(OWNER))?;
        Ok(())
    }
}

/// Whether an embedded mesh ever ran on `dir` (so it holds a cluster worth starting).
pub fn has_cluster(dir: &Path) -> bool {
    dir.join(LOCK).exists()
}

/// Who holds `dir`, when it has said so.
pub fn read_owner(dir: &Path) -> Option<Owner> {
    serde_json::from_slice(&std::fs::read(dir.join(OWNER)).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_claim_is_refused_with_the_holder_until_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = DataDirLock::claim(dir.path(), "up").unwrap();
        first.publish("127.0.0.1:50051", "127.0.0.1:50053", &[]).unwrap();
        let e = DataDirLock::claim(dir.path(), "run").unwrap_err();
        let in_use = e.downcast_ref::<InUse>().expect("InUse");
        assert_eq!(in_use.owner.as_ref().unwrap().pid, std::process::id());
        assert!(e.to_string().contains("--delegator 127.0.0.1:50051"), "{e}");
        drop(first);
        DataDirLock::claim(dir.path(), "run").expect("free again once the holder is gone");
    }
}
