//! Reading an input file: plain lines, CSV or TSV with a `url` column (a UTF-8 BOM is
//! skipped), or Parquet with a `url` column (img2dataset's input formats). Every other column
//! is carried with its URL as one JSON object. Lines that are not URLs are skipped and
//! counted; errors name the file and the line (or row).

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::{Counts, Row, UrlIter};

/// Distinct URLs remembered to skip duplicates (~18 MB at most); beyond that, later repeats
/// of URLs not remembered are kept (deterministically, so a re-read skips the same lines).
const DEDUPE_MAX: usize = 1 << 21;

/// What one line or row of an input is.
pub(super) enum Raw {
    Url {
        url: String,
        extra: String,
    },
    Empty,
    Comment,
    /// Not UTF-8, or holds control characters (a NUL would fail the whole import).
    Invalid,
}

pub(super) type RawIter = Box<dyn Iterator<Item = anyhow::Result<Raw>> + Send>;

/// The kinds of input, told by content (stdin has no name), then by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Lines,
    Csv,
    Tsv,
    Parquet,
}

/// Reads the first bytes of `path` to tell its kind and, for CSV/TSV, its columns.
pub fn kind_of(path: &Path) -> anyhow::Result<Kind> {
    let mut f = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut head = vec![0u8; 64 << 10];
    let n = read_up_to(&mut f, &mut head).with_context(|| format!("read {}", path.display()))?;
    let head = &head[..n];
    if head.starts_with(b"PAR1") {
        return Ok(Kind::Parquet);
    }
    let first = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    let first = String::from_utf8_lossy(first.split(|b| *b == b'\n').next().unwrap_or_default()).to_string();
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let url_in = |sep: char| first.split(sep).any(|h| h.trim().trim_matches('"').eq_ignore_ascii_case("url"));
    let a_url = first.trim_start().starts_with('#') || first.contains("://");
    Ok(match () {
        _ if ext == "tsv" || url_in('\t') => Kind::Tsv,
        _ if ext == "csv" || url_in(',') => Kind::Csv,
        // A first line that is a URL or a comment: a plain list, commas or not.
        _ if a_url => Kind::Lines,
        // A header without a `url` column: refused as a table, with its columns named.
        _ if first.contains('\t') => Kind::Tsv,
        _ if first.contains(',') => Kind::Csv,
        _ => Kind::Lines,
    })
}

fn read_up_to(f: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// The file's rows, each classified.
pub(super) fn raw(path: &Path, columns: &mut Vec<String>) -> anyhow::Result<RawIter> {
    match kind_of(path)? {
        Kind::Lines => lines(path),
        Kind::Csv => table(path, b',', columns),
        Kind::Tsv => table(path, b'\t', columns),
        Kind::Parquet => super::parquet_in::rows(path, columns),
    }
}

/// What a URL cell or line holds.
pub(super) fn classify(text: &str, extra: String) -> Raw {
    let t = text.trim();
    match () {
        _ if t.is_empty() => Raw::Empty,
        _ if t.starts_with('#') => Raw::Comment,
        _ if t.chars().any(char::is_control) => Raw::Invalid,
        _ => Raw::Url { url: t.to_string(), extra },
    }
}

fn lines(path: &Path) -> anyhow::Result<RawIter> {
    let file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let (mut reader, path) = (BufReader::new(file), path.to_path_buf());
    let mut first = true;
    Ok(Box::new(std::iter::from_fn(move || {
        let mut buf = Vec::new();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) => return None,
            Ok(_) => {}
            Err(e) => return Some(Err(anyhow::anyhow!("read {}: {e}", path.display()))),
        }
        let bytes =
            if std::mem::take(&mut first) { buf.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&buf) } else { &buf };
        Some(Ok(match std::str::from_utf8(bytes) {
            Ok(s) => classify(s, String::new()),
            Err(_) => Raw::Invalid,
        }))
    })))
}

