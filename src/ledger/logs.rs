//! Task logs (`task_logs`) and the attempts they belong to, as
//! `hxjobs logs` and the API read them. An attempt's try number counts
//! every attempt of its task in its run, over all claims, from 1.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

/// An attempt of a task, with its try number.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AttemptRow {
    #[serde(skip)]
    pub id: i64,
    pub task: String,
    #[sqlx(rename = "try")]
    #[serde(rename = "try")]
    pub try_number: i64,
    pub claim: i32,
    pub worker: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    pub outcome: String,
    pub error: Option<String>,
    pub log_bytes: i64,
    pub log_dropped: i64,
    /// Nothing more will be written to its log: its last line is in, or
    /// its worker is gone.
    pub log_ended: bool,
}

/// The columns of [`AttemptRow`] but the try number.
const ATTEMPT_COLUMNS: &str = "id, task, claim, worker, started_at, finished_at, \
     (extract(epoch FROM (finished_at - started_at)) * 1000)::bigint AS duration_ms, \
     outcome, error, log_bytes, log_dropped, \
     (log_closed OR outcome = 'lost' \
      OR (outcome <> 'running' AND finished_at < now() - interval '10 seconds')) AS log_ended";

/// The attempts of a run (of one task, or all), oldest first.
pub async fn attempts(
    pool: &PgPool,
    run_id: i64,
    task: Option<&str>,
) -> Result<Vec<AttemptRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {ATTEMPT_COLUMNS}, row_number() OVER (PARTITION BY task ORDER BY id) AS try
         FROM task_attempts
         WHERE run_id = $1 AND ($2::text IS NULL OR task = $2)
         ORDER BY id"
    ))
    .bind(run_id)
    .bind(task)
    .fetch_all(pool)
    .await
}

/// One attempt by its id, with its try number.
pub async fn attempt(pool: &PgPool, id: i64) -> Result<Option<AttemptRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT * FROM (
             SELECT {ATTEMPT_COLUMNS}, row_number() OVER (PARTITION BY task ORDER BY id) AS try
             FROM task_attempts
             WHERE run_id = (SELECT run_id FROM task_attempts WHERE id = $1)
               AND task = (SELECT task FROM task_attempts WHERE id = $1)) a
         WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// The log chunks of an attempt after `after_seq`, in order.
pub async fn chunks(
    pool: &PgPool,
    attempt_id: i64,
    after_seq: i32,
) -> Result<Vec<(i32, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT seq, body FROM task_logs WHERE attempt_id = $1 AND seq > $2 ORDER BY seq",
    )
    .bind(attempt_id)
    .bind(after_seq)
    .fetch_all(pool)
    .await
}

/// Appends a chunk and counts its bytes on the attempt; `last`: the log
/// is closed.
pub async fn append(
    pool: &PgPool,
    attempt_id: i64,
    seq: i32,
    body: &str,
    dropped: u64,
    last: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH c AS (INSERT INTO task_logs (attempt_id, seq, body) VALUES ($1, $2, $3))
         UPDATE task_attempts SET log_bytes = log_bytes + $4, log_dropped = $5,
                log_closed = log_closed OR $6
         WHERE id = $1",
    )
    .bind(attempt_id)
    .bind(seq)
    .bind(body)
    .bind(body.len() as i64)
    .bind(dropped as i64)
    .bind(last)
    .execute(pool)
    .await?;
    Ok(())
}
