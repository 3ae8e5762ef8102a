//! WatchResults: a job's results as they land, each once, resumable from a cursor.
//!
//! The cursor is (inserting transaction id, URL id) (migration 0011). Only rows below the
//! *horizon* are sent: the oldest facesweep transaction still running (see `horizon`), so a
//! commit that comes later always sorts after the cursor: nothing is skipped, nothing sent
//! twice. Transactions of other programs (psql, pg_dump, analytics) do not hold it back.
//! One page per watcher is in memory; a slow client slows its own stream only.

use std::time::Duration;

use facesweep_common::error::{ServiceError, ServiceResult};
use facesweep_common::Shutdown;
use facesweep_proto::WatchResultsResponse;
use prometheus::Gauge;
use tokio::sync::mpsc;
use tonic::Status;

use crate::store::Store;

/// One message of a watch stream.
type Reply = Result<WatchResultsResponse, Status>;

/// Results per query, and the channel's depth: a watcher holds at most this many.
const PAGE: i64 = 256;
/// Wait before asking again when nothing new is visible.
const IDLE: Duration = Duration::from_millis(250);

/// A position in a job's result stream; `Cursor::START` is before the first result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    pub tx: i64,
    pub url_id: i64,
}

impl Cursor {
    /// Below every real transaction id (they start at 3).
    pub const START: Cursor = Cursor { tx: 0, url_id: 0 };

    /// `"<tx>.<url_id>"`, or empty for the start.
    pub fn parse(s: &str) -> ServiceResult<Cursor> {
        if s.is_empty() {
            return Ok(Cursor::START);
        }
        let bad = || ServiceError::InvalidArgument(format!("cursor {s:?} is not one WatchResults sent"));
        let (tx, id) = s.split_once('.').ok_or_else(bad)?;
        Ok(Cursor { tx: tx.parse().map_err(|_| bad())?, url_id: id.parse().map_err(|_| bad())? })
    }

    pub fn encode(&self) -> String {
        format!("{}.{}", self.tx, self.url_id)
    }
}

/// See `Store::horizon`.
#[derive(Debug)]
struct Horizon {
    tx: i64,
    /// Seconds the transaction holding it back has been running (0 when none is).
    lag_s: f64,
}

impl Store {
    /// The next visible results after `after`, in cursor order, and the horizon's lag (s).
    async fn watch_page(&self, job_id: i64, after: Cursor) -> ServiceResult<(Vec<Cursor>, f64)> {
        // Two statements, in this order: the page's snapshot must be taken after the horizon
        // was read (see `horizon`).
        let horizon = self.horizon().await?;
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT tx::text::bigint, url_id FROM url_results
             WHERE job_id = $1 AND (tx, url_id) > ($2::text::xid8, $3) AND tx < $5::text::xid8
             ORDER BY tx, url_id LIMIT $4",
        )
        .bind(job_id)
        .bind(after.tx.to_string())
        .bind(after.url_id)
        .bind(PAGE)
        .bind(horizon.tx.to_string())
        .fetch_all(&self.pool)
        .await?;
        Ok((rows.into_iter().map(|(tx, url_id)| Cursor { tx, url_id }).collect(), horizon.lag_s))
    }

    /// The oldest xid of a facesweep transaction in progress (`db::APP_NAME`), or the
    /// snapshot's xmax when none is: a transaction id below which every row of `url_results`
    /// that will ever commit has committed, provided only facesweep pools write it.
    ///
    /// Why: let X, xid x < horizon, write url_results. x < xmax, so X had its xid before
    /// this statement's snapshot (an xid assigned later is >= xmax); an assigned xid is in
    /// the proc array at once, so if X were still running when pg_stat_activity was read
    /// (after the snapshot) x would be in the snapshot's xip and in `backend_xid`, and the
    /// horizon would be <= x. So X had ended by then, before the page's statement took its
    /// snapshot: that statement sees X's rows, or X aborted. Hence the page statement must
    /// come after this one; in one statement a writer committing between the snapshot and
    /// the activity read would be neither counted nor visible, and skipped for good.
    async fn horizon(&self) -> ServiceResult<Horizon> {
        let (tx, lag_s): (i64, f64) = sqlx::query_as(
            "WITH s AS (SELECT pg_current_snapshot() AS snap),
                  xip AS (SELECT x FROM s, pg_snapshot_xip(s.snap) AS x),
                  w AS (SELECT xip.x, a.xact_start FROM xip JOIN pg_stat_activity a
                          ON a.backend_xid::text::bigint = xip.x::text::bigint % 4294967296
                        WHERE starts_with(a.application_name, $1))
             SELECT coalesce((SELECT min(x) FROM w), pg_snapshot_xmax(snap))::text::bigint,
                    coalesce(extract(epoch FROM clock_timestamp()
                        - (SELECT xact_start FROM w ORDER BY x LIMIT 1)), 0)::float8
             FROM s",
        )
        .bind(facesweep_store::APP_NAME)
        .fetch_one(&self.pool)
        .await?;
        Ok(Horizon { tx, lag_s })
    }

    /// True when every URL of the job has a result and none lies beyond `after`.
    async fn watch_finished(&self, job_id: i64, after: Cursor) -> ServiceResult<bool> {
        Ok(sqlx::query_scalar(
            "SELECT (SELECT total_urls FROM jobs WHERE id = $1)
                        <= (SELECT coalesce(sum(count), 0) FROM job_status_counts WHERE job_id = $1)
                    AND NOT EXISTS (SELECT 1 FROM url_results
                        WHERE job_id = $1 AND (tx, url_id) > ($2::text::xid8, $3))",
        )
        .bind(job_id)
        .bind(after.tx.to_string())
        .bind(after.url_id)
        .fetch_one(&self.pool)
        .await?)
    }
}

