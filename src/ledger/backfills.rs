//! Backfills (`backfills`), whoever started them (API, console or CLI): at
//! most one running per job, each with a heartbeat and cancellable from
//! any process. Its statements are checked against the schema when hxjobs
//! compiles (`scripts/sqlx-prepare.sh`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

/// A row of `backfills`.
#[derive(Debug, Clone, Serialize)]
pub struct BackfillRow {
    pub id: i64,
    pub job: String,
    pub range_from: DateTime<Utc>,
    pub range_to: DateTime<Utc>,
    pub reprocess: String,
    pub parallel: i32,
    pub state: String,
    pub worker: String,
    pub heartbeat_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub succeeded: Option<i32>,
    pub failed: Option<i32>,
    pub error: Option<String>,
    /// Who started it (`cli:<user>`, `api:<token>`, …).
    pub started_by: Option<String>,
    pub cancelled_by: Option<String>,
}

/// What a new backfill asks for.
pub struct New<'a> {
    pub job: &'a str,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub reprocess: &'a str,
    pub parallel: i32,
    pub worker: &'a str,
    pub started_by: &'a str,
}

/// Records a running backfill; `Err(id)` of the one already running for
/// the job (one whose process stopped its heartbeat for `stale_after`
/// gives way: it is recorded failed).
pub async fn start(
    pool: &PgPool,
    new: &New<'_>,
    stale_after: Duration,
) -> Result<Result<i64, i64>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query!(
        "UPDATE backfills SET state = 'failed', finished_at = now(),
                error = 'its process stopped sending heartbeats'
         WHERE job = $1 AND state = 'running'
           AND heartbeat_at < now() - make_interval(secs => $2)",
        new.job,
        stale_after.as_secs_f64(),
    )
    .execute(&mut *tx)
    .await?;
    let running = sqlx::query_scalar!(
        "SELECT id FROM backfills WHERE job = $1 AND state = 'running'",
        new.job
    )
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(id) = running {
        return Ok(Err(id));
    }
    let id = sqlx::query_scalar!(
        "INSERT INTO backfills (job, range_from, range_to, reprocess, parallel, worker, started_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        new.job,
        new.from,
        new.to,
        new.reprocess,
        new.parallel,
        new.worker,
        new.started_by,
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Ok(id))
}

/// The heartbeat; false once the backfill is no longer running (cancelled).
pub async fn heartbeat(pool: &PgPool, id: i64) -> Result<bool, sqlx::Error> {
    let state = sqlx::query_scalar!(
        "UPDATE backfills SET heartbeat_at = now() WHERE id = $1 RETURNING state",
        id
    )
    .fetch_optional(pool)
    .await?;
    Ok(state.as_deref() == Some("running"))
}

/// Records the end; a cancelled row keeps its state, the counts are
/// recorded anyway.
pub async fn finish(
    pool: &PgPool,
    id: i64,
    succeeded_all: bool,
    succeeded: i32,
    failed: i32,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE backfills SET
             state = CASE WHEN state = 'running' THEN $2 ELSE state END,
             finished_at = COALESCE(finished_at, now()), succeeded = $3, failed = $4, error = $5
         WHERE id = $1",
        id,
        if succeeded_all { "succeeded" } else { "failed" },
        succeeded,
        failed,
        error,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Newest first, at most 100.
pub async fn list(pool: &PgPool, job: Option<&str>) -> Result<Vec<BackfillRow>, sqlx::Error> {
    sqlx::query_as!(
        BackfillRow,
        "SELECT id, job, range_from, range_to, reprocess, parallel, state, worker, heartbeat_at, created_at, finished_at, succeeded, failed, error, started_by, cancelled_by FROM backfills WHERE $1::text IS NULL OR job = $1
         ORDER BY id DESC LIMIT 100",
        job
    )
    .fetch_all(pool)
    .await
}

pub async fn get(pool: &PgPool, id: i64) -> Result<Option<BackfillRow>, sqlx::Error> {
    sqlx::query_as!(
        BackfillRow,
        "SELECT id, job, range_from, range_to, reprocess, parallel, state, worker, heartbeat_at, created_at, finished_at, succeeded, failed, error, started_by, cancelled_by FROM backfills WHERE id = $1",
        id
    )
    .fetch_optional(pool)
    .await
}

/// Cancels a running backfill: `Ok(row)`, or `Err(state)` of one that is
/// not running (`None`: no such backfill).
pub async fn cancel(
    pool: &PgPool,
    id: i64,
    by: &str,
) -> Result<Result<BackfillRow, Option<String>>, sqlx::Error> {
    let row = sqlx::query_as!(
        BackfillRow,
        "UPDATE backfills SET state = 'cancelled', finished_at = now(), cancelled_by = $2,
                error = 'cancelled by ' || $2
         WHERE id = $1 AND state = 'running' RETURNING id, job, range_from, range_to, reprocess, parallel, state, worker, heartbeat_at, created_at, finished_at, succeeded, failed, error, started_by, cancelled_by",
        id,
        by
    )
    .fetch_optional(pool)
    .await?;
    if let Some(row) = row {
        return Ok(Ok(row));
    }
    let state = sqlx::query_scalar!("SELECT state FROM backfills WHERE id = $1", id)
        .fetch_optional(pool)
        .await?;
    Ok(Err(state))
}
