//! `facesweep import` into an existing job, on a real delegator and Postgres: the job knows
//! which inputs it holds, so the same file adds nothing, a different file is appended whole,
//! a grown file adds only its new lines and an interrupted import resumes exactly. Over-long
//! URLs end at import with `invalid_url` and do not block their chunk. A TSV resumes by its
//! URL values (its other columns do not make it another input); carried columns are bounded,
//! refused when malformed, and come back with each URL in the export.

use facesweep_cli::client::{import, ImportOptions, Imported, UrlInput};
use facesweep_common::grpc::channel;
use facesweep_common::Shutdown;
use facesweep_proto::delegator_service_client::DelegatorServiceClient;
use facesweep_proto::*;
use facesweep_tests::services::*;
use facesweep_tests::*;

fn urls(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("http://{prefix}.invalid/{i}.jpg")).collect()
}

async fn import_file(addr: &str, job: &str, dir: &std::path::Path, name: &str, lines: &[String]) -> Imported {
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let opts = ImportOptions { quiet: true, ..Default::default() };
    import(addr, job, &UrlInput::File(path), opts).await.unwrap()
}

/// The job's URLs in ordinal order.
async fn stored(db: &TestDb, job: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT u.url FROM urls u JOIN jobs j ON j.id = u.job_id WHERE j.name = $1 ORDER BY u.id",
    )
    .bind(job)
    .fetch_all(&db.pool().await)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_different_file_is_appended_whole_and_the_same_file_adds_nothing() {
    let db = TestDb::start();
    let stop = Shutdown::new();
    let addr = delegator_addr(&db, &stop).await;
    let dir = tmp_dir();
    let (a, b) = (urls("a", 2), urls("b", 3));
    let first = import_file(&addr, "j", dir.path(), "a.txt", &a).await;
    assert_eq!(first, Imported { received: 2, inserted: 2, skipped: 0 });
    let other = import_file(&addr, "j", dir.path(), "b.txt", &b).await;
    assert_eq!(other, Imported { received: 3, inserted: 3, skipped: 0 }, "every line of b.txt is new");
    assert_eq!(stored(&db, "j").await, [a.clone(), b.clone()].concat());
    for (name, lines) in [("a.txt", &a), ("b.txt", &b)] {
        let again = import_file(&addr, "j", dir.path(), name, lines).await;
        assert_eq!(again.inserted, 0, "{name} again adds nothing: {again:?}");
        assert_eq!(again.skipped, lines.len() as i64);
    }
    assert_eq!(stored(&db, "j").await.len(), 5);
    stop.cancel();
}

