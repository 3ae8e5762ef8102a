//! Where clients find servers: a fixed address list or Consul's passing instances, kept as a
//! live member set; replicas are balanced with tower's power-of-two-choices on in-flight calls.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::str::FromStr;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::StreamExt;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::body::Body;
use tower::balance::p2c::Balance;
use tower::discover::Change;
use tower::load::{PendingRequests, TrackCompletion};
use tower::util::BoxCloneSyncService;
use tower::ServiceBuilder;

use crate::consul::{Consul, ConsulConfig, ConsulError};
use crate::metrics::Registry;
use crate::tls::Tls;
use crate::Shutdown;

/// A gRPC transport balanced over a changing set of servers; generated clients take it as `T`.
pub type Balanced = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, CallError>;

/// Why a balanced call failed (no server in time, connection, …). A concrete type rather than
/// `BoxError`: a boxed trait object here trips rustc's higher-ranked `Send` inference in callers.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CallError(#[source] tower::BoxError);

/// How long a call may wait for a server (none discovered yet) and for its response headers.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A flag value naming servers: `host:port[,host:port…]` or `consul://<service-name>`, with
/// `?tag=T` for the instances carrying tag T (detectors serving one model).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Static(Vec<String>),
    Consul { service: String, tag: Option<String> },
}

impl Target {
    /// The same Consul service narrowed to instances tagged `tag`; `None` for a static list.
    pub fn with_tag(&self, tag: &str) -> Option<Target> {
        match self {
            Target::Consul { service, .. } => {
                Some(Target::Consul { service: service.clone(), tag: Some(tag.into()) })
            }
            Target::Static(_) => None,
        }
    }
}

/// Why a flag value names no servers.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("{0:?}: expected consul://<service-name>[?tag=<tag>]")]
    Consul(String),
    #[error("expected host:port[,host:port…] or consul://<service-name>")]
    Empty,
}

impl FromStr for Target {
    type Err = TargetError;

