//! The CLI streams: importing and exporting (JSON Lines and Parquet) a job far larger than its memory bound would allow
//! if URLs or lines were kept (1M URLs: ~100 MB of input, ~150 MB of JSON Lines) stays under
//! 256 MiB of peak RSS, and an interrupted import resumes without re-sending what the
//! delegator already holds.

use std::io::{BufRead, Write};
use std::process::Command;
use std::time::Duration;

use facesweep_common::Shutdown;
use facesweep_tests::services::*;
use facesweep_tests::*;

const URLS: usize = 1_000_000;
const BOUND_KIB: u64 = 256 << 10;

/// Runs the `facesweep` binary, sampling its peak RSS (VmHWM) until it exits.
async fn run_measured(args: &[&str]) -> (String, u64) {
    let bin = repo_root().join("target/debug/facesweep");
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
    assert!(import_kib > 0 && import_kib < BOUND_KIB, "import peaked at {} MiB", import_kib >> 10);
    assert!(export_kib > 0 && export_kib < BOUND_KIB, "export peaked at {} MiB", export_kib >> 10);
    stop.cancel();
}
