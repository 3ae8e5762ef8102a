//! Where the fetcher may connect: a caching DNS resolver that drops forbidden addresses
//! (SSRF: loopback, private, link-local/cloud metadata, multicast, unspecified) unless
//! allow-listed, and a per-host concurrency limit.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Marker the download code recognises in error chains.
pub const BLOCKED: &str = "blocked by address policy";

#[derive(Clone, Debug, Default)]
pub struct IpPolicy {
    /// Networks allowed even though they are private (tests, private deployments).
    pub allow: Vec<IpNet>,
}

/// Never fetched unless allow-listed: private, shared, loopback, link-local, documentation,
/// benchmarking, reserved, multicast and broadcast space, and IPv6 forms of the same.
const DENIED: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/96", // unspecified, loopback and the deprecated IPv4-compatible form
    "64:ff9b:1::/48",
    "100::/64",
    "2001::/32", // Teredo: the IPv4 inside is obfuscated, so it cannot be checked
    "2001:db8::/32",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
];

static DENIED_NETS: std::sync::LazyLock<Vec<IpNet>> =
    std::sync::LazyLock::new(|| DENIED.iter().map(|n| n.parse().expect("valid network")).collect());

/// The IPv4 address an IPv6 address stands for, where it carries one in the clear:
/// IPv4-mapped (::ffff:0:0/96), NAT64 (64:ff9b::/96) and 6to4 (2002::/16).
fn embedded_v4(v6: std::net::Ipv6Addr) -> Option<std::net::Ipv4Addr> {
    let s = v6.segments();
    let tail = || std::net::Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] | [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(tail()),
        [0x2002, a, b, ..] => Some(std::net::Ipv4Addr::new((a >> 8) as u8, a as u8, (b >> 8) as u8, b as u8)),
        _ => None,
    }
}

impl IpPolicy {
    pub fn permits(&self, ip: IpAddr) -> bool {
        if self.allow.iter().any(|n| n.contains(&ip)) {
            return true;
        }
        if let IpAddr::V6(v6) = ip {
            if let Some(v4) = embedded_v4(v6) {
                return self.permits(IpAddr::V4(v4));
            }
        }
        !DENIED_NETS.iter().any(|n| n.contains(&ip))
    }
}

/// Resolves with the system resolver, caches answers for `ttl`, filters by policy.
#[derive(Clone)]
pub struct Resolver(Arc<ResolverState>);

pub struct ResolverState {
    policy: IpPolicy,
    ttl: Duration,
    cache: Mutex<HashMap<String, (Instant, Vec<SocketAddr>)>>,
}

impl Resolver {
    pub fn new(policy: IpPolicy, ttl: Duration) -> Self {
        Resolver(Arc::new(ResolverState { policy, ttl, cache: Mutex::new(HashMap::new()) }))
    }
}

impl ResolverState {
    async fn lookup(&self, host: &str) -> std::io::Result<Vec<SocketAddr>> {
        if let Some((at, addrs)) = self.cache.lock().unwrap().get(host) {
            if at.elapsed() < self.ttl {
                return Ok(addrs.clone());
            }
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, 0)).await?.collect();
        let mut cache = self.cache.lock().unwrap();
        if cache.len() > 100_000 {
            cache.clear(); // crude bound; a miss only costs a lookup
        }
        cache.insert(host.to_string(), (Instant::now(), addrs.clone()));
        Ok(addrs)
    }
}

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let me = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let all = me.lookup(&host).await?;
            let ok: Vec<SocketAddr> = all.iter().copied().filter(|a| me.policy.permits(a.ip())).collect();
            if ok.is_empty() && !all.is_empty() {
                let msg = format!(
                    "{BLOCKED}: {host} resolves only to {:?}",
                    all.iter().map(|a| a.ip()).collect::<Vec<_>>()
                );
                return Err(msg.into());
            }
            Ok(Box::new(ok.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// At most `per_host` downloads in flight to one host.
pub struct HostLimits {
    per_host: usize,
    hosts: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl HostLimits {
    pub fn new(per_host: usize) -> Self {
        HostLimits { per_host: per_host.max(1), hosts: Mutex::new(HashMap::new()) }
    }

    pub async fn acquire(&self, host: &str) -> OwnedSemaphorePermit {
        let sem = {
            let mut hosts = self.hosts.lock().unwrap();
            if hosts.len() > 50_000 {
                // Forget idle hosts (nobody else holds their semaphore).
                hosts.retain(|_, s| Arc::strong_count(s) > 1);
            }
            hosts.entry(host.to_string()).or_insert_with(|| Arc::new(Semaphore::new(self.per_host))).clone()
        };
        sem.acquire_owned().await.expect("never closed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_ranges_are_refused_unless_allowed() {
        let p = IpPolicy::default();
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "224.0.0.1",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::",
            "64:ff9b::a00:1",      // NAT64 of 10.0.0.1
            "64:ff9b::7f00:1",     // NAT64 of 127.0.0.1
            "::127.0.0.1",         // IPv4-compatible
            "::8.8.8.8",           // IPv4-compatible (deprecated, never fetched)
            "2002:a9fe:a9fe::1",   // 6to4 of 169.254.169.254
            "2002:7f00:1::",       // 6to4 of 127.0.0.1
            "fec0::1",             // site-local
            "2001:0:4136:e378::1", // Teredo
            "100.64.0.1",
            "198.18.0.1",
            "198.19.255.255",
            "192.0.0.8",
            "240.0.0.1",
            "255.255.255.255",
            "203.0.113.5",
        ] {
            assert!(!p.permits(bad.parse().unwrap()), "{bad} should be refused");
        }
        for good in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "198.20.0.1",
        ] {
            assert!(p.permits(good.parse().unwrap()), "{good} should be allowed");
        }
        let allow = IpPolicy { allow: vec!["127.0.0.0/8".parse().unwrap()] };
        assert!(allow.permits("127.0.0.1".parse().unwrap()));
        assert!(!allow.permits("10.0.0.1".parse().unwrap()));
    }
}