    fn from_str(s: &str) -> Result<Self, TargetError> {
        if let Some(rest) = s.strip_prefix("consul://") {
            let (name, tag) = match rest.split_once("?tag=") {
                Some((n, t)) => (n.trim_end_matches('/'), Some(t)),
                None => (rest.trim_end_matches('/'), None),
            };
            let bad = |x: &str| x.is_empty() || x.contains(['/', '?', ' ', '&', '=']);
            if bad(name) || tag.is_some_and(bad) {
                return Err(TargetError::Consul(s.to_string()));
            }
            return Ok(Target::Consul { service: name.to_string(), tag: tag.map(String::from) });
        }
        let addrs: Vec<String> =
            s.split(',').map(str::trim).filter(|a| !a.is_empty()).map(String::from).collect();
        if addrs.is_empty() {
            return Err(TargetError::Empty);
        }
        Ok(Target::Static(addrs))
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Static(a) => f.write_str(&a.join(",")),
            Target::Consul { service, tag: None } => write!(f, "consul://{service}"),
            Target::Consul { service, tag: Some(t) } => write!(f, "consul://{service}?tag={t}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("{0} needs --consul-addr (or CONSUL_HTTP_ADDR)")]
    NoConsul(Target),
    #[error(transparent)]
    Consul(#[from] ConsulError),
}

/// Discovery's metrics, in the registry of the component that discovers (its port serves them).
#[derive(Clone)]
pub struct DiscoveryMetrics {
    members: IntGaugeVec,
    errors: IntCounterVec,
}

impl DiscoveryMetrics {
    pub fn new(registry: &Registry) -> Self {
        let help = "Servers known for a target (static or passing in Consul).";
        DiscoveryMetrics {
            members: registry.gauge_vec("facesweep_discovery_members", help, &["target"]),
            errors: registry.counter_vec(
                "facesweep_discovery_errors_total",
                "Failed Consul health queries.",
                &["target"],
            ),
        }
    }
}

/// The live member set of `target`: fixed for a static list, or watched with Consul blocking
/// queries until `shutdown` (the last known set stays in place after that or while Consul is down).
pub fn members(
    target: &Target,
    consul: &ConsulConfig,
    shutdown: Shutdown,
    metrics: &DiscoveryMetrics,
) -> Result<watch::Receiver<BTreeSet<String>>, DiscoveryError> {
    match target {
        Target::Static(addrs) => {
            let set: BTreeSet<String> = addrs.iter().cloned().collect();
            metrics.members.with_label_values(&[&target.to_string()]).set(set.len() as i64);
            Ok(watch::channel(set).1)
        }
        Target::Consul { service, tag } => {
            let addr = consul.addr.as_deref().ok_or_else(|| DiscoveryError::NoConsul(target.clone()))?;
            let consul = Consul::with_token(addr, consul.token.as_deref())?;
            let (tx, rx) = watch::channel(BTreeSet::new());
            let query = (service.clone(), tag.clone());
            let label = target.to_string();
            let metrics =
                (metrics.members.with_label_values(&[&label]), metrics.errors.with_label_values(&[&label]));
            tokio::spawn(watch_consul(consul, query, metrics, tx, shutdown));
            Ok(rx)
        }
    }
}

async fn watch_consul(
    consul: Consul,
    (name, tag): (String, Option<String>),
    (members, errors): (IntGauge, IntCounter),
    tx: watch::Sender<BTreeSet<String>>,
    stop: Shutdown,
) {
    let mut index = 0;
    let mut backoff = Duration::from_millis(250);
    while !stop.is_cancelled() {
        let started = tokio::time::Instant::now();
        let query = consul.passing(&name, tag.as_deref(), index, Duration::from_secs(30));
        let answer = tokio::select! {
            a = query => a,
            _ = stop.cancelled() => return,
        };
        match answer {
            Ok((set, new_index)) => {
                backoff = Duration::from_millis(250);
                // Consul's index can go backwards (agent restart): start over, as its docs say.
                index = if new_index < index { 0 } else { new_index };
                tx.send_if_modified(|cur| {
                    let changed = *cur != set;
                    if changed {
                        tracing::info!(service = %name, members = ?set, "discovered");
                        members.set(set.len() as i64);
                        *cur = set;
                    }
                    changed
                });
                // A query that cannot block (no or zero index) must not spin against the agent.
                tokio::time::sleep_until(started + Duration::from_millis(200)).await;
            }
            Err(e) => {
                tracing::warn!(service = %name, error = %e, "Consul watch failed; keeping the last set");
                errors.inc();
                index = 0;
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// A transport that sends each call to the less loaded of two random members (load = calls and
/// streams in flight), following membership changes; calls wait up to 30 s for a member.
/// `role` names the servers for mTLS (see `tls`).
pub fn balanced(
    mut members: watch::Receiver<BTreeSet<String>>,
    tls: Option<Tls>,
    role: &'static str,
) -> Balanced {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let mut current = BTreeSet::new();
        loop {
            let next = members.borrow_and_update().clone();
            for gone in current.difference(&next) {
                if tx.send(Change::Remove(gone.clone())).await.is_err() {
                    return;
                }
            }
            for new in next.difference(&current) {
                match crate::grpc::channel_to(new, tls.as_ref(), role) {
                    Ok(ch) => {
                        let svc = PendingRequests::new(ch, UntilBodyEnds);
                        if tx.send(Change::Insert(new.clone(), svc)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => tracing::warn!(addr = %new, error = %e, "unusable server address"),
                }
            }
            current = next;
            if members.changed().await.is_err() {
                return;
            }
        }
    });
    // Balance treats the end of discovery as an error; the last set simply stays.
    let discover = ReceiverStream::new(rx).map(Ok::<_, Infallible>).chain(futures::stream::pending());
    let svc = ServiceBuilder::new()
        .map_err(CallError)
        .timeout(CALL_TIMEOUT)
        .buffer(1024)
        .service(Balance::new(discover));
    BoxCloneSyncService::new(svc)
}

/// Counts a call as in flight until its response body ends, so a long stream weighs as load.
#[derive(Clone, Copy, Debug, Default)]
struct UntilBodyEnds;

impl<H: Unpin + Send + Sync + 'static> TrackCompletion<H, http::Response<Body>> for UntilBodyEnds {
    type Output = http::Response<Body>;

    fn track_completion(&self, handle: H, rsp: http::Response<Body>) -> Self::Output {
        rsp.map(|inner| Body::new(Tracked { inner, _handle: handle }))
    }
}

struct Tracked<H> {
    inner: Body,
    _handle: H,
}

impl<H: Unpin> http_body::Body for Tracked<H> {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!("a:1, b:2".parse(), Ok(Target::Static(vec!["a:1".into(), "b:2".into()])));
        let consul =
            |s: &str, t: Option<&str>| Target::Consul { service: s.into(), tag: t.map(String::from) };
        assert_eq!("consul://facesweep-detector".parse(), Ok(consul("facesweep-detector", None)));
        assert_eq!("consul://d?tag=model-m1".parse(), Ok(consul("d", Some("model-m1"))));
        assert_eq!(consul("d", None).with_tag("model-x"), Some(consul("d", Some("model-x"))));
        assert_eq!(consul("d", Some("t")).to_string(), "consul://d?tag=t");
        assert!("consul://d?tag=".parse::<Target>().is_err());
        assert!("consul://".parse::<Target>().is_err());
        assert!("consul://a/b".parse::<Target>().is_err());
        assert_eq!(" , ".parse::<Target>(), Err(TargetError::Empty));
        assert_eq!("consul://".parse::<Target>(), Err(TargetError::Consul("consul://".into())));
        assert_eq!(consul("x", None).to_string(), "consul://x");
    }

    #[test]
    fn members_are_counted_in_the_discovering_components_registry_only() {
        let (mine, other) = (Registry::default(), Registry::default());
        let (m, _o) = (DiscoveryMetrics::new(&mine), DiscoveryMetrics::new(&other));
        let t: Target = "a:1,b:2".parse().unwrap();
        let set = members(&t, &ConsulConfig::default(), Shutdown::new(), &m).unwrap();
        assert_eq!(set.borrow().len(), 2);
        let (rm, ro) = (mine.render(), other.render());
        assert!(rm.contains(r#"facesweep_discovery_members{target="a:1,b:2"} 2"#), "{rm}");
        assert!(!ro.contains("facesweep_discovery_members"), "{ro}");
    }
}
