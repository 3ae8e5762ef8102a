//! The services of an embedded mesh (`facesweep up/run/demo`, tests): each service's plain
//! `Config` defaults plus what an embedded mesh sets, built as values (never parsed from
//! flags or the environment, so a user's `FETCHER_*`, `CONSUL_HTTP_ADDR`… cannot reach them).

use std::net::SocketAddr;

use facesweep_common::discovery::Target;
use facesweep_fetcher::detectors::parse_model_target;

use crate::options::MeshOptions;

/// How long `facesweep up` lets URLs in flight finish after Ctrl-C.
pub const UP_DRAIN_GRACE_SECS: u64 = 10;

/// Loopback address `base + offset` (port 0: ephemeral).
pub fn addr(base: u16, offset: u16) -> SocketAddr {
    let port = if base == 0 { 0 } else { base + offset };
    SocketAddr::from(([127, 0, 0, 1], port))
}

pub fn metrics_addr(o: &MeshOptions, offset: u16) -> Option<SocketAddr> {
    o.metrics.then(|| addr(if o.base_port == 0 { 0 } else { o.base_port + 10 }, offset))
}

pub fn results(o: &MeshOptions, db: &str) -> facesweep_results::Config {
    facesweep_results::Config {
        listen: addr(o.base_port, 2),
        db_connections: 8,
        metrics_listen: metrics_addr(o, 2),
        ..facesweep_results::Config::new(db)
    }
}

pub fn delegator(o: &MeshOptions, db: &str) -> facesweep_delegator::Config {
    facesweep_delegator::Config {
        listen: addr(o.base_port, 0),
        lease_ttl_secs: o.lease_ttl_secs,
        default_chunk_size: o.chunk_size,
        db_connections: 8,
        failure_backoff_ms: 1000,
        metrics_listen: metrics_addr(o, 0),
        ..facesweep_delegator::Config::new(db)
    }
}

pub fn detector(o: &MeshOptions) -> facesweep_detector::Config {
    facesweep_detector::Config {
        listen: addr(o.base_port, 1),
        model: o.model.clone(),
        max_batch: o.detector_max_batch,
        metrics_listen: metrics_addr(o, 1),
        ..Default::default()
    }
}

/// The fetcher, pointed at the in-process services; `MeshOptions::fetcher_tweak` comes last.
pub fn fetcher(
    o: &MeshOptions,
    delegator: SocketAddr,
    detector: SocketAddr,
    results: SocketAddr,
) -> anyhow::Result<facesweep_fetcher::Config> {
    let k = &o.fetcher;
    let one = |a: SocketAddr| Target::Static(vec![a.to_string()]);
    let concurrency = k.concurrency.unwrap_or(o.fetcher_concurrency);
    let timeout_ms = k.timeout_ms.unwrap_or(o.timeout_ms);
    let model_detector = k.model_detector.iter().map(|m| parse_model_target(m).map_err(anyhow::Error::msg));
    let defaults = facesweep_fetcher::Config::default();
    let mut config = facesweep_fetcher::Config {
        listen: addr(o.base_port, 3),
        delegator: one(delegator),
        detector: one(detector),
        results: one(results),
        model_detector: model_detector.collect::<anyhow::Result<_>>()?,
        // Stable per data dir: a restarted `run` reclaims its killed predecessor's leases.
        id: Some(format!("embedded-{}", stable_id(&o.data_dir))),
        // `up` lets leases in progress finish on Ctrl-C; a `run` whose job is done holds only
        // other jobs' leases, given back at once (at no cost to their URLs) so it exits fast.
        drain_grace_secs: if o.command == "up" { UP_DRAIN_GRACE_SECS } else { 1 },
        leases: k.leases.unwrap_or(o.fetcher_leases),
        concurrency,
        per_host: k.per_host.unwrap_or(concurrency),
        connect_timeout_ms: k.connect_timeout_ms.unwrap_or(5_000.min(timeout_ms)),
        timeout_ms,
        first_byte_timeout_ms: k.first_byte_timeout_ms.unwrap_or(timeout_ms.min(10_000)),
        retries: k.retries.unwrap_or(1),
        retry_base_ms: 200,
        // The embedded mesh fetches from loopback (demo, tests) and the LAN.
        allow_networks: o.allow_networks.clone(),
        body_budget_mib: 128,
        idle_poll_ms: o.idle_poll_ms,
        release_backoff_ms: o.idle_poll_ms.max(100),
        max_body_bytes: k.max_body_bytes.unwrap_or(defaults.max_body_bytes),
        proxy: k.proxy.clone(),
        user_agent: k.user_agent.clone().unwrap_or(defaults.user_agent.clone()),
        metrics_listen: metrics_addr(o, 3),
        ..defaults
    };
    if let Some(tweak) = &o.fetcher_tweak {
        (tweak.0)(&mut config);
    }
    Ok(config)
}

/// A fetcher id stable per data dir: a restarted `run` reclaims its predecessor's leases.
fn stable_id(dir: &std::path::Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf()).hash(&mut h);
    format!("{:012x}", h.finish() & 0xffff_ffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetcher_knobs_reach_the_fetcher() {
        let mut o = MeshOptions::new("/tmp/x", "m.pt");
        o.fetcher.concurrency = Some(7);
        o.fetcher.per_host = Some(3);
        o.fetcher.timeout_ms = Some(1_500);
        o.fetcher.retries = Some(0);
        o.fetcher.model_detector = vec!["other-v1=127.0.0.1:9".into()];
        let a = addr(0, 0);
        let c = fetcher(&o, a, a, a).unwrap();
        assert_eq!((c.concurrency, c.per_host, c.timeout_ms, c.retries), (7, 3, 1_500, 0));
        assert_eq!(c.connect_timeout_ms, 1_500, "connect timeout defaults to at most the whole timeout");
        assert_eq!(c.model_detector.len(), 1);
        assert_eq!(c.model_detector[0].0, "other-v1");
        let mut o = MeshOptions::new("/tmp/x", "m.pt");
        o.fetcher_tweak = Some(crate::options::FetcherTweak::new(|c| c.lease_stall_secs = 1));
        let plain = fetcher(&o, a, a, a).unwrap();
        assert_eq!((plain.concurrency, plain.per_host, plain.retries), (64, 64, 1));
        assert_eq!(plain.lease_stall_secs, 1, "the tweak comes last");
        plain.validate().unwrap();
    }
}
