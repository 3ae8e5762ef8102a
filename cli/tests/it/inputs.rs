//! Inputs and outputs as users give them (#21).

use std::path::Path;
use std::process::{Command, Stdio};

use crate::harness::{bin, jsonl, ok, photo_server, Up, NO_ARGS};

// Inputs and outputs (#21): stdin, TSV with a BOM, Parquet, carried columns, skipped-line
// counts, dry runs, bad inputs refused before anything starts, `--out -` and devices.

fn run_with_stdin(c: &mut Command, stdin: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

/// A Parquet input: `id` (int64), `url`, `caption`.
fn parquet_input(path: &Path, urls: &[String]) {
    use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
    let ids: ArrayRef =
        std::sync::Arc::new(Int64Array::from((0..urls.len() as i64).map(|i| 7 + i).collect::<Vec<_>>()));
    let u: ArrayRef = std::sync::Arc::new(StringArray::from(urls.to_vec()));
    let captions: Vec<String> = (0..urls.len()).map(|i| format!("caption {i}")).collect();
    let c: ArrayRef = std::sync::Arc::new(StringArray::from(captions));
    let batch = RecordBatch::try_from_iter([("id", ids), ("url", u), ("caption", c)]).unwrap();
    let f = std::fs::File::create(path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(f, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// The rows of a Parquet export as JSON objects (column name -> value).
fn parquet_rows(path: &Path) -> Vec<serde_json::Map<String, serde_json::Value>> {
    use arrow_array::cast::AsArray;
    use arrow_array::Array;
    let f = std::fs::File::open(path).unwrap();
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f).unwrap().build().unwrap();
    let mut rows = Vec::new();
    for b in reader {
        let b = b.unwrap();
        for i in 0..b.num_rows() {
            let mut row = serde_json::Map::new();
            for (field, col) in b.schema().fields().iter().zip(b.columns()) {
                let v = match col.data_type() {
                    _ if col.is_null(i) => serde_json::Value::Null,
                    arrow_schema::DataType::Utf8 => col.as_string::<i32>().value(i).into(),
                    arrow_schema::DataType::UInt32 => {
                        col.as_primitive::<arrow_array::types::UInt32Type>().value(i).into()
                    }
                    _ => "…".into(),
                };
                row.insert(field.name().clone(), v);
            }
            rows.push(row);
        }
    }
    rows
}

#[tokio::test(flavor = "multi_thread")]
async fn inputs_of_every_kind_carry_their_columns_to_every_output() {
    let (addr, _srv) = photo_server().await;
    let tmp = tempfile::Builder::new().prefix("facesweep-cli").tempdir_in("/tmp").unwrap();
    let up = Up::start(bin().arg("--data-dir").arg(tmp.path().join("data")), NO_ARGS).await;
    let (delegator, results) = (up.delegator.clone(), up.results.clone());
    // A bad input is refused naming the file and line; no job is left behind.
    let bad = tmp.path().join("bad.csv");
    std::fs::write(&bad, format!("id,url\n1,http://{addr}/astronaut.png\n2,http://{addr}/x.jpg,oops\n"))
        .unwrap();
    let out = bin().args(["import", "--job", "bad", "--delegator", &delegator]).arg(&bad).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("bad.csv:3:"), "{err}");
    let jobs = ok(bin().args(["jobs", "--delegator", &delegator]));
    assert!(!jobs.contains("bad"), "{jobs}");
    // TSV with a BOM from stdin: one empty, one comment and one duplicate line skipped.
    let tsv = format!(
        "\u{feff}url\tcaption\tstatus\nhttp://{addr}/astronaut.png\tthe astronaut\tkeep\n\n# note\n\
         http://{addr}/astronaut.png\tagain\tx\nhttp://{addr}/nope.jpg\tmissing\ty\n"
    );
    let out = run_with_stdin(
        bin().args(["import", "--job", "tsv", "--delegator", &delegator, "-"]),
        tsv.as_bytes(),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("received 2 URLs, 2 new"), "{text}");
    assert!(text.contains("skipped 2 lines (0 empty, 1 comments, 1 duplicates, 0 invalid)"), "{text}");
    assert!(text.contains("carrying columns caption, status"), "{text}");
    ok(bin().args(["progress", "--job", "tsv", "--wait", "--delegator", &delegator]));
    // `--out -`: JSON Lines on stdout, carried columns beside the result's, never over them.
    let lines = jsonl(&ok(bin().args(["export", "--job", "tsv", "--results", &results, "--out", "-"])));
    assert_eq!(lines.len(), 2, "{lines:?}");
    let (hit, miss) = (&lines[0], &lines[1]);
    assert_eq!((hit["status"].as_str(), hit["http_status"].as_u64()), (Some("ok"), Some(200)), "{hit}");
    assert_eq!((&hit["caption"], &hit["input_status"]), (&"the astronaut".into(), &"keep".into()), "{hit}");
    assert_eq!((miss["status"].as_str(), miss["http_status"].as_u64()), (Some("http_error"), Some(404)));
    assert!(miss["width"].is_null() && miss["height"].is_null(), "a failure has no size: {miss}");
    let score = hit["faces"][0]["score"].as_f64().unwrap();
    assert_eq!((score * 1e4).round() / 1e4, score, "scores to 4 digits");
    // A device is written in place, never replaced by a regular file.
    ok(bin().args(["export", "--job", "tsv", "--results", &results, "--out", "/dev/null"]));
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata("/dev/null").unwrap().file_type().is_char_device(), "/dev/null replaced");
    // Parquet in, Parquet out (by the extension): the other columns travel, typed in JSON.
    let pq = tmp.path().join("in.parquet");
    parquet_input(&pq, &[format!("http://{addr}/hopper.jpg"), format!("http://{addr}/gone.jpg")]);
    let text = ok(bin().args(["import", "--job", "pq", "--delegator", &delegator]).arg(&pq));
    assert!(
        text.contains("received 2 URLs, 2 new") && text.contains("carrying columns id, caption"),
        "{text}"
    );
    ok(bin().args(["progress", "--job", "pq", "--wait", "--delegator", &delegator]));
    let out_pq = tmp.path().join("out.parquet");
    ok(bin().args(["export", "--job", "pq", "--results", &results, "--out"]).arg(&out_pq));
    let rows = parquet_rows(&out_pq);
    assert_eq!(rows.len(), 2);
    assert_eq!((&rows[0]["id"], &rows[0]["caption"]), (&"7".into(), &"caption 0".into()), "{:?}", rows[0]);
    assert_eq!(rows[0]["http_status"], 200);
    assert!(rows[1]["width"].is_null() && rows[1]["height"].is_null(), "{:?}", rows[1]);
    let out_j = tmp.path().join("out.jsonl");
    ok(bin().args(["export", "--job", "pq", "--results", &results, "--out"]).arg(&out_j));
    let lines = jsonl(&std::fs::read_to_string(&out_j).unwrap());
    assert_eq!((&lines[1]["id"], &lines[1]["caption"]), (&8.into(), &"caption 1".into()));
}

#[tokio::test(flavor = "multi_thread")]
async fn run_checks_its_input_before_starting_anything_and_streams_to_stdout() {
    let (addr, _srv) = photo_server().await;
    let tmp = tempfile::Builder::new().prefix("facesweep-cli").tempdir_in("/tmp").unwrap();
    let data = tmp.path().join("data");
    let list = tmp.path().join("urls.tsv");
    std::fs::write(&list, format!("url\tn\nhttp://{addr}/astronaut.png\t1\n# c\nbad\u{1}url\t2\n")).unwrap();
    // --dry-run: counts, and nothing started (no data dir, no service contacted).
    let text = ok(bin().args(["run", "--dry-run", "--data-dir"]).arg(&data).arg(&list));
    assert!(
        text.contains("1 URLs; skipped 2 lines (0 empty, 1 comments, 0 duplicates, 1 invalid)"),
        "{text}"
    );
    let text = ok(bin().args(["import", "--dry-run", "--job", "x", "--delegator", "127.0.0.1:1"]).arg(&list));
    assert!(text.contains("1 URLs"), "{text}");
    assert!(!data.exists(), "a dry run started the data dir");
    // A bad input fails before the mesh starts: no database, so no job.
    let bad = tmp.path().join("bad.csv");
    std::fs::write(&bad, format!("url,n\nhttp://{addr}/hopper.jpg,1\nhttp://{addr}/a.jpg,2,3\n")).unwrap();
    let out = bin().args(["run", "--data-dir"]).arg(&data).arg(&bad).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("bad.csv:3:"), "{err}");
    assert!(!data.exists(), "a bad input started the mesh");
    // `import` too: refused naming the file and line, nothing created.
    let out = bin().args(["import", "--job", "b", "--data-dir"]).arg(&data).arg(&bad).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("bad.csv:3:"), "{err}");
    assert!(!data.exists(), "a bad input started the data dir");
    // stdin in, JSON Lines out on stdout; the summary goes to stderr.
    let input = format!("\u{feff}http://{addr}/astronaut.png\nhttp://{addr}/nope.jpg\n");
    let out =
        run_with_stdin(bin().args(["run", "-", "--out", "-", "--data-dir"]).arg(&data), input.as_bytes());
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    let lines = jsonl(&stdout);
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(lines[0]["faces"].as_array().unwrap().len(), 1);
    assert!(lines[1]["width"].is_null() && lines[1]["http_status"] == 404, "{}", lines[1]);
    assert!(stderr.contains("job stdin: 2 URLs"), "{stderr}");
}
