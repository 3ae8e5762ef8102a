//! Per-job result counters (see migration 0003): every writer of `url_results` (`terminal`)
//! calls `add` in the same transaction, so progress is exact without counting rows.

use std::collections::BTreeMap;

use sqlx::{Postgres, Transaction};

/// Adds `delta` results per (job, status) for this transaction; negative for deletions.
pub async fn add(
    tx: &mut Transaction<'_, Postgres>,
    deltas: &BTreeMap<(i64, String), i64>,
) -> Result<(), sqlx::Error> {
    if deltas.is_empty() {
        return Ok(());
    }
    let slot = rand::random::<u8>() as i16 % 16;
    // BTreeMap order = one global lock order: concurrent writers cannot deadlock.
    let mut jobs = Vec::with_capacity(deltas.len());
    let mut statuses = Vec::with_capacity(deltas.len());
    let mut counts = Vec::with_capacity(deltas.len());
    for ((j, s), c) in deltas {
        jobs.push(*j);
        statuses.push(s.clone());
        counts.push(*c);
    }
    sqlx::query(
        "INSERT INTO job_status_counts (job_id, status, slot, count)
         SELECT j, s, $4, c FROM UNNEST($1::bigint[], $2::text[], $3::bigint[]) AS t(j, s, c)
         ON CONFLICT (job_id, status, slot) DO UPDATE SET count = job_status_counts.count + EXCLUDED.count",
    )
    .bind(&jobs)
    .bind(&statuses)
    .bind(&counts)
    .bind(slot)
    .execute(&mut **tx)
    .await?;
    let mut per_job: BTreeMap<i64, i64> = BTreeMap::new();
    for ((j, _), c) in deltas {
        if *c > 0 {
            *per_job.entry(*j).or_default() += c;
        }
    }
    if !per_job.is_empty() {
        let (jobs, counts): (Vec<i64>, Vec<i64>) = per_job.into_iter().unzip();
        sqlx::query(
            "INSERT INTO job_minute_counts (job_id, minute, slot, count, last_at)
             SELECT j, date_trunc('minute', now()), $3, c, clock_timestamp()
             FROM UNNEST($1::bigint[], $2::bigint[]) AS t(j, c)
             ON CONFLICT (job_id, minute, slot) DO UPDATE SET count = job_minute_counts.count + EXCLUDED.count,
                 last_at = greatest(job_minute_counts.last_at, EXCLUDED.last_at)",
        )
        .bind(&jobs)
        .bind(&counts)
        .bind(slot)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Successful results and their faces per (job, model that produced them): what A/B jobs
/// compare (migration 0014). Same transaction and slot spreading as `add`.
pub async fn add_models(
    tx: &mut Transaction<'_, Postgres>,
    deltas: &BTreeMap<(i64, String), (i64, i64)>,
) -> Result<(), sqlx::Error> {
    if deltas.is_empty() {
        return Ok(());
    }
    let slot = rand::random::<u8>() as i16 % 16;
    let mut jobs = Vec::with_capacity(deltas.len());
    let mut models = Vec::with_capacity(deltas.len());
    let (mut urls, mut faces) = (Vec::with_capacity(deltas.len()), Vec::with_capacity(deltas.len()));
    for ((j, m), (u, f)) in deltas {
        jobs.push(*j);
        models.push(m.clone());
        urls.push(*u);
        faces.push(*f);
    }
    sqlx::query(
        "INSERT INTO job_model_counts (job_id, model_id, slot, ok_urls, faces)
         SELECT j, m, $5, u, f FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::bigint[]) AS t(j, m, u, f)
         ON CONFLICT (job_id, model_id, slot) DO UPDATE SET ok_urls = job_model_counts.ok_urls + EXCLUDED.ok_urls,
             faces = job_model_counts.faces + EXCLUDED.faces",
    )
    .bind(&jobs)
    .bind(&models)
    .bind(&urls)
    .bind(&faces)
    .bind(slot)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
