//! The mesh of the network chaos test: every service in its own namespace (see `netns`),
//! mTLS with per-service certificates naming their IP, their role (`facesweep-<role>`) and,
//! for fetchers, `spiffe://facesweep/fetcher/<id>`; PostgreSQL listening on its own address;
//! discovery through a Consul server in its own namespace.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use facesweep_common::tls::TlsConfig;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose, SanType};

use crate::netns::{Net, Node};

pub const PG_PORT: u16 = 5432;
pub const CONSUL_PORT: u16 = 8500;
pub const METRICS_PORT: u16 = 9100;

/// (node name, address) of everything in the mesh.
pub const NODES: [(&str, [u8; 4]); 10] = [
    ("postgres", [198, 18, 0, 10]),
    ("consul", [198, 18, 0, 11]),
    ("site", [198, 18, 0, 12]),
    ("delegator-0", [198, 18, 0, 20]),
    ("delegator-1", [198, 18, 0, 21]),
    ("results", [198, 18, 0, 30]),
    ("detector-0", [198, 18, 0, 40]),
    ("detector-1", [198, 18, 0, 41]),
    ("fetcher-0", [198, 18, 0, 50]),
    ("fetcher-1", [198, 18, 0, 51]),
];

pub fn ip(name: &str) -> Ipv4Addr {
    NODES.iter().find(|n| n.0 == name).map(|n| n.1.into()).unwrap_or_else(|| panic!("no node {name}"))
}

/// The service's role: `delegator-1` → `delegator`.
pub fn role(name: &str) -> &str {
    name.split('-').next().unwrap()
}

pub fn grpc_port(name: &str) -> u16 {
    match role(name) {
        "delegator" => 50051,
        "detector" => 50052,
        "results" => 50053,
        _ => 50054,
    }
}

pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
}

impl Ca {
    pub fn new(dir: &Path) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "facesweep chaos-net CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.join("ca.pem"), issuer.pem()).unwrap();
        Ca { issuer, dir: dir.to_path_buf() }
    }

    /// A certificate for `name` naming `facesweep-<role>`, `ip` and, for a fetcher, its
    /// SPIFFE id.
    pub fn issue(&self, name: &str, role: &str, ip: Ipv4Addr, fetcher_id: Option<&str>) -> TlsConfig {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![format!("facesweep-{role}"), ip.to_string()]).unwrap();
        if let Some(id) = fetcher_id {
            let uri = format!("spiffe://facesweep/fetcher/{id}");
            params.subject_alt_names.push(SanType::URI(uri.try_into().unwrap()));
        }
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (c, k) = (self.dir.join(format!("{name}.pem")), self.dir.join(format!("{name}.key")));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        TlsConfig { cert: Some(c), key: Some(k), ca: Some(self.dir.join("ca.pem")), ..Default::default() }
    }
}

pub struct Mesh {
    // Declared first: processes die before their namespaces go.
    pub procs: HashMap<String, Child>,
    pub net: Net,
    pub dir: PathBuf,
    pub ca: Ca,
    pub model: PathBuf,
}

