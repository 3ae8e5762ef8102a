//! Every write of `url_results`: each function applies the result counters (migration 0003,
//! `counters`) in the caller's transaction, so progress stays exact without counting rows.
//! First terminal result wins (`ON CONFLICT DO NOTHING`); only rows written are counted.

use std::collections::{BTreeMap, HashSet};

use facesweep_proto::UrlResult;
use sqlx::{PgPool, Postgres, Transaction};

use crate::counters;

type Tx<'a, 'c> = &'a mut Transaction<'c, Postgres>;

/// URL ordinals written per transaction by the range functions (`cancel_open`,
/// `delete_status`, `delete_urls`): memory and lock time stay O(page) for any job size.
pub const PAGE: i64 = 50_000;

/// Ordinal ranges `[from, to)` of one page each, covering `0..end`.
pub fn pages(end: i64) -> impl Iterator<Item = (i64, i64)> {
    (0..end).step_by(PAGE as usize).map(move |from| (from, (from + PAGE).min(end)))
}

/// Stores the results a fetcher reported (the job comes from each URL's row; ids without
/// one are skipped) and counts them per status and, for `ok`, per model. Returns the ids
/// stored now: a URL that already had a result is not among them.
pub async fn insert_terminal(tx: Tx<'_, '_>, rows: &[&UrlResult]) -> Result<HashSet<i64>, sqlx::Error> {
    let mut cols = Columns::default();
    for r in rows {
        cols.push(r);
    }
    let inserted: Vec<Inserted> = sqlx::query_as(
        "INSERT INTO url_results (url_id, job_id, status, reason, http_status, width, height,
             bytes, face_count, model_id, download_ms, decode_ms, detect_ms)
         SELECT t.url_id, u.job_id, t.status, t.reason, t.http_status, t.width, t.height,
             t.bytes, t.face_count, t.model_id, t.download_ms, t.decode_ms, t.detect_ms
         FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::int[], $5::int[], $6::int[],
             $7::bigint[], $8::int[], $9::text[], $10::real[], $11::real[], $12::real[])
           AS t(url_id, status, reason, http_status, width, height, bytes, face_count,
             model_id, download_ms, decode_ms, detect_ms)
         JOIN urls u ON u.id = t.url_id
         ORDER BY t.url_id
         ON CONFLICT (url_id) DO NOTHING
         RETURNING url_id, job_id, status, model_id, face_count",
    )
    .bind(&cols.url_id)
    .bind(&cols.status)
    .bind(&cols.reason)
    .bind(&cols.http_status)
    .bind(&cols.width)
    .bind(&cols.height)
    .bind(&cols.bytes)
    .bind(&cols.face_count)
    .bind(&cols.model_id)
    .bind(&cols.download_ms)
    .bind(&cols.decode_ms)
    .bind(&cols.detect_ms)
    .fetch_all(&mut **tx)
    .await?;
    let (statuses, models) = counter_deltas(&inserted);
    counters::add(tx, &statuses).await?;
    counters::add_models(tx, &models).await?;
    Ok(inserted.into_iter().map(|r| r.url_id).collect())
}

/// Gives each of `ids` of `job_id` the terminal `status` with its reason (`reasons`, one per
/// id) when it has no result yet, as the delegator decides (`abandoned`, `invalid_url`).
/// Returns how many it stored.
pub async fn insert_status(
    tx: Tx<'_, '_>,
    job_id: i64,
    status: &str,
    ids: &[i64],
    reasons: &[String],
) -> Result<i64, sqlx::Error> {
    let n: i64 = sqlx::query_scalar(
        "WITH ins AS (
             INSERT INTO url_results (url_id, job_id, status, reason)
             SELECT id, $1, $4, reason FROM UNNEST($2::bigint[], $3::text[]) AS t(id, reason)
             ON CONFLICT (url_id) DO NOTHING RETURNING 1)
         SELECT count(*) FROM ins",
    )
    .bind(job_id)
    .bind(ids)
    .bind(reasons)
    .bind(status)
    .fetch_one(&mut **tx)
    .await?;
    add_status(tx, job_id, status, n).await?;
    Ok(n)
}

