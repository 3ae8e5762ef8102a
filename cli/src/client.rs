//! Client side of the CLI: import, progress, export against a running mesh.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use facesweep_common::grpc::channel;
use facesweep_proto::delegator_service_client::DelegatorServiceClient;
use facesweep_proto::results_service_client::ResultsServiceClient;
use facesweep_proto::*;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

/// URLs per AppendUrls message.
const IMPORT_MESSAGE: usize = 5_000;

/// Reads URLs: one per line, or a CSV with a `url` column. Blank lines and `#` comments are skipped.
pub fn read_urls(path: &Path) -> anyhow::Result<Vec<String>> {
    let file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut lines = BufReader::new(file).lines().peekable();
    let first = lines.peek().and_then(|l| l.as_ref().ok()).cloned().unwrap_or_default();
    let header: Vec<String> = first.split(',').map(|h| h.trim().trim_matches('"').to_lowercase()).collect();
    if header.len() > 1 || header.first().map(String::as_str) == Some("url") {
        let col = header.iter().position(|h| h == "url").context("CSV input needs a `url` column")?;
        let mut rdr = csv::Reader::from_path(path)?;
        let mut urls = Vec::new();
        for rec in rdr.records() {
            let rec = rec?;
            if let Some(u) = rec.get(col).map(str::trim).filter(|u| !u.is_empty()) {
                urls.push(u.to_string());
            }
        }
        return Ok(urls);
    }
    let mut urls = Vec::new();
    for line in lines {
        let line = line?;
        let t = line.trim();
        if !t.is_empty() && !t.starts_with('#') {
            urls.push(t.to_string());
        }
    }
    Ok(urls)
}

pub async fn delegator(addr: &str) -> anyhow::Result<DelegatorServiceClient<tonic::transport::Channel>> {
    Ok(DelegatorServiceClient::new(channel(addr)?).max_decoding_message_size(64 << 20))
}

/// Creates the job if needed and streams the URLs; re-importing the same file is a no-op.
pub async fn import(
    addr: &str,
    job: &str,
    urls: Vec<String>,
    quiet: bool,
) -> anyhow::Result<AppendUrlsResponse> {
    let mut d = delegator(addr).await?;
    d.create_job(CreateJobRequest { name: job.into(), chunk_size: 0, priority: 0 }).await?;
    let bar = if quiet { ProgressBar::hidden() } else { bar(urls.len() as u64, "import") };
    let job = job.to_string();
    let total = urls.len();
    let b = bar.clone();
    let messages: Vec<AppendUrlsRequest> = urls
        .chunks(IMPORT_MESSAGE)
        .enumerate()
        .map(|(i, c)| AppendUrlsRequest {
            job: job.clone(),
            first_ordinal: (i * IMPORT_MESSAGE) as i64,
            urls: c.to_vec(),
        })
        .collect();
    let stream = futures::stream::iter(messages).inspect(move |m| b.inc(m.urls.len() as u64));
    let resp = d.append_urls(stream).await?.into_inner();
    bar.finish_and_clear();
    anyhow::ensure!(resp.received as usize == total, "delegator received {} of {total} URLs", resp.received);
    Ok(resp)
}

pub fn bar(len: u64, what: &str) -> ProgressBar {
    let b = ProgressBar::new(len);
    b.set_style(
        ProgressStyle::with_template("{prefix:>8} [{bar:40}] {pos}/{len} {per_sec} eta {eta} {msg}")
            .expect("template")
            .progress_chars("=> "),
    );
    b.set_prefix(what.to_string());
    b
}

pub async fn progress(addr: &str, job: &str) -> anyhow::Result<GetProgressResponse> {
    Ok(delegator(addr).await?.get_progress(GetProgressRequest { job: job.into() }).await?.into_inner())
}

pub fn describe(p: &GetProgressResponse) -> String {
    let statuses: Vec<String> = p.by_status.iter().map(|s| format!("{}={}", s.status, s.count)).collect();
    let eta = if p.eta_seconds < 0.0 { "unknown".to_string() } else { format!("{:.0}s", p.eta_seconds) };
    format!(
        "{}/{} URLs done; chunks pending={} leased={} done={}; re-issued leases={}; {:.1} URLs/s; eta {eta}; {}",
        p.done_urls,
        p.total_urls,
        p.chunks_pending,
        p.chunks_leased,
        p.chunks_done,
        p.leases_reissued,
        p.rate_per_second,
        statuses.join(" ")
    )
}

