//! One lock per job between what changes its set of open URLs and lease completion.

use facesweep_common::error::ServiceResult;

/// First key of the job advisory locks ("face").
const JOB_LOCK_CLASS: i32 = 0x6661_6365;

/// Serialises what changes a job's set of open URLs (exclusive: RetryUrls, AppendUrls)
/// against lease completion (shared), for the rest of the transaction.
pub async fn job_lock(tx: &mut sqlx::PgConnection, job_id: i64, exclusive: bool) -> ServiceResult<()> {
    // Two-key form, first key ours: no clash with other users of advisory locks (sqlx's own).
    let sql = if exclusive {
        "SELECT pg_advisory_xact_lock($1, $2::int)"
    } else {
        "SELECT pg_advisory_xact_lock_shared($1, $2::int)"
    };
    sqlx::query(sql).bind(JOB_LOCK_CLASS).bind(job_id).execute(tx).await?;
    Ok(())
}
