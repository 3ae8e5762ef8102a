//! Bulk import: COPY into a temp table, then insert what is new. Ordinals come from the
//! client, so re-importing the same input is a no-op rather than a duplicate.

use facesweep_common::error::{ServiceError, ServiceResult};
use facesweep_common::{url_id, MAX_ORDINAL};
use facesweep_proto::InputSegment;
use sqlx::{PgPool, Postgres, Transaction};

use facesweep_store::jobstate::{transition_in, Action};

/// Longest URL stored as given. A longer one could make a lease (and the fetcher's message)
/// undeliverable; it is stored truncated with the terminal status `invalid_url` instead.
pub const MAX_URL_BYTES: usize = 8192;

/// Largest carried-columns object per URL (AppendUrlsRequest.extras): refused beyond, as the
/// client can shorten its input's columns, unlike a URL it must fetch as given.
pub const MAX_EXTRA_BYTES: usize = 8192;

/// Stores `urls` (with their carried columns `extras`, empty or one per URL) as ordinals
/// `first..`, and `segment` (the input these URLs end, see
/// migration 0016) in the same transaction, so a resumed import never skips URLs that were
/// not stored; returns how many were new.
pub async fn append(
    pool: &PgPool,
    job_id: i64,
    chunk_size: i32,
    first: i64,
    (urls, extras): (&[String], &[String]),
    segment: Option<&InputSegment>,
) -> ServiceResult<i64> {
    if urls.is_empty() {
        return Ok(0);
    }
    check_ordinals(first, urls.len())?;
    if let Some(seg) = segment {
        check_segment(seg, first, urls.len())?;
    }
    check_extras(first, urls.len(), extras)?;
    let rows = copy_rows(job_id, first, urls, extras)?;
    let mut tx = pool.begin().await?;
    // Under the job's exclusive lock (new URLs re-open chunks: not while a completion of
    // this job decides done/pending), and only for jobs that will process them.
    transition_in(&mut tx, job_id, Action::Append).await?;
    let inserted = store_rows(&mut tx, job_id, chunk_size, &rows.data).await?;
    reject_long(&mut tx, job_id, &rows.long).await?;
    if let Some(seg) = segment {
        mark_segment(&mut tx, job_id, seg).await?;
    }
    tx.commit().await?;
    Ok(inserted)
}

/// COPY text of one batch, and the over-long URLs in it: (id, length in bytes).
struct CopyRows {
    data: String,
    long: Vec<(i64, usize)>,
}

fn copy_rows(job_id: i64, first: i64, urls: &[String], extras: &[String]) -> ServiceResult<CopyRows> {
    let mut data = String::with_capacity(urls.iter().map(|u| u.len().min(MAX_URL_BYTES) + 24).sum());
    let mut long = Vec::new();
    for (i, u) in urls.iter().enumerate() {
        let ordinal = first + i as i64;
        if u.contains('\0') {
            return Err(ServiceError::InvalidArgument(format!(
                "url at ordinal {ordinal} contains a NUL byte"
            )));
        }
        let id = url_id(job_id, ordinal);
        let u = u.trim();
        data.push_str(&id.to_string());
        data.push('\t');
        if u.len() > MAX_URL_BYTES {
            long.push((id, u.len()));
            escape_copy_text(truncate(u, MAX_URL_BYTES), &mut data);
            data.push('…');
        } else {
            escape_copy_text(u, &mut data);
        }
        data.push('\t');
        match extras.get(i).filter(|e| !e.is_empty()) {
            Some(e) => escape_copy_text(e, &mut data),
            None => data.push_str("\\N"),
        }
        data.push('\n');
    }
    Ok(CopyRows { data, long })
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Inserts the rows that are new; returns how many.
async fn store_rows(
    tx: &mut Transaction<'_, Postgres>,
    job_id: i64,
    chunk_size: i32,
    data: &str,
) -> ServiceResult<i64> {
    sqlx::query(
        "CREATE TEMP TABLE IF NOT EXISTS urls_in (id BIGINT, url TEXT, extra TEXT) ON COMMIT DELETE ROWS",
    )
    .execute(&mut **tx)
    .await?;
    let mut copy = tx.copy_in_raw("COPY urls_in (id, url, extra) FROM STDIN").await?;
    copy.send(data.as_bytes()).await?;
    copy.finish().await?;
    // New URLs (re-)open their chunks; already-present ones change nothing. Data-modifying
    // CTEs run to completion whether or not the final SELECT reads them.
    Ok(sqlx::query_scalar(
        "WITH ins AS (
             INSERT INTO urls (id, job_id, url, extra) SELECT id, $1, url, extra FROM urls_in
             ON CONFLICT (id) DO NOTHING RETURNING id),
         ch AS (
             INSERT INTO chunks (job_id, chunk_no)
             SELECT DISTINCT $1, url_ordinal(id) / $2 FROM ins
             ON CONFLICT (job_id, chunk_no) DO UPDATE SET state = 'pending', updated_at = now()
               WHERE chunks.state = 'done'),
         tot AS (
             UPDATE jobs SET total_urls = total_urls + (SELECT count(*) FROM ins) WHERE id = $1)
         SELECT count(*) FROM ins",
    )
    .bind(job_id)
    .bind(chunk_size as i64)
    .fetch_one(&mut **tx)
    .await?)
}

