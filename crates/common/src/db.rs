//! Postgres pool with embedded migrations.

use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Connects (retrying while Postgres starts up) and applies pending migrations.
pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let mut last_err = None;
    for _ in 0..50 {
        match PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await
        {
            Ok(pool) => {
                // Several services may migrate at once; sqlx serialises with an advisory lock.
                MIGRATOR.run(&pool).await?;
                return Ok(pool);
            }
            Err(e) => {
                last_err = Some(e);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    Err(anyhow::anyhow!("cannot connect to Postgres: {}", last_err.unwrap()))
}