/// `cancelled` for every URL of ordinals `[from, to)` of the job without a result; returns
/// how many it marked.
pub async fn cancel_open(tx: Tx<'_, '_>, job_id: i64, from: i64, to: i64) -> Result<i64, sqlx::Error> {
    let n: i64 = sqlx::query_scalar(
        "WITH ins AS (
             INSERT INTO url_results (url_id, job_id, status, reason)
             SELECT u.id, $1, 'cancelled', 'the job was cancelled before this URL was processed'
             FROM urls u
             WHERE u.id BETWEEN url_id($1, $2) AND url_id($1, $3 - 1)
               AND NOT EXISTS (SELECT 1 FROM url_results r WHERE r.url_id = u.id)
             ON CONFLICT (url_id) DO NOTHING RETURNING 1)
         SELECT count(*) FROM ins",
    )
    .bind(job_id)
    .bind(from)
    .bind(to)
    .fetch_one(&mut **tx)
    .await?;
    add_status(tx, job_id, "cancelled", n).await?;
    Ok(n)
}

/// Deletes the results with `status` of ordinals `[from, to)` (with their faces and
/// attempts) and re-opens their chunks, so the URLs are fetched again; returns how many.
pub async fn delete_status(
    tx: Tx<'_, '_>,
    job_id: i64,
    from: i64,
    to: i64,
    status: &str,
) -> Result<i64, sqlx::Error> {
    // A literal `status <> 'ok'` lets the planner use the index of failed results
    // (a bound parameter cannot prove the index's predicate).
    let failed = if status == "ok" { "" } else { "AND status <> 'ok'" };
    let sql = format!(
        "WITH gone AS (
             DELETE FROM url_results
             WHERE url_id BETWEEN url_id($1, $2) AND url_id($1, $3 - 1) AND status = $4 {FAILED}
             RETURNING url_id, model_id, face_count),
         -- Only ok results have faces (results refuses faces on failures).
         f AS (DELETE FROM faces WHERE $4 = 'ok'
               AND url_id BETWEEN url_id($1, $2) AND url_id($1, $3 - 1)
               AND url_id IN (SELECT url_id FROM gone)),
         a AS (DELETE FROM url_attempts WHERE url_id IN (SELECT url_id FROM gone)),
         c AS (UPDATE chunks c SET state = 'pending', failures = 0, updated_at = now()
               FROM jobs j
               WHERE j.id = c.job_id AND c.job_id = $1 AND c.state = 'done'
                 AND c.chunk_no IN (SELECT DISTINCT url_ordinal(url_id) / j.chunk_size FROM gone))
         SELECT model_id, count(*), sum(face_count)::bigint FROM gone GROUP BY model_id",
        FAILED = failed
    );
    let gone: Vec<(String, i64, i64)> =
        sqlx::query_as(&sql).bind(job_id).bind(from).bind(to).bind(status).fetch_all(&mut **tx).await?;
    let n: i64 = gone.iter().map(|g| g.1).sum();
    add_status(tx, job_id, status, -n).await?;
    if status == "ok" {
        let models = gone.into_iter().map(|(m, n, faces)| ((job_id, m), (-n, -faces))).collect();
        counters::add_models(tx, &models).await?;
    }
    Ok(n)
}

/// Tables with rows per job (besides `jobs`), emptied last when a job is deleted: a table
/// keyed by job added by a later migration must be listed here (tests check none is left).
const JOB_TABLES: [&str; 5] =
    ["chunks", "job_status_counts", "job_chunk_counts", "job_model_counts", "job_minute_counts"];

/// Deletes the URLs of ordinals `[from, to)` with their results, faces and attempts (the
/// job's counters go with it in `delete_job_rows`); returns how many URLs.
pub async fn delete_urls(pool: &PgPool, job_id: i64, from: i64, to: i64) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "WITH f AS (DELETE FROM faces WHERE url_id BETWEEN url_id($1, $2) AND url_id($1, $3 - 1)),
              r AS (DELETE FROM url_results WHERE url_id BETWEEN url_id($1, $2) AND url_id($1, $3 - 1)),
              a AS (DELETE FROM url_attempts WHERE url_id BETWEEN url_id($1, $2) AND url_id($1, $3 - 1)),
              u AS (DELETE FROM urls WHERE id BETWEEN url_id($1, $2) AND url_id($1, $3 - 1) RETURNING 1)
         SELECT count(*) FROM u",
    )
    .bind(job_id)
    .bind(from)
    .bind(to)
    .fetch_one(pool)
    .await
}

