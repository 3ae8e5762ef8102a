//! Which part of an input a job already holds. A job remembers each input it was imported
//! from as segments (ListJobInputs): lines `input_from..input_from+urls` of the input at
//! ordinals `base..`, with the sha256 of the input's lines up to there. An input whose first
//! lines hash to a segment's digest is that input (the same file, interrupted or grown): the
//! import resumes after it. Any other input is new: all its lines go to the job's first free
//! ordinal. Resuming by count alone would skip the first lines of a different file.

//!
//! The "line" of a CSV, TSV or Parquet input is its `url` value per row (carried columns are
//! not hashed), so resuming does not depend on the other columns.

mod parquet_in;
mod read;
mod stdin;

use std::collections::BTreeMap;
use std::path::Path;

use facesweep_proto::{AppendUrlsRequest, InputSegment, ListJobInputsResponse};
use sha2::{Digest, Sha256};

pub use read::{kind_of, Kind};
pub use stdin::{resolve, Resolved};

/// URLs per AppendUrls message (and most held in memory at once, times the channel depth).
pub const IMPORT_MESSAGE: usize = 5_000;
/// A message is sent early once its URLs and carried columns reach this many bytes.
const IMPORT_MESSAGE_BYTES: usize = 8 << 20;
/// The delegator's limit on one URL's carried columns (services/delegator import.rs).
pub const MAX_EXTRA_BYTES: usize = 8192;

/// One URL of an input with its carried columns: a JSON object text, "" when none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub url: String,
    pub extra: String,
}

impl From<String> for Row {
    fn from(url: String) -> Row {
        Row { url, extra: String::new() }
    }
}

/// An input's URLs, one at a time.
pub type UrlIter = Box<dyn Iterator<Item = anyhow::Result<Row>> + Send>;

/// What reading an input found: the URLs it sends and the lines it skipped.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    pub urls: u64,
    pub empty: u64,
    pub comments: u64,
    pub duplicates: u64,
    pub invalid: u64,
    /// The columns carried with each URL (CSV, TSV, Parquet).
    pub columns: Vec<String>,
}

impl Counts {
    pub fn skipped(&self) -> u64 {
        self.empty + self.comments + self.duplicates + self.invalid
    }

    /// "N URLs; skipped M lines (a empty, b comments, c duplicates, d invalid); carrying x, y".
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{} URLs; skipped {} lines ({} empty, {} comments, {} duplicates, {} invalid)",
            self.urls,
            self.skipped(),
            self.empty,
            self.comments,
            self.duplicates,
            self.invalid
        );
        if !self.columns.is_empty() {
            s += &format!("; carrying columns {}", self.columns.join(", "));
        }
        s
    }
}

/// The URLs of the file at `path` (see `read`: skipped lines are not returned).
pub fn urls(path: &Path) -> anyhow::Result<UrlIter> {
    read::urls(path)
}

/// Reads the whole input once: counts, or the first error (naming the file and line). An
/// input without a single URL is an error too.
pub fn check(path: &Path) -> anyhow::Result<Counts> {
    let mut it = read::open(path)?;
    for row in it.by_ref() {
        row?;
    }
    let c = it.counts;
    anyhow::ensure!(c.urls > 0, "{}: no URLs in it ({})", path.display(), c.describe());
    Ok(c)
}

/// An input's URLs from where its import starts, with the sha256 of the lines before.
pub struct Start {
    urls: UrlIter,
    hash: Sha256,
}

impl Start {
    /// The input read again from its first line, up to `plan.resume_at` (hashed, not sent).
    /// `None` when the input has fewer lines now than when it was planned.
    pub fn reopened(mut urls: UrlIter, plan: &Plan) -> anyhow::Result<Option<Start>> {
        let mut hash = Sha256::new();
        for _ in 0..plan.resume_at {
            match urls.next() {
                Some(row) => hash_line(&mut hash, &row?.url),
                None => return Ok(None),
            }
        }
        Ok(Some(Start { urls, hash }))
    }
}

/// Where an import starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The segment the sent URLs extend: `base`, `input_from`, and `urls` already stored.
    pub base: i64,
    pub input_from: i64,
    pub stored: i64,
    /// Leading lines of the input not sent (already held by the job).
    pub resume_at: i64,
}

impl Plan {
    /// The segment as this import leaves it before sending anything: `grown_from` marks its
    /// own row, so the versions earlier imports left stay recognisable.
    fn segment(&self) -> InputSegment {
        InputSegment {
            base: self.base,
            input_from: self.input_from,
            urls: self.stored,
            digest: String::new(),
            grown_from: self.stored,
        }
    }
}

fn hash_line(h: &mut Sha256, url: &str) {
    h.update(url.as_bytes());
    h.update(b"\n");
}

fn hex(h: &Sha256) -> String {
    format!("{:x}", h.clone().finalize())
}

