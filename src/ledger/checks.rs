//! `check_results`: what each data check found for a task's try in a run,
//! written under the run's claim with its notifications, and read back for
//! the run page, the grid, the API, the scheduler's gate and reports.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::Fence;
use crate::interval::Interval;

/// One check's result, to record.
#[derive(Debug, Clone)]
pub struct NewResult<'a> {
    /// The successful attempt it checked (`task_attempts.id`).
    pub attempt_id: i64,
    pub task: &'a str,
    pub check: &'a str,
    pub try_number: i32,
    pub kind: &'a str,
    pub blocking: bool,
    /// `pass`, `fail`, `warn`, `error` or `skipped`.
    pub outcome: &'a str,
    pub observed: Option<f64>,
    pub message: &'a str,
}

/// Records a result while the claim holds, and for anything but a pass or
/// a skip a `check_failed` notification to each of `targets`, in the same
/// statement. False: the claim is gone, nothing was written.
pub async fn record(
    pool: &PgPool,
    fence: Fence,
    r: &NewResult<'_>,
    targets: &[String],
) -> Result<bool, sqlx::Error> {
    let written = sqlx::query_scalar!(
        r#"WITH run AS (SELECT id, job, interval_start, interval_end FROM job_runs
                        WHERE id = $1 AND attempts = $2 AND state = 'running'),
              c AS (INSERT INTO check_results (run_id, job, task, check_name, attempt_id, try,
                                               interval_start, interval_end, kind, blocking, outcome,
                                               observed, message)
                    SELECT run.id, run.job, $3, $4, $12, $5, run.interval_start, run.interval_end,
                           $6, $7, $8, $9, $10
                    FROM run
                    ON CONFLICT (attempt_id, check_name) DO UPDATE
                        SET outcome = EXCLUDED.outcome, observed = EXCLUDED.observed,
                            message = EXCLUDED.message, checked_at = now()
                    RETURNING run_id, job, interval_start, interval_end),
              n AS (INSERT INTO notifications (target, event, payload)
                    SELECT t, 'check_failed', jsonb_build_object(
                               'event', 'check_failed', 'job', c.job, 'run_id', c.run_id,
                               'interval_start', c.interval_start, 'interval_end', c.interval_end,
                               'task', $3::text, 'check', $4::text, 'kind', $6::text,
                               'blocking', $7::bool, 'outcome', $8::text, 'message', $10::text)
                    FROM c, unnest($11::text[]) t
                    WHERE $8 NOT IN ('pass', 'skipped'))
         SELECT count(*) AS "written!" FROM c"#,
        fence.run_id,
        fence.claim,
        r.task,
        r.check,
        r.try_number,
        r.kind,
        r.blocking,
        r.outcome,
        r.observed,
        r.message,
        targets,
        r.attempt_id,
    )
    .fetch_one(pool)
    .await?;
    Ok(written == 1)
}

/// The latest successful attempt of `task` in the run (`None`: it has
/// none, e.g. an operator marked it), with its try and the checks already
/// recorded for it (name, outcome, blocking).
pub async fn recorded_for_task(
    pool: &PgPool,
    run_id: i64,
    task: &str,
) -> Result<Option<(i64, i32, Vec<(String, String, bool)>)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"WITH a AS (SELECT id, try FROM task_attempts
                    WHERE run_id = $1 AND task = $2 AND outcome = 'success'
                    ORDER BY id DESC LIMIT 1)
         SELECT a.id AS "id!", a.try AS "try_number!", c.check_name AS "check_name?",
                c.outcome AS "outcome?", c.blocking AS "blocking?"
         FROM a LEFT JOIN check_results c ON c.attempt_id = a.id"#,
        run_id,
        task,
    )
    .fetch_all(pool)
    .await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let (id, try_number) = (first.id, first.try_number);
    let done = rows
        .into_iter()
        .filter_map(|r| Some((r.check_name?, r.outcome?, r.blocking?)))
        .collect();
    Ok(Some((id, try_number, done)))
}

/// A recorded result.
#[derive(Debug, Clone, Serialize)]
pub struct CheckRow {
    pub run_id: i64,
    pub job: String,
    pub task: String,
    pub check: String,
    #[serde(rename = "try")]
    pub try_number: i32,
    pub interval_start: DateTime<Utc>,
    pub interval_end: DateTime<Utc>,
    pub kind: String,
    pub blocking: bool,
    pub outcome: String,
    pub observed: Option<f64>,
    pub message: String,
    pub checked_at: DateTime<Utc>,
}

/// Every result of a run, newest try first within each check.
pub async fn of_run(pool: &PgPool, run_id: i64) -> Result<Vec<CheckRow>, sqlx::Error> {
    sqlx::query_as!(
        CheckRow,
        r#"SELECT run_id, job, task, check_name AS "check", try AS "try_number", interval_start,
                  interval_end, kind, blocking, outcome, observed, message, checked_at
         FROM check_results WHERE run_id = $1
         ORDER BY task, check_name, try DESC"#,
        run_id,
    )
    .fetch_all(pool)
    .await
}

