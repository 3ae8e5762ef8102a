//! An embedded PostgreSQL cluster for `facesweep up` and the tests.
//!
//! PostgreSQL refuses to run as root, so when we are root the cluster runs as an
//! unprivileged user (`postgres` by default, `FACESWEEP_PG_USER` to override).
//!
//! Closed by default: no TCP listener at all, only a Unix socket inside the 0700 data
//! directory, so no other local user can connect (and so run programs through
//! `COPY … TO PROGRAM` as the superuser). Directories outside the caller's own are created
//! without following symlinks and refused when someone else could have prepared them.

use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{chown, Pid, User};

/// How durable the cluster is: ephemeral ones skip fsync (tests, benchmarks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    Durable,
    Ephemeral,
}

/// A running cluster; stopped (fast shutdown) on drop.
pub struct PgEmbed {
    pgdata: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl PgEmbed {
    /// Starts (initialising if needed) a cluster whose files live in `dir/pg`, on a free port.
    pub fn start(dir: &Path, durability: Durability) -> anyhow::Result<Self> {
        Self::start_on(dir, durability, None)
    }

    /// Like `start`, on `port` when given (a restarted cluster keeps its address).
    pub fn start_on(dir: &Path, durability: Durability, port: Option<u16>) -> anyhow::Result<Self> {
        let bin = bin_dir()?;
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let dir = dir.canonicalize()?;
        let user = run_as_user()?;
        let pgdata = match &user {
            Some(u) if !traversable(&dir) => {
                // e.g. a clone under /root: the cluster lives in a stable place outside it.
                let alt = fallback_dir(&dir);
                tracing::warn!(data_dir = %dir.display(), cluster = %alt.display(), user = %u.name,
                    "data dir not reachable by the PostgreSQL user; keeping the cluster elsewhere");
                safe_dir(alt.parent().expect("fallback has a root"), 0o711, None)?;
                safe_dir(&alt, 0o700, user.as_ref().map(|u| u.uid.as_raw()))?;
                alt.join("pg")
            }
            _ => dir.join("pg"),
        };
        if !pgdata.join("PG_VERSION").exists() {
            init(&bin, &pgdata, user.as_ref())?;
        }
        stop_stale(&pgdata);
        let port = match port {
            Some(p) => p,
            None => free_port()?,
        };
        let log_path = pgdata.with_file_name("postgres.log");
        let log = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&log_path)
            .with_context(|| format!("open {}", log_path.display()))?;
        let mut cmd = postgres_command(&bin, &pgdata, port, durability);
        cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        as_user(&mut cmd, user.as_ref());
        let child = cmd.spawn().context("spawn postgres")?;
        let mut pg = PgEmbed { pgdata, port, child: Some(child) };
        pg.wait_ready(&log_path)?;
        Ok(pg)
    }

    /// Connection URL: superuser `facesweep` over the Unix socket in the data directory.
    pub fn url(&self) -> String {
        format!("postgres://facesweep@localhost/postgres?host={}&port={}", self.pgdata.display(), self.port)
    }

    fn socket(&self) -> PathBuf {
        self.pgdata.join(format!(".s.PGSQL.{}", self.port))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> &Path {
        &self.pgdata
    }

    fn wait_ready(&mut self, log_path: &Path) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let socket = self.socket();
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                let log = fs::read_to_string(log_path).unwrap_or_default();
                bail!("postgres exited with {status}:\n{log}");
            }
            if UnixStream::connect(&socket).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("postgres did not accept connections within 60 s")
    }

    /// Fast shutdown: aborts open transactions, keeps committed data.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGINT);
            let _ = child.wait();
        }
    }

    /// Simulates a crash: SIGKILL, no shutdown checkpoint (used by chaos tests).
    pub fn crash(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PgEmbed {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The postmaster on `pgdata`: Unix socket only, dying with its parent.
fn postgres_command(bin: &Path, pgdata: &Path, port: u16, durability: Durability) -> Command {
    let mut cmd = Command::new(bin.join("postgres"));
    cmd.arg("-D").arg(pgdata).arg("-p").arg(port.to_string());
    for (k, v) in [
        ("listen_addresses", ""),
        ("unix_socket_directories", pgdata.to_str().unwrap_or("/tmp")),
        ("max_connections", "300"),
        ("shared_buffers", "256MB"),
    ] {
        cmd.arg("-c").arg(format!("{k}={v}"));
    }
    if durability == Durability::Ephemeral {
        for kv in ["fsync=off", "synchronous_commit=off", "full_page_writes=off"] {
            cmd.arg("-c").arg(kv);
        }
    }
    // The cluster must not outlive us, even after kill -9.
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT);
            Ok(())
        });
    }
    cmd
}

fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("PG_BIN") {
        return Ok(PathBuf::from(p));
    }
    let mut found: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    found.retain(|p| p.join("postgres").exists());
    // Highest major version first ("9" < "15" as numbers, not strings).
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop().context(
        "PostgreSQL server binaries not found under /usr/lib/postgresql (run scripts/setup.sh \
         or set PG_BIN)",
    )
}

fn run_as_user() -> anyhow::Result<Option<User>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let name = std::env::var("FACESWEEP_PG_USER").unwrap_or_else(|_| "postgres".into());
    let user = User::from_name(&name)?
        .with_context(|| format!("running as root needs a user {name:?} to run PostgreSQL"))?;
    Ok(Some(user))
}

