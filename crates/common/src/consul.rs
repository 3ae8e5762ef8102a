//! Consul through its agent's HTTP API: self-registration with a gRPC health check that the
//! agent runs, deregistration on shutdown, and blocking queries on the health of a service.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use tokio::task::JoinHandle;

use crate::Shutdown;

/// Consul settings shared by every service (`--consul-addr` switches registration on).
#[derive(Clone, Debug, clap::Args)]
pub struct ConsulArgs {
    /// Consul agent HTTP address (host:port or URL); when set, this service registers itself.
    #[arg(long = "consul-addr", env = "CONSUL_HTTP_ADDR")]
    pub addr: Option<String>,
    /// ACL token sent to the agent (Consul's own variable).
    #[arg(long = "consul-token", env = "CONSUL_HTTP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// IP that other services dial (default: the listen IP, or this host's IP on the route to Consul).
    #[arg(long = "advertise-ip", env = "FACESWEEP_ADVERTISE_IP")]
    pub advertise_ip: Option<IpAddr>,
    /// Consul service names are `<prefix>-<role>`: one prefix per deployment sharing an agent.
    #[arg(
        long = "consul-service-prefix",
        env = "FACESWEEP_CONSUL_SERVICE_PREFIX",
        default_value = "facesweep"
    )]
    pub service_prefix: String,
    /// How often the agent runs the gRPC health check, seconds.
    #[arg(
        long = "consul-check-interval-secs",
        env = "FACESWEEP_CONSUL_CHECK_INTERVAL_SECS",
        default_value_t = 5
    )]
    pub check_interval_secs: u64,
}

/// Consul settings as a service uses them: plain data, built from [`ConsulArgs`] by a binary
/// or field by field by an embedder (so no environment variable reaches an embedded mesh).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsulConfig {
    /// Agent address; `None` leaves registration and Consul discovery off.
    pub addr: Option<String>,
    pub token: Option<String>,
    pub advertise_ip: Option<IpAddr>,
    pub service_prefix: String,
    pub check_interval_secs: u64,
}

impl Default for ConsulConfig {
    fn default() -> Self {
        ConsulConfig {
            addr: None,
            token: None,
            advertise_ip: None,
            service_prefix: "facesweep".into(),
            check_interval_secs: 5,
        }
    }
}

