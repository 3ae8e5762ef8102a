//! A tiny HTTP/1.1 server on loopback that serves in-memory routes (demo photos, test cases).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[derive(Clone, Debug)]
pub struct Route {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Bytes,
    /// Sent with `Transfer-Encoding: chunked` in 16 KiB pieces, without a Content-Length (as
    /// dynamic image servers and resizing CDNs do).
    pub chunked: bool,
    /// Answered only after this long (a slow site), zero for at once.
    pub delay: std::time::Duration,
}

/// Paths answered, with when the answer went out (tests time what follows a download).
pub type Served = Arc<std::sync::Mutex<Vec<(String, std::time::Instant)>>>;

#[derive(Default, Clone)]
pub struct Routes(HashMap<String, Route>, Served);

impl Routes {
    pub fn add(
        &mut self,
        path: &str,
        status: u16,
        content_type: &'static str,
        body: impl Into<Bytes>,
    ) -> &mut Self {
        self.0.insert(
            path.to_string(),
            Route { status, content_type, body: body.into(), chunked: false, delay: Default::default() },
        );
        self
    }

    /// Like `add`, with the body chunked and no Content-Length.
    pub fn add_chunked(
        &mut self,
        path: &str,
        content_type: &'static str,
        body: impl Into<Bytes>,
    ) -> &mut Self {
        let route =
            Route { status: 200, content_type, body: body.into(), chunked: true, delay: Default::default() };
        self.0.insert(path.to_string(), route);
        self
    }

    /// Like `add` with status 200, answered only after `delay` (a slow site).
    pub fn add_slow(
        &mut self,
        path: &str,
        content_type: &'static str,
        body: impl Into<Bytes>,
        delay: std::time::Duration,
    ) -> &mut Self {
        let route = Route { status: 200, content_type, body: body.into(), chunked: false, delay };
        self.0.insert(path.to_string(), route);
        self
    }

    /// The log of answered paths, filled while the routes are served.
    pub fn served(&self) -> Served {
        self.1.clone()
    }

    /// Adds every image file of `dir` under `/<file name>`; returns their names, sorted.
    pub fn add_dir(&mut self, dir: &Path) -> anyhow::Result<Vec<String>> {
        let mut names = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let p = e?.path();
            let Some(name) = p.file_name().and_then(|n| n.to_str()).map(str::to_string) else { continue };
            let ct = match p.extension().and_then(|e| e.to_str()).map(str::to_lowercase).as_deref() {
                Some("jpg" | "jpeg") => "image/jpeg",
                Some("png") => "image/png",
                Some("webp") => "image/webp",
                _ => continue,
            };
            self.add(&format!("/{name}"), 200, ct, std::fs::read(&p)?);
            names.push(name);
        }
        names.sort();
        Ok(names)
    }
}

/// Serves `routes` on 127.0.0.1 (random port) until the returned handle is dropped.
pub async fn serve(routes: Routes) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let routes = Arc::new(routes);
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let routes = routes.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let routes = routes.clone();
                    async move {
                        let path = req.uri().path();
                        if let Some(r) = routes.0.get(path) {
                            tokio::time::sleep(r.delay).await;
                        }
                        let answer = respond(&routes, path);
                        routes.1.lock().expect("log").push((path.to_string(), std::time::Instant::now()));
                        Ok::<_, Infallible>(answer)
                    }
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    Ok((addr, task))
}

type Body = BoxBody<Bytes, Infallible>;

fn respond(routes: &Routes, path: &str) -> Response<Body> {
    match routes.0.get(path) {
        Some(r) => Response::builder()
            .status(StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
            .header("content-type", r.content_type)
            .body(if r.chunked { chunked(r.body.clone()) } else { Full::new(r.body.clone()).boxed() })
            .expect("valid response"),
        None => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from_static(b"not found")).boxed())
            .expect("valid response"),
    }
}

/// A body of unknown length: hyper then sends it chunked.
fn chunked(body: Bytes) -> Body {
    let pieces: Vec<Result<Frame<Bytes>, Infallible>> = (0..body.len())
        .step_by(16 << 10)
        .map(|at| Ok(Frame::data(body.slice(at..(at + (16 << 10)).min(body.len())))))
        .collect();
    StreamBody::new(futures::stream::iter(pieces)).boxed()
}

/// GET `path` from `addr` (HTTP/1.0, e.g. a service's /metrics); the body on 200, within 5 s.
pub async fn get_text(addr: &str, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let get = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nhost: {addr}\r\n\r\n").as_bytes()).await.ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).await.ok()?;
        let (head, body) = out.split_once("\r\n\r\n")?;
        head.split(' ').nth(1).filter(|code| *code == "200")?;
        Some(body.to_string())
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), get).await.ok().flatten()
}