/// Every version of an input the job was given is still recognised: after a grown file, the
/// shorter original (and an interrupted import's part) adds nothing, at any size.
#[tokio::test(flavor = "multi_thread")]
async fn an_earlier_shorter_version_of_an_input_adds_nothing_after_it_grew() {
    let db = TestDb::start();
    let stop = Shutdown::new();
    let addr = delegator_addr(&db, &stop).await;
    let dir = tmp_dir();
    let all = urls("v", 12_000);
    let (v1, v2) = (&all[..2], &all[..7_000]);
    import_file(&addr, "j", dir.path(), "v1.txt", v1).await;
    let grown = import_file(&addr, "j", dir.path(), "v2.txt", v2).await;
    assert_eq!(grown.inserted, 6_998, "{grown:?}");
    let grown_more = import_file(&addr, "j", dir.path(), "v3.txt", &all).await;
    assert_eq!(grown_more.inserted, 5_000, "{grown_more:?}");
    for (name, lines) in [("v1.txt", v1), ("v2.txt", v2), ("v3.txt", &all[..])] {
        let again = import_file(&addr, "j", dir.path(), name, lines).await;
        assert_eq!(again.inserted, 0, "{name} again adds nothing: {again:?}");
    }
    assert_eq!(stored(&db, "j").await, all);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grown_file_adds_only_its_new_lines_even_after_another_input() {
    let db = TestDb::start();
    let stop = Shutdown::new();
    let addr = delegator_addr(&db, &stop).await;
    let dir = tmp_dir();
    let a = urls("a", 12_000);
    import_file(&addr, "g", dir.path(), "a.txt", &a[..7_000]).await;
    // Grown while it is the job's last input: it grows in place.
    let grown = import_file(&addr, "g", dir.path(), "a.txt", &a[..9_000]).await;
    assert_eq!(grown, Imported { received: 9_000, inserted: 2_000, skipped: 7_000 });
    let b = urls("b", 3);
    import_file(&addr, "g", dir.path(), "b.txt", &b).await;
    // Grown after b.txt: its new lines follow b's.
    let grown = import_file(&addr, "g", dir.path(), "a.txt", &a).await;
    assert_eq!(grown, Imported { received: 12_000, inserted: 3_000, skipped: 9_000 });
    let again = import_file(&addr, "g", dir.path(), "a.txt", &a).await;
    assert_eq!(again.inserted, 0, "{again:?}");
    let want = [&a[..9_000], &b[..], &a[9_000..]].concat();
    assert_eq!(stored(&db, "g").await, want);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_import_resumes_where_the_stored_urls_end() {
    let db = TestDb::start();
    let stop = Shutdown::new();
    let addr = delegator_addr(&db, &stop).await;
    let dir = tmp_dir();
    let all = urls("i", 12_000);
    // What an import killed after its first message leaves: 5,000 URLs with their mark.
    let mut d = DelegatorServiceClient::new(channel(&addr).unwrap());
    d.create_job(CreateJobRequest { name: "i".into(), ..Default::default() }).await.unwrap();
    let part = &all[..5_000];
    let msg = AppendUrlsRequest {
        job: "i".into(),
        first_ordinal: 0,
        urls: part.to_vec(),
        segment: Some(facesweep_cli::inputs::segment_of(part, 0)),
        extras: vec![],
    };
    d.append_urls(futures::stream::iter(vec![msg])).await.unwrap();
    let resumed = import_file(&addr, "i", dir.path(), "i.txt", &all).await;
    assert_eq!(resumed, Imported { received: 12_000, inserted: 7_000, skipped: 5_000 });
    assert_eq!(stored(&db, "i").await, all);
    // A mark that does not end at the message's last URL is refused.
    let bad = AppendUrlsRequest {
        job: "i".into(),
        first_ordinal: 12_000,
        urls: urls("x", 2),
        segment: Some(facesweep_cli::inputs::segment_of(&all[..1], 0)),
        extras: vec![],
    };
    let e = d.append_urls(futures::stream::iter(vec![bad])).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_over_long_url_ends_invalid_at_import_and_the_others_lease() {
    let db = TestDb::start();
    let stop = Shutdown::new();
    let mut d = delegator(&db, 0, 1, 60, &stop).await;
    d.create_job(CreateJobRequest { name: "long".into(), chunk_size: 10, ..Default::default() })
        .await
        .unwrap();
    let mut list = urls("n", 5);
    let long = format!("http://long.invalid/{}", "x".repeat(100 << 10));
    list.insert(2, long.clone());
    let msg =
        AppendUrlsRequest { job: "long".into(), first_ordinal: 0, urls: list.clone(), ..Default::default() };
    let r = d.append_urls(futures::stream::iter(vec![msg.clone()])).await.unwrap().into_inner();
    assert_eq!((r.received, r.inserted), (6, 6));
    // Re-sending changes nothing: still one result, counted once.
    d.append_urls(futures::stream::iter(vec![msg])).await.unwrap();
    let lease = acquire(&mut d, "f").await.expect("the other URLs lease");
    let leased: Vec<&str> = lease.urls.iter().map(|u| u.url.as_str()).collect();
    let mut others = list.clone();
    others.remove(2);
    let sizes: Vec<usize> = leased.iter().map(|u| u.len()).collect();
    assert!(leased == others, "only the 5 normal URLs lease, got {} of sizes {sizes:?}", leased.len());
    let p = d.get_progress(GetProgressRequest { job: "long".into() }).await.unwrap().into_inner();
    assert_eq!((p.done_urls, p.total_urls), (1, 6));
    let invalid = p.by_status.iter().find(|c| c.status == "invalid_url").map_or(0, |c| c.count);
    assert_eq!(invalid, 1);
    let pool = db.pool().await;
    let (status, reason, url): (String, String, String) =
        sqlx::query_as("SELECT r.status, r.reason, u.url FROM url_results r JOIN urls u ON u.id = r.url_id")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(status, "invalid_url");
    assert_eq!(reason, format!("URL is {} bytes, longer than the 8192-byte limit", long.len()));
    assert!(url.len() <= 8192 + 3 && long.starts_with(url.trim_end_matches('…')), "stored truncated");
    stop.cancel();
}

/// A TSV of `urls` with a `caption` column whose values carry `tag`.
fn tsv(urls: &[String], tag: &str) -> String {
    let rows: Vec<String> = urls.iter().enumerate().map(|(i, u)| format!("{u}\t{tag} {i}")).collect();
    format!("url\tcaption\n{}\n", rows.join("\n"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_table_input_resumes_by_its_url_values_and_carries_its_columns() {
    let db = TestDb::start();
    let stop = Shutdown::new();
    let addr = delegator_addr(&db, &stop).await;
    let dir = tmp_dir();
    let all = urls("t", 12_000);
    // An import killed after its first message: the segment is over the URL values only,
    // exactly as for a plain list of the same URLs.
    let mut d = DelegatorServiceClient::new(channel(&addr).unwrap());
    d.create_job(CreateJobRequest { name: "t".into(), ..Default::default() }).await.unwrap();
    let part = &all[..5_000];
    let msg = AppendUrlsRequest {
        job: "t".into(),
        urls: part.to_vec(),
        segment: Some(facesweep_cli::inputs::segment_of(part, 0)),
        ..Default::default()
    };
    d.append_urls(futures::stream::iter(vec![msg])).await.unwrap();
    let path = dir.path().join("t.tsv");
    std::fs::write(&path, tsv(&all, "first")).unwrap();
    let opts = || ImportOptions { quiet: true, ..Default::default() };
    let resumed = import(&addr, "t", &UrlInput::File(path.clone()), opts()).await.unwrap();
    assert_eq!(resumed, Imported { received: 12_000, inserted: 7_000, skipped: 5_000 });
    // Other values in the other columns: still the same input, nothing added.
    std::fs::write(&path, tsv(&all, "edited")).unwrap();
    let again = import(&addr, "t", &UrlInput::File(path), opts()).await.unwrap();
    assert_eq!(again.inserted, 0, "{again:?}");
    assert_eq!(stored(&db, "t").await, all);
    let extras: Vec<Option<String>> =
        sqlx::query_scalar("SELECT extra FROM urls ORDER BY id").fetch_all(&db.pool().await).await.unwrap();
    assert_eq!(extras[4_999], None, "the first part was sent without columns");
    assert_eq!(extras[5_000].as_deref(), Some(r#"{"caption":"first 5000"}"#));
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn carried_columns_are_bounded_and_come_back_in_the_export() {
    let db = TestDb::start();
    let stop = Shutdown::new();
    let mut d = delegator(&db, 0, 1, 60, &stop).await;
    let mut r = results(&db, &stop).await;
    d.create_job(CreateJobRequest { name: "x".into(), ..Default::default() }).await.unwrap();
    let send = |urls: Vec<String>, extras: Vec<String>, first_ordinal: i64| AppendUrlsRequest {
        job: "x".into(),
        first_ordinal,
        urls,
        extras,
        ..Default::default()
    };
    let big = format!(r#"{{"a":"{}"}}"#, "x".repeat(8 << 10));
    for (extras, why) in [
        (vec![big], "over 8 KiB"),
        (vec!["[1]".into()], "not an object"),
        (vec!["{}".into(), "{}".into()], "not one per URL"),
    ] {
        let e = d.append_urls(futures::stream::iter(vec![send(urls("b", 1), extras, 0)])).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{why}: {e}");
    }
    // Messages with and without columns in one stream: each URL keeps its own.
    let msgs =
        vec![send(urls("x", 2), vec![r#"{"k":1}"#.into(), String::new()], 0), send(urls("y", 1), vec![], 2)];
    d.append_urls(futures::stream::iter(msgs)).await.unwrap();
    let req = ExportResultsRequest { job: "x".into(), ..Default::default() };
    let mut stream = r.export_results(req).await.unwrap().into_inner();
    let mut got = Vec::new();
    while let Some(m) = futures::StreamExt::next(&mut stream).await {
        got.push(m.unwrap().extra);
    }
    assert_eq!(got, [r#"{"k":1}"#, "", ""]);
    stop.cancel();
}