impl From<ConsulArgs> for ConsulConfig {
    fn from(a: ConsulArgs) -> Self {
        let ConsulArgs { addr, token, advertise_ip, service_prefix, check_interval_secs } = a;
        ConsulConfig { addr, token, advertise_ip, service_prefix, check_interval_secs }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConsulError {
    #[error("bad Consul address {0:?}")]
    Address(String),
    #[error("the Consul token is not a valid HTTP header value")]
    Token,
    #[error("Consul request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("Consul answered {status}: {body}")]
    Status { status: u16, body: String },
}

/// A client of one Consul agent.
#[derive(Clone, Debug)]
pub struct Consul {
    base: reqwest::Url,
    http: reqwest::Client,
}

/// What a service tells Consul about itself.
#[derive(Clone, Debug)]
pub struct Registration {
    pub id: String,
    pub name: String,
    pub addr: SocketAddr,
    pub tags: Vec<String>,
    pub meta: Vec<(String, String)>,
    pub check_interval: Duration,
    /// Under mTLS the agent holds no client certificate: check `plain_health` with gRPC, or
    /// without it the port with TCP.
    pub tls: bool,
    pub plain_health: Option<SocketAddr>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HealthEntry {
    node: Node,
    service: Service,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Node {
    address: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Service {
    address: String,
    port: u16,
}

impl Consul {
    pub fn new(addr: &str) -> Result<Self, ConsulError> {
        Self::with_token(addr, None)
    }

    /// A client that sends `token` as `X-Consul-Token` (agents with ACLs enabled need one).
    pub fn with_token(addr: &str, token: Option<&str>) -> Result<Self, ConsulError> {
        let with_scheme = if addr.contains("://") { addr.to_string() } else { format!("http://{addr}") };
        let base = reqwest::Url::parse(&with_scheme).map_err(|_| ConsulError::Address(addr.into()))?;
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(t) = token {
            let mut v = reqwest::header::HeaderValue::from_str(t).map_err(|_| ConsulError::Token)?;
            v.set_sensitive(true);
            headers.insert("X-Consul-Token", v);
        }
        // Blocking queries hold the request open for up to `wait` (plus Consul's jitter).
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .default_headers(headers)
            .build()?;
        Ok(Consul { base, http })
    }

    fn url(&self, path: &str) -> reqwest::Url {
        self.base.join(path).expect("static API path")
    }

    async fn check(resp: reqwest::Response) -> Result<reqwest::Response, ConsulError> {
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        Err(ConsulError::Status { status, body: resp.text().await.unwrap_or_default() })
    }

    /// Registers (or updates) a service with a gRPC health check run by the agent; the agent
    /// reaps it if it stays critical for a minute (a process killed before it could deregister).
    pub async fn register(&self, r: &Registration) -> Result<(), ConsulError> {
        let interval = format!("{}s", r.check_interval.as_secs().max(1));
        let grpc =
            |at: SocketAddr| json!({ "Name": format!("{} gRPC health", r.name), "GRPC": at.to_string() });
        let check = match (r.tls, r.plain_health) {
            (false, _) => grpc(r.addr),
            (true, Some(h)) => grpc(SocketAddr::new(r.addr.ip(), h.port())),
            (true, None) => json!({ "Name": format!("{} TCP", r.name), "TCP": r.addr.to_string() }),
        };
        let mut check = check.as_object().cloned().unwrap_or_default();
        check.insert("Interval".into(), interval.into());
        check.insert("Timeout".into(), "3s".into());
        check.insert("DeregisterCriticalServiceAfter".into(), "1m".into());
        let body = json!({
            "ID": r.id,
            "Name": r.name,
            "Address": r.addr.ip().to_string(),
            "Port": r.addr.port(),
            "Tags": r.tags,
            "Meta": r.meta.iter().cloned().collect::<std::collections::HashMap<_, _>>(),
            "Check": check,
        });
        let resp = self.http.put(self.url("v1/agent/service/register")).json(&body).send().await?;
        Self::check(resp).await.map(drop)
    }

    pub async fn deregister(&self, id: &str) -> Result<(), ConsulError> {
        let resp = self.http.put(self.url(&format!("v1/agent/service/deregister/{id}"))).send().await?;
        Self::check(resp).await.map(drop)
    }

    /// Whether the local agent still has service `id` (it forgets everything when restarted in -dev).
    pub async fn is_registered(&self, id: &str) -> Result<bool, ConsulError> {
        let resp = self.http.get(self.url(&format!("v1/agent/service/{id}"))).send().await?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(false);
        }
        Self::check(resp).await.map(|_| true)
    }

    /// Instances of `service` (with `tag`, when given) whose checks all pass, as `host:port`.
    /// With `index` > 0 this is a blocking query: it answers when the set changes or after
    /// `wait`. Returns the new index.
    pub async fn passing(
        &self,
        service: &str,
        tag: Option<&str>,
        index: u64,
        wait: Duration,
    ) -> Result<(BTreeSet<String>, u64), ConsulError> {
        let mut url = self.url(&format!("v1/health/service/{service}"));
        if let Some(tag) = tag {
            url.query_pairs_mut().append_pair("tag", tag);
        }
        url.query_pairs_mut()
            .append_pair("passing", "true")
            .append_pair("index", &index.to_string())
            .append_pair("wait", &format!("{}s", wait.as_secs().max(1)));
        let resp = self.http.get(url).timeout(wait + Duration::from_secs(10)).send().await?;
        let resp = Self::check(resp).await?;
        let new_index = resp
            .headers()
            .get("X-Consul-Index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let entries: Vec<HealthEntry> = resp.json().await?;
        let members = entries
            .into_iter()
            .map(|e| {
                let host = if e.service.address.is_empty() { e.node.address } else { e.service.address };
                match host.parse::<IpAddr>() {
                    Ok(ip) => SocketAddr::new(ip, e.service.port).to_string(),
                    Err(_) => format!("{host}:{}", e.service.port),
                }
            })
            .collect();
        Ok((members, new_index))
    }

    /// The local IP on the route to the agent: what other pods/hosts can dial us at.
    fn local_ip_towards(&self) -> Option<IpAddr> {
        let host = self.base.host_str()?.trim_matches(['[', ']']);
        let port = self.base.port_or_known_default()?;
        let target = std::net::ToSocketAddrs::to_socket_addrs(&(host, port)).ok()?.next()?;
        let bind: SocketAddr =
            if target.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { "[::]:0".parse().ok()? };
        let sock = std::net::UdpSocket::bind(bind).ok()?;
        sock.connect(target).ok()?;
        Some(sock.local_addr().ok()?.ip())
    }
}

/// What a service announces about itself.
#[derive(Clone, Debug)]
pub struct Announce {
    /// `delegator`, `detector`, `results` or `fetcher`.
    pub role: &'static str,
    /// The bound address (its IP may be unspecified: see `--advertise-ip`).
    pub listen: SocketAddr,
    pub tls: bool,
    /// The plaintext health port, if any (`--plaintext-health-listen`).
    pub plain_health: Option<SocketAddr>,
    pub tags: Vec<String>,
    pub meta: Vec<(String, String)>,
}

impl Announce {
    pub fn new(role: &'static str, listen: SocketAddr, tls: bool, plain_health: Option<SocketAddr>) -> Self {
        Announce { role, listen, tls, plain_health, tags: vec![], meta: vec![] }
    }
}

/// Registers `<prefix>-<role>` when `--consul-addr` is set, keeps it registered (the agent may
/// restart), and deregisters as soon as `shutdown` starts, so clients stop picking this
/// instance while it drains. Await the handle before exiting.
pub fn register_self(
    args: &ConsulConfig,
    me: Announce,
    shutdown: Shutdown,
) -> Result<Option<JoinHandle<()>>, ConsulError> {
    let Some(addr) = &args.addr else { return Ok(None) };
    let (role, listen) = (me.role, me.listen);
    let name = format!("{}-{role}", args.service_prefix);
    let consul = Consul::with_token(addr, args.token.as_deref())?;
    let ip = match (args.advertise_ip, listen.ip()) {
        (Some(ip), _) => ip,
        (None, ip) if !ip.is_unspecified() => ip,
        _ => consul.local_ip_towards().unwrap_or(IpAddr::from([127, 0, 0, 1])),
    };
    let addr = SocketAddr::new(ip, listen.port());
    let reg = Registration {
        id: format!("{name}-{}-{}", ip.to_string().replace([':', '.'], "-"), addr.port()),
        name: name.clone(),
        addr,
        tags: me.tags,
        meta: me.meta,
        check_interval: Duration::from_secs(args.check_interval_secs),
        tls: me.tls,
        plain_health: me.plain_health,
    };
    Ok(Some(tokio::spawn(keep_registered(consul, reg, shutdown))))
}

async fn keep_registered(consul: Consul, reg: Registration, shutdown: Shutdown) {
    let mut registered = false;
    let mut pause = Duration::from_millis(200);
    while !shutdown.is_cancelled() {
        let present = registered && matches!(consul.is_registered(&reg.id).await, Ok(true));
        if !present {
            match consul.register(&reg).await {
                Ok(()) => {
                    if !registered {
                        tracing::info!(id = %reg.id, addr = %reg.addr, "registered in Consul");
                    }
                    registered = true;
                    pause = Duration::from_secs(30);
                }
                Err(e) => {
                    tracing::warn!(error = %e, id = %reg.id, "Consul registration failed; retrying");
                    pause = (pause * 2).min(Duration::from_secs(10));
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(pause) => {}
        }
    }
    if registered {
        match tokio::time::timeout(Duration::from_secs(5), consul.deregister(&reg.id)).await {
            Ok(Ok(())) => tracing::info!(id = %reg.id, "deregistered from Consul"),
            Ok(Err(e)) => tracing::warn!(error = %e, id = %reg.id, "Consul deregistration failed"),
            Err(_) => tracing::warn!(id = %reg.id, "Consul deregistration timed out"),
        }
    }
}