/// Reads the input only as far as the longest segment to find the one it continues. The
/// input comes back positioned to send when the scan stopped where the import starts (the
/// usual resume: one input per job), so the lines already held are read once.
pub fn plan(mut urls: UrlIter, held: &ListJobInputsResponse) -> anyhow::Result<(Plan, Option<Start>)> {
    let next_free = held.next_free_ordinal;
    let mut by_end: BTreeMap<i64, Vec<&InputSegment>> = BTreeMap::new();
    for s in &held.segments {
        by_end.entry(s.input_from + s.urls).or_default().push(s);
    }
    let longest = by_end.keys().next_back().copied().unwrap_or(0);
    let (mut h, mut n) = (Sha256::new(), 0i64);
    let mut best: Option<&InputSegment> = None;
    while n < longest {
        let Some(row) = urls.next() else { break };
        hash_line(&mut h, &row?.url);
        n += 1;
        let Some(segs) = by_end.get(&n) else { continue };
        let digest = hex(&h);
        // Among equal matches the job's last segment wins: it can grow in place.
        let mut matching: Vec<&InputSegment> = segs.iter().copied().filter(|s| s.digest == digest).collect();
        matching.sort_by_key(|s| s.base + s.urls == next_free);
        best = matching.pop().or(best);
    }
    let plan = match best {
        Some(s) if s.base + s.urls == next_free => {
            Plan { base: s.base, input_from: s.input_from, stored: s.urls, resume_at: s.input_from + s.urls }
        }
        // Other URLs follow it: the rest of this input starts a segment of its own.
        Some(s) => Plan {
            base: next_free,
            input_from: s.input_from + s.urls,
            stored: 0,
            resume_at: s.input_from + s.urls,
        },
        None => Plan { base: next_free, input_from: 0, stored: 0, resume_at: 0 },
    };
    let start = (n == plan.resume_at).then_some(Start { urls, hash: h });
    Ok((plan, start))
}

/// Reads URLs from `start` into AppendUrls messages, each marked with its segment as of its
/// last URL; returns how many were sent.
pub fn read_messages(
    start: Start,
    job: String,
    plan: Plan,
    tx: tokio::sync::mpsc::Sender<AppendUrlsRequest>,
) -> impl FnOnce() -> anyhow::Result<i64> {
    move || {
        let Start { mut urls, hash: mut h } = start;
        let (mut stored, mut sent) = (plan.stored, 0i64);
        loop {
            let (batch, extras) = next_message(&mut urls)?;
            if batch.is_empty() {
                return Ok(sent);
            }
            batch.iter().for_each(|u| hash_line(&mut h, u));
            let first_ordinal = plan.base + stored;
            stored += batch.len() as i64;
            let segment = InputSegment { urls: stored, digest: hex(&h), ..plan.segment() };
            let n = batch.len() as i64;
            let msg = AppendUrlsRequest {
                job: job.clone(),
                first_ordinal,
                urls: batch,
                segment: Some(segment),
                extras,
            };
            if tx.blocking_send(msg).is_err() {
                // The call failed; its error is the one reported.
                return Ok(sent);
            }
            sent += n;
        }
    }
}

/// The next message's URLs and their extras (none when no URL of it has any): up to
/// IMPORT_MESSAGE URLs or IMPORT_MESSAGE_BYTES.
fn next_message(urls: &mut UrlIter) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let (mut batch, mut extras, mut bytes) = (Vec::new(), Vec::new(), 0usize);
    while batch.len() < IMPORT_MESSAGE && bytes < IMPORT_MESSAGE_BYTES {
        let Some(row) = urls.next() else { break };
        let Row { url, extra } = row?;
        bytes += url.len() + extra.len();
        batch.push(url);
        extras.push(extra);
    }
    if extras.iter().all(String::is_empty) {
        extras.clear();
    }
    Ok((batch, extras))
}

/// The mark of the first `n` of `urls` as one segment from ordinal `base` (what an import
/// interrupted after `n` URLs leaves; tests use it).
pub fn segment_of(urls: &[String], base: i64) -> InputSegment {
    let mut h = Sha256::new();
    urls.iter().for_each(|u| hash_line(&mut h, u));
    InputSegment { base, input_from: 0, urls: urls.len() as i64, digest: hex(&h), grown_from: 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iter(v: &[&str]) -> UrlIter {
        Box::new(v.iter().map(|s| Ok(Row::from(s.to_string()))).collect::<Vec<_>>().into_iter())
    }

    fn held(segments: Vec<InputSegment>, next_free_ordinal: i64) -> ListJobInputsResponse {
        ListJobInputsResponse { segments, next_free_ordinal }
    }

    #[test]
    fn the_same_grown_or_other_input_is_recognised() {
        let a: Vec<String> = vec!["a1".into(), "a2".into()];
        let seg = segment_of(&a, 0);
        let same = plan(iter(&["a1", "a2", "a3"]), &held(vec![seg.clone()], 2)).unwrap().0;
        assert_eq!(same, Plan { base: 0, input_from: 0, stored: 2, resume_at: 2 });
        let other = plan(iter(&["b1", "b2", "b3"]), &held(vec![seg.clone()], 2)).unwrap().0;
        assert_eq!(other, Plan { base: 2, input_from: 0, stored: 0, resume_at: 0 });
        // a grew after another input followed it: its new lines get a segment of their own.
        let b = segment_of(&["b1".into()], 2);
        let grown = plan(iter(&["a1", "a2", "a3"]), &held(vec![seg, b], 3)).unwrap().0;
        assert_eq!(grown, Plan { base: 3, input_from: 2, stored: 0, resume_at: 2 });
    }
}