/// CSV or TSV with a header naming a `url` column; the other columns become the extra.
fn table(path: &Path, sep: u8, columns: &mut Vec<String>) -> anyhow::Result<RawIter> {
    let file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut reader = BufReader::new(file);
    if reader.fill_buf()?.starts_with(b"\xEF\xBB\xBF") {
        reader.consume(3);
    }
    // Flexible: a comment line has one field; other rows must match the header (below).
    let mut csv = csv::ReaderBuilder::new().delimiter(sep).flexible(true).from_reader(reader);
    let header: Vec<String> = csv
        .byte_headers()
        .map_err(|e| at(path, &e))?
        .iter()
        .map(|h| String::from_utf8_lossy(h).trim().to_string())
        .collect();
    let col = header.iter().position(|h| h.eq_ignore_ascii_case("url")).with_context(|| {
        format!(
            "{}: no `url` column in its header ({}); name the column of URLs `url`",
            path.display(),
            header.join(", ")
        )
    })?;
    let names = unique_names(header.iter().enumerate().filter(|(i, _)| *i != col).map(|(_, h)| h.clone()));
    columns.extend(names.iter().cloned());
    let path = path.to_path_buf();
    Ok(Box::new(csv.into_byte_records().map(move |rec| {
        let rec = rec.map_err(|e| at(&path, &e))?;
        if rec.get(0).is_some_and(|f| f.trim_ascii_start().starts_with(b"#")) {
            return Ok(Raw::Comment);
        }
        if rec.len() != names.len() + 1 {
            let line = rec.position().map_or(0, |p| p.line());
            anyhow::bail!(
                "{}:{line}: {} fields where the header has {}; quote fields that hold the separator",
                path.display(),
                rec.len(),
                names.len() + 1
            );
        }
        let Some(url) = rec.get(col) else { return Ok(Raw::Empty) };
        let Ok(url) = std::str::from_utf8(url) else { return Ok(Raw::Invalid) };
        let others = rec.iter().enumerate().filter(|(i, _)| *i != col).map(|(_, v)| v);
        let values = others.map(|v| serde_json::Value::from(String::from_utf8_lossy(v).into_owned()));
        Ok(classify(url, object(&names, values)))
    })))
}

/// "PATH:LINE: what" for a CSV error.
fn at(path: &Path, e: &csv::Error) -> anyhow::Error {
    let line = e.position().map(|p| format!(":{}", p.line())).unwrap_or_default();
    anyhow::anyhow!("{}{line}: {e}", path.display())
}

/// Column names made distinct (a repeated one gets `_2`, `_3`, ...).
pub(super) fn unique_names(names: impl Iterator<Item = String>) -> Vec<String> {
    let mut seen = HashSet::new();
    names
        .map(|n| {
            let mut name = n.clone();
            let mut i = 1;
            while !seen.insert(name.clone()) {
                i += 1;
                name = format!("{n}_{i}");
            }
            name
        })
        .collect()
}

/// One JSON object text with the columns in input order ("" when there are none).
pub(super) fn object(names: &[String], values: impl Iterator<Item = serde_json::Value>) -> String {
    if names.is_empty() {
        return String::new();
    }
    let fields: Vec<String> = names
        .iter()
        .zip(values)
        .map(|(k, v)| format!("{}:{v}", serde_json::Value::from(k.as_str())))
        .collect();
    format!("{{{}}}", fields.join(","))
}

/// The URLs of `raw`, skipping (and counting) empty lines, comments, invalid lines and
/// repeated URLs; an extra over the delegator's limit is an error naming the line.
pub(super) struct Cleaned {
    pub raw: RawIter,
    pub path: PathBuf,
    pub counts: Counts,
    seen: HashSet<u64>,
    line: u64,
}

impl Cleaned {
    pub fn new(raw: RawIter, path: &Path, columns: Vec<String>) -> Self {
        let counts = Counts { columns, ..Default::default() };
        Cleaned { raw, path: path.to_path_buf(), counts, seen: HashSet::new(), line: 0 }
    }

    fn first_time(&mut self, url: &str) -> bool {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        url.hash(&mut h);
        let h = h.finish();
        if self.seen.contains(&h) {
            return false;
        }
        if self.seen.len() < DEDUPE_MAX {
            self.seen.insert(h);
        }
        true
    }
}

impl Iterator for Cleaned {
    type Item = anyhow::Result<Row>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let raw = match self.raw.next()? {
                Ok(r) => r,
                Err(e) => return Some(Err(e)),
            };
            self.line += 1;
            let c = &mut self.counts;
            match raw {
                Raw::Empty => c.empty += 1,
                Raw::Comment => c.comments += 1,
                Raw::Invalid => c.invalid += 1,
                Raw::Url { url, extra } => {
                    if !self.first_time(&url) {
                        self.counts.duplicates += 1;
                        continue;
                    }
                    if extra.len() > super::MAX_EXTRA_BYTES {
                        return Some(Err(anyhow::anyhow!(
                            "{}: row {}: its other columns are {} bytes as JSON, more than the {}-byte limit; \
                             drop or shorten columns",
                            self.path.display(),
                            self.line,
                            extra.len(),
                            super::MAX_EXTRA_BYTES
                        )));
                    }
                    self.counts.urls += 1;
                    return Some(Ok(Row { url, extra }));
                }
            }
        }
    }
}

/// The URLs of a file (see `Cleaned`).
pub(super) fn open(path: &Path) -> anyhow::Result<Cleaned> {
    let mut columns = Vec::new();
    let raw = raw(path, &mut columns)?;
    Ok(Cleaned::new(raw, path, columns))
}

