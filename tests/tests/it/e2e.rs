//! The whole mesh on real parts: embedded Postgres, the four services, the real model, and a
//! loopback HTTP server holding real face photos and URLs that fail in every documented way.

use facesweep_cli::client::UrlInput;
use facesweep_cli::{run_job, Mesh, MeshOptions};
use facesweep_pgembed::Durability;
use facesweep_tests::site::Site;
use facesweep_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn photos_and_bad_urls_end_with_exactly_one_correct_result_each() {
    let site = Site::start(1).await;
    let addr = site.addr;
    let urls = site.urls();

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
    site.check_export(&lines);
    assert_eq!(first.export.lines, urls.len() as u64);

    // Running the same job again changes nothing: same export, no new rows.
    let pool = facesweep_store::connect(&mesh.database_url, 2).await.unwrap();
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

    // The same job name on a changed file is refused (the CLI adds the way out: --job, import).
    std::fs::write(&list, format!("{}\nhttp://{addr}/another.jpg", urls.join("\n"))).unwrap();
    let e = run_job(&mesh, "e2e", &input, &out2, true).await.unwrap_err().to_string();
    assert!(e.contains("made from another input"), "{e}");
    assert_eq!(counts(pool.clone()).await, before);
    mesh.stop().await.unwrap();
}
