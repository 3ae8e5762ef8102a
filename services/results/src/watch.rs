//! WatchResults: a job's results as they land, each once, resumable from a cursor.
//!
//! The cursor is (inserting transaction id, URL id) (migration 0011). Only rows of
//! transactions older than every transaction still running are sent (`pg_snapshot_xmin`), so
//! a commit that comes later always sorts after the cursor: nothing is skipped, nothing sent
//! twice. One page per watcher is in memory; a slow client slows its own stream only.

use std::time::Duration;

use facesweep_common::error::{ServiceError, ServiceResult};
use facesweep_common::Shutdown;
use facesweep_proto::WatchResultsResponse;
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

impl Store {
    /// The next visible results after `after`, in cursor order.
    async fn watch_page(&self, job_id: i64, after: Cursor) -> ServiceResult<Vec<Cursor>> {
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT tx::text::bigint, url_id FROM url_results
             WHERE job_id = $1 AND (tx, url_id) > ($2::text::xid8, $3)
               AND tx < pg_snapshot_xmin(pg_current_snapshot())
             ORDER BY tx, url_id LIMIT $4",
        )
        .bind(job_id)
        .bind(after.tx.to_string())
        .bind(after.url_id)
        .bind(PAGE)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(tx, url_id)| Cursor { tx, url_id }).collect())
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
/// stream with its status.
pub async fn pump(store: Store, job_id: i64, after: Cursor, tx: mpsc::Sender<Reply>, stop: Shutdown) {
    if let Err(e) = follow(&store, job_id, after, &tx, &stop).await {
        let _ = tx.send(Err(e)).await;
    }
}

async fn follow(
    store: &Store,
    job_id: i64,
    mut after: Cursor,
    tx: &mpsc::Sender<Reply>,
    stop: &Shutdown,
) -> Result<(), Status> {
    loop {
        if stop.is_cancelled() {
            return Err(Status::unavailable("results service shutting down: resume from the last cursor"));
        }
        let page = store.watch_page(job_id, after).await?;
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
    let (lo, hi) = (*ids.iter().min().unwrap_or(&0), *ids.iter().max().unwrap_or(&0));
    let mut rows = store.rows(lo, hi, PAGE, Some(&ids)).await?;
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
