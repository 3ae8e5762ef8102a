//! Elastic shards (`--membership-timeout-secs`): every delegator heartbeats a row in
//! `delegator_members`; the live rows in name order give each one its (index, count), so a
//! joining delegator takes a share at its next heartbeat and a dead one's share is served by
//! the others once its row is older than the timeout — no restart with a new N. While members
//! disagree for a heartbeat two of them may consider the same chunk: the lease CAS (one
//! UPDATE of a pending row, `FOR UPDATE SKIP LOCKED`) still hands it out once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use facesweep_common::Shutdown;
use sqlx::PgPool;

/// Which chunks this instance owns: `chunk_no % count == index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

/// The shard an instance serves now, shared between the heartbeat and the store.
#[derive(Debug)]
pub struct ShardCell(AtomicU64);

impl ShardCell {
    pub fn new(s: Shard) -> Arc<Self> {
        Arc::new(ShardCell(AtomicU64::new(Self::pack(s))))
    }

    fn pack(s: Shard) -> u64 {
        ((s.index as u64) << 32) | s.count as u64
    }

    pub fn get(&self) -> Shard {
        let v = self.0.load(Ordering::Relaxed);
        Shard { index: (v >> 32) as u32, count: v as u32 }
    }

    /// Sets the shard; true when it changed.
    pub fn update(&self, s: Shard) -> bool {
        self.0.swap(Self::pack(s), Ordering::Relaxed) != Self::pack(s)
    }
}

/// Records `me` alive and returns this instance's shard among the live members.
pub async fn beat(pool: &PgPool, me: &str, timeout: Duration) -> Result<Shard, sqlx::Error> {
    let secs = timeout.as_secs_f64();
    let live: Vec<String> = sqlx::query_scalar(
        "WITH up AS (INSERT INTO delegator_members (member, seen_at) VALUES ($1, now())
                     ON CONFLICT (member) DO UPDATE SET seen_at = now()),
              -- Rows of members long gone are removed by whoever beats next.
              gone AS (DELETE FROM delegator_members WHERE seen_at < now() - make_interval(secs => $2 * 10))
         SELECT member FROM delegator_members WHERE seen_at > now() - make_interval(secs => $2)
         UNION SELECT $1 ORDER BY 1",
    )
    .bind(me)
    .bind(secs)
    .fetch_all(pool)
    .await?;
    let index = live.iter().position(|m| m == me).unwrap_or(0) as u32;
    Ok(Shard { index, count: live.len().max(1) as u32 })
}

/// Heartbeats every third of `timeout` and updates `cell`; on shutdown the row is removed,
/// so the others take over this share at their next heartbeat rather than after a timeout.
pub async fn run(pool: PgPool, me: String, timeout: Duration, cell: Arc<ShardCell>, stop: Shutdown) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(timeout / 3) => {}
        }
        match tokio::time::timeout(timeout, beat(&pool, &me, timeout)).await {
            Ok(Ok(shard)) => {
                if cell.update(shard) {
                    tracing::info!(?shard, member = %me, "delegator membership changed: new shard");
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "membership heartbeat failed"),
            Err(_) => tracing::warn!("membership heartbeat timed out"),
        }
    }
    let leave = sqlx::query("DELETE FROM delegator_members WHERE member = $1").bind(&me).execute(&pool);
    let _ = tokio::time::timeout(Duration::from_secs(2), leave).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cell_round_trips_and_reports_changes() {
        let c = ShardCell::new(Shard { index: 1, count: 3 });
        assert_eq!(c.get(), Shard { index: 1, count: 3 });
        assert!(!c.update(Shard { index: 1, count: 3 }));
        assert!(c.update(Shard { index: 0, count: 1 }));
        assert_eq!(c.get(), Shard { index: 0, count: 1 });
    }
}
