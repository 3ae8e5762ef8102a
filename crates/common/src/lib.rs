//! Plumbing shared by every facesweep service.

pub mod ab;
pub mod auth;
pub mod config;
pub mod consul;
pub mod discovery;
pub mod error;
pub mod grpc;
pub mod metrics;
pub mod propagation;
pub mod shutdown;
pub mod telemetry;
pub mod tls;

pub use shutdown::Shutdown;

/// Number of low bits of a URL id that hold its ordinal within the job. SQL has the same
/// encoding as the functions `url_id`, `url_ordinal` and `job_url_id_end` (migration 0007).
pub const ORDINAL_BITS: u32 = 40;

/// Largest ordinal a job can hold.
pub const MAX_ORDINAL: i64 = (1 << ORDINAL_BITS) - 1;

/// URL id for the `ordinal`-th URL of `job_id`.
pub fn url_id(job_id: i64, ordinal: i64) -> i64 {
    (job_id << ORDINAL_BITS) | ordinal
}

/// Inclusive id range of chunk `chunk_no` of a job with `chunk_size` URLs per chunk.
pub fn chunk_id_range(job_id: i64, chunk_no: i64, chunk_size: i64) -> (i64, i64) {
    let first = url_id(job_id, chunk_no * chunk_size);
    (first, first + chunk_size - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_ids_of_a_chunk_fall_in_its_range() {
        let (lo, hi) = chunk_id_range(7, 3, 100);
        assert_eq!(lo, url_id(7, 300));
        assert_eq!(hi, url_id(7, 399));
        assert!(url_id(7, 400) > hi);
        assert!(url_id(8, 0) > url_id(7, (1 << ORDINAL_BITS) - 1));
    }
}
