//! Deadlines: an interval of a job with `deadline` that has not succeeded
//! that long after its end is late, whether or not it has a run (the
//! daemon was down, the job paused, its runs blocked). Each late interval
//! is recorded once (`late_intervals`), with its notifications, in one
//! transaction; `job_schedule.deadlines_checked_until` keeps how far the
//! checks have come, so a check after a pause looks back to it. Its
//! statements are checked against the schema when hxjobs compiles.

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::PgPool;

use crate::interval::Interval;

/// Where the checks of `job` stand; on first sight, set to `horizon` (no
/// alerts for history before hxjobs watched the job).
pub async fn checked_until(
    pool: &PgPool,
    job: &str,
    horizon: DateTime<Utc>,
) -> Result<DateTime<Utc>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"INSERT INTO job_schedule (job, deadlines_checked_until) VALUES ($1, $2)
           ON CONFLICT (job) DO UPDATE
               SET deadlines_checked_until = COALESCE(job_schedule.deadlines_checked_until, $2)
           RETURNING deadlines_checked_until AS "checked_until!""#,
        job,
        horizon,
    )
    .fetch_one(pool)
    .await
}

/// A late interval just recorded.
#[derive(Debug, Clone)]
pub struct Late {
    pub interval: Interval,
    pub deadline_at: DateTime<Utc>,
}

/// Records the intervals (ending in `(from, to]`) that had not succeeded by
/// their deadline, each with a `deadline_missed` notification per target,
/// and moves the job's check to `to`. Returns the new ones.
pub async fn record_late(
    pool: &PgPool,
    job: &str,
    intervals: &[Interval],
    deadline: TimeDelta,
    to: DateTime<Utc>,
    targets: &[String],
) -> Result<Vec<Late>, sqlx::Error> {
    let starts: Vec<DateTime<Utc>> = intervals.iter().map(|i| i.start).collect();
    let ends: Vec<DateTime<Utc>> = intervals.iter().map(|i| i.end).collect();
    let mut tx = pool.begin().await?;
    let rows = sqlx::query!(
        r#"WITH due AS (
             SELECT s, e, e + make_interval(secs => $4) AS deadline_at
             FROM unnest($2::timestamptz[], $3::timestamptz[]) AS x(s, e)),
         late AS (
             INSERT INTO late_intervals (job, interval_start, interval_end, deadline_at)
             SELECT $1, s, e, deadline_at FROM due
             WHERE NOT EXISTS (
                 SELECT 1 FROM job_runs r
                 WHERE r.job = $1 AND r.interval_start = due.s AND r.state = 'success'
                   AND r.finished_at <= due.deadline_at)
             ON CONFLICT DO NOTHING
             RETURNING interval_start, interval_end, deadline_at),
         n AS (
             INSERT INTO notifications (target, event, payload, dedupe)
             SELECT t, 'deadline_missed', jsonb_build_object(
                        'event', 'deadline_missed', 'job', $1::text,
                        'interval_start', late.interval_start, 'interval_end', late.interval_end,
                        'deadline_at', late.deadline_at,
                        'run_id', (SELECT max(id) FROM job_runs r
                                   WHERE r.job = $1 AND r.interval_start = late.interval_start),
                        'status', COALESCE((SELECT 'its run is ' || r.state FROM job_runs r
                                            WHERE r.job = $1 AND r.interval_start = late.interval_start
                                            ORDER BY r.id DESC LIMIT 1), 'no run yet')),
                    format('late:%s:%s:%s', $1::text, late.interval_start, t)
             FROM late, unnest($5::text[]) t
             ON CONFLICT (dedupe) DO NOTHING)
         SELECT interval_start AS "start!", interval_end AS "end!",
                deadline_at AS "deadline_at!"
         FROM late"#,
        job,
        &starts,
        &ends,
        deadline.num_seconds() as f64,
        targets,
    )
    .fetch_all(&mut *tx)
    .await?;
    sqlx::query!(
        "UPDATE job_schedule SET deadlines_checked_until = $2 WHERE job = $1",
        job,
        to,
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows
        .into_iter()
        .map(|r| Late {
            interval: Interval {
                start: r.start,
                end: r.end,
            },
            deadline_at: r.deadline_at,
        })
        .collect())
}

/// The late intervals of a job, newest first, with whether they have
/// succeeded since.
pub async fn late_intervals(
    pool: &PgPool,
    job: &str,
    limit: i64,
) -> Result<Vec<LateRow>, sqlx::Error> {
    sqlx::query_as!(
        LateRow,
        r#"SELECT l.interval_start, l.interval_end, l.deadline_at, l.noticed_at,
                  EXISTS (SELECT 1 FROM job_runs r WHERE r.job = l.job
                            AND r.interval_start = l.interval_start AND r.state = 'success')
                      AS "succeeded_since!"
           FROM late_intervals l WHERE l.job = $1
           ORDER BY l.interval_start DESC LIMIT $2"#,
        job,
        limit,
    )
    .fetch_all(pool)
    .await
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct LateRow {
    pub interval_start: DateTime<Utc>,
    pub interval_end: DateTime<Utc>,
    pub deadline_at: DateTime<Utc>,
    pub noticed_at: DateTime<Utc>,
    pub succeeded_since: bool,
}