/// Boxed for the import.
pub(super) fn urls(path: &Path) -> anyhow::Result<UrlIter> {
    Ok(Box::new(open(path)?))
}

#[cfg(test)]
mod tests {
    use super::super::{check, urls, Counts, Row};
    use std::sync::Arc;

    fn write(dir: &std::path::Path, name: &str, text: &[u8]) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn rows(p: &std::path::Path) -> Vec<Row> {
        urls(p).unwrap().collect::<anyhow::Result<_>>().unwrap()
    }

    #[test]
    fn lines_skip_and_count_empty_comment_duplicate_and_invalid() {
        let dir = tempfile::tempdir().unwrap();
        let text = b"\xEF\xBB\xBFhttp://a/1.jpg\n\n# note\n  http://a/2.jpg  \r\nhttp://a/1.jpg\nbad\x00url\n\xFF\xFE\nnot a url\n";
        let p = write(dir.path(), "u.txt", text);
        let got: Vec<String> = rows(&p).into_iter().map(|r| r.url).collect();
        assert_eq!(got, ["http://a/1.jpg", "http://a/2.jpg", "not a url"]);
        let commas = write(dir.path(), "c.txt", b"http://a/x,y.jpg\n# a, b\n");
        assert_eq!(rows(&commas), [Row::from("http://a/x,y.jpg".to_string())]);
        let c = check(&p).unwrap();
        let want = Counts { urls: 3, empty: 1, comments: 1, duplicates: 1, invalid: 2, columns: vec![] };
        assert_eq!(c, want);
        assert!(c.describe().contains("skipped 5 lines"), "{}", c.describe());
    }

    #[test]
    fn csv_with_a_bom_and_tsv_carry_their_other_columns() {
        let dir = tempfile::tempdir().unwrap();
        let csv =
            write(dir.path(), "u.csv", b"\xEF\xBB\xBFid,URL,caption\n1,http://a/1.jpg,\"a, cat\"\n2,,x\n");
        assert_eq!(
            rows(&csv),
            [Row { url: "http://a/1.jpg".into(), extra: r#"{"id":"1","caption":"a, cat"}"#.into() }]
        );
        assert_eq!(check(&csv).unwrap().columns, ["id", "caption"]);
        let tsv =
            write(dir.path(), "u.tsv", b"url\tkey\nhttp://a/1.jpg\t00001\n# note\n\nhttp://a/1.jpg\t2\n");
        assert_eq!(rows(&tsv), [Row { url: "http://a/1.jpg".into(), extra: r#"{"key":"00001"}"#.into() }]);
        let c = check(&tsv).unwrap();
        assert_eq!((c.comments, c.duplicates), (1, 1), "{c:?}");
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let no_url = write(dir.path(), "bad.csv", b"id,link\n1,http://a\n");
        let e = format!("{:#}", check(&no_url).unwrap_err());
        assert!(e.contains("bad.csv") && e.contains("no `url` column"), "{e}");
        let ragged = write(dir.path(), "ragged.csv", b"id,url\n1,http://a/1\n2,http://a/2,extra\n");
        let e = format!("{:#}", check(&ragged).unwrap_err());
        assert!(e.contains("ragged.csv:3:"), "{e}");
        let empty = write(dir.path(), "empty.txt", b"\n# only a comment\n");
        let e = format!("{:#}", check(&empty).unwrap_err());
        assert!(e.contains("empty.txt: no URLs"), "{e}");
        let missing = dir.path().join("missing.txt");
        assert!(format!("{:#}", check(&missing).unwrap_err()).contains("missing.txt"));
    }

    #[test]
    fn parquet_rows_carry_typed_columns() {
        use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("u.parquet");
        let urls: ArrayRef =
            Arc::new(StringArray::from(vec![Some("http://a/1.jpg"), None, Some("http://a/2.jpg")]));
        let ids: ArrayRef = Arc::new(Int64Array::from(vec![Some(7), Some(8), None]));
        let caption: ArrayRef = Arc::new(StringArray::from(vec!["x", "y", "z"]));
        let batch = RecordBatch::try_from_iter([("id", ids), ("url", urls), ("caption", caption)]).unwrap();
        let mut w =
            parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&p).unwrap(), batch.schema(), None)
                .unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let got = rows(&p);
        assert_eq!(got[0], Row { url: "http://a/1.jpg".into(), extra: r#"{"id":7,"caption":"x"}"#.into() });
        assert_eq!(got[1].extra, r#"{"id":null,"caption":"z"}"#);
        assert_eq!(check(&p).unwrap().empty, 1);
    }
}