impl Drop for Mesh {
    fn drop(&mut self) {
        for (_, mut c) in self.procs.drain() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Mesh {
    /// Namespaces for every node; fails (it does not skip) when they cannot be made.
    pub fn new(dir: &Path, model: PathBuf) -> Mesh {
        let mut net = Net::new().unwrap_or_else(|e| panic!("cannot build the test network: {e}"));
        for (name, addr) in NODES {
            net.add(name, addr.into()).unwrap_or_else(|e| panic!("namespace for {name}: {e}"));
        }
        Mesh { procs: HashMap::new(), net, ca: Ca::new(dir), dir: dir.to_path_buf(), model }
    }

    pub fn db_url(&self) -> String {
        format!("postgres://facesweep@{}:{PG_PORT}/postgres", ip("postgres"))
    }

    fn node(&self, name: &str) -> Node {
        self.net.node(name).clone()
    }

    fn log(&self, name: &str) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{name}.log")))
            .unwrap()
    }

    fn spawn(&mut self, name: &str, mut c: Command) {
        c.stdin(Stdio::null()).stdout(self.log(name)).stderr(self.log(name));
        let child = crate::bins::spawn(&mut c).unwrap_or_else(|e| panic!("start {name}: {e}"));
        self.procs.insert(name.to_string(), child);
    }

    /// PostgreSQL initialised by pgembed, then run in its namespace on its address with
    /// trust for 198.18.0.0/15 only (nothing else can reach these namespaces).
    pub fn start_postgres(&mut self) {
        let pgdir = self.dir.join("db");
        let mut pg = facesweep_pgembed::PgEmbed::start(&pgdir, facesweep_pgembed::Durability::Ephemeral)
            .expect("initialise PostgreSQL");
        let data = pg.data_dir().to_path_buf();
        pg.stop();
        let hba = data.join("pg_hba.conf");
        let old = std::fs::read_to_string(&hba).unwrap();
        std::fs::write(&hba, format!("host all facesweep 198.18.0.0/15 trust\n{old}")).unwrap();
        let user = std::env::var("FACESWEEP_PG_USER").unwrap_or_else(|_| "postgres".into());
        let mut c = self.node("postgres").command("setpriv");
        c.args([format!("--reuid={user}"), format!("--regid={user}"), "--init-groups".into()]);
        c.arg(pg_bin().join("postgres")).arg("-D").arg(&data).args(["-p", &PG_PORT.to_string()]);
        for kv in [
            format!("listen_addresses={}", ip("postgres")),
            format!("unix_socket_directories={}", data.display()),
            "max_connections=300".into(),
            "fsync=off".into(),
            "synchronous_commit=off".into(),
            "full_page_writes=off".into(),
        ] {
            c.arg("-c").arg(kv);
        }
        self.spawn("postgres", c);
    }

    /// A Consul server alone in its namespace, bound to its address.
    pub fn start_consul(&mut self) {
        let data = self.dir.join("consul-data");
        std::fs::create_dir_all(&data).unwrap();
        let addr = ip("consul");
        let mut c = self.node("consul").command("consul");
        c.args(["agent", "-server", "-bootstrap-expect=1", "-dns-port=-1", "-grpc-port=-1"])
            .arg(format!("-bind={addr}"))
            .arg(format!("-client={addr}"))
            .arg(format!("-http-port={CONSUL_PORT}"))
            .arg(format!("-data-dir={}", data.display()))
            .args(["-node=facesweep-chaos-consul", "-log-level=warn"]);
        self.spawn("consul", c);
    }

    /// A service in its namespace; `name` is `<role>[-<i>]`.
    pub fn start_service(&mut self, name: &str) {
        let node = self.node(name);
        let role = role(name).to_string();
        let exe = crate::bins::copy_into(&self.dir, &format!("facesweep-{role}"));
        let mut c = node.command(exe);
        let addr = node.ip;
        c.arg("--listen").arg(format!("{addr}:{}", grpc_port(name)));
        c.arg("--metrics-listen").arg(format!("{addr}:{METRICS_PORT}"));
        let fetcher_id = (role == "fetcher").then_some(name);
        let tls = self.ca.issue(name, &role, addr, fetcher_id);
        c.arg("--tls-cert").arg(tls.cert.unwrap()).arg("--tls-key").arg(tls.key.unwrap());
        c.arg("--tls-ca").arg(tls.ca.unwrap());
        c.arg("--consul-addr").arg(format!("{}:{CONSUL_PORT}", ip("consul")));
        c.args(["--consul-check-interval-secs", "1"]);
        c.env("RUST_LOG", "warn").env("DATABASE_URL", self.db_url());
        match role.as_str() {
            "delegator" => {
                c.args(["--membership-timeout-secs", "6", "--member-id", name, "--lease-ttl-secs", "4"]);
                c.args(["--default-chunk-size", "20", "--failure-backoff-ms", "500"]);
            }
            "detector" => {
                c.arg("--model").arg(&self.model).args(["--max-batch", "16", "--device", "cpu"]);
            }
            "fetcher" => {
                c.args(["--id", name, "--allow-networks", "198.18.0.0/15", "--concurrency", "16"]);
                c.args([
                    "--delegator",
                    "consul://facesweep-delegator",
                    "--detector",
                    "consul://facesweep-detector",
                ]);
                c.args(["--results", "consul://facesweep-results", "--idle-poll-ms", "100"]);
                c.args([
                    "--release-backoff-ms",
                    "200",
                    "--timeout-ms",
                    "5000",
                    "--connect-timeout-ms",
                    "2000",
                ]);
                // CPU detectors on shared cores queue for seconds: a short detect timeout fires
                // on load alone (and the leases it releases add load), so 10 s.
                c.args([
                    "--detect-timeout-ms",
                    "10000",
                    "--rpc-timeout-ms",
                    "3000",
                    "--drain-grace-secs",
                    "3",
                ]);
            }
            _ => {}
        }
        self.spawn(name, c);
    }

    /// The operator's certificate (admin) and the rogue's (a fetcher with an id of its own).
    pub fn client_tls(&self, name: &str, role: &str, fetcher_id: Option<&str>) -> facesweep_common::tls::Tls {
        self.ca.issue(name, role, crate::netns::HOST_IP, fetcher_id).load().unwrap().unwrap()
    }

    /// Processes that exited on their own (a crash), with their status.
    pub fn exited(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, c) in self.procs.iter_mut() {
            if let Ok(Some(s)) = c.try_wait() {
                out.push(format!("{name} ({s})"));
            }
        }
        out
    }
}

fn pg_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("PG_BIN") {
        return PathBuf::from(p);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
                .collect()
        })
        .unwrap_or_default();
    found.retain(|p| p.1.join("postgres").exists());
    found.sort();
    found.pop().map(|p| p.1).expect("PostgreSQL under /usr/lib/postgresql (scripts/setup.sh) or PG_BIN")
}
