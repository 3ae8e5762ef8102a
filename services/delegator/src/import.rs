//! Bulk import: COPY into a temp table, then insert what is new. Ordinals come from the
//! client, so re-importing the same input is a no-op rather than a duplicate.

use facesweep_common::error::{ServiceError, ServiceResult};
use facesweep_common::{url_id, MAX_ORDINAL};
use sqlx::PgPool;

use crate::joblock::job_lock;

/// Stores `urls` as ordinals `first..`; returns how many were new.
pub async fn append(
    pool: &PgPool,
    job_id: i64,
    chunk_size: i32,
    first: i64,
    urls: &[String],
) -> ServiceResult<i64> {
    if urls.is_empty() {
        return Ok(0);
    }
    check_ordinals(first, urls.len())?;
    let mut data = String::with_capacity(urls.iter().map(|u| u.len() + 24).sum());
    for (i, u) in urls.iter().enumerate() {
        if u.contains('\0') {
            return Err(ServiceError::InvalidArgument(format!(
                "url at ordinal {} contains a NUL byte",
                first + i as i64
            )));
        }
        data.push_str(&url_id(job_id, first + i as i64).to_string());
        data.push('\t');
        escape_copy_text(u.trim(), &mut data);
        data.push('\n');
    }
    let mut tx = pool.begin().await?;
    // New URLs re-open chunks: not while a completion of this job decides done/pending.
    job_lock(&mut tx, job_id, true).await?;
    crate::lifecycle::accepts_urls(&mut tx, job_id).await?;
    sqlx::query("CREATE TEMP TABLE IF NOT EXISTS urls_in (id BIGINT, url TEXT) ON COMMIT DELETE ROWS")
        .execute(&mut *tx)
        .await?;
    let mut copy = tx.copy_in_raw("COPY urls_in (id, url) FROM STDIN").await?;
    copy.send(data.as_bytes()).await?;
    copy.finish().await?;
    // New URLs (re-)open their chunks; already-present ones change nothing. Data-modifying
    // CTEs run to completion whether or not the final SELECT reads them.
    let inserted: i64 = sqlx::query_scalar(
        "WITH ins AS (
             INSERT INTO urls (id, job_id, url) SELECT id, $1, url FROM urls_in
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
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(inserted)
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
}
