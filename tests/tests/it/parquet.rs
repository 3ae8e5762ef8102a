//! `facesweep export --format parquet` read back with pyarrow: the same rows as the JSON Lines
//! export, faces and landmarks included, for ok, failed and pending URLs.

use std::process::Command;

use facesweep_common::Shutdown;
use facesweep_proto::*;
use facesweep_tests::services::*;
use facesweep_tests::*;

const COMPARE: &str = r#"
import json, sys, pyarrow.parquet as pq
rows = pq.read_table(sys.argv[1]).to_pylist()
lines = [json.loads(l) for l in open(sys.argv[2])]
assert len(rows) == len(lines), (len(rows), len(lines))
for r, l in zip(sorted(rows, key=lambda x: x["url_id"]), sorted(lines, key=lambda x: x["url_id"])):
    for k in ("url_id", "url", "status", "reason", "width", "height", "model_id"):
        assert r[k] == l[k], (k, r[k], l[k])
    assert len(r["faces"]) == len(l["faces"]), r
    for f, g in zip(r["faces"], l["faces"]):
        assert all(abs(a - b) < 1e-6 for a, b in zip([f["x1"], f["y1"], f["x2"], f["y2"]], g["box"])), (f, g)
        assert abs(f["score"] - g["score"]) < 1e-6 and len(f["landmarks"]) == 10
        assert all(abs(a - b) < 1e-6 for a, b in zip(f["landmarks"], g["landmarks"]))
print(len(rows), sum(len(r["faces"]) for r in rows))
"#;

#[tokio::test(flavor = "multi_thread")]
async fn parquet_export_has_the_rows_of_the_jsonl_export() {
    let db = TestDb::start();
    let stop = Shutdown::new();
    let mut d = delegator(&db, 0, 1, 60, &stop).await;
    let mut r = results(&db, &stop).await;
    let addr = results_addr(&db, &stop).await;
    import(&mut d, "pq", 25, 10).await;
    let l = acquire(&mut d, "f").await.unwrap();
    let results = l
        .urls
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let faces = (0..i % 3)
                .map(|k| Face {
                    x1: k as f32,
                    y1: 2.5,
                    x2: 40.25,
                    y2: 60.0,
                    score: 0.875,
                    landmarks: (0..10).map(|j| j as f32 + 0.5).collect(),
                })
                .collect();
            match i {
                7 => UrlResult {
                    url_id: u.id,
                    status: UrlStatus::Timeout as i32,
                    reason: "slow \"origin\"".into(),
                    ..Default::default()
                },
                _ => UrlResult {
                    url_id: u.id,
                    status: UrlStatus::Ok as i32,
                    width: 640,
                    height: 480,
                    faces,
                    ..Default::default()
                },
            }
        })
        .collect();
    r.record(RecordRequest { results, lease: lref(&l) }).await.unwrap();
    let dir = tmp_dir();
    let (pq, jsonl) = (dir.path().join("pq.parquet"), dir.path().join("pq.jsonl"));
    facesweep_cli::parquet_out::export(&addr, "pq", &pq).await.unwrap();
    let sum = facesweep_cli::client::export(&addr, "pq", &jsonl).await.unwrap();
    assert_eq!((sum.lines, sum.faces), (25, 8));
    let out = Command::new(python()).args(["-c", COMPARE]).arg(&pq).arg(&jsonl).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "25 8");
    stop.cancel();
}
