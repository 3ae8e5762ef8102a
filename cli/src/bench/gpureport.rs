//! The whole-mesh part of `facesweep bench gpu` and the Markdown report.

use std::fmt::Write;

use serde_json::{json, Value};

use crate::client::UrlInput;
use crate::{httpserve, Mesh, MeshOptions};

/// What the whole-mesh part runs: `urls` URLs over the photos of `samples`, the `model`,
/// its files under `out/mesh`.
pub struct MeshRun<'a> {
    pub urls: usize,
    pub samples: std::path::PathBuf,
    pub model: &'a std::path::Path,
    pub out: &'a std::path::Path,
}

/// The sample photos served on loopback as `urls` distinct URLs through the whole mesh
/// (embedded Postgres, fetchers on this machine's cores): URLs/s end to end, and where the
/// time went from the services' own metrics (mean seconds per histogram).
pub async fn mesh(o: MeshRun<'_>, device: tch::Device) -> anyhow::Result<Value> {
    if o.urls == 0 {
        return Ok(json!({ "skipped": "--mesh-urls 0" }));
    }
    let mut routes = httpserve::Routes::default();
    let names = routes.add_dir(&o.samples)?;
    let (addr, _server) = httpserve::serve(routes).await?;
    // The server ignores the query: every URL is a distinct job entry with a real photo.
    let urls: Vec<String> =
        (0..o.urls).map(|i| format!("http://{addr}/{}?n={i}", names[i % names.len()])).collect();
    let work = o.out.join("mesh");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let mut opts = MeshOptions::new(&work, o.model);
    opts.metrics = true;
    opts.detector_max_batch = if device.is_cuda() { 256 } else { 8 };
    opts.fetcher_concurrency = 256;
    let m = Mesh::start(opts).await?;
    let summary =
        crate::run_job(&m, "gpu-check", &UrlInput::List(urls), &work.join("export.jsonl"), true).await;
    let mut timings = serde_json::Map::new();
    for a in &m.metrics {
        let text = crate::httpserve::get_text(&a.to_string(), "/metrics").await.unwrap_or_default();
        timings.extend(histogram_means(&text));
    }
    m.stop().await?;
    let s = summary?;
    let by_status: Value = s.progress.by_status.iter().map(|c| (c.status.clone(), json!(c.count))).collect();
    Ok(json!({ "urls": o.urls, "seconds": s.seconds, "urls_per_s": o.urls as f64 / s.seconds,
        "by_status": by_status, "mean_seconds": timings }))
}

/// `name → sum / count` for every histogram in a Prometheus text exposition.
fn histogram_means(text: &str) -> serde_json::Map<String, Value> {
    let value = |suffix: &str, name: &str| {
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{suffix}")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let mut out = serde_json::Map::new();
    for name in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" histogram")) {
        let count = value("_count", name);
        if count > 0.0 {
            out.insert(name.to_string(), json!(value("_sum", name) / count));
        }
    }
    out
}

/// The report as Markdown: one table per part, "not measured" where a part was skipped.
pub fn markdown(r: &Value) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# gpu-check {}\n\ndevice: {} (CUDA devices: {}), {} photos\n",
        text(&r["date"]),
        text(&r["device"]),
        r["cuda_devices"],
        r["photos"]
    );
    let _ = writeln!(md, "## fp16 vs fp32 parity\n\n{}\n", r["parity"]);
    let _ = writeln!(md, "## In-process (median, synchronised)\n\n| dtype | wire | batch | ms | images/s |\n|---|---|---:|---:|---:|");
    for row in r["inprocess"].as_array().into_iter().flatten() {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.2} | {:.1} |",
            text(&row["dtype"]),
            text(&row["wire"]),
            row["batch"],
            row["median_ms"].as_f64().unwrap_or(0.0),
            row["images_per_s"].as_f64().unwrap_or(0.0)
        );
    }
    let _ = writeln!(md, "\n## gRPC (loopback, load generator)\n\n| model | wire | streams | images | images/s | MB/s | bytes/image |\n|---|---|---:|---:|---:|---:|---:|");
    for row in r["grpc"].as_array().into_iter().flatten() {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {:.1} | {:.1} | {} |",
            text(&row["model"]),
            text(&row["wire"]),
            row["streams"],
            row["images"],
            row["images_per_s"].as_f64().unwrap_or(0.0),
            row["mb_per_s"].as_f64().unwrap_or(0.0),
            row["bytes_per_image"]
        );
    }
    let _ = writeln!(
        md,
        "\n## Whole mesh\n\n```json\n{}\n```",
        serde_json::to_string_pretty(&r["mesh"]).unwrap_or_default()
    );
    for part in ["inprocess", "grpc"] {
        if let Some(e) = r[part].get("error") {
            let _ = writeln!(md, "\n{part} failed: {e}");
        }
    }
    md
}

/// A JSON string without its quotes.
fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_means_divide_sums_by_counts_over_every_label_set() {
        let text = "# TYPE a_seconds histogram\na_seconds_bucket{le=\"1\"} 3\na_seconds_sum{x=\"1\"} 1.5\n\
                    a_seconds_count{x=\"1\"} 2\na_seconds_sum{x=\"2\"} 4.5\na_seconds_count{x=\"2\"} 4\n\
                    # TYPE b histogram\nb_count 0\n# TYPE c counter\nc 3\n";
        let m = histogram_means(text);
        assert_eq!(m.len(), 1, "{m:?}");
        assert_eq!(m["a_seconds"], json!(1.0));
    }
}
