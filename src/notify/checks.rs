//! The checks that raise notifications on their own: deadlines missed, and
//! hours of ingest with more dead letters or gaps than allowed.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::{targets, Rule};
use crate::config::Config;
use crate::dag::Job;
use crate::interval::Interval;
use crate::ledger::deadlines;

/// Intervals one check looks at, at most, per job.
const MAX_INTERVALS: usize = 10_000;

/// Records every interval of a job with a `deadline` whose deadline passed
/// since the last check without a success, with its notifications.
/// Returns how many were late.
pub async fn check_deadlines(
    pool: &PgPool,
    config: &Config,
    jobs: &[std::sync::Arc<Job>],
    now: DateTime<Utc>,
) -> Result<usize, sqlx::Error> {
    let mut late = 0;
    for job in jobs {
        let Some(deadline) = job.deadline else {
            continue;
        };
        // Intervals ending at or before this are past their deadline.
        let horizon = now - deadline;
        let from = deadlines::checked_until(pool, &job.name, horizon).await?;
        if from >= horizon {
            continue;
        }
        let intervals = ending_in(job, from, horizon);
        let to = intervals.last().map_or(horizon, |i| {
            if intervals.len() >= MAX_INTERVALS {
                i.end
            } else {
                horizon
            }
        });
        let recorded = deadlines::record_late(
            pool,
            &job.name,
            &intervals,
            deadline,
            to,
            &targets(config, job, Rule::Late),
        )
        .await?;
        for l in &recorded {
            tracing::warn!(
                job = %job.name, interval_start = %l.interval.start, deadline_at = %l.deadline_at,
                "interval late: not succeeded by its deadline"
            );
            metrics::counter!("hxjobs_deadline_missed_total", "job" => job.name.clone())
                .increment(1);
        }
        late += recorded.len();
    }
    Ok(late)
}

/// The job's intervals (from its `start_date`) ending in `(from, to]`.
fn ending_in(job: &Job, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Interval> {
    let mut out = Vec::new();
    let mut i = job.interval.containing(from);
    if i.end <= from {
        i = job.interval.containing(i.end);
    }
    while i.end <= to && out.len() < MAX_INTERVALS {
        if i.start >= job.start_date {
            out.push(i);
        }
        i = job.interval.containing(i.end);
    }
    out
}

/// One `on_ingest` notification per target for each of the last two hours
/// with more dead letters (or gaps) than `notify.dead_letters_per_hour`
/// (`gaps_per_hour`). Returns how many were raised.
pub async fn check_ingest(
    pool: &PgPool,
    config: &Config,
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let n = &config.notify;
    if n.on_ingest.is_empty() {
        return Ok(0);
    }
    // A threshold of 0 turns its check off.
    let raised = sqlx::query!(
        "WITH counts AS (
             SELECT 'dead_letters' AS event, date_trunc('hour', received_at) AS hour,
                    count(*) AS n, $2::int8 AS threshold
             FROM dead_letters
             WHERE $2 > 0 AND received_at >= date_trunc('hour', $1::timestamptz) - interval '1 hour'
             GROUP BY 2
             UNION ALL
             SELECT 'gaps', date_trunc('hour', detected_at), count(*), $3::int8
             FROM ingest_gaps
             WHERE $3 > 0 AND detected_at >= date_trunc('hour', $1::timestamptz) - interval '1 hour'
             GROUP BY 2),
         hours AS (SELECT * FROM counts WHERE n > threshold)
         INSERT INTO notifications (target, event, payload, dedupe)
         SELECT t, hours.event, jsonb_build_object('event', hours.event, 'hour', hours.hour,
                                                   'count', hours.n, 'threshold', hours.threshold),
                format('%s:%s:%s', hours.event, hours.hour, t)
         FROM hours, unnest($4::text[]) t
         ON CONFLICT (dedupe) DO NOTHING",
        now,
        n.dead_letters_per_hour as i64,
        n.gaps_per_hour as i64,
        &n.on_ingest,
    )
    .execute(pool)
    .await?
    .rows_affected();
    Ok(raised)
}