/// Every table keyed by the job, counters included, then the job row (after `delete_urls`).
pub async fn delete_job_rows(tx: Tx<'_, '_>, job_id: i64) -> Result<(), sqlx::Error> {
    for table in JOB_TABLES {
        sqlx::query(&format!("DELETE FROM {table} WHERE job_id = $1"))
            .bind(job_id)
            .execute(&mut **tx)
            .await?;
    }
    sqlx::query("DELETE FROM jobs WHERE id = $1").bind(job_id).execute(&mut **tx).await?;
    Ok(())
}

async fn add_status(tx: Tx<'_, '_>, job_id: i64, status: &str, n: i64) -> Result<(), sqlx::Error> {
    if n == 0 {
        return Ok(());
    }
    counters::add(tx, &[((job_id, status.to_string()), n)].into_iter().collect()).await
}

/// A result row just inserted: what the counters need of it.
#[derive(sqlx::FromRow)]
struct Inserted {
    url_id: i64,
    job_id: i64,
    status: String,
    model_id: String,
    face_count: i32,
}

/// Counter deltas of the rows just inserted: per (job, status), and for successful results
/// their URLs and faces per (job, model that produced them).
type Deltas = (BTreeMap<(i64, String), i64>, BTreeMap<(i64, String), (i64, i64)>);

fn counter_deltas(inserted: &[Inserted]) -> Deltas {
    let (mut statuses, mut models) = (BTreeMap::new(), BTreeMap::new());
    for r in inserted {
        *statuses.entry((r.job_id, r.status.clone())).or_insert(0) += 1;
        if r.status == "ok" {
            let d = models.entry((r.job_id, r.model_id.clone())).or_insert((0, 0));
            *d = (d.0 + 1, d.1 + i64::from(r.face_count));
        }
    }
    (statuses, models)
}

/// `url_results` columns of a batch, one array each for UNNEST.
#[derive(Default)]
struct Columns {
    url_id: Vec<i64>,
    status: Vec<String>,
    reason: Vec<String>,
    http_status: Vec<i32>,
    width: Vec<i32>,
    height: Vec<i32>,
    bytes: Vec<i64>,
    face_count: Vec<i32>,
    model_id: Vec<String>,
    download_ms: Vec<f32>,
    decode_ms: Vec<f32>,
    detect_ms: Vec<f32>,
}

impl Columns {
    fn push(&mut self, r: &UrlResult) {
        self.url_id.push(r.url_id);
        self.status.push(r.status().short_name().to_string());
        self.reason.push(r.reason.clone());
        self.http_status.push(r.http_status as i32);
        self.width.push(r.width as i32);
        self.height.push(r.height as i32);
        self.bytes.push(r.bytes as i64);
        self.face_count.push(r.faces.len() as i32);
        self.model_id.push(r.model_id.clone());
        self.download_ms.push(r.download_ms);
        self.decode_ms.push(r.decode_ms);
        self.detect_ms.push(r.detect_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_cover_every_ordinal_once() {
        assert_eq!(pages(0).count(), 0);
        assert_eq!(pages(1).collect::<Vec<_>>(), [(0, 1)]);
        let all: Vec<_> = pages(2 * PAGE + 3).collect();
        assert_eq!(all, [(0, PAGE), (PAGE, 2 * PAGE), (2 * PAGE, 2 * PAGE + 3)]);
    }

    #[test]
    fn only_ok_results_count_per_model() {
        let row = |job_id, status: &str, face_count| Inserted {
            url_id: 0,
            job_id,
            status: status.into(),
            model_id: "m".into(),
            face_count,
        };
        let (statuses, models) = counter_deltas(&[row(1, "ok", 2), row(1, "ok", 3), row(1, "http_error", 0)]);
        assert_eq!(statuses[&(1, "ok".to_string())], 2);
        assert_eq!(statuses[&(1, "http_error".to_string())], 1);
        assert_eq!(models.len(), 1);
        assert_eq!(models[&(1, "m".to_string())], (2, 5));
    }
}
