//! What the API, `hxjobs runs`, metrics and retention read from the ledger.
//! Its statements are checked against the schema when hxjobs compiles.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::{RunState, RunType, TaskState};

/// A row of `job_runs` as shown to operators.
#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    pub id: i64,
    pub job: String,
    pub run_type: RunType,
    pub interval_start: DateTime<Utc>,
    pub interval_end: DateTime<Utc>,
    pub state: RunState,
    pub attempts: i32,
    pub worker: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// From the claim to the end (or to now while it runs).
    pub duration_secs: Option<f64>,
    pub error: Option<String>,
    /// The parameters it was queued with (the job's defaults fill the rest).
    pub params: serde_json::Value,
    /// Who queued a manual run (`cli:<user>`, `api:<token name>`).
    pub triggered_by: Option<String>,
    /// When an operator last cleared it.
    pub cleared_at: Option<DateTime<Utc>>,
    /// Its interval missed the job's deadline (`late_intervals`).
    pub late: bool,
    /// Task attempts in the run, every task and claim counted.
    pub tries: i64,
    /// The job's version its latest claim ran with (`job_versions`).
    pub job_version: Option<String>,
}

/// [`RunRow`]s from `job_runs` with the rest of the statement (`WHERE …`)
/// and its arguments: one list of columns for every reader.
macro_rules! select_runs {
    ($rest:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            RunRow,
            r#"SELECT id, job, run_type AS "run_type: RunType", interval_start, interval_end,
                      state AS "state: RunState", attempts, worker, created_at, started_at,
                      finished_at,
                      extract(epoch FROM (COALESCE(finished_at, now()) - started_at))::float8
                          AS duration_secs,
                      error, params, triggered_by, cleared_at,
                      EXISTS (SELECT 1 FROM late_intervals l
                              WHERE l.job = job_runs.job
                                AND l.interval_start = job_runs.interval_start) AS "late!",
                      (SELECT count(*) FROM task_attempts a WHERE a.run_id = job_runs.id)
                          AS "tries!",
                      job_version
               FROM job_runs "# + $rest
            $(, $arg)*
        )
    };
}

/// Which runs to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub job: Option<String>,
    pub state: Option<RunState>,
    /// Intervals starting at or after this.
    pub from: Option<DateTime<Utc>>,
    /// Intervals starting before this.
    pub to: Option<DateTime<Utc>>,
    pub limit: i64,
}

pub async fn runs(pool: &PgPool, f: &RunFilter) -> Result<Vec<RunRow>, sqlx::Error> {
    select_runs!(
        "WHERE ($1::text IS NULL OR job = $1) AND ($2::text IS NULL OR state = $2)
           AND ($4::timestamptz IS NULL OR interval_start >= $4)
           AND ($5::timestamptz IS NULL OR interval_start < $5)
         ORDER BY id DESC LIMIT $3",
        f.job,
        f.state.map(RunState::as_str),
        f.limit,
        f.from,
        f.to,
    )
    .fetch_all(pool)
    .await
}

pub async fn run(pool: &PgPool, id: i64) -> Result<Option<RunRow>, sqlx::Error> {
    select_runs!("WHERE id = $1", id).fetch_optional(pool).await
}

/// A row of `task_instances`.
#[derive(Debug, Clone, Serialize)]
pub struct TaskRow {
    pub task: String,
    pub kind: String,
    pub state: TaskState,
    pub attempt: i32,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    pub error: Option<String>,
}

/// A run's tasks, in the order they started.
pub async fn tasks(pool: &PgPool, run_id: i64) -> Result<Vec<TaskRow>, sqlx::Error> {
    sqlx::query_as!(
        TaskRow,
        r#"SELECT task, kind, state AS "state: TaskState", attempt, started_at, finished_at,
                  duration_ms, error
           FROM task_instances WHERE run_id = $1 ORDER BY started_at NULLS LAST, task"#,
        run_id
    )
    .fetch_all(pool)
    .await
}

/// A row of `schedule_skips`.
#[derive(Debug, Clone, Serialize)]
pub struct SkipRow {
    pub job: String,
    pub policy: String,
    pub first_interval_start: DateTime<Utc>,
    pub last_interval_start: DateTime<Utc>,
    pub occurrences: i64,
    pub recorded_at: DateTime<Utc>,
}

/// Catch-up skips, newest first.
pub async fn skips(
    pool: &PgPool,
    job: Option<&str>,
    limit: i64,
) -> Result<Vec<SkipRow>, sqlx::Error> {
    sqlx::query_as!(
        SkipRow,
        "SELECT job, policy, first_interval_start, last_interval_start, occurrences, recorded_at
         FROM schedule_skips WHERE ($1::text IS NULL OR job = $1)
         ORDER BY id DESC LIMIT $2",
        job,
        limit,
    )
    .fetch_all(pool)
    .await
}

/// Per job: runs that succeeded and runs that finished in the last 24 hours.
pub async fn success_rates(pool: &PgPool) -> Result<Vec<(String, i64, i64)>, sqlx::Error> {
    Ok(sqlx::query!(
        r#"SELECT job, count(*) FILTER (WHERE state = 'success') AS "succeeded!",
                  count(*) FILTER (WHERE state IN ('success', 'failed')) AS "finished!"
           FROM job_runs WHERE finished_at > now() - interval '24 hours' GROUP BY job"#,
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|r| (r.job, r.succeeded, r.finished))
    .collect())
}

/// Retention's classes of ledger rows (`SELECT count(*)` / `DELETE` + this,
/// `$1` the cutoff): finished runs (their tasks go with them) and skips.
pub const RETENTION_RUNS: &str =
    "FROM job_runs WHERE state IN ('success', 'failed', 'cancelled') AND finished_at < $1";
pub const RETENTION_SKIPS: &str = "FROM schedule_skips WHERE recorded_at < $1";
