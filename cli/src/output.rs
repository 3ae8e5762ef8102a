//! Where and how an export is written: JSON Lines or Parquet (by `--format`, else by the
//! extension), to a file (complete or not at all: temp + rename), to stdout (`-`), or in
//! place into anything that is not a regular file (a device, a FIFO: never replaced).
//!
//! Carried input columns become top-level fields after the result's own (JSON Lines: by
//! name, `ordered`); one whose name is taken by a result field (`url`, `status`, ...) is
//! written as `input_<name>`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use facesweep_proto::{ExportResultsRequest, ExportResultsResponse};
use futures::StreamExt;
use serde_json::{json, Map, Value};

use crate::connect;

/// What an export wrote.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ExportSummary {
    pub lines: u64,
    pub faces: u64,
    pub by_status: std::collections::BTreeMap<String, u64>,
}

/// What an export writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line.
    Jsonl,
    /// One row per URL, nested faces (Snappy).
    Parquet,
}

impl Format {
    /// `explicit`, else Parquet for a `.parquet` path, else JSON Lines.
    pub fn for_path(out: &Path, explicit: Option<Format>) -> Format {
        explicit.unwrap_or_else(|| {
            let parquet = out.extension().is_some_and(|e| e.eq_ignore_ascii_case("parquet"));
            if parquet {
                Format::Parquet
            } else {
                Format::Jsonl
            }
        })
    }
}

/// Extensions `--out` may have without `--format` (none at all: JSON Lines too).
const KNOWN_EXTENSIONS: [&str; 4] = ["jsonl", "json", "ndjson", "parquet"];

/// Refuses an `--out` that could not be written before any work starts: an unknown extension
/// without `--format` (`r.csv` would silently get JSON Lines), a directory, a missing or
/// unwritable folder. `-` and existing devices/FIFOs are fine.
pub fn check_out(out: &Path, format: Option<Format>) -> anyhow::Result<()> {
    if out == Path::new("-") {
        return Ok(());
    }
    let ext = out.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    if let (None, Some(ext)) = (format, &ext) {
        anyhow::ensure!(
            KNOWN_EXTENSIONS.contains(&ext.as_str()),
            "--out {}: unknown extension .{ext}; name it .jsonl (or .json, .ndjson) or .parquet, \
             or pass --format jsonl|parquet",
            out.display()
        );
    }
    match std::fs::metadata(out) {
        Ok(m) if m.is_dir() => anyhow::bail!("--out {} is a directory: give a file name", out.display()),
        Ok(m) if !m.is_file() => return Ok(()),
        _ => {}
    }
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !parent.is_dir() {
        let (o, p) = (out.display(), parent.display());
        if parent.exists() {
            anyhow::bail!("--out {o}: {p} is a file, not a folder; choose another --out");
        }
        anyhow::bail!("--out {o}: folder {p} does not exist; create it or choose another --out");
    }
    // The export is written beside `out` and renamed: a probe there proves it can be.
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let probe = parent.join(format!(".{name}.{}.probe", std::process::id()));
    std::fs::File::create(&probe).with_context(|| {
        format!("--out {}: cannot write in {}; choose another --out", out.display(), parent.display())
    })?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// An export's destination and format.
#[derive(Clone, Copy, Debug)]
pub struct Out<'a> {
    pub path: &'a Path,
    pub format: Format,
}

impl<'a> Out<'a> {
    /// `format`, or by the path's extension.
    pub fn new(path: &'a Path, format: Option<Format>) -> Self {
        Out { path, format: Format::for_path(path, format) }
    }
}

impl<'a> From<&'a Path> for Out<'a> {
    fn from(path: &'a Path) -> Self {
        Out::new(path, None)
    }
}

impl<'a> From<&'a PathBuf> for Out<'a> {
    fn from(path: &'a PathBuf) -> Self {
        Out::new(path, None)
    }
}