/// Feeds `tx` from `after` until the job is finished, the client goes away, or the service
/// shuts down (then the client resumes elsewhere from its last cursor). A failure ends the
/// stream with its status. Each poll sets `lag` (this service's watch lag gauge).
pub async fn pump(
    store: Store,
    job_id: i64,
    after: Cursor,
    tx: mpsc::Sender<Reply>,
    stop: Shutdown,
    lag: Gauge,
) {
    if let Err(e) = follow(&store, job_id, after, &tx, &stop, &lag).await {
        let _ = tx.send(Err(e)).await;
    }
}

async fn follow(
    store: &Store,
    job_id: i64,
    mut after: Cursor,
    tx: &mpsc::Sender<Reply>,
    stop: &Shutdown,
    lag: &Gauge,
) -> Result<(), Status> {
    loop {
        if stop.is_cancelled() {
            return Err(Status::unavailable("results service shutting down: resume from the last cursor"));
        }
        let (page, lag_s) = store.watch_page(job_id, after).await?;
        lag.set(lag_s);
        let Some(last) = page.last().copied() else {
            if store.watch_finished(job_id, after).await? {
                return Ok(());
            }
            tokio::select! {
                _ = tx.closed() => return Ok(()),
                _ = stop.cancelled() => continue,
                _ = tokio::time::sleep(IDLE) => continue,
            }
        };
        send_page(store, &page, tx).await?;
        if tx.is_closed() {
            return Ok(());
        }
        after = last;
    }
}

/// Sends one page's results with their faces, in cursor order; the send waits for the client.
async fn send_page(store: &Store, page: &[Cursor], tx: &mpsc::Sender<Reply>) -> Result<(), Status> {
    let ids: Vec<i64> = page.iter().map(|c| c.url_id).collect();
    let mut rows = store.rows(&ids).await?;
    for c in page {
        // Gone since the page was read (RetryUrls deleted it): it will come again when redone.
        let Some(i) = rows.iter().position(|r| r.url_id == c.url_id && r.result.is_some()) else { continue };
        let row = rows.swap_remove(i);
        let msg = WatchResultsResponse { url: row.url, result: row.result, cursor: c.encode() };
        if tx.send(Ok(msg)).await.is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// A bounded channel for one watcher: the page being sent is all it holds.
pub fn channel() -> (mpsc::Sender<Reply>, mpsc::Receiver<Reply>) {
    mpsc::channel(PAGE as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_bad_ones_are_refused() {
        let c = Cursor { tx: 812, url_id: (3 << 40) | 9 };
        assert_eq!(Cursor::parse(&c.encode()).unwrap(), c);
        assert_eq!(Cursor::parse("").unwrap(), Cursor::START);
        for bad in ["12", "a.b", "1.", ".5", "1.2.3"] {
            assert!(Cursor::parse(bad).is_err(), "{bad}");
        }
        assert!(Cursor::START < c);
    }
}

#[cfg(test)]
#[path = "watch_tests.rs"]
mod db_tests;
