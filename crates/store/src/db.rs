//! Postgres pool with embedded migrations.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Every facesweep connection's `application_name` starts with this. WatchResults waits only
/// for transactions of such sessions (results `watch.rs`), so anything that writes
/// `url_results` must connect through `connect` (or set such a name by hand).
pub const APP_NAME: &str = "facesweep";

/// `url`'s options with an `application_name` that starts with `APP_NAME` (a name the URL
/// gives is kept, prefixed when it lacks it).
pub fn options(url: &str) -> anyhow::Result<PgConnectOptions> {
    let opts = PgConnectOptions::from_str(url)?;
    let name = match opts.get_application_name() {
        Some(n) if n.starts_with(APP_NAME) => n.to_string(),
        Some(n) => format!("{APP_NAME}-{n}"),
        None => APP_NAME.to_string(),
    };
    Ok(opts.application_name(&name))
}

/// Connects (retrying while Postgres starts up) and applies pending migrations.
pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let opts = options(url)?;
    let mut last_err = None;
    for _ in 0..50 {
        match PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts.clone())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_connection_is_named_facesweep() {
        let name = |url: &str| options(url).unwrap().get_application_name().map(str::to_string);
        assert_eq!(name("postgres://u@h/db").as_deref(), Some(APP_NAME));
        assert_eq!(
            name("postgres://u@h/db?application_name=facesweep-results").as_deref(),
            Some("facesweep-results")
        );
        assert_eq!(name("postgres://u@h/db?application_name=ops").as_deref(), Some("facesweep-ops"));
    }
}