/// The fields of an export line; carried columns never take these names.
pub const RESULT_FIELDS: [&str; 9] =
    ["url_id", "url", "status", "reason", "http_status", "width", "height", "model_id", "faces"];

/// The output names of carried columns, in order: `input_` is prepended to a name while a
/// result field or an earlier column has it.
pub fn carried_names<'a>(columns: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut taken: std::collections::HashSet<String> = RESULT_FIELDS.iter().map(|s| s.to_string()).collect();
    columns
        .into_iter()
        .map(|c| {
            let mut name = c.to_string();
            while taken.contains(&name) {
                name = format!("input_{name}");
            }
            taken.insert(name.clone());
            name
        })
        .collect()
}

/// Where export bytes go; `finish` makes a file appear under its name.
pub struct Sink {
    w: Box<dyn Write + Send>,
    /// (temporary, final) for a regular file.
    rename: Option<(PathBuf, PathBuf)>,
}

impl Sink {
    /// `-` is stdout; an existing non-regular file (device, FIFO) is written in place; a
    /// regular file (through symlinks) is written beside it and renamed over it at the end.
    pub fn open(out: &Path, tmp_ext: &str) -> anyhow::Result<Sink> {
        if out == Path::new("-") {
            return Ok(Sink { w: Box::new(std::io::BufWriter::new(std::io::stdout())), rename: None });
        }
        let meta = std::fs::metadata(out).ok();
        if meta.as_ref().is_some_and(|m| !m.is_file()) {
            anyhow::ensure!(
                !meta.unwrap().is_dir(),
                "--out {} is a directory: give a file name",
                out.display()
            );
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(out)
                .with_context(|| format!("open {} for writing", out.display()))?;
            return Ok(Sink { w: Box::new(f), rename: None });
        }
        let target = if meta.is_some() { std::fs::canonicalize(out)? } else { out.to_path_buf() };
        let tmp = target.with_extension(tmp_ext);
        let f = std::fs::File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
        Ok(Sink { w: Box::new(std::io::BufWriter::new(f)), rename: Some((tmp, target)) })
    }

    pub fn writer(&mut self) -> &mut (dyn Write + Send) {
        &mut self.w
    }

    /// Takes the writer (the Parquet writer owns it); `commit` finishes.
    pub fn take(self) -> (Box<dyn Write + Send>, Commit) {
        (self.w, Commit(self.rename))
    }

    pub fn finish(self) -> anyhow::Result<()> {
        let (mut w, commit) = self.take();
        w.flush()?;
        drop(w);
        commit.commit()
    }
}

/// The rename that makes a written file appear (atomic: a killed export leaves no half file).
pub struct Commit(Option<(PathBuf, PathBuf)>);

impl Commit {
    pub fn commit(self) -> anyhow::Result<()> {
        if let Some((tmp, out)) = self.0 {
            std::fs::rename(&tmp, &out)
                .with_context(|| format!("rename {} to {}", tmp.display(), out.display()))?;
        }
        Ok(())
    }
}

/// Writes the export as JSON Lines, line by line as pages arrive (nothing kept per URL).
pub async fn jsonl(
    addr: &str,
    what: impl Into<ExportResultsRequest>,
    out: &Path,
) -> anyhow::Result<ExportSummary> {
    let mut stream = connect::results(addr)?.export_results(what.into()).await?.into_inner();
    let mut sink = Sink::open(out, "jsonl.tmp")?;
    let mut sum = ExportSummary::default();
    while let Some(r) = stream.next().await {
        let line = export_line(&r?);
        let w = sink.writer();
        w.write_all(ordered(&line).as_bytes())?;
        w.write_all(b"\n")?;
        sum.lines += 1;
        sum.faces += line["faces"].as_array().map_or(0, Vec::len) as u64;
        *sum.by_status.entry(line["status"].as_str().unwrap_or("?").to_string()).or_default() += 1;
    }
    sink.finish()?;
    Ok(sum)
}

