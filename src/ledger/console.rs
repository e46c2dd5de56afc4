//! What the web console reads from the ledger beyond single runs: a job's
//! grid of runs × tasks, each job's latest runs, the last day's failures.
//! Its statements are checked against the schema when hxjobs compiles.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::{RunState, RunType};

/// Which of a job's runs a grid page shows, newest first.
#[derive(Debug, Clone)]
pub struct GridQuery {
    pub job: String,
    pub state: Option<RunState>,
    /// Intervals starting at or after this.
    pub from: Option<DateTime<Utc>>,
    /// Intervals starting before this.
    pub to: Option<DateTime<Utc>>,
    /// Runs older than this one (interval start, run id): the next page.
    pub before: Option<(DateTime<Utc>, i64)>,
    pub limit: i64,
}

/// One column of a grid: a run with its tasks' states.
#[derive(Debug, Clone, Serialize)]
pub struct GridRun {
    pub id: i64,
    pub run_type: RunType,
    pub interval_start: DateTime<Utc>,
    pub interval_end: DateTime<Utc>,
    pub state: RunState,
    pub tasks: Vec<String>,
    pub task_states: Vec<String>,
    /// Each task's latest try number (0: never ran).
    pub task_tries: Vec<i32>,
}

/// A page of a job's runs, newest interval first, with their task states
/// (one statement; `job_runs_job_interval` keeps it fast on long histories).
pub async fn grid(pool: &PgPool, q: &GridQuery) -> Result<Vec<GridRun>, sqlx::Error> {
    sqlx::query_as!(
        GridRun,
        r#"SELECT r.id, r.run_type AS "run_type: RunType", r.interval_start, r.interval_end,
                r.state AS "state: RunState",
                COALESCE(array_agg(t.task ORDER BY t.task) FILTER (WHERE t.task IS NOT NULL),
                         '{}') AS "tasks!",
                COALESCE(array_agg(t.state ORDER BY t.task) FILTER (WHERE t.task IS NOT NULL),
                         '{}') AS "task_states!",
                COALESCE(array_agg(t.attempt ORDER BY t.task) FILTER (WHERE t.task IS NOT NULL),
                         '{}') AS "task_tries!"
         FROM (SELECT id, run_type, interval_start, interval_end, state FROM job_runs
               WHERE job = $1
                 AND ($2::text IS NULL OR state = $2)
                 AND ($3::timestamptz IS NULL OR interval_start >= $3)
                 AND ($4::timestamptz IS NULL OR interval_start < $4)
                 AND ($5::timestamptz IS NULL OR (interval_start, id) < ($5, $6))
               ORDER BY interval_start DESC, id DESC
               LIMIT $7) r
         LEFT JOIN task_instances t ON t.run_id = r.id
         GROUP BY r.id, r.run_type, r.interval_start, r.interval_end, r.state
         ORDER BY r.interval_start DESC, r.id DESC"#,
        q.job,
        q.state.map(RunState::as_str),
        q.from,
        q.to,
        q.before.map(|b| b.0),
        q.before.map_or(0, |b| b.1),
        q.limit,
    )
    .fetch_all(pool)
    .await
}

/// A job's latest runs, newest first.
#[derive(Debug, Clone)]
pub struct LatestRuns {
    pub job: String,
    pub ids: Vec<i64>,
    pub states: Vec<String>,
    pub starts: Vec<DateTime<Utc>>,
}

/// Each job's latest runs (at most `per_job`).
pub async fn latest_runs(
    pool: &PgPool,
    jobs: &[String],
    per_job: i64,
) -> Result<Vec<LatestRuns>, sqlx::Error> {
    sqlx::query_as!(
        LatestRuns,
        r#"SELECT j.job AS "job!",
                COALESCE(array_agg(r.id ORDER BY r.interval_start DESC, r.id DESC)
                         FILTER (WHERE r.id IS NOT NULL), '{}') AS "ids!",
                COALESCE(array_agg(r.state ORDER BY r.interval_start DESC, r.id DESC)
                         FILTER (WHERE r.id IS NOT NULL), '{}') AS "states!",
                COALESCE(array_agg(r.interval_start ORDER BY r.interval_start DESC, r.id DESC)
                         FILTER (WHERE r.id IS NOT NULL), '{}') AS "starts!"
         FROM unnest($1::text[]) AS j(job)
         LEFT JOIN LATERAL (
             SELECT id, state, interval_start FROM job_runs
             WHERE job = j.job ORDER BY interval_start DESC, id DESC LIMIT $2) r ON true
         GROUP BY j.job"#,
        jobs,
        per_job,
    )
    .fetch_all(pool)
    .await
}

