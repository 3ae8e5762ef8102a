//! The image site of the network chaos test: a tiny HTTP/1.1 server whose listening socket
//! lives in its own namespace (bound from a thread that entered it), counting every download
//! by path and query so that URLs downloaded twice can be told.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Path → (status, content type, body).
pub type Routes = HashMap<String, (u16, &'static str, Bytes)>;

#[derive(Clone, Default)]
pub struct Counts(Arc<Mutex<HashMap<String, Vec<Instant>>>>);

impl Counts {
    /// (distinct URLs containing `part` downloaded, those downloaded more than once)
    pub fn twice(&self, part: &str) -> (usize, usize) {
        let m = self.0.lock().unwrap();
        let mine: Vec<usize> = m.iter().filter(|(k, _)| k.contains(part)).map(|(_, v)| v.len()).collect();
        (mine.len(), mine.iter().filter(|v| **v > 1).count())
    }

    pub fn total(&self) -> u64 {
        self.0.lock().unwrap().values().map(|v| v.len() as u64).sum()
    }

    /// When URLs containing `part` were downloaded again (each download after the first).
    pub fn repeats(&self, part: &str) -> Vec<Instant> {
        let m = self.0.lock().unwrap();
        m.iter().filter(|(k, _)| k.contains(part)).flat_map(|(_, v)| v.iter().skip(1).copied()).collect()
    }
}

/// A socket bound to `addr` inside network namespace `ns` (/run/netns/<ns>): the binding
/// thread enters it; the socket stays there whichever thread uses it later.
pub fn bind_in(ns: &str, addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path)?;
        // SAFETY: setns on a valid namespace fd changes only this (short-lived) thread.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let l = std::net::TcpListener::bind(addr)?;
        l.set_nonblocking(true)?;
        Ok(l)
    })
    .join()
    .expect("bind thread")
}

/// Serves `routes` on `listener`; a query string is ignored for routing but counted.
pub fn serve(listener: std::net::TcpListener, routes: Routes) -> (Counts, tokio::task::JoinHandle<()>) {
    let counts = Counts::default();
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    let routes = Arc::new(routes);
    let c = counts.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            tokio::spawn(answer(stream, routes.clone(), c.clone()));
        }
    });
    (counts, task)
}

async fn answer(mut s: tokio::net::TcpStream, routes: Arc<Routes>, counts: Counts) {
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(std::time::Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 && head.len() < 16384 => head.extend_from_slice(&buf[..n]),
            _ => return,
        }
    }
    let text = String::from_utf8_lossy(&head);
    let target = text.split_whitespace().nth(1).unwrap_or("/").to_string();
    let path = target.split('?').next().unwrap_or("/").to_string();
    counts.0.lock().unwrap().entry(target).or_default().push(Instant::now());
    let (status, ct, body) =
        routes.get(&path).cloned().unwrap_or((404, "text/plain", Bytes::from_static(b"no")));
    let head = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: {ct}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    if s.write_all(head.as_bytes()).await.is_ok() {
        let _ = s.write_all(&body).await;
    }
    let _ = s.shutdown().await;
}
