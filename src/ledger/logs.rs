//! Task logs (`task_logs`) and the attempts they belong to, as
//! `hxjobs logs` and the API read them. An attempt's try number counts
//! every attempt of its task in its run, over all claims, from 1. Its
//! statements are checked against the schema when hxjobs compiles.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

/// An attempt of a task, with its try number.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptRow {
    #[serde(skip)]
    pub id: i64,
    pub task: String,
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
    /// Bytes and lines of output past `logs.max_bytes_per_attempt`, not kept.
    pub log_dropped: i64,
    pub log_dropped_lines: i64,
    /// Nothing more will be written to its log: its last chunk is in, or
    /// it ended more than two seconds ago.
    pub log_ended: bool,
    /// The job's version the attempt ran with (`job_versions`).
    pub job_version: Option<String>,
}

/// [`AttemptRow`]s: the attempts of one run's tasks chosen by the rest of
/// the statement (`WHERE …`, in which `a` is the attempts with their try
/// numbers) and its arguments.
macro_rules! select_attempts {
    ($runs:literal, $rest:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            AttemptRow,
            r#"SELECT * FROM (
                 SELECT id, task, claim, worker, started_at, finished_at,
                        (extract(epoch FROM (finished_at - started_at)) * 1000)::bigint
                            AS duration_ms,
                        outcome, error, log_bytes, log_dropped, log_dropped_lines,
                        (log_closed OR (outcome <> 'running'
                                        AND finished_at < now() - interval '2 seconds'))
                            AS "log_ended!",
                        job_version,
                        row_number() OVER (PARTITION BY task ORDER BY id) AS "try_number!"
                 FROM task_attempts WHERE "# + $runs + ") a " + $rest
            $(, $arg)*
        )
    };
}

/// The attempts of a run (of one task, or all), oldest first.
pub async fn attempts(
    pool: &PgPool,
    run_id: i64,
    task: Option<&str>,
) -> Result<Vec<AttemptRow>, sqlx::Error> {
    select_attempts!(
        "run_id = $1 AND ($2::text IS NULL OR task = $2)",
        "ORDER BY id",
        run_id,
        task,
    )
    .fetch_all(pool)
    .await
}

/// One attempt by its id, with its try number.
pub async fn attempt(pool: &PgPool, id: i64) -> Result<Option<AttemptRow>, sqlx::Error> {
    select_attempts!(
        "run_id = (SELECT run_id FROM task_attempts WHERE id = $1)
           AND task = (SELECT task FROM task_attempts WHERE id = $1)",
        "WHERE id = $1",
        id,
    )
    .fetch_optional(pool)
    .await
}

/// The log chunks of an attempt after `after_seq`, in order.
pub async fn chunks(
    pool: &PgPool,
    attempt_id: i64,
    after_seq: i32,
) -> Result<Vec<(i32, String)>, sqlx::Error> {
    Ok(sqlx::query!(
        "SELECT seq, body FROM task_logs WHERE attempt_id = $1 AND seq > $2 ORDER BY seq",
        attempt_id,
        after_seq,
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|r| (r.seq, r.body))
    .collect())
}

/// A piece of an attempt's log as its writer stores it.
pub struct Chunk<'a> {
    pub attempt_id: i64,
    pub seq: i32,
    /// May be empty (only the dropped counts changed).
    pub body: &'a str,
    pub dropped_bytes: u64,
    pub dropped_lines: u64,
    /// The attempt's last chunk.
    pub last: bool,
}

/// Appends a chunk and counts its bytes on the attempt.
pub async fn append(pool: &PgPool, c: &Chunk<'_>) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "WITH c AS (INSERT INTO task_logs (attempt_id, seq, body)
                    SELECT $1, $2, $3 WHERE $3 <> '')
         UPDATE task_attempts SET log_bytes = log_bytes + $4, log_dropped = $5,
                log_dropped_lines = $6, log_closed = log_closed OR $7
         WHERE id = $1",
        c.attempt_id,
        c.seq,
        c.body,
        c.body.len() as i64,
        c.dropped_bytes as i64,
        c.dropped_lines as i64,
        c.last,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// The lines that end an attempt's log once it ended: what was dropped
/// past the cap, then how it ended (from its ledger row, so an attempt
/// that said nothing costs no write).
pub fn closing_lines(a: &AttemptRow, max_bytes: u64) -> String {
    let Some(at) = a.finished_at else {
        return String::new();
    };
    let stamp = at.format("%Y-%m-%dT%H:%M:%S%.3fZ");
    let mut out = String::new();
    if a.log_dropped_lines > 0 {
        out.push_str(&format!(
            "{stamp} hxjobs log truncated at logs.max_bytes_per_attempt = {max_bytes} bytes: {} bytes of output in {} lines after that were dropped\n",
            a.log_dropped, a.log_dropped_lines
        ));
    }
    let took = a
        .duration_ms
        .map(|ms| format!(" after {:.1} s", ms as f64 / 1000.0))
        .unwrap_or_default();
    let why = a
        .error
        .as_deref()
        .map(|e| format!(": {e}"))
        .unwrap_or_default();
    let what = match a.outcome.as_str() {
        "success" => "succeeded".to_string(),
        "failed" => "failed".to_string(),
        "lost" => "lost (its worker stopped, or its claim was taken over)".to_string(),
        "handed_back" => "stopped by a shutdown; the run went back to the queue".to_string(),
        other => other.to_string(),
    };
    out.push_str(&format!("{stamp} hxjobs attempt {what}{took}{why}\n"));
    out
}