/// Over-long URLs end at once with `invalid_url` (a re-sent one keeps its result), counted
/// in the same transaction like every other writer of url_results.
async fn reject_long(
    tx: &mut Transaction<'_, Postgres>,
    job_id: i64,
    long: &[(i64, usize)],
) -> ServiceResult<()> {
    if long.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = long.iter().map(|(id, _)| *id).collect();
    let reasons: Vec<String> = long
        .iter()
        .map(|(_, n)| format!("URL is {n} bytes, longer than the {MAX_URL_BYTES}-byte limit"))
        .collect();
    facesweep_store::terminal::insert_status(tx, job_id, "invalid_url", &ids, &reasons).await?;
    Ok(())
}

/// Carried columns: none, or one per URL, each a JSON object of at most MAX_EXTRA_BYTES.
fn check_extras(first: i64, n: usize, extras: &[String]) -> ServiceResult<()> {
    if !extras.is_empty() && extras.len() != n {
        return Err(ServiceError::InvalidArgument(format!(
            "{} extras for {n} URLs: give one per URL (\"\" for none) or none at all",
            extras.len()
        )));
    }
    for (i, e) in extras.iter().enumerate().filter(|(_, e)| !e.is_empty()) {
        let ordinal = first + i as i64;
        if e.len() > MAX_EXTRA_BYTES {
            return Err(ServiceError::InvalidArgument(format!(
                "the carried columns of the URL at ordinal {ordinal} are {} bytes, more than the \
                 {MAX_EXTRA_BYTES}-byte limit: drop or shorten columns of the input",
                e.len()
            )));
        }
        if e.contains('\0') || serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(e).is_err()
        {
            return Err(ServiceError::InvalidArgument(format!(
                "the carried columns of the URL at ordinal {ordinal} are not one JSON object"
            )));
        }
    }
    Ok(())
}

/// A segment mark must end exactly at the message's last URL and carry a sha256.
fn check_segment(seg: &InputSegment, first: i64, n: usize) -> ServiceResult<()> {
    let ends_here = seg.base <= first && seg.base.checked_add(seg.urls) == first.checked_add(n as i64);
    let digest_ok = seg.digest.len() == 64 && seg.digest.bytes().all(|b| b.is_ascii_hexdigit());
    if ends_here && digest_ok && seg.input_from >= 0 {
        return Ok(());
    }
    Err(ServiceError::InvalidArgument(format!(
        "input segment (base {}, {} URLs, digest {:?}) does not end at ordinal {} or has no sha256 hex digest",
        seg.base,
        seg.urls,
        seg.digest,
        first + n as i64
    )))
}

