//! The CLI streams: importing and exporting (JSON Lines and Parquet) a job far larger than its memory bound would allow
//! if URLs or lines were kept (1M URLs: ~100 MB of input, ~150 MB of JSON Lines) stays under
//! 256 MiB of peak RSS, and an interrupted import resumes without re-sending what the
//! delegator already holds. Every URL has an ok result with 3 faces, so the exports' rows are
//! full size (Parquet row groups are bounded by bytes and rows, not the whole job).

use std::io::{BufRead, Write};
use std::process::Command;
use std::time::Duration;

use facesweep_common::Shutdown;
use facesweep_tests::services::*;
use facesweep_tests::*;

const URLS: usize = 1_000_000;
const BOUND_KIB: u64 = 256 << 10;
/// What the Parquet export may hold beyond the JSON Lines one (its row group being built).
const PARQUET_OVER_MIB: u64 = 96;

/// Runs the `facesweep` binary, sampling its peak RSS (VmHWM) until it exits.
async fn run_measured(args: &[&str]) -> (String, u64) {
    let bin = bin("facesweep");
    let child = Command::new(&bin).args(args).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let sampler = tokio::spawn(async move {
        let mut peak = 0u64;
        while let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            if let Some(kib) = status.lines().find_map(|l| l.strip_prefix("VmHWM:")) {
                peak = peak.max(kib.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        peak
    });
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    assert!(out.status.success(), "facesweep {args:?} failed");
    (String::from_utf8_lossy(&out.stdout).to_string(), sampler.await.unwrap())
}

fn write_urls(path: &std::path::Path, n: usize) {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for i in 0..n {
        writeln!(w, "https://img{}.example.com/photos/2026/11/{i:012}/original.jpg", i % 1000).unwrap();
    }
}

/// Faces per URL: rows as wide as a crowded photo's make row-group buffering visible.
const FACES: i32 = 3;

/// Gives every URL of `job` an ok result with `faces` faces (as the results service stores
/// them), so the exports carry real rows.
async fn with_faces(db: &TestDb, job: &str, faces: i32) {
    let pool = db.pool().await;
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO url_results (url_id, job_id, status, http_status, width, height, face_count, model_id)
         SELECT u.id, u.job_id, 'ok', 200, 1920, 1280, $2, 'retinaface-mnet025-v1'
         FROM urls u JOIN jobs j ON j.id = u.job_id WHERE j.name = $1",
    )
    .bind(job)
    .bind(faces)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO faces (url_id, idx, x1, y1, x2, y2, score, landmarks)
         SELECT u.id, i, random() * 1000, random() * 1000, random() * 1000, random() * 1000, random(),
                ARRAY(SELECT random()::real FROM generate_series(1, 10) WHERE i >= 0)
         FROM urls u JOIN jobs j ON j.id = u.job_id, generate_series(0, $2 - 1) i WHERE j.name = $1",
    )
    .bind(job)
    .bind(faces)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_and_export_of_a_million_urls_stay_under_the_memory_bound() {
    let db = TestDb::start();
    let stop = Shutdown::new();
    let d = delegator_addr(&db, &stop).await;
    let r = results_addr(&db, &stop).await;
    let dir = tmp_dir();
    // An import interrupted after 300,000 URLs, then the whole file.
    let (part, all) = (dir.path().join("part.txt"), dir.path().join("all.txt"));
    write_urls(&part, 300_000);
    write_urls(&all, URLS);
    run_measured(&["import", "--job", "big", "--delegator", &d, part.to_str().unwrap()]).await;
    let (said, import_kib) =
        run_measured(&["import", "--job", "big", "--delegator", &d, all.to_str().unwrap()]).await;
    assert!(said.contains("received 1000000 URLs, 700000 new, resumed after 300000"), "{said}");
    with_faces(&db, "big", FACES).await;
    let out = dir.path().join("big.jsonl");
    let args = ["export", "--job", "big", "--results", &r, "--out", out.to_str().unwrap()];
    let (_, export_kib) = run_measured(&args).await;
    let lines = std::io::BufReader::new(std::fs::File::open(&out).unwrap()).lines().count();
    assert_eq!(lines, URLS);
    let pq = dir.path().join("big.parquet");
    let args =
        ["export", "--job", "big", "--results", &r, "--out", pq.to_str().unwrap(), "--format", "parquet"];
    let (_, parquet_kib) = run_measured(&args).await;
    let rows = Command::new(python())
        .args([
            "-c",
            "import sys, pyarrow.parquet as pq; print(pq.ParquetFile(sys.argv[1]).metadata.num_rows)",
        ])
        .arg(&pq)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&rows.stdout).trim(), URLS.to_string());
    println!(
        "peak RSS: import {} MiB, export {} MiB, parquet export {} MiB",
        import_kib >> 10,
        export_kib >> 10,
        parquet_kib >> 10
    );
    assert!(parquet_kib > 0 && parquet_kib < BOUND_KIB, "parquet export peaked at {} MiB", parquet_kib >> 10);
    // Row groups are bounded (parquet_out.rs): ~60 MiB over JSON Lines here; one row group of
    // the whole job (the writer's default, 1,048,576 rows) took 378 MiB, 240 over.
    let over = parquet_kib.saturating_sub(export_kib) >> 10;
    assert!(over < PARQUET_OVER_MIB, "parquet export took {over} MiB more than JSON Lines");
    assert!(import_kib > 0 && import_kib < BOUND_KIB, "import peaked at {} MiB", import_kib >> 10);
    assert!(export_kib > 0 && export_kib < BOUND_KIB, "export peaked at {} MiB", export_kib >> 10);
    stop.cancel();
}
