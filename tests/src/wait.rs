//! The one way a test waits: on a condition, bounded, never on a guess of how long something
//! takes. Database conditions (a lease expired, a backend blocked on a lock or inside
//! `pg_sleep`) open race windows exactly, where a sleep only opens them on a fast machine.

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `cond` every 50 ms until it holds; how long that took. Panics naming `what` after
/// `secs`: every wait of a test is bounded.
pub async fn wait_until<F, Fut>(what: &str, secs: u64, mut cond: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while !cond().await {
        assert!(started.elapsed() < Duration::from_secs(secs), "{what}: not within {secs} s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

/// Like [`wait_until`], for a probe that yields a value once ready: that value.
pub async fn wait_for<T, F, Fut>(what: &str, secs: u64, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(started.elapsed() < Duration::from_secs(secs), "{what}: not within {secs} s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the boolean query `sql` (no parameters) answers true on `pool`.
pub async fn wait_until_sql(what: &str, secs: u64, pool: &sqlx::PgPool, sql: &str) -> Duration {
    wait_until(what, secs, || async {
        sqlx::query_scalar::<_, bool>(sql).fetch_one(pool).await.unwrap_or(false)
    })
    .await
}

/// Waits until some backend of `pool`'s server waits on a lock while running `like`.
pub async fn wait_blocked(pool: &sqlx::PgPool, like: &str) {
    let sql = format!(
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%{}%')",
        like.replace('\'', "''")
    );
    wait_until_sql(&format!("{like}: blocked on a lock"), 20, pool, &sql).await;
}

/// Waits until some backend of `pool`'s server is inside `pg_sleep` (a trigger that widens
/// a window of a transaction, so another can run inside it).
pub async fn wait_in_pg_sleep(pool: &sqlx::PgPool) {
    let sql = "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE wait_event = 'PgSleep')";
    wait_until_sql("a transaction inside pg_sleep", 20, pool, sql).await;
}
