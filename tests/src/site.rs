//! The end-to-end site: a loopback HTTP server with the sample face photos and URLs that fail
//! in every documented way, and the check that an export got each of them right.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use facesweep_cli::httpserve::{serve, Routes};
use serde_json::Value;

use crate::{iou, repo_root, samples_dir};

pub struct Site {
    pub addr: SocketAddr,
    /// Photo URLs with the sample file each one serves.
    pub photos: Vec<(String, String)>,
    /// URLs that must fail, with their failure class.
    pub bad: Vec<(String, &'static str)>,
    _server: tokio::task::JoinHandle<()>,
}

impl Site {
    /// Serves the photos, each under `copies` distinct URLs (a longer job, same answers).
    pub async fn start(copies: usize) -> Site {
        let mut routes = Routes::default();
        let files = routes.add_dir(&samples_dir()).unwrap();
        assert!(files.len() >= 3, "need at least three face photos");
        let jpeg = std::fs::read(samples_dir().join("grace_hopper.jpg")).unwrap();
        routes.add("/page.html", 200, "text/html", "<!doctype html><html><body>hi</body></html>");
        routes.add("/disguised.jpg", 200, "image/jpeg", "<html>not really a jpeg</html>");
        routes.add("/truncated.jpg", 200, "image/jpeg", jpeg[..jpeg.len() / 2].to_vec());
        routes.add("/empty.jpg", 200, "image/jpeg", Vec::new());
        routes.add("/error.jpg", 500, "text/plain", "boom");
        let (addr, server) = serve(routes).await.unwrap();
        // A port that was just free: nothing listens there.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let photos = (0..copies)
            .flat_map(|i| {
                let q = if i == 0 { String::new() } else { format!("?copy={i}") };
                files.iter().map(move |f| (format!("http://{addr}/{f}{q}"), f.clone()))
            })
            .collect();
        let bad = vec![
            (format!("http://{addr}/missing.jpg"), "http_error"),
            (format!("http://{addr}/error.jpg"), "http_error"),
            (format!("http://{addr}/page.html"), "not_an_image"),
            (format!("http://{addr}/disguised.jpg"), "not_an_image"),
            (format!("http://{addr}/truncated.jpg"), "decode_error"),
            (format!("http://{addr}/empty.jpg"), "not_an_image"),
            (format!("http://127.0.0.1:{closed}/photo.jpg"), "connect_error"),
            ("not a url".to_string(), "invalid_url"),
            ("ftp://example.com/a.jpg".to_string(), "invalid_url"),
        ];
        Site { addr, photos, bad, _server: server }
    }

    /// Every URL of the job: photos first, then the failing ones.
    pub fn urls(&self) -> Vec<String> {
        self.photos.iter().map(|(u, _)| u.clone()).chain(self.bad.iter().map(|(u, _)| u.clone())).collect()
    }

    /// Asserts that `lines` (an export) hold exactly one line per URL, each with a distinct
    /// id, the expected faces for photos and the expected class and a reason for failures.
    pub fn check_export(&self, lines: &[Value]) {
        let urls = self.urls();
        assert_eq!(lines.len(), urls.len(), "one line per URL");
        let ids: HashSet<i64> = lines.iter().map(|l| l["url_id"].as_i64().unwrap()).collect();
        assert_eq!(ids.len(), urls.len(), "distinct url ids");
        let by_url: HashMap<&str, &Value> = lines.iter().map(|l| (l["url"].as_str().unwrap(), l)).collect();
        assert_eq!(by_url.len(), urls.len(), "distinct URLs");
        let expected = expected_faces();
        for (url, file) in &self.photos {
            let line = by_url[url.as_str()];
            assert_eq!(line["status"], "ok", "{url}: {line}");
            check_faces(file, line, &expected[file]);
        }
        for (u, class) in &self.bad {
            let line = by_url[u.as_str()];
            assert_eq!(line["status"], *class, "{u}: {line}");
            assert!(!line["reason"].as_str().unwrap_or("").is_empty(), "{u}: failure without a reason");
            assert!(line["faces"].as_array().unwrap().is_empty());
        }
    }
}

fn expected_faces() -> HashMap<String, Vec<Vec<f64>>> {
    let text = std::fs::read_to_string(repo_root().join("tests/fixtures/expected_faces.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    serde_json::from_value(v["faces"].clone()).unwrap()
}

/// Same face count as expected, each expected box matched at IoU ≥ 0.5 (tolerant of float
/// differences between CPUs), ten landmark coordinates, confident scores.
fn check_faces(file: &str, line: &Value, want: &[Vec<f64>]) {
    let got: Vec<Vec<f64>> = line["faces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["box"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect())
        .collect();
    assert_eq!(got.len(), want.len(), "{file}: face count, got {got:?}");
    for w in want {
        let best = got.iter().map(|g| iou(g, w)).fold(0.0, f64::max);
        assert!(best >= 0.5, "{file}: no detection matches {w:?} (best IoU {best:.2}); got {got:?}");
    }
    for f in line["faces"].as_array().unwrap() {
        assert_eq!(f["landmarks"].as_array().unwrap().len(), 10);
        assert!(f["score"].as_f64().unwrap() >= 0.5);
    }
    assert!(line["width"].as_u64().unwrap() > 0 && line["height"].as_u64().unwrap() > 0);
}
