//! The whole mesh on real parts: embedded Postgres, the four services, the real model, and a
//! loopback HTTP server holding real face photos and URLs that fail in every documented way.

use std::collections::{HashMap, HashSet};

use facesweep_cli::client::UrlInput;
use facesweep_cli::{httpserve::Routes, run_job, Mesh, MeshOptions};
use facesweep_pgembed::Durability;
use facesweep_tests::*;
use serde_json::Value;

fn expected_faces() -> HashMap<String, Vec<Vec<f64>>> {
    let text = std::fs::read_to_string(repo_root().join("tests/fixtures/expected_faces.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    serde_json::from_value(v["faces"].clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn photos_and_bad_urls_end_with_exactly_one_correct_result_each() {
    let expected = expected_faces();
    let mut routes = Routes::default();
    let photos = routes.add_dir(&samples_dir()).unwrap();
    assert!(photos.len() >= 3, "need at least three face photos");
    let jpeg = std::fs::read(samples_dir().join("grace_hopper.jpg")).unwrap();
    routes.add("/page.html", 200, "text/html", "<!doctype html><html><body>hi</body></html>");
    routes.add("/disguised.jpg", 200, "image/jpeg", "<html>not really a jpeg</html>");
    routes.add("/truncated.jpg", 200, "image/jpeg", jpeg[..jpeg.len() / 2].to_vec());
    routes.add("/empty.jpg", 200, "image/jpeg", Vec::new());
    routes.add("/error.jpg", 500, "text/plain", "boom");
    let (addr, _server) = facesweep_cli::httpserve::serve(routes).await.unwrap();
    // A port that was just free: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();

    let mut urls: Vec<String> = photos.iter().map(|p| format!("http://{addr}/{p}")).collect();
    let bad: Vec<(String, &str)> = vec![
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
    urls.extend(bad.iter().map(|(u, _)| u.clone()));

    let dir = tmp_dir();
    let mut opts = MeshOptions::new(dir.path(), model_path());
    opts.durability = Durability::Ephemeral;
    opts.chunk_size = 4; // several chunks and leases, not one
    opts.timeout_ms = 10_000;
    let mesh = Mesh::start(opts).await.unwrap();
    let out = dir.path().join("out.jsonl");
    let list = dir.path().join("urls.txt");
    std::fs::write(&list, urls.join("\n")).unwrap();
    let input = UrlInput::File(list.clone());
    let first = run_job(&mesh, "e2e", &input, &out, true).await.unwrap();
    let lines = read_jsonl(&out);

    // Exactly one line per URL, in URL order, each with a distinct id.
    assert_eq!(lines.len(), urls.len());
    assert_eq!(first.export.lines, urls.len() as u64);
    let ids: HashSet<i64> = lines.iter().map(|l| l["url_id"].as_i64().unwrap()).collect();
    assert_eq!(ids.len(), urls.len());
    let by_url: HashMap<&str, &Value> = lines.iter().map(|l| (l["url"].as_str().unwrap(), l)).collect();
    assert_eq!(by_url.len(), urls.len());

    for p in &photos {
        let line = by_url[format!("http://{addr}/{p}").as_str()];
        assert_eq!(line["status"], "ok", "{p}: {line}");
        let want = &expected[p];
        let got: Vec<Vec<f64>> = line["faces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["box"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect())
            .collect();
        assert_eq!(got.len(), want.len(), "{p}: face count, got {got:?}");
        for w in want {
            let best = got.iter().map(|g| iou(g, w)).fold(0.0, f64::max);
            assert!(best >= 0.5, "{p}: no detection matches {w:?} (best IoU {best:.2}); got {got:?}");
        }
        for f in line["faces"].as_array().unwrap() {
            assert_eq!(f["landmarks"].as_array().unwrap().len(), 10);
            assert!(f["score"].as_f64().unwrap() >= 0.5);
        }
        assert!(line["width"].as_u64().unwrap() > 0 && line["height"].as_u64().unwrap() > 0);
    }
    for (u, class) in &bad {
        let line = by_url[u.as_str()];
        assert_eq!(line["status"], *class, "{u}: {line}");
        assert!(!line["reason"].as_str().unwrap_or("").is_empty(), "{u}: failure without a reason");
        assert!(line["faces"].as_array().unwrap().is_empty());
    }

    // Running the same job again changes nothing: same export, no new rows.
    let pool = facesweep_common::db::connect(&mesh.database_url, 2).await.unwrap();
    let counts = |pool: sqlx::PgPool| async move {
        let r: (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM urls), (SELECT count(*) FROM url_results), (SELECT count(*) FROM faces)",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        r
    };
    let before = counts(pool.clone()).await;
    let total_faces: usize = lines.iter().map(|l| l["faces"].as_array().unwrap().len()).sum();
    assert_eq!(before, (urls.len() as i64, urls.len() as i64, total_faces as i64));
    assert_eq!(first.export.faces, total_faces as u64);
    let out2 = dir.path().join("out2.jsonl");
    let second = run_job(&mesh, "e2e", &input, &out2, true).await.unwrap();
    assert_eq!(read_jsonl(&out2), lines);
    assert_eq!(second.export, first.export);
    assert_eq!(counts(pool.clone()).await, before);

    // The same job name on a changed file is refused, naming the way out.
    std::fs::write(&list, format!("{}\nhttp://{addr}/another.jpg", urls.join("\n"))).unwrap();
    let e = run_job(&mesh, "e2e", &input, &out2, true).await.unwrap_err().to_string();
    assert!(e.contains("another input") && e.contains("--job"), "{e}");
    assert_eq!(counts(pool.clone()).await, before);
    mesh.stop().await.unwrap();
}
