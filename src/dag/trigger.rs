//! Completeness triggers (`trigger = "complete"`): a job's run for an
//! interval is queued the moment what it reads is complete, not at a clock
//! time. Without `wait_for`, that is ingest: every event partition caught
//! up with the broker past the interval's end plus `lateness_secs`
//! (`caught_up_through`, moved in the transaction that stores a batch).
//! With `wait_for`, it is the upstream jobs' runs inside the interval,
//! all succeeded. The job's schedule, if it has one, still queues the
//! interval at the latest.
//!
//! The decision is taken under the job's cursor lock, and a scheduled
//! interval's run is unique, so any number of daemons queue it once.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::PgPool;

use super::job::{CatchupPolicy, Trigger};
use super::{Interval, Job};
use crate::config::Config;
use crate::ledger::{self, JobLock};

const SECONDS: &str = "%Y-%m-%d %H:%M:%S UTC";

/// Intervals past the cursor looked at in one pass, at most.
const WINDOW: usize = 64;

/// When a `trigger = "complete"` job's interval is complete, in words;
/// `None` for a job on its schedule alone.
pub fn describe(job: &Job) -> Option<String> {
    let interval = job.interval.as_str();
    match job.trigger {
        Trigger::Schedule => None,
        Trigger::Complete { lateness_secs } if job.wait_for.is_empty() => Some(format!(
            "each {interval}'s events are stored{}",
            lateness(lateness_secs)
        )),
        Trigger::Complete { .. } => Some(format!(
            "each {interval}'s runs of {} have succeeded",
            job.wait_for.join(", ")
        )),
    }
}

fn lateness(secs: u64) -> String {
    if secs == 0 {
        String::new()
    } else {
        format!(" {secs} s past its end")
    }
}

fn delta(secs: u64) -> TimeDelta {
    TimeDelta::seconds(i64::try_from(secs).unwrap_or(i64::MAX))
}

/// Everything the broker held at this time is stored, over every event
/// partition; `None` while some partition never caught up.
pub async fn stored_through(
    config: &Config,
    pool: &PgPool,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    let topics = config.topics.event_topic_names();
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    crate::ingest::lease::caught_up_through(pool, &config.kafka.group_id, &topics).await
}

/// Why ingest has not completed `interval` (with `lateness_secs`) when it
/// has stored everything up to `through`; `None` once it has. Pure.
pub fn data_waits(
    interval: Interval,
    lateness_secs: u64,
    through: Option<DateTime<Utc>>,
) -> Option<String> {
    let needed = interval.end + delta(lateness_secs);
    match through {
        Some(t) if t >= needed => None,
        Some(t) => Some(format!(
            "events stored through {}, needed through {}",
            t.format(SECONDS),
            needed.format(SECONDS)
        )),
        None => Some(format!(
            "events needed through {}: a partition has never caught up",
            needed.format(SECONDS)
        )),
    }
}

/// The span of `upstream`'s runs that `interval` of a job waiting for it
/// waits on: those inside it, or the one whose interval covers it.
fn upstream_span(upstream: &Job, job: &Job, interval: Interval) -> (DateTime<Utc>, DateTime<Utc>) {
    let (from, to) = if upstream.interval.tiles(job.interval) {
        (interval.start, interval.end)
    } else {
        let covering = upstream.interval.containing(interval.start);
        (covering.start, covering.end)
    };
    (from.max(upstream.start_date), to)
}

