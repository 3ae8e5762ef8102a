//! HTTP download with timeouts, a redirect limit and a body size cap.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use facesweep_proto::UrlStatus;
use futures::StreamExt;

/// Why a URL ended without an image; becomes the URL's terminal status.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub status: UrlStatus,
    pub reason: String,
    pub http_status: u32,
}

impl Failure {
    pub fn new(status: UrlStatus, reason: impl Into<String>) -> Self {
        Failure { status, reason: reason.into(), http_status: 0 }
    }
}

#[derive(Clone, Debug)]
pub struct DownloadConfig {
    pub connect_timeout: Duration,
    pub total_timeout: Duration,
    pub max_body_bytes: u64,
    pub max_redirects: usize,
    pub user_agent: String,
}

pub struct Downloaded {
    pub body: Bytes,
    pub http_status: u32,
    pub elapsed: Duration,
}

pub fn client(cfg: &DownloadConfig) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(cfg.connect_timeout)
        .timeout(cfg.total_timeout)
        .redirect(reqwest::redirect::Policy::limited(cfg.max_redirects))
        .user_agent(cfg.user_agent.clone())
        .pool_max_idle_per_host(32)
        .tcp_nodelay(true)
        .build()
        .expect("http client")
}

/// Fetches `url`; every way it can fail maps to one failure class with a reason.
pub async fn download(
    client: &reqwest::Client,
    cfg: &DownloadConfig,
    url: &str,
) -> Result<Downloaded, Failure> {
    let started = Instant::now();
    let parsed = reqwest::Url::parse(url.trim())
        .map_err(|e| Failure::new(UrlStatus::InvalidUrl, format!("invalid URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(Failure::new(UrlStatus::InvalidUrl, format!("unsupported scheme {:?}", parsed.scheme())));
    }
    let resp = client.get(parsed).send().await.map_err(request_failure)?;
    let status = resp.status();
    if !status.is_success() {
        return Err(Failure {
            status: UrlStatus::HttpError,
            reason: format!("HTTP {status}"),
            http_status: status.as_u16() as u32,
        });
    }
    let cap = cfg.max_body_bytes;
    if let Some(len) = resp.content_length() {
        if len > cap {
            return Err(too_large(len, cap));
        }
    }
    let mut body = BytesMut::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(request_failure)?;
        // Checked while streaming too: Content-Length may be absent or lie.
        if body.len() as u64 + chunk.len() as u64 > cap {
            return Err(too_large(body.len() as u64 + chunk.len() as u64, cap));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Downloaded { body: body.freeze(), http_status: status.as_u16() as u32, elapsed: started.elapsed() })
}

fn too_large(len: u64, cap: u64) -> Failure {
    Failure::new(UrlStatus::TooLarge, format!("body of {len}+ bytes exceeds the {cap}-byte cap"))
}

fn request_failure(e: reqwest::Error) -> Failure {
    let chain = error_chain(&e);
    if e.is_timeout() {
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
