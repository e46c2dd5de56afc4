//! The daemons sharing the database (`daemons`): each says it is alive at
//! every scheduler pass; the console lists them.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

/// A daemon as last seen.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct DaemonRow {
    pub worker: String,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    pub stopped_at: Option<DateTime<Utc>>,
    pub version: String,
    pub jobs: i32,
    pub running_runs: i32,
    /// Seconds since its last heartbeat.
    pub age_secs: f64,
}

/// Records that `worker` is alive, with what it runs.
pub async fn beat(
    pool: &PgPool,
    worker: &str,
    jobs: usize,
    running: usize,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO daemons (worker, version, jobs, running_runs) VALUES ($1, $2, $3, $4)
         ON CONFLICT (worker) DO UPDATE SET heartbeat_at = now(), stopped_at = NULL,
             version = $2, jobs = $3, running_runs = $4",
    )
    .bind(worker)
    .bind(env!("CARGO_PKG_VERSION"))
    .bind(i32::try_from(jobs).unwrap_or(i32::MAX))
    .bind(i32::try_from(running).unwrap_or(i32::MAX))
    .execute(pool)
    .await?;
    Ok(())
}

/// Records that `worker` stopped cleanly.
pub async fn stopped(pool: &PgPool, worker: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE daemons SET stopped_at = now(), running_runs = 0 WHERE worker = $1")
        .bind(worker)
        .execute(pool)
        .await?;
    Ok(())
}

/// Daemons seen in the last day, the newest heartbeat first.
pub async fn list(pool: &PgPool) -> Result<Vec<DaemonRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT worker, started_at, heartbeat_at, stopped_at, version, jobs, running_runs,
                extract(epoch FROM now() - heartbeat_at)::float8 AS age_secs
         FROM daemons WHERE heartbeat_at > now() - interval '1 day'
         ORDER BY heartbeat_at DESC",
    )
    .fetch_all(pool)
    .await
}