/// The fields of a face, in the documented order.
const FACE_FIELDS: [&str; 3] = ["box", "score", "landmarks"];

/// An export line as compact JSON in the documented key order (serde_json's map sorts by
/// name): the result's fields, then the carried columns (and `cursor`) by name.
pub fn ordered(line: &Value) -> String {
    let Some(obj) = line.as_object() else { return line.to_string() };
    let face = |f: &Value| {
        f.as_object().map_or_else(|| f.to_string(), |o| object(o, &FACE_FIELDS, &|v| v.to_string()))
    };
    object(obj, &RESULT_FIELDS, &|v| match v.as_array() {
        Some(faces) if faces.iter().all(Value::is_object) => {
            format!("[{}]", faces.iter().map(face).collect::<Vec<_>>().join(","))
        }
        _ => v.to_string(),
    })
}

/// `{…}` with the keys of `first` in that order, then the others by name; values by `value`.
fn object(obj: &Map<String, Value>, first: &[&str], value: &dyn Fn(&Value) -> String) -> String {
    let known = first.iter().filter_map(|k| obj.get_key_value(*k));
    let rest = obj.iter().filter(|(k, _)| !first.contains(&k.as_str()));
    let parts: Vec<String> =
        known.chain(rest).map(|(k, v)| format!("{}:{}", Value::from(k.as_str()), value(v))).collect();
    format!("{{{}}}", parts.join(","))
}

/// A pixel coordinate to 0.1 px.
pub fn px(v: f32) -> f64 {
    (v as f64 * 10.0).round() / 10.0
}

/// A score to 4 digits.
pub fn score(v: f32) -> f64 {
    (v as f64 * 1e4).round() / 1e4
}

/// A count that is 0 when unknown (no image, no HTTP response): null then.
fn known(v: u32) -> Value {
    if v == 0 {
        Value::Null
    } else {
        v.into()
    }
}

/// One JSON object per URL, in the documented export format.
pub fn export_line(r: &ExportResultsResponse) -> Value {
    let text = |s: &str| if s.is_empty() { Value::Null } else { s.into() };
    let mut line = match &r.result {
        Some(res) => {
            let faces: Vec<_> = res
                .faces
                .iter()
                .map(|f| {
                    let lm: Vec<f64> = f.landmarks.iter().map(|v| px(*v)).collect();
                    json!({"box": [px(f.x1), px(f.y1), px(f.x2), px(f.y2)], "score": score(f.score), "landmarks": lm})
                })
                .collect();
            json!({
                "url_id": res.url_id, "url": r.url, "status": res.status().short_name(),
                "reason": text(&res.reason), "http_status": known(res.http_status),
                "width": known(res.width), "height": known(res.height),
                "model_id": text(&res.model_id), "faces": faces,
            })
        }
        None => json!({
            "url_id": r.pending_url_id, "url": r.url, "status": "pending", "reason": null,
            "http_status": null, "width": null, "height": null, "model_id": null, "faces": [],
        }),
    };
    if let (Some(obj), Some(extra)) = (line.as_object_mut(), carried(&r.extra)) {
        let names = carried_names(extra.keys().map(String::as_str));
        for (name, v) in names.into_iter().zip(extra.into_iter().map(|(_, v)| v)) {
            obj.insert(name, v);
        }
    }
    line
}

