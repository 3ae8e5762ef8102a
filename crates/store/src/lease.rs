//! What proves a lease: the job, chunk and token it names, the secret handed out with it and
//! the fetcher it was granted to. One predicate for every writer that acts under a lease
//! (delegator renew/complete/release, results Record), so none can check less.

use rand::RngCore;

/// True for the chunk row `c` when the lease `$1..=$5` (job, chunk, token, secret, owner:
/// bind them with `bind_lease!`) holds it now. A query's own parameters start at `$6`.
pub const LEASE_HELD: &str = "c.job_id = $1 AND c.chunk_no = $2 AND c.token = $3 AND c.state = 'leased'
    AND c.secret_hash = sha256(convert_to($4, 'UTF8')) AND c.lease_owner = $5";

/// Locks the lease's chunk row (FOR SHARE) for the rest of `tx` if `lease` holds it now,
/// and returns the URL ids it covers (`lease_first..=lease_last`); `None` when it does not.
pub async fn lock_held(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    lease: &facesweep_proto::LeaseRef,
) -> Result<Option<(i64, i64)>, sqlx::Error> {
    let sql = format!("SELECT c.lease_first, c.lease_last FROM chunks c WHERE {LEASE_HELD} FOR SHARE");
    let held: Option<(Option<i64>, Option<i64>)> =
        crate::bind_lease!(sqlx::query_as(&sql), lease).fetch_optional(&mut **tx).await?;
    Ok(match held {
        Some((Some(first), Some(last))) => Some((first, last)),
        _ => None,
    })
}

/// SQL for the stored form of a new secret passed as `$n` (only its hash is kept).
pub fn secret_hash_sql(n: usize) -> String {
    format!("sha256(convert_to(${n}, 'UTF8'))")
}

/// A lease as a holder presents it must carry the secret and fetcher id it was granted with.
pub fn check_presented(
    lease: &facesweep_proto::LeaseRef,
) -> Result<(), facesweep_common::error::ServiceError> {
    if lease.secret.is_empty() || lease.secret.len() > 128 || lease.fetcher_id.is_empty() {
        return Err(facesweep_common::error::ServiceError::InvalidArgument(
            "lease needs the secret and fetcher_id it was granted with".into(),
        ));
    }
    Ok(())
}

/// A new lease secret: 128 bits from the OS's CSPRNG, as 32 hex digits.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Binds a `LeaseRef` as `$1..=$5` of a query using `LEASE_HELD`.
#[macro_export]
macro_rules! bind_lease {
    ($q:expr, $lease:expr) => {{
        let l: &facesweep_proto::LeaseRef = $lease;
        $q.bind(l.job_id)
            .bind(l.chunk_no)
            .bind(l.fencing_token)
            .bind(l.secret.clone())
            .bind(l.fetcher_id.clone())
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_128_bit_hex_and_differ() {
        let (a, b) = (new_secret(), new_secret());
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
