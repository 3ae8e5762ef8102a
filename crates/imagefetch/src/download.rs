//! HTTP download: timeouts (connect, first byte, total), a redirect limit, a body size cap
//! (Content-Length and streaming), a shared byte budget, the address policy, and bounded,
//! jittered retries for transient failures only (honouring Retry-After).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use facesweep_proto::UrlStatus;
use futures::StreamExt;
use rand::Rng;

use crate::budget::{BodyBudget, Reservation};
use crate::net::{IpPolicy, Resolver, BLOCKED};
use crate::outcome::Failure;

#[derive(Clone, Debug)]
pub struct DownloadConfig {
    pub connect_timeout: Duration,
    /// Until the response headers arrive (slowloris servers that never answer).
    pub first_byte_timeout: Duration,
    /// Whole request including the body (slow-drip bodies).
    pub total_timeout: Duration,
    pub max_body_bytes: u64,
    pub max_redirects: usize,
    pub user_agent: String,
    /// Extra attempts after a transient failure.
    pub retries: u32,
    pub retry_base: Duration,
    /// Longest Retry-After honoured; longer ones fail now rather than hold a slot.
    pub max_retry_after: Duration,
    pub policy: IpPolicy,
    /// An explicit forward proxy (then the proxy resolves names, past the address policy).
    /// Proxies from the environment (HTTP_PROXY…) are never used: they would bypass it.
    pub proxy: Option<String>,
}

/// A downloaded body; `_budget` returns its bytes to the shared budget when dropped.
pub struct Downloaded {
    pub body: Bytes,
    pub http_status: u32,
    pub elapsed: Duration,
    pub attempts: u32,
    pub _budget: Option<Reservation>,
}

pub fn client(cfg: &DownloadConfig) -> anyhow::Result<reqwest::Client> {
    let policy = cfg.policy.clone();
    let max = cfg.max_redirects;
    let redirect = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() > max {
            return attempt.error(format!("more than {max} redirects"));
        }
        let scheme = attempt.url().scheme().to_string();
        if !matches!(scheme.as_str(), "http" | "https") {
            return attempt.error(format!("redirect to unsupported scheme {scheme:?}"));
        }
        // Hostnames are checked by the resolver; literal IPs never reach it.
        if let Some(ip) = literal_ip(attempt.url()) {
            if !policy.permits(ip) {
                return attempt.error(format!("{BLOCKED}: redirect to {ip}"));
            }
        }
        attempt.follow()
    });
    let builder = match &cfg.proxy {
        Some(p) => reqwest::Client::builder().proxy(reqwest::Proxy::all(p)?),
        None => reqwest::Client::builder().no_proxy(),
    };
    Ok(builder
        .connect_timeout(cfg.connect_timeout)
        .timeout(cfg.total_timeout)
        .redirect(redirect)
        .user_agent(cfg.user_agent.clone())
        .dns_resolver(Arc::new(Resolver::new(cfg.policy.clone(), Duration::from_secs(60))))
        .pool_max_idle_per_host(64)
        .tcp_nodelay(true)
        .build()?)
}

fn literal_ip(url: &reqwest::Url) -> Option<std::net::IpAddr> {
    match url.host()? {
        url::Host::Ipv4(v4) => Some(v4.into()),
        url::Host::Ipv6(v6) => Some(v6.into()),
        url::Host::Domain(_) => None,
    }
}