/// The carried columns of a URL (none when empty or, from an older server, not an object).
pub fn carried(extra: &str) -> Option<Map<String, Value>> {
    (!extra.is_empty()).then(|| serde_json::from_str(extra).ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use facesweep_proto::{Face, UrlResult, UrlStatus};

    #[test]
    fn the_format_follows_the_extension_unless_given() {
        assert_eq!(Format::for_path(Path::new("a.parquet"), None), Format::Parquet);
        assert_eq!(Format::for_path(Path::new("a.PARQUET"), None), Format::Parquet);
        assert_eq!(Format::for_path(Path::new("a.jsonl"), None), Format::Jsonl);
        assert_eq!(Format::for_path(Path::new("-"), None), Format::Jsonl);
        assert_eq!(Format::for_path(Path::new("a.parquet"), Some(Format::Jsonl)), Format::Jsonl);
    }

    #[test]
    fn a_bad_out_is_refused_before_any_work() {
        let dir = tempfile::tempdir().unwrap();
        let ok = |p: &Path, f| check_out(p, f).map_err(|e| e.to_string());
        assert!(ok(Path::new("-"), None).is_ok());
        assert!(ok(Path::new("/dev/null"), None).is_ok());
        for name in ["r.jsonl", "r.JSON", "r.ndjson", "r.parquet", "results"] {
            assert!(ok(&dir.path().join(name), None).is_ok(), "{name}");
        }
        let e = ok(&dir.path().join("r.csv"), None).unwrap_err();
        assert!(e.contains("unknown extension .csv") && e.contains("--format"), "{e}");
        assert!(ok(&dir.path().join("r.csv"), Some(Format::Jsonl)).is_ok());
        let e = ok(&dir.path().join("missing/r.jsonl"), None).unwrap_err();
        assert!(e.contains("does not exist"), "{e}");
        let e = ok(dir.path(), Some(Format::Jsonl)).unwrap_err();
        assert!(e.contains("is a directory"), "{e}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "the probe is removed");
        std::fs::write(dir.path().join("f.txt"), b"").unwrap();
        let e = ok(&dir.path().join("f.txt/r.jsonl"), None).unwrap_err();
        assert!(e.contains("f.txt is a file, not a folder"), "{e}");
    }

    #[test]
    fn export_line_rounds_and_carries_columns_without_overwriting() {
        let r = ExportResultsResponse {
            url: "http://x/a.jpg".into(),
            result: Some(UrlResult {
                url_id: 7,
                status: UrlStatus::Ok as i32,
                http_status: 200,
                width: 10,
                height: 20,
                faces: vec![Face {
                    x1: 417.2345,
                    y1: 2.0,
                    x2: 3.0,
                    y2: 4.0,
                    score: 0.987_654,
                    landmarks: vec![0.55; 10],
                }],
                ..Default::default()
            }),
            extra: r#"{"caption":"a cat","status":"x","input_status":"y"}"#.into(),
            ..Default::default()
        };
        let v = export_line(&r);
        assert_eq!(v["status"], "ok");
        assert_eq!(v["http_status"], 200);
        assert_eq!(v["faces"][0]["box"], json!([417.2, 2.0, 3.0, 4.0]));
        assert_eq!(v["faces"][0]["score"], json!(0.9877));
        assert_eq!(v["faces"][0]["landmarks"][0], json!(0.6));
        assert_eq!(v["caption"], "a cat");
        // Keys in name order: `input_status` keeps its name, `status` moves past it.
        assert_eq!((&v["input_status"], &v["input_input_status"]), (&json!("y"), &json!("x")));
        let failed = ExportResultsResponse {
            result: Some(UrlResult { url_id: 8, status: UrlStatus::Timeout as i32, ..Default::default() }),
            ..Default::default()
        };
        // Written in the documented order: the result's fields, then carried columns by name.
        let text = ordered(&v);
        assert!(
            text.starts_with(r#"{"url_id":7,"url":"http://x/a.jpg","status":"ok","reason":null,"#),
            "{text}"
        );
        assert!(
            text.contains(r#""faces":[{"box":[417.2,2.0,3.0,4.0],"score":0.9877,"landmarks":["#),
            "{text}"
        );
        assert!(
            text.ends_with(r#""caption":"a cat","input_input_status":"x","input_status":"y"}"#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), v);
        let v = export_line(&failed);
        assert!(v["width"].is_null() && v["height"].is_null() && v["http_status"].is_null(), "{v}");
    }
}