/// The intervals of `job`'s `wait_for` jobs beneath `interval`, and of
/// theirs in turn, that a blocking data check holds (failed, not cleared
/// or marked since), in words. A held interval is waited on past
/// `wait_timeout_secs`: a weekly job does not start without a day that
/// never ran because one of its hours failed a check.
pub async fn upstream_holds(
    conn: &mut sqlx::PgConnection,
    jobs: &[Arc<Job>],
    job: &Job,
    interval: Interval,
) -> Result<Vec<String>, sqlx::Error> {
    let mut held = Vec::new();
    let mut frontier: Vec<(&Job, Interval)> = vec![(job, interval)];
    // Job files are few; the depth bounds a wait_for cycle.
    for _ in 0..8 {
        let mut next = Vec::new();
        for (below, span) in frontier {
            for name in &below.wait_for {
                let Some(upstream) = jobs.iter().find(|j| &j.name == name) else {
                    continue;
                };
                let (from, to) = upstream_span(upstream, below, span);
                for (i, why) in ledger::checks::held(&mut *conn, name, from, to).await? {
                    let text = format!(
                        "{name} {} from {} held by a failed check ({why}); clear or mark that run",
                        upstream.interval.as_str(),
                        i.start.format("%Y-%m-%d %H:%M UTC")
                    );
                    if !held.contains(&text) {
                        held.push(text);
                    }
                }
                next.push((
                    upstream.as_ref(),
                    Interval {
                        start: from,
                        end: to,
                    },
                ));
            }
        }
        if next.is_empty() {
            break;
        }
        frontier = next;
    }
    Ok(held)
}

/// The runs of `job`'s `wait_for` jobs inside `interval` (or the one run
/// whose interval covers it) that have not succeeded, in words; empty once
/// they all have. A job waited for that is not loaded here is not waited on.
pub async fn upstream_waits(
    conn: &mut sqlx::PgConnection,
    jobs: &[Arc<Job>],
    job: &Job,
    interval: Interval,
) -> Result<Vec<String>, sqlx::Error> {
    let mut pending = Vec::new();
    for name in &job.wait_for {
        let Some(upstream) = jobs.iter().find(|j| &j.name == name) else {
            continue;
        };
        let (from, to) = upstream_span(upstream, job, interval);
        let expected = upstream.interval.starts(from, to).len() as i64;
        let done = ledger::succeeded_intervals(&mut *conn, name, from, to).await?;
        if done < expected {
            pending.push(format!(
                "{} of {} {} runs of {name}",
                expected - done,
                expected,
                upstream.interval.as_str()
            ));
        }
    }
    Ok(pending)
}

/// The start of the oldest interval the trigger still looks at, from the
/// job's cursor. First seen: the interval complete now. Older intervals are
/// the schedule's: under a catch-up policy other than `all` (after a pause,
/// a daemon-less gap) only the newest is queued, as its policy says.
fn first_open(job: &Job, cursor: Option<DateTime<Utc>>, now: DateTime<Utc>) -> DateTime<Utc> {
    let newest = job.interval.last_complete(now).start;
    match (cursor, job.catchup.policy) {
        (Some(c), CatchupPolicy::All) => c,
        (Some(c), _) => c.max(newest),
        (None, _) => newest,
    }
    .max(job.start_date)
}

/// The intervals of a `trigger = "complete"` job that are complete at
/// `now` and have no scheduled run yet, oldest first, as `(queued at,
/// interval)`; the cursor moves past every interval queued before the
/// first one still incomplete. Called under `lock`.
pub async fn due(
    lock: &mut JobLock,
    config: &Config,
    pool: &PgPool,
    jobs: &[Arc<Job>],
    job: &Job,
    now: DateTime<Utc>,
) -> Result<Vec<(DateTime<Utc>, Interval)>, sqlx::Error> {
    let Trigger::Complete { lateness_secs } = job.trigger else {
        return Ok(Vec::new());
    };
    let from = first_open(job, lock.complete_from, now);
    let starts: Vec<DateTime<Utc>> = job
        .interval
        .starts(from, now)
        .into_iter()
        .filter(|s| job.interval.containing(*s).end <= now)
        .take(WINDOW)
        .collect();
    let Some(last) = starts.last() else {
        if lock.complete_from.is_none() {
            lock.advance_complete(from).await?;
        }
        return Ok(Vec::new());
    };
    let queued = lock
        .scheduled_starts(from, *last + TimeDelta::seconds(1))
        .await?;
    let through = if job.wait_for.is_empty() {
        stored_through(config, pool).await?
    } else {
        None
    };
    let mut due = Vec::new();
    let mut cursor = from;
    let mut contiguous = true;
    for start in starts {
        let interval = job.interval.containing(start);
        let complete = queued.contains(&start)
            || if job.wait_for.is_empty() {
                data_waits(interval, lateness_secs, through).is_none()
            } else {
                upstream_waits(lock.conn(), jobs, job, interval)
                    .await?
                    .is_empty()
            };
        if !complete {
            contiguous = false;
            if job.wait_for.is_empty() {
                break; // ingest completes intervals in order
            }
            continue;
        }
        if !queued.contains(&start) {
            due.push((now, interval));
        }
        if contiguous {
            cursor = interval.end;
        }
    }
    if lock.complete_from != Some(cursor) {
        lock.advance_complete(cursor).await?;
    }
    Ok(due)
}