/// Validates the URL (scheme, literal addresses); the parsed URL or the failure.
pub fn check_url(url: &str, policy: &IpPolicy) -> Result<reqwest::Url, Failure> {
    let parsed = reqwest::Url::parse(url.trim())
        .map_err(|e| Failure::new(UrlStatus::InvalidUrl, format!("invalid URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(Failure::new(UrlStatus::InvalidUrl, format!("unsupported scheme {:?}", parsed.scheme())));
    }
    if parsed.host().is_none() {
        return Err(Failure::new(UrlStatus::InvalidUrl, "URL without a host"));
    }
    if let Some(ip) = literal_ip(&parsed) {
        if !policy.permits(ip) {
            return Err(Failure::new(UrlStatus::Blocked, format!("{BLOCKED}: {ip}")));
        }
    }
    Ok(parsed)
}

/// Fetches a URL already passed through `check_url`, retrying transient failures; every way
/// it can fail maps to one class.
pub async fn download(
    client: &reqwest::Client,
    cfg: &DownloadConfig,
    budget: &BodyBudget,
    parsed: &reqwest::Url,
) -> Result<Downloaded, Failure> {
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (f, retry_after) = match once(client, cfg, budget, parsed.clone()).await {
            Ok(mut d) => {
                d.elapsed = started.elapsed();
                d.attempts = attempt;
                return Ok(d);
            }
            Err(e) => e,
        };
        if !f.transient() || attempt > cfg.retries {
            return Err(f);
        }
        let wait = match retry_after {
            Some(ra) if ra > cfg.max_retry_after => {
                return Err(Failure {
                    reason: format!("{}; Retry-After {} s is too long", f.reason, ra.as_secs()),
                    ..f
                });
            }
            Some(ra) => ra,
            // Full jitter: a burst of failures does not come back in lockstep.
            None => {
                cfg.retry_base.mul_f64(rand::thread_rng().gen_range(0.0..1.0) * 2f64.powi(attempt as i32 - 1))
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// One attempt: the failure and the server's Retry-After, if it gave one.
async fn once(
    client: &reqwest::Client,
    cfg: &DownloadConfig,
    budget: &BodyBudget,
    url: reqwest::Url,
) -> Result<Downloaded, (Failure, Option<Duration>)> {
    let resp = match tokio::time::timeout(cfg.first_byte_timeout, client.get(url).send()).await {
        Err(_) => {
            let f =
                Failure::new(UrlStatus::Timeout, format!("no response within {:?}", cfg.first_byte_timeout));
            return Err((f, None));
        }
        Ok(r) => r.map_err(|e| (request_failure(e), None))?,
    };
    let status = resp.status();
    if !status.is_success() {
        return Err(http_failure(&resp));
    }
    let (body, reserved) = read_body(resp, cfg.max_body_bytes, budget).await.map_err(|f| (f, None))?;
    Ok(Downloaded {
        body,
        http_status: status.as_u16() as u32,
        elapsed: Duration::ZERO,
        attempts: 1,
        _budget: Some(reserved),
    })
}

/// A non-2xx answer as a failure, with its Retry-After (seconds form).
fn http_failure(resp: &reqwest::Response) -> (Failure, Option<Duration>) {
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let f = Failure {
        status: UrlStatus::HttpError,
        reason: format!("HTTP {status}"),
        http_status: status.as_u16() as u32,
    };
    (f, retry_after)
}

/// The body, under the size cap and inside a budget reservation that grows with it.
async fn read_body(
    resp: reqwest::Response,
    cap: u64,
    budget: &BodyBudget,
) -> Result<(Bytes, Reservation), Failure> {
    let declared = resp.content_length();
    if let Some(len) = declared.filter(|len| *len > cap) {
        return Err(too_large(len, cap));
    }
    // Reserve the declared size (or 1 MiB) up front; grow the reservation as bytes arrive.
    let mut reserved = budget.reserve(declared.unwrap_or(1 << 20).max(1)).await?;
    let mut body = BytesMut::with_capacity(declared.unwrap_or(64 << 10).min(cap) as usize);
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(request_failure)?;
        let len = body.len() as u64 + chunk.len() as u64;
        // Checked while streaming too: Content-Length may be absent or lie.
        if len > cap {
            return Err(too_large(len, cap));
        }
        if len > reserved.bytes() {
            budget.grow(&mut reserved, (len * 2).min(cap)).await?;
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body.freeze(), reserved))
}

fn too_large(len: u64, cap: u64) -> Failure {
    Failure::new(UrlStatus::TooLarge, format!("body of {len}+ bytes exceeds the {cap}-byte cap"))
}

fn request_failure(e: reqwest::Error) -> Failure {
    let chain = error_chain(&e);
    if chain.contains(BLOCKED) {
        Failure::new(UrlStatus::Blocked, chain)
    } else if e.is_timeout() {
        Failure::new(UrlStatus::Timeout, format!("timed out: {chain}"))
    } else if e.is_redirect() {
        Failure::new(UrlStatus::HttpError, format!("redirects: {chain}"))
    } else if e.is_connect() {
        Failure::new(UrlStatus::ConnectError, format!("connect: {chain}"))
    } else {
        Failure::new(UrlStatus::ConnectError, format!("transfer: {chain}"))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
