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

impl IpPolicy {
    pub fn permits(&self, ip: IpAddr) -> bool {
        if self.allow.iter().any(|n| n.contains(&ip)) {
            return true;
        }
        match ip {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                !(v4.is_loopback()
                    || v4.is_private()
                    || v4.is_link_local()
                    || v4.is_multicast()
                    || v4.is_unspecified()
                    || v4.is_broadcast()
                    || o[0] == 0
                    || (o[0] == 100 && (o[1] & 0xC0) == 64)) // 100.64/10, carrier-grade NAT
            }
            IpAddr::V6(v6) => {
                if let Some(v4) = v6.to_ipv4_mapped() {
                    return self.permits(IpAddr::V4(v4));
                }
                let s = v6.segments();
                !(v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || (s[0] & 0xfe00) == 0xfc00 // unique local
                    || (s[0] & 0xffc0) == 0xfe80) // link-local
            }
        }
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
        ] {
            assert!(!p.permits(bad.parse().unwrap()), "{bad} should be refused");
        }
        for good in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(p.permits(good.parse().unwrap()), "{good} should be allowed");
        }
        let allow = IpPolicy { allow: vec!["127.0.0.0/8".parse().unwrap()] };
        assert!(allow.permits("127.0.0.1".parse().unwrap()));
        assert!(!allow.permits("10.0.0.1".parse().unwrap()));
    }
}
