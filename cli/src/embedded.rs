//! The services of an embedded mesh (`facesweep up/run/demo`, tests): each binary's own
//! defaults (parsed from its flags, so they have one home) plus what an embedded mesh sets.

use std::net::SocketAddr;

use crate::options::MeshOptions;

/// Loopback address `base + offset` (port 0: ephemeral).
pub fn addr(base: u16, offset: u16) -> SocketAddr {
    let port = if base == 0 { 0 } else { base + offset };
    SocketAddr::from(([127, 0, 0, 1], port))
}

pub fn metrics_addr(o: &MeshOptions, offset: u16) -> Option<SocketAddr> {
    o.metrics.then(|| addr(if o.base_port == 0 { 0 } else { o.base_port + 10 }, offset))
}

/// `name` parsed from `flags` (pairs), `--metrics-listen` when the mesh serves metrics, then
/// `extra` as given.
fn parse<C: clap::Parser>(
    name: &str,
    flags: Vec<(&str, String)>,
    metrics: Option<SocketAddr>,
    extra: &[String],
) -> anyhow::Result<C> {
    let mut argv = vec![name.to_string()];
    argv.extend(flags.into_iter().flat_map(|(k, v)| [k.to_string(), v]));
    if let Some(m) = metrics {
        argv.extend(["--metrics-listen".into(), m.to_string()]);
    }
    argv.extend(extra.iter().cloned());
    Ok(C::try_parse_from(argv)?)
}

pub fn results(o: &MeshOptions, db: &str) -> anyhow::Result<facesweep_results::Config> {
    let flags = vec![
        ("--listen", addr(o.base_port, 2).to_string()),
        ("--database-url", db.into()),
        ("--db-connections", "8".into()),
    ];
    parse("facesweep-results", flags, metrics_addr(o, 2), &[])
}

pub fn delegator(o: &MeshOptions, db: &str) -> anyhow::Result<facesweep_delegator::Config> {
    let flags = vec![
        ("--listen", addr(o.base_port, 0).to_string()),
        ("--database-url", db.into()),
        ("--lease-ttl-secs", o.lease_ttl_secs.to_string()),
        ("--default-chunk-size", o.chunk_size.to_string()),
        ("--db-connections", "8".into()),
        ("--failure-backoff-ms", "1000".into()),
    ];
    parse("facesweep-delegator", flags, metrics_addr(o, 0), &[])
}

pub fn detector(o: &MeshOptions) -> anyhow::Result<facesweep_detector::Config> {
    let flags = vec![
        ("--listen", addr(o.base_port, 1).to_string()),
        ("--model", o.model.display().to_string()),
        ("--max-batch", o.detector_max_batch.to_string()),
    ];
    parse("facesweep-detector", flags, metrics_addr(o, 1), &[])
}

/// The fetcher, pointed at the in-process services; `MeshOptions::fetcher_args` come last
/// and win (the fetcher takes a repeated flag's last value).
pub fn fetcher(
    o: &MeshOptions,
    delegator: SocketAddr,
    detector: SocketAddr,
    results: SocketAddr,
) -> anyhow::Result<facesweep_fetcher::Config> {
    let nets: Vec<String> = o.allow_networks.iter().map(ToString::to_string).collect();
    let k = &o.fetcher;
    let concurrency = k.concurrency.unwrap_or(o.fetcher_concurrency);
    let timeout_ms = k.timeout_ms.unwrap_or(o.timeout_ms);
    let mut flags = vec![
        ("--listen", addr(o.base_port, 3).to_string()),
        ("--delegator", delegator.to_string()),
        ("--detector", detector.to_string()),
        ("--results", results.to_string()),
        // Stable per data dir: a restarted `run` reclaims its killed predecessor's leases.
        ("--id", format!("embedded-{}", stable_id(&o.data_dir))),
        ("--drain-grace-secs", "10".into()),
        ("--leases", k.leases.unwrap_or(o.fetcher_leases).to_string()),
        ("--concurrency", concurrency.to_string()),
        ("--per-host", k.per_host.unwrap_or(concurrency).to_string()),
        ("--connect-timeout-ms", k.connect_timeout_ms.unwrap_or(5_000.min(timeout_ms)).to_string()),
        ("--timeout-ms", timeout_ms.to_string()),
        ("--first-byte-timeout-ms", k.first_byte_timeout_ms.unwrap_or(timeout_ms.min(10_000)).to_string()),
        ("--retries", k.retries.unwrap_or(1).to_string()),
        ("--retry-base-ms", "200".into()),
        // The embedded mesh fetches from loopback (demo, tests) and the LAN.
        ("--allow-networks", nets.join(",")),
        ("--body-budget-mib", "128".into()),
        ("--idle-poll-ms", o.idle_poll_ms.to_string()),
        ("--release-backoff-ms", o.idle_poll_ms.max(100).to_string()),
    ];
    let optional =
        [("--max-body-bytes", k.max_body_bytes.map(|b| b.to_string())), ("--proxy", k.proxy.clone())];
    let optional = optional.into_iter().chain([("--user-agent", k.user_agent.clone())]);
    flags.extend(optional.filter_map(|(f, v)| v.map(|v| (f, v))));
    flags.extend(k.model_detector.iter().map(|m| ("--model-detector", m.clone())));
    parse("facesweep-fetcher", flags, metrics_addr(o, 3), &o.fetcher_args)
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
        let plain = fetcher(&MeshOptions::new("/tmp/x", "m.pt"), a, a, a).unwrap();
        assert_eq!((plain.concurrency, plain.per_host, plain.retries), (64, 64, 1));
    }
}
