//! Network namespaces for the network chaos test: one namespace per service, each with a
//! veth pair into a bridge in the root namespace, on addresses from 198.18.0.0/15 (the
//! benchmarking range: nothing outside this test's own namespaces is ever contacted; the
//! namespaces have no default route). Cuts are `ip link set <veth> down` on the bridge side,
//! slow links `tc qdisc … tbf`, pair cuts blackhole routes on both ends. Everything is
//! named with a `facesweep-chaos` / `fsc-` prefix, removed on drop and, left over from a
//! crashed run, at the start of the next one.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

pub const PREFIX: &str = "facesweep-chaos-";
const BRIDGE: &str = "fsc-br";
/// The root namespace's address on the bridge: the test process (operator, checker) talks
/// to the services from here.
pub const HOST_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

/// Runs `ip`/`tc` with `args`; the error names the command and its stderr.
pub fn sh(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd} {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{cmd} {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn lines(cmd: &str, args: &[&str]) -> Vec<String> {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect())
        .unwrap_or_default()
}

/// A service's namespace: `facesweep-chaos-<name>`, address `ip`, veth `fsc-h<i>` (bridge
/// side) and `fsc-n<i>` (inside).
#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub ip: Ipv4Addr,
    host_veth: String,
    ns_veth: String,
}

impl Node {
    pub fn ns(&self) -> String {
        format!("{PREFIX}{}", self.name)
    }

    /// A command run inside this namespace (`ip netns exec` execs it: the child's pid is the
    /// program's own).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns()]).arg(program);
        c
    }

    fn exec(&self, cmd: &str, args: &[&str]) -> Result<(), String> {
        let ns = self.ns();
        let mut all = vec!["netns", "exec", ns.as_str(), cmd];
        all.extend_from_slice(args);
        sh("ip", &all)
    }
}

/// The test's network; torn down on drop.
pub struct Net {
    pub nodes: Vec<Node>,
    // Held while the network exists: one run at a time on a machine (names and addresses
    // are fixed, and a starting run removes what it takes for a crashed run's leftovers).
    _lock: std::fs::File,
}

/// Waits (up to 20 minutes) for other runs on this machine to finish.
fn lock() -> Result<std::fs::File, String> {
    use std::os::fd::AsRawFd;
    let path = "/tmp/facesweep-chaos-net.lock";
    let f = std::fs::File::create(path).map_err(|e| format!("{path}: {e}"))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1200);
    // SAFETY: flock on an open file descriptor.
    while unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        if std::time::Instant::now() > deadline {
            return Err(format!("another network chaos run held {path} for 20 minutes"));
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    Ok(f)
}

impl Net {
    /// The bridge, after removing anything an earlier crashed run left behind. Fails with
    /// a clear message when namespaces cannot be made here (not root, no CAP_NET_ADMIN).
    pub fn new() -> Result<Net, String> {
        let lock = lock()?;
        cleanup_stale();
        let hint = "network chaos needs root (CAP_SYS_ADMIN + CAP_NET_ADMIN) and `ip` (iproute2)";
        sh("ip", &["link", "add", BRIDGE, "type", "bridge"]).map_err(|e| format!("{hint}: {e}"))?;
        let net = Net { nodes: Vec::new(), _lock: lock };
        sh("ip", &["addr", "add", &format!("{HOST_IP}/15"), "dev", BRIDGE])?;
        sh("ip", &["link", "set", BRIDGE, "up"])?;
        Ok(net)
    }

    /// A namespace for `name` on `ip`, linked to the bridge.
    pub fn add(&mut self, name: &str, ip: Ipv4Addr) -> Result<Node, String> {
        let i = self.nodes.len();
        let node =
            Node { name: name.into(), ip, host_veth: format!("fsc-h{i}"), ns_veth: format!("fsc-n{i}") };
        let ns = node.ns();
        sh("ip", &["netns", "add", &ns])?;
        self.nodes.push(node.clone());
        sh("ip", &["link", "add", &node.host_veth, "type", "veth", "peer", "name", &node.ns_veth])?;
        sh("ip", &["link", "set", &node.ns_veth, "netns", &ns])?;
        sh("ip", &["link", "set", &node.host_veth, "master", BRIDGE])?;
        sh("ip", &["link", "set", &node.host_veth, "up"])?;
        node.exec("ip", &["addr", "add", &format!("{ip}/15"), "dev", &node.ns_veth])?;
        node.exec("ip", &["link", "set", &node.ns_veth, "up"])?;
        node.exec("ip", &["link", "set", "lo", "up"])?;
        Ok(node)
    }

    pub fn node(&self, name: &str) -> &Node {
        self.nodes.iter().find(|n| n.name == name).unwrap_or_else(|| panic!("no node {name}"))
    }

    /// Cuts `name` off the network (its bridge-side veth down) or puts it back.
    pub fn set_link(&self, name: &str, up: bool) -> Result<(), String> {
        let n = self.node(name);
        sh("ip", &["link", "set", &n.host_veth, if up { "up" } else { "down" }])
    }

    /// A token bucket of `rate` (e.g. "50mbit") on both directions of `name`'s link.
    pub fn slow(&self, name: &str, rate: &str) -> Result<(), String> {
        let n = self.node(name);
        let tbf = ["root", "tbf", "rate", rate, "burst", "64kb", "latency", "100ms"];
        let mut host = vec!["qdisc", "replace", "dev", &n.host_veth];
        host.extend_from_slice(&tbf);
        sh("tc", &host)?;
        let mut inner = vec!["qdisc", "replace", "dev", &n.ns_veth];
        inner.extend_from_slice(&tbf);
        n.exec("tc", &inner)
    }

    /// Cuts (or restores) traffic between two nodes only: blackhole routes on both ends.
    pub fn cut_pair(&self, a: &str, b: &str, cut: bool) -> Result<(), String> {
        let (a, b) = (self.node(a), self.node(b));
        let verb = if cut { "add" } else { "del" };
        a.exec("ip", &["route", verb, "blackhole", &format!("{}/32", b.ip)])?;
        b.exec("ip", &["route", verb, "blackhole", &format!("{}/32", a.ip)])
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for n in &self.nodes {
            kill_in(&n.ns());
            let _ = sh("ip", &["netns", "del", &n.ns()]);
            let _ = sh("ip", &["link", "del", &n.host_veth]);
        }
        let _ = sh("ip", &["link", "del", BRIDGE]);
    }
}

/// SIGKILLs the processes left in namespace `ns` (only ever ones this test started there).
fn kill_in(ns: &str) {
    for pid in lines("ip", &["netns", "pids", ns]) {
        if let Ok(pid) = pid.trim().parse::<i32>() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
        }
    }
}

/// Removes the namespaces, veths and bridge of an earlier run that did not clean up.
pub fn cleanup_stale() {
    for line in lines("ip", &["netns", "list"]) {
        let ns = line.split_whitespace().next().unwrap_or_default().to_string();
        if ns.starts_with(PREFIX) {
            kill_in(&ns);
            let _ = sh("ip", &["netns", "del", &ns]);
        }
    }
    for line in lines("ip", &["-o", "link", "show"]) {
        // "12: fsc-h3@if11: <…>"
        if let Some(name) = line.split(": ").nth(1).and_then(|n| n.split('@').next()) {
            if name.starts_with("fsc-") {
                let _ = sh("ip", &["link", "del", name]);
            }
        }
    }
}