/// Polls progress until every URL has a terminal result.
pub async fn wait(addr: &str, job: &str, quiet: bool) -> anyhow::Result<GetProgressResponse> {
    let mut p = progress(addr, job).await?;
    let bar = if quiet { ProgressBar::hidden() } else { bar(p.total_urls as u64, "detect") };
    loop {
        bar.set_length(p.total_urls as u64);
        bar.set_position(p.done_urls as u64);
        if p.done_urls >= p.total_urls {
            bar.finish_and_clear();
            return Ok(p);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        p = progress(addr, job).await?;
    }
}

/// One JSON object per URL, in the documented export format.
pub fn export_line(r: &ExportResultsResponse) -> serde_json::Value {
    match &r.result {
        Some(res) => {
            let faces: Vec<_> = res
                .faces
                .iter()
                .map(|f| json!({"box": [f.x1, f.y1, f.x2, f.y2], "score": f.score, "landmarks": f.landmarks}))
                .collect();
            json!({
                "url_id": res.url_id,
                "url": r.url,
                "status": res.status().short_name(),
                "reason": if res.reason.is_empty() { serde_json::Value::Null } else { res.reason.clone().into() },
                "width": res.width,
                "height": res.height,
                "faces": faces,
            })
        }
        None => json!({
            "url_id": r.pending_url_id, "url": r.url, "status": "pending", "reason": null,
            "width": 0, "height": 0, "faces": [],
        }),
    }
}

/// Writes the job's export to `out`; returns the number of lines.
pub async fn export(addr: &str, job: &str, out: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut client = ResultsServiceClient::new(channel(addr)?).max_decoding_message_size(64 << 20);
    let mut stream = client.export_results(ExportResultsRequest { job: job.into() }).await?.into_inner();
    let tmp = out.with_extension("jsonl.tmp");
    let mut w = std::io::BufWriter::new(
        std::fs::File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?,
    );
    let mut lines = Vec::new();
    while let Some(r) = stream.next().await {
        let line = export_line(&r?);
        serde_json::to_writer(&mut w, &line)?;
        w.write_all(b"\n")?;
        lines.push(line);
    }
    w.flush()?;
    drop(w);
    // Atomic: a killed export never leaves a half-written file under the final name.
    std::fs::rename(&tmp, out)?;
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_plain_lists_and_csv() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("u.txt");
        std::fs::write(&plain, "http://a/1.jpg\n\n# note\n  http://a/2.jpg  \n").unwrap();
        assert_eq!(read_urls(&plain).unwrap(), vec!["http://a/1.jpg", "http://a/2.jpg"]);
        let csv = dir.path().join("u.csv");
        std::fs::write(&csv, "id,url\n1,http://a/1.jpg\n2,\"http://a/x,y.jpg\"\n").unwrap();
        assert_eq!(read_urls(&csv).unwrap(), vec!["http://a/1.jpg", "http://a/x,y.jpg"]);
        let bad = dir.path().join("bad.csv");
        std::fs::write(&bad, "id,link\n1,http://a\n").unwrap();
        assert!(read_urls(&bad).is_err());
    }

    #[test]
    fn export_line_has_the_documented_shape() {
        let r = ExportResultsResponse {
            url: "http://x/a.jpg".into(),
            result: Some(UrlResult {
                url_id: 7,
                status: UrlStatus::Ok as i32,
                width: 10,
                height: 20,
                faces: vec![Face {
                    x1: 1.0,
                    y1: 2.0,
                    x2: 3.0,
                    y2: 4.0,
                    score: 0.9,
                    landmarks: vec![0.5; 10],
                }],
                ..Default::default()
            }),
            pending_url_id: 0,
        };
        let v = export_line(&r);
        assert_eq!(v["status"], "ok");
        assert_eq!(v["faces"][0]["box"], json!([1.0, 2.0, 3.0, 4.0]));
        assert_eq!(v["faces"][0]["landmarks"].as_array().unwrap().len(), 10);
        assert!(v["reason"].is_null());
    }
}