/// The latest result of each check of `job` for intervals starting in
/// `[from, to)`, newest interval first, at most `limit`.
pub async fn of_job(
    pool: &PgPool,
    job: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<CheckRow>, sqlx::Error> {
    sqlx::query_as!(
        CheckRow,
        r#"SELECT DISTINCT ON (interval_start, task, check_name)
                  run_id, job, task, check_name AS "check", try AS "try_number", interval_start,
                  interval_end, kind, blocking, outcome, observed, message, checked_at
         FROM check_results
         WHERE job = $1 AND interval_start >= $2 AND interval_start < $3
         ORDER BY interval_start DESC, task, check_name, checked_at DESC, id DESC
         LIMIT $4"#,
        job,
        from,
        to,
        limit.clamp(1, 10_000),
    )
    .fetch_all(pool)
    .await
}

/// The worst latest outcome per run among `runs` (`fail`, `error`, `warn`,
/// `pass`), for the grid.
pub async fn worst_by_run(
    pool: &PgPool,
    runs: &[i64],
) -> Result<HashMap<i64, String>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"WITH latest AS (
             SELECT DISTINCT ON (run_id, task, check_name) run_id, outcome
             FROM check_results WHERE run_id = ANY($1)
             ORDER BY run_id, task, check_name, try DESC)
         SELECT run_id AS "run_id!",
                (array_agg(outcome ORDER BY CASE outcome WHEN 'fail' THEN 0 WHEN 'error' THEN 1
                                                          WHEN 'warn' THEN 2 WHEN 'pass' THEN 3
                                                          ELSE 4 END))[1] AS "outcome!"
         FROM latest GROUP BY run_id"#,
        runs,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| (r.run_id, r.outcome)).collect())
}

/// Intervals of `job` inside `[from, to)` held by a blocking check: the
/// latest result of some check failed or could not run, and no run of
/// that interval has succeeded since (clear it, or mark it).
pub async fn held(
    conn: impl sqlx::PgExecutor<'_>,
    job: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<(Interval, String)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"WITH latest AS (
             SELECT DISTINCT ON (c.interval_start, c.task, c.check_name)
                    c.run_id, c.interval_start, c.interval_end, c.check_name, c.outcome, c.blocking,
                    c.message
             FROM check_results c
             WHERE c.job = $1 AND c.interval_start >= $2 AND c.interval_end <= $3
             ORDER BY c.interval_start, c.task, c.check_name, c.checked_at DESC, c.id DESC)
         SELECT l.interval_start AS "interval_start!", l.interval_end AS "interval_end!",
                string_agg(format('%s: %s', l.check_name, l.message), '; ') AS "why!"
         FROM latest l
         WHERE l.blocking AND l.outcome IN ('fail', 'error')
           AND NOT EXISTS (SELECT 1 FROM job_runs r
                           WHERE r.job = $1 AND r.interval_start = l.interval_start
                             AND r.state = 'success')
         GROUP BY 1, 2 ORDER BY 1"#,
        job,
        from,
        to,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                Interval {
                    start: r.interval_start,
                    end: r.interval_end,
                },
                r.why,
            )
        })
        .collect())
}

/// The latest result of every check on intervals inside `[from, to)`, for
/// a report's data-quality line: counts by outcome, and the failures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Quality {
    pub checks: i64,
    pub passed: i64,
    pub failed: i64,
    pub warned: i64,
    pub errors: i64,
    pub skipped: i64,
    /// `job check (interval start)` of failures and warnings, at most 5.
    pub problems: Vec<String>,
}

pub async fn quality(
    pool: &PgPool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Quality, sqlx::Error> {
    let rows = sqlx::query!(
        r#"WITH latest AS (
             SELECT DISTINCT ON (job, interval_start, task, check_name)
                    job, interval_start, check_name, outcome
             FROM check_results
             WHERE interval_start >= $1 AND interval_end <= $2
             ORDER BY job, interval_start, task, check_name, checked_at DESC, id DESC)
         SELECT job AS "job!", interval_start AS "interval_start!", check_name AS "check_name!",
                outcome AS "outcome!"
         FROM latest ORDER BY interval_start, job, check_name"#,
        from,
        to,
    )
    .fetch_all(pool)
    .await?;
    let mut q = Quality::default();
    for r in rows {
        q.checks += 1;
        match r.outcome.as_str() {
            "pass" => q.passed += 1,
            "fail" => q.failed += 1,
            "warn" => q.warned += 1,
            "error" => q.errors += 1,
            _ => q.skipped += 1,
        }
        if matches!(r.outcome.as_str(), "fail" | "warn" | "error") && q.problems.len() < 5 {
            q.problems.push(format!(
                "{} {} {} ({} UTC)",
                r.job,
                r.check_name,
                r.outcome,
                r.interval_start.format("%Y-%m-%d %H:%M")
            ));
        }
    }
    Ok(q)
}