/// Late intervals per job in the last day.
pub async fn late_last_day(pool: &PgPool) -> Result<Vec<(String, i64)>, sqlx::Error> {
    Ok(sqlx::query!(
        r#"SELECT job, count(*) AS "late!" FROM late_intervals
           WHERE noticed_at > now() - interval '24 hours' GROUP BY job"#
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|r| (r.job, r.late))
    .collect())
}

/// Runs that failed in the last day, newest first: id, job, interval
/// start, error.
pub async fn failed_last_day(
    pool: &PgPool,
    limit: i64,
) -> Result<Vec<(i64, String, DateTime<Utc>, Option<String>)>, sqlx::Error> {
    Ok(sqlx::query!(
        "SELECT id, job, interval_start, error FROM job_runs
         WHERE state = 'failed' AND finished_at > now() - interval '24 hours'
         ORDER BY finished_at DESC LIMIT $1",
        limit
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|r| (r.id, r.job, r.interval_start, r.error))
    .collect())
}

/// Runs by state in the last day (finished ones by when they finished,
/// queued and running ones as they are now).
pub async fn state_counts(pool: &PgPool) -> Result<Vec<(RunState, i64)>, sqlx::Error> {
    Ok(sqlx::query!(
        r#"SELECT state AS "state: RunState", count(*) AS "runs!" FROM job_runs
           WHERE state IN ('queued', 'running') OR finished_at > now() - interval '24 hours'
           GROUP BY state"#
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|r| (r.state, r.runs))
    .collect())
}

/// One day of a job's calendar: the latest run of each interval starting
/// that day (UTC), counted by state.
#[derive(Debug, Clone, Serialize)]
pub struct Day {
    pub day: chrono::NaiveDate,
    pub success: i64,
    pub failed: i64,
    pub running: i64,
    pub queued: i64,
    pub cancelled: i64,
}

/// The days in `[from, to)` with runs of `job` (latest run per interval).
pub async fn calendar(
    pool: &PgPool,
    job: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<Day>, sqlx::Error> {
    sqlx::query_as!(
        Day,
        r#"SELECT (l.interval_start AT TIME ZONE 'UTC')::date AS "day!",
                  count(*) FILTER (WHERE l.state = 'success') AS "success!",
                  count(*) FILTER (WHERE l.state = 'failed') AS "failed!",
                  count(*) FILTER (WHERE l.state = 'running') AS "running!",
                  count(*) FILTER (WHERE l.state = 'queued') AS "queued!",
                  count(*) FILTER (WHERE l.state = 'cancelled') AS "cancelled!"
           FROM (SELECT DISTINCT ON (interval_start) interval_start, state FROM job_runs
                 WHERE job = $1 AND interval_start >= $2 AND interval_start < $3
                 ORDER BY interval_start, id DESC) l
           GROUP BY 1 ORDER BY 1"#,
        job,
        from,
        to,
    )
    .fetch_all(pool)
    .await
}

/// A run with its tasks' durations, for the duration and landing charts.
#[derive(Debug, Clone, Serialize)]
pub struct Timed {
    pub id: i64,
    pub interval_start: DateTime<Utc>,
    pub interval_end: DateTime<Utc>,
    pub state: RunState,
    pub finished_at: Option<DateTime<Utc>>,
    pub tasks: Vec<String>,
    /// Milliseconds; -1 where the task has no duration (it did not run).
    pub durations_ms: Vec<i64>,
}

/// The newest `limit` runs of `job` by interval, oldest first.
pub async fn timed(pool: &PgPool, job: &str, limit: i64) -> Result<Vec<Timed>, sqlx::Error> {
    sqlx::query_as!(
        Timed,
        r#"SELECT r.id, r.interval_start, r.interval_end, r.state AS "state: RunState",
                  r.finished_at,
                  COALESCE(array_agg(t.task ORDER BY t.task) FILTER (WHERE t.task IS NOT NULL),
                           '{}') AS "tasks!",
                  COALESCE(array_agg(COALESCE(t.duration_ms, -1) ORDER BY t.task)
                           FILTER (WHERE t.task IS NOT NULL), '{}') AS "durations_ms!"
           FROM (SELECT id, interval_start, interval_end, state, finished_at FROM job_runs
                 WHERE job = $1 ORDER BY interval_start DESC, id DESC LIMIT $2) r
           LEFT JOIN task_instances t ON t.run_id = r.id
           GROUP BY r.id, r.interval_start, r.interval_end, r.state, r.finished_at
           ORDER BY r.interval_start, r.id"#,
        job,
        limit,
    )
    .fetch_all(pool)
    .await
}