/// Grows this import's row of the segment (never shrinks it: a re-sent older message changes
/// nothing); rows of earlier imports of the segment stay, as versions of the input.
async fn mark_segment(
    tx: &mut Transaction<'_, Postgres>,
    job_id: i64,
    seg: &InputSegment,
) -> ServiceResult<()> {
    sqlx::query(
        "INSERT INTO job_inputs (job_id, base, input_from, urls, digest, grown_from)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (job_id, base, grown_from) DO UPDATE SET urls = EXCLUDED.urls, digest = EXCLUDED.digest
           WHERE job_inputs.urls < EXCLUDED.urls AND job_inputs.input_from = EXCLUDED.input_from",
    )
    .bind(job_id)
    .bind(seg.base)
    .bind(seg.input_from)
    .bind(seg.urls)
    .bind(seg.digest.to_ascii_lowercase())
    .bind(seg.grown_from.clamp(0, seg.urls))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The job's input segments, and the first ordinal that neither a URL nor a segment uses.
pub async fn list_inputs(
    pool: &PgPool,
    job_id: i64,
    next_ordinal: i64,
) -> ServiceResult<(Vec<InputSegment>, i64)> {
    let rows: Vec<(i64, i64, i64, String, i64)> = sqlx::query_as(
        "SELECT base, input_from, urls, digest, grown_from FROM job_inputs WHERE job_id = $1
         ORDER BY base, grown_from",
    )
    .bind(job_id)
    .fetch_all(pool)
    .await?;
    let end = rows.iter().map(|(base, _, urls, _, _)| base + urls).max().unwrap_or(0);
    let segments = rows
        .into_iter()
        .map(|(base, input_from, urls, digest, grown_from)| InputSegment {
            base,
            input_from,
            urls,
            digest,
            grown_from,
        })
        .collect();
    Ok((segments, end.max(next_ordinal)))
}

/// `n` URLs from ordinal `first` must fit in 0..=MAX_ORDINAL (no overflow on the way).
pub fn check_ordinals(first: i64, n: usize) -> ServiceResult<()> {
    let fits =
        first >= 0 && (n == 0 || first.checked_add(n as i64 - 1).is_some_and(|last| last <= MAX_ORDINAL));
    if fits {
        return Ok(());
    }
    Err(ServiceError::InvalidArgument(format!(
        "{n} URLs from ordinal {first} do not fit in ordinals 0..={MAX_ORDINAL}"
    )))
}

/// COPY text format: backslash, tab, newline and carriage return must be escaped.
fn escape_copy_text(s: &str, out: &mut String) {
    for ch in s.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinal_ranges_are_checked_without_overflow() {
        assert!(check_ordinals(0, 10).is_ok());
        assert!(check_ordinals(MAX_ORDINAL, 1).is_ok());
        assert!(check_ordinals(MAX_ORDINAL, 2).is_err());
        assert!(check_ordinals(i64::MAX - 1, 5).is_err());
        assert!(check_ordinals(i64::MAX, 0).is_ok(), "an empty message is harmless");
        assert!(check_ordinals(-1, 1).is_err());
    }

    #[test]
    fn copy_escaping_keeps_every_character() {
        let mut out = String::new();
        escape_copy_text("a\\b\tc\nd\re", &mut out);
        assert_eq!(out, "a\\\\b\\tc\\nd\\re");
    }

    #[test]
    fn long_urls_are_cut_on_a_character_boundary() {
        assert_eq!(truncate("aé", 2), "a");
        assert_eq!(truncate("abc", 8), "abc");
        let rows = copy_rows(1, 0, &["x".repeat(MAX_URL_BYTES + 5), "http://a".into()], &[]).unwrap();
        assert_eq!(rows.long, vec![(url_id(1, 0), MAX_URL_BYTES + 5)]);
        assert!(rows.data.lines().next().unwrap().ends_with("…\t\\N"));
    }

    #[test]
    fn extras_are_one_bounded_object_per_url() {
        assert!(check_extras(0, 2, &[]).is_ok());
        assert!(check_extras(0, 2, &["{\"a\":1}".into(), "".into()]).is_ok());
        assert!(check_extras(0, 2, &["{}".into()]).is_err(), "one per URL");
        assert!(check_extras(0, 1, &["[1]".into()]).is_err(), "an object");
        let big = format!("{{\"a\":\"{}\"}}", "x".repeat(MAX_EXTRA_BYTES));
        assert!(check_extras(0, 1, &[big]).is_err());
        let rows = copy_rows(1, 0, &["http://a".into()], &["{\"k\":\"a\\tb\"}".into()]).unwrap();
        assert!(rows.data.ends_with("\t{\"k\":\"a\\\\tb\"}\n"), "{}", rows.data);
    }
}