/// Whether every ancestor of `dir` lets others through (the cluster user is not us).
fn traversable(dir: &Path) -> bool {
    dir.ancestors()
        .skip(1)
        .all(|a| fs::metadata(a).map(|m| m.permissions().mode() & 0o001 != 0).unwrap_or(false))
}

/// Creates `dir` with `mode` without following a symlink, or accepts an existing one only if
/// it is a real directory owned by us (or `owner`) that nobody else can write to.
fn safe_dir(dir: &Path, mode: u32, owner: Option<u32>) -> anyhow::Result<()> {
    match fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("create {}", dir.display())),
    }
    let m = fs::symlink_metadata(dir)?;
    let me = nix::unistd::geteuid().as_raw();
    let trusted = m.file_type().is_dir() && (m.uid() == me || Some(m.uid()) == owner);
    if !trusted || m.mode() & 0o022 != 0 {
        bail!(
            "{} is not a directory owned by this user and closed to others (uid {}, mode {:o}); \
             remove it or pass a data dir the PostgreSQL user can reach",
            dir.display(),
            m.uid(),
            m.mode() & 0o7777
        );
    }
    Ok(())
}

/// A stable cluster location for `dir` under /var/tmp, so it is still kept between runs.
fn fallback_dir(dir: &Path) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    dir.hash(&mut h);
    PathBuf::from(format!("/var/tmp/facesweep-pg/{:016x}", h.finish()))
}

fn as_user(cmd: &mut Command, user: Option<&User>) {
    if let Some(u) = user {
        cmd.uid(u.uid.as_raw()).gid(u.gid.as_raw());
        cmd.env("HOME", &u.dir).env("USER", &u.name);
    }
}

fn init(bin: &Path, pgdata: &Path, user: Option<&User>) -> anyhow::Result<()> {
    // A half-written cluster from an interrupted initdb cannot be reused.
    if pgdata.exists() {
        fs::remove_dir_all(pgdata)?;
    }
    fs::DirBuilder::new().mode(0o700).create(pgdata)?;
    if let Some(u) = user {
        chown(pgdata, Some(u.uid), Some(u.gid))?;
        if let Some(parent) = pgdata.parent() {
            chown(parent, Some(u.uid), Some(u.gid))?;
        }
    }
    let mut cmd = Command::new(bin.join("initdb"));
    // Only the socket in the 0700 data dir can reach it; TCP is refused even if enabled later.
    cmd.arg("-D").arg(pgdata).args([
        "-U",
        "facesweep",
        "--auth-local=trust",
        "--auth-host=reject",
        "-E",
        "UTF8",
    ]);
    cmd.args(["--locale=C", "--no-sync"]);
    as_user(&mut cmd, user);
    let out = cmd.output().context("run initdb")?;
    if !out.status.success() {
        bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// A postmaster left running by a killed parent still holds the data dir: stop it.
fn stop_stale(pgdata: &Path) {
    let Ok(pidfile) = fs::read_to_string(pgdata.join("postmaster.pid")) else { return };
    let Some(pid) = pidfile.lines().next().and_then(|l| l.trim().parse::<i32>().ok()) else {
        return;
    };
    let cmdline = fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if !cmdline.contains("postgres") {
        return;
    }
    let _ = kill(Pid::from_raw(pid), Signal::SIGINT);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_data_dirs_get_a_stable_fallback() {
        let a = fallback_dir(Path::new("/root/x/.facesweep"));
        assert_eq!(a, fallback_dir(Path::new("/root/x/.facesweep")));
        assert_ne!(a, fallback_dir(Path::new("/root/y/.facesweep")));
        assert!(a.starts_with("/var/tmp/facesweep-pg"));
        assert!(traversable(Path::new("/tmp/anything")));
    }

    #[test]
    fn starts_and_restarts_on_the_same_data_dir_without_tcp() {
        let tmp = tempfile::Builder::new().prefix("pgembed").tempdir_in("/tmp").unwrap();
        let mut pg = PgEmbed::start(tmp.path(), Durability::Ephemeral).unwrap();
        assert!(pg.url().contains(&format!("host={}", pg.data_dir().display())), "{}", pg.url());
        assert!(pg.data_dir().join("PG_VERSION").exists());
        let mode = fs::metadata(pg.data_dir()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "the socket's directory is closed to other users");
        let port = pg.port();
        assert!(UnixStream::connect(pg.socket()).is_ok());
        // Closed by default: nothing listens on TCP, on loopback or anywhere.
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "postgres listens on TCP");
        pg.stop();
        assert!(UnixStream::connect(pg.socket()).is_err(), "still listening after stop");
        // Kept between runs: the second start reuses the cluster rather than re-initialising.
        let pg2 = PgEmbed::start_on(tmp.path(), Durability::Ephemeral, Some(port)).unwrap();
        assert!(UnixStream::connect(pg2.socket()).is_ok());
    }

    #[test]
    fn prepared_or_open_directories_are_refused() {
        let tmp = tempfile::Builder::new().prefix("pgembed").tempdir_in("/tmp").unwrap();
        let target = tmp.path().join("elsewhere");
        fs::create_dir(&target).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = safe_dir(&link, 0o700, None).unwrap_err().to_string();
        assert!(e.contains("not a directory owned"), "{e}");
        let open = tmp.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        assert!(safe_dir(&open, 0o700, None).is_err(), "a world-writable directory is refused");
        let fresh = tmp.path().join("fresh");
        safe_dir(&fresh, 0o700, None).unwrap();
        assert_eq!(fs::metadata(&fresh).unwrap().permissions().mode() & 0o777, 0o700);
    }
}