/// What each `trigger = "complete"` job among `jobs` waits on before its
/// next run is queued, in words, by job name (jobs on their schedule alone
/// are left out).
pub async fn waiting_on(
    config: &Config,
    pool: &PgPool,
    jobs: &[Arc<Job>],
    now: DateTime<Utc>,
) -> Result<HashMap<String, String>, sqlx::Error> {
    let mut out = HashMap::new();
    let names: Vec<String> = jobs
        .iter()
        .filter(|j| matches!(j.trigger, Trigger::Complete { .. }))
        .map(|j| j.name.clone())
        .collect();
    if names.is_empty() {
        return Ok(out);
    }
    let cursors = ledger::complete_cursors(pool, &names).await?;
    let mut through = None;
    for job in jobs {
        let Trigger::Complete { lateness_secs } = job.trigger else {
            continue;
        };
        let cursor = cursors
            .iter()
            .find(|(n, _)| *n == job.name)
            .map(|(_, c)| *c);
        let from = first_open(job, cursor, now);
        let interval = job.interval.containing(from);
        let what = format!(
            "the {} from {}",
            job.interval.as_str(),
            interval.start.format("%Y-%m-%d %H:%M UTC")
        );
        let waits: Vec<String> = if interval.end > now {
            vec![format!(
                "it ends at {}",
                interval.end.format("%Y-%m-%d %H:%M UTC")
            )]
        } else if job.wait_for.is_empty() {
            if through.is_none() {
                through = Some(stored_through(config, pool).await?);
            }
            data_waits(interval, lateness_secs, through.flatten())
                .into_iter()
                .collect()
        } else {
            let mut conn = pool.acquire().await?;
            let mut waits = upstream_holds(&mut conn, jobs, job, interval).await?;
            waits.extend(upstream_waits(&mut conn, jobs, job, interval).await?);
            waits
        };
        let text = if waits.is_empty() {
            format!("{what}: complete, queued at the next pass")
        } else {
            format!("{what}: {}", waits.join(", "))
        };
        out.insert(job.name.clone(), text);
    }
    Ok(out)
}

/// Whether some data-triggered job among `jobs` has an interval ingest has
/// completed since its cursor: a daemon then runs a pass at once.
pub async fn data_due(
    config: &Config,
    pool: &PgPool,
    jobs: &[Arc<Job>],
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let watched: Vec<&Job> = jobs
        .iter()
        .filter(|j| matches!(j.trigger, Trigger::Complete { .. }) && j.wait_for.is_empty())
        .map(|j| &**j)
        .collect();
    if watched.is_empty() {
        return Ok(false);
    }
    let names: Vec<String> = watched.iter().map(|j| j.name.clone()).collect();
    let cursors = ledger::complete_cursors(pool, &names).await?;
    let mut through = None;
    for job in watched {
        let Trigger::Complete { lateness_secs } = job.trigger else {
            continue;
        };
        // Never looked at (or paused before it was): the poll sets its cursor.
        let Some((_, from)) = cursors.iter().find(|(n, _)| *n == job.name) else {
            continue;
        };
        let interval = job.interval.containing(*from);
        if interval.end + delta(lateness_secs) > now {
            continue;
        }
        if through.is_none() {
            through = Some(stored_through(config, pool).await?);
        }
        if data_waits(interval, lateness_secs, through.flatten()).is_none() {
            return Ok(true);
        }
    }
    Ok(false)
}
