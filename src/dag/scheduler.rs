//! Schedules become runs, runs go to workers. PostgreSQL is the only
//! coordinator, so any number of daemons can share one database:
//!
//! - each job has a cursor row in `job_schedule` (the newest occurrence
//!   already turned into runs or skips); turning occurrences into runs
//!   happens under that row's lock, and a scheduled interval's run is unique
//!   (`job_runs_scheduled_once`), so every occurrence is enqueued once;
//! - claiming a run takes the same row lock, keeps to `max_active_runs`
//!   and flips `queued` → `running` for this worker;
//! - a running run whose heartbeat is older than `stale_after_secs` lost
//!   its worker and is queued again (failed after `max_run_attempts`).
//!
//! The clock is a parameter ([`Scheduler::enqueue_due`] takes `now`), so
//! tests drive schedules with fixed instants.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use croner::Direction;
use sqlx::PgPool;
use tokio::task::{AbortHandle, JoinSet};

use super::executor::{self, Claimed, RunReport, RunType};
use super::job::CatchupPolicy;
use super::{Interval, Job};
use crate::config::{Config, SchedulerConfig};
use crate::db::Pools;

/// Occurrences looked at in one pass at most (a job first seen long after
/// its `start_date` with a schedule of every minute needs ~525,000 a year).
const MAX_SCAN: usize = 5_000_000;

/// Occurrences the catch-up policy did not run: a contiguous range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skipped {
    pub first_interval_start: DateTime<Utc>,
    pub last_interval_start: DateTime<Utc>,
    pub occurrences: i64,
}

/// What one look at a job's schedule decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// `(fire time, interval)` to run, oldest first.
    pub runs: Vec<(DateTime<Utc>, Interval)>,
    pub skipped: Option<Skipped>,
    /// The newest occurrence looked at: the job's new cursor.
    pub newest_fire: Option<DateTime<Utc>>,
}

/// Decides which occurrences after `last_fire` and up to `now` run, under
/// the job's catch-up policy. An occurrence runs the interval that was
/// complete when it fired. Pure.
pub fn plan(job: &Job, last_fire: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Plan {
    let grace = TimeDelta::seconds(i64::try_from(job.catchup.grace_secs).unwrap_or(i64::MAX));
    let mut runs = Vec::new();
    let mut seen = HashSet::new();
    let mut skipped: Option<Skipped> = None;
    let mut newest_fire = None;
    let fires = job
        .schedule
        .iter_from(now.with_timezone(&job.timezone), Direction::Backward)
        .take(MAX_SCAN);
    for fire in fires {
        let fire = fire.with_timezone(&Utc);
        if fire > now {
            continue;
        }
        if last_fire.is_some_and(|l| fire <= l) {
            break;
        }
        let interval = job.interval.last_complete(fire);
        if interval.start < job.start_date {
            break;
        }
        let newest = newest_fire.is_none();
        if newest {
            newest_fire = Some(fire);
        }
        if !seen.insert(interval.start) {
            continue; // a newer occurrence already covers this interval
        }
        let take = match job.catchup.policy {
            CatchupPolicy::All => runs.len() < job.catchup.max_intervals as usize,
            CatchupPolicy::Latest => newest,
            CatchupPolicy::None => newest && now - fire <= grace,
        };
        if take {
            runs.push((fire, interval));
        } else {
            let s = skipped.get_or_insert(Skipped {
                first_interval_start: interval.start,
                last_interval_start: interval.start,
                occurrences: 0,
            });
            s.first_interval_start = interval.start;
            s.occurrences += 1;
        }
    }
    runs.reverse();
    Plan {
        runs,
        skipped,
        newest_fire,
    }
}

/// What enqueueing did for one job.
#[derive(Debug, Clone)]
pub struct Enqueued {
    pub job: String,
    pub created: Vec<Interval>,
    pub skipped: Option<Skipped>,
}

/// A run whose worker stopped sending heartbeats.
#[derive(Debug, Clone)]
pub struct Lost {
    pub run_id: i64,
    pub job: String,
    /// `queued` (will run again) or `failed` (lost too often).
    pub state: String,
}

/// Queues again (or fails, after `max_run_attempts` claims) every running
/// run without a heartbeat for `stale_after_secs`.
pub async fn reap_stale(
    pool: &PgPool,
    settings: &SchedulerConfig,
) -> Result<Vec<Lost>, sqlx::Error> {
    let stale_after = Duration::from_secs(settings.stale_after_secs);
    let max_attempts = settings.max_run_attempts;
    let rows: Vec<(i64, String, String)> = sqlx::query_as(
        "WITH lost AS (
             UPDATE job_runs SET
                 state = CASE WHEN attempts >= $2 THEN 'failed' ELSE 'queued' END,
                 finished_at = CASE WHEN attempts >= $2 THEN now() END,
                 error = format('worker %s stopped sending heartbeats (claim %s of at most %s)',
                                worker, attempts, $2),
                 worker = NULL
             WHERE state = 'running' AND heartbeat_at < now() - make_interval(secs => $1)
             RETURNING id, job, state
         ), tasks AS (
             UPDATE task_instances t SET
                 state = CASE WHEN lost.state = 'failed' THEN 'failed' ELSE 'queued' END,
                 error = 'its worker stopped sending heartbeats'
             FROM lost
             WHERE t.run_id = lost.id AND t.state IN ('running', 'up_for_retry')
         )
         SELECT id, job, state FROM lost",
    )
    .bind(stale_after.as_secs_f64())
    .bind(max_attempts as i32)
    .fetch_all(pool)
    .await?;
    for (run_id, job, state) in &rows {
        tracing::warn!(run_id, job, state, "run lost its worker");
    }
    Ok(rows
        .into_iter()
        .map(|(run_id, job, state)| Lost { run_id, job, state })
        .collect())
}

/// Makes sure `job` has a cursor row to lock.
async fn ensure_cursor(pool: &PgPool, job: &str) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO job_schedule (job) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(job)
        .execute(pool)
        .await?;
    Ok(())
}

/// One daemon's view: its jobs, its database, its worker name.
#[derive(Clone)]
pub struct Scheduler {
    pub config: Arc<Config>,
    pub pools: Pools,
    pub jobs: Vec<Arc<Job>>,
    pub worker: String,
}

impl Scheduler {
    pub fn new(config: Arc<Config>, pools: Pools, jobs: Vec<Job>, worker: String) -> Self {
        Scheduler {
            config,
            pools,
            jobs: jobs.into_iter().map(Arc::new).collect(),
            worker,
        }
    }

    /// Turns every job's occurrences up to `now` into queued runs and skips.
    pub async fn enqueue_due(&self, now: DateTime<Utc>) -> Result<Vec<Enqueued>, sqlx::Error> {
        let mut out = Vec::new();
        for job in &self.jobs {
            out.push(self.enqueue_job(job, now).await?);
        }
        Ok(out)
    }

    /// [`plan`] for one job, applied under its cursor lock.
    pub async fn enqueue_job(
        &self,
        job: &Job,
        now: DateTime<Utc>,
    ) -> Result<Enqueued, sqlx::Error> {
        ensure_cursor(&self.pools.ledger, &job.name).await?;
        let mut tx = self.pools.ledger.begin().await?;
        let last_fire: Option<DateTime<Utc>> =
            sqlx::query_scalar("SELECT last_fire FROM job_schedule WHERE job = $1 FOR UPDATE")
                .bind(&job.name)
                .fetch_one(&mut *tx)
                .await?;
        let plan = plan(job, last_fire, now);
        let mut created = Vec::new();
        if !plan.runs.is_empty() {
            let fires: Vec<DateTime<Utc>> = plan.runs.iter().map(|(f, _)| *f).collect();
            let starts: Vec<DateTime<Utc>> = plan.runs.iter().map(|(_, i)| i.start).collect();
            let ends: Vec<DateTime<Utc>> = plan.runs.iter().map(|(_, i)| i.end).collect();
            let rows: Vec<(DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
                "INSERT INTO job_runs (job, run_type, scheduled_for, interval_start, interval_end)
                 SELECT $1, 'scheduled', * FROM unnest($2::timestamptz[], $3::timestamptz[], $4::timestamptz[])
                 ON CONFLICT DO NOTHING
                 RETURNING interval_start, interval_end",
            )
            .bind(&job.name)
            .bind(&fires)
            .bind(&starts)
            .bind(&ends)
            .fetch_all(&mut *tx)
            .await?;
            created = rows
                .into_iter()
                .map(|(start, end)| Interval { start, end })
                .collect();
            created.sort();
        }
        if let Some(s) = plan.skipped {
            sqlx::query(
                "INSERT INTO schedule_skips (job, policy, first_interval_start, last_interval_start, occurrences)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&job.name)
            .bind(policy_name(job.catchup.policy))
            .bind(s.first_interval_start)
            .bind(s.last_interval_start)
            .bind(s.occurrences)
            .execute(&mut *tx)
            .await?;
            tracing::info!(
                job = %job.name, occurrences = s.occurrences,
                first = %s.first_interval_start, last = %s.last_interval_start,
                policy = policy_name(job.catchup.policy), "missed occurrences skipped by the catch-up policy"
            );
        }
        if let Some(fire) = plan.newest_fire {
            sqlx::query(
                "UPDATE job_schedule SET last_fire = $2, updated_at = now() WHERE job = $1",
            )
            .bind(&job.name)
            .bind(fire)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        for i in &created {
            tracing::info!(job = %job.name, interval_start = %i.start, "scheduled run queued");
        }
        Ok(Enqueued {
            job: job.name.clone(),
            created,
            skipped: plan.skipped,
        })
    }

    /// Claims up to `limit` queued scheduled or manual runs of `job`, oldest
    /// interval first, within the job's `max_active_runs` over all workers.
    pub async fn claim(&self, job: &Job, limit: usize) -> Result<Vec<Claimed>, sqlx::Error> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        ensure_cursor(&self.pools.ledger, &job.name).await?;
        let mut tx = self.pools.ledger.begin().await?;
        sqlx::query("SELECT 1 FROM job_schedule WHERE job = $1 FOR UPDATE")
            .bind(&job.name)
            .execute(&mut *tx)
            .await?;
        let active: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM job_runs
             WHERE job = $1 AND state = 'running' AND run_type <> 'backfill'",
        )
        .bind(&job.name)
        .fetch_one(&mut *tx)
        .await?;
        let room = (i64::from(job.max_active_runs) - active).clamp(0, limit as i64);
        if room == 0 {
            tx.commit().await?;
            return Ok(Vec::new());
        }
        let candidates: Vec<(i64, DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
            "SELECT id, interval_start, interval_end FROM job_runs
             WHERE job = $1 AND state = 'queued' AND run_type <> 'backfill'
             ORDER BY interval_start, id
             LIMIT $2
             FOR UPDATE SKIP LOCKED",
        )
        .bind(&job.name)
        .bind(if job.wait_for.is_empty() { room } else { 1000 })
        .fetch_all(&mut *tx)
        .await?;
        let mut ids = Vec::new();
        for (id, start, end) in candidates {
            if ids.len() as i64 >= room {
                break;
            }
            match self
                .waiting_on(&mut tx, job, Interval { start, end })
                .await?
            {
                None => ids.push(id),
                Some(note) => {
                    sqlx::query(
                        "UPDATE job_runs SET error = $2 WHERE id = $1 AND error IS DISTINCT FROM $2",
                    )
                    .bind(id)
                    .bind(note)
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        let rows = sqlx::query_as(
            "UPDATE job_runs SET state = 'running', worker = $2, started_at = now(),
                    heartbeat_at = now(), attempts = attempts + 1, error = NULL
             WHERE id = ANY($1)
             RETURNING id, run_type, interval_start, interval_end, attempts",
        )
        .bind(&ids)
        .bind(&self.worker)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(claimed_from_rows(rows))
    }

    /// Why a run of `job` for `interval` cannot start yet: the runs of a
    /// `wait_for` job inside the interval that have not succeeded. `None`
    /// once they all have, once `wait_timeout_secs` after the interval's
    /// end is over (its tasks then compute what is missing themselves), or
    /// when the job waited for is not loaded here.
    async fn waiting_on(
        &self,
        conn: &mut sqlx::PgConnection,
        job: &Job,
        interval: Interval,
    ) -> Result<Option<String>, sqlx::Error> {
        let timeout = TimeDelta::seconds(i64::try_from(job.wait_timeout_secs).unwrap_or(i64::MAX));
        if job.wait_for.is_empty() || Utc::now() >= interval.end + timeout {
            return Ok(None);
        }
        let mut pending = Vec::new();
        for name in &job.wait_for {
            let Some(upstream) = self.jobs.iter().find(|j| &j.name == name) else {
                continue;
            };
            let from = interval.start.max(upstream.start_date);
            let expected = upstream.interval.starts(from, interval.end).len() as i64;
            let done: i64 = sqlx::query_scalar(
                "SELECT count(DISTINCT interval_start) FROM job_runs
                 WHERE job = $1 AND state = 'success'
                   AND interval_start >= $2 AND interval_end <= $3",
            )
            .bind(name)
            .bind(from)
            .bind(interval.end)
            .fetch_one(&mut *conn)
            .await?;
            if done < expected {
                pending.push(format!(
                    "{} of {} {} runs of {name}",
                    expected - done,
                    expected,
                    upstream.interval.as_str()
                ));
            }
        }
        Ok((!pending.is_empty()).then(|| {
            format!(
                "waiting for {} to succeed (starts without them at {})",
                pending.join(", "),
                (interval.end + timeout).to_rfc3339()
            )
        }))
    }

    /// One whole pass, run to the end in this task: lost runs requeued,
    /// occurrences up to `now` enqueued, then every claimable run executed
    /// until none is left for this worker. `hxjobs daemon --once` and tests.
    pub async fn tick(&self, now: DateTime<Utc>) -> Result<Vec<RunReport>, sqlx::Error> {
        reap_stale(&self.pools.ledger, &self.config.scheduler).await?;
        self.enqueue_due(now).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut reports = Vec::new();
        loop {
            let mut ran = false;
            for job in &self.jobs {
                for run in self.claim(job, 1).await? {
                    ran = true;
                    reports.push(
                        executor::execute(&self.config, &self.pools, job, &run, stop.clone())
                            .await?,
                    );
                }
            }
            if !ran {
                return Ok(reports);
            }
        }
    }
}

/// A claimed ledger row: id, run_type, interval_start, interval_end, attempts.
pub(crate) type ClaimRow = (i64, String, DateTime<Utc>, DateTime<Utc>, i32);

/// Claimed ledger rows → claims, oldest first.
pub(crate) fn claimed_from_rows(rows: Vec<ClaimRow>) -> Vec<Claimed> {
    let mut claimed: Vec<Claimed> = rows
        .into_iter()
        .map(|(run_id, run_type, start, end, attempt)| Claimed {
            run_id,
            run_type: RunType::parse(&run_type).unwrap_or(RunType::Manual),
            interval: Interval { start, end },
            attempt,
        })
        .collect();
    claimed.sort_by_key(|c| (c.interval.start, c.run_id));
    claimed
}

pub fn policy_name(policy: CatchupPolicy) -> &'static str {
    match policy {
        CatchupPolicy::All => "all",
        CatchupPolicy::Latest => "latest",
        CatchupPolicy::None => "none",
    }
}

/// Returns once `stop` is true (polled every 100 ms).
pub(crate) async fn stopped(stop: &AtomicBool) {
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A finished run as seen by whoever spawned it.
pub struct Finished {
    pub run: Claimed,
    pub job: String,
    /// From the claim to the ledger's final write.
    pub elapsed: Duration,
    pub result: Result<RunReport, String>,
}

/// Runs executing in the background, each a tokio task that can be
/// stopped and handed back (daemon and backfill share this).
#[derive(Default)]
pub struct Running {
    set: JoinSet<Finished>,
    handles: HashMap<i64, (Claimed, AbortHandle)>,
}

impl Running {
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    pub fn spawn(
        &mut self,
        config: Arc<Config>,
        pools: Pools,
        job: Arc<Job>,
        run: Claimed,
        stop: Arc<AtomicBool>,
        claimed_at: Instant,
    ) {
        let handle = self.set.spawn(async move {
            let result = executor::execute(&config, &pools, &job, &run, stop)
                .await
                .map_err(|e| format!("ledger write failed: {e}"));
            Finished {
                run,
                job: job.name.clone(),
                elapsed: claimed_at.elapsed(),
                result,
            }
        });
        self.handles.insert(run.run_id, (run, handle));
    }

    /// The next run to finish; `None` when nothing is running. A run that
    /// panicked keeps its `running` row: with no heartbeat, it is reaped.
    pub async fn next(&mut self) -> Option<Finished> {
        loop {
            match self.set.join_next().await? {
                Ok(done) => {
                    self.handles.remove(&done.run.run_id);
                    return Some(done);
                }
                Err(e) => {
                    let id = e.id();
                    self.handles.retain(|_, (_, h)| h.id() != id);
                    tracing::error!(error = %e, "a run's task ended abnormally; it will be reaped as lost");
                }
            }
        }
    }

    /// Waits up to `grace` for running runs (which were told to stop before
    /// their next task); then stops the rest and hands them back. Returns
    /// the runs that finished and how many were stopped.
    pub async fn shutdown(&mut self, grace: Duration, pool: &PgPool) -> (Vec<Finished>, usize) {
        let mut finished = Vec::new();
        let deadline = tokio::time::Instant::now() + grace;
        while !self.is_empty() {
            match tokio::time::timeout_at(deadline, self.next()).await {
                Ok(Some(done)) => finished.push(done),
                Ok(None) | Err(_) => break,
            }
        }
        let left: Vec<Claimed> = self.handles.values().map(|(c, _)| *c).collect();
        let stopped = left.len();
        for (_, handle) in self.handles.values() {
            handle.abort();
        }
        while self.set.join_next().await.is_some() {}
        self.handles.clear();
        for run in left {
            match executor::hand_back(pool, &run).await {
                Ok(_) => tracing::info!(run_id = run.run_id, "run handed back to the queue"),
                Err(e) => tracing::error!(
                    run_id = run.run_id, error = %e,
                    "could not hand the run back; it will be reaped as lost"
                ),
            }
        }
        (finished, stopped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dag::job;
    use crate::time::parse_instant;

    fn t(s: &str) -> DateTime<Utc> {
        parse_instant(s).expect("time")
    }

    fn job(policy: &str, extra: &str) -> Job {
        let text = format!(
            r#"
name = "j"
schedule = "5 * * * *"
interval = "hour"
start_date = "2026-03-01"
[catchup]
policy = "{policy}"
{extra}
[tasks.a]
kind = "sql"
sql = "SELECT 1"
"#
        );
        job::parse(std::path::Path::new("j.toml"), &text).expect("job")
    }

    fn starts(p: &Plan) -> Vec<String> {
        p.runs
            .iter()
            .map(|(_, i)| i.start.format("%dT%H").to_string())
            .collect()
    }

    #[test]
    fn on_time_occurrence_runs_its_last_complete_interval() {
        let p = plan(
            &job("none", ""),
            Some(t("2026-03-02T09:05:00Z")),
            t("2026-03-02T10:05:00Z"),
        );
        assert_eq!(starts(&p), ["02T09"]);
        assert_eq!(p.skipped, None);
        assert_eq!(p.newest_fire, Some(t("2026-03-02T10:05:00Z")));
        let again = plan(&job("none", ""), p.newest_fire, t("2026-03-02T10:06:00Z"));
        assert!(again.runs.is_empty() && again.newest_fire.is_none());
    }

    #[test]
    fn catchup_policies_after_a_gap() {
        let last = Some(t("2026-03-02T00:05:00Z"));
        let now = t("2026-03-02T10:05:30Z"); // ten occurrences: 01:05 .. 10:05
        let all = plan(&job("all", "max_intervals = 4"), last, now);
        assert_eq!(starts(&all), ["02T06", "02T07", "02T08", "02T09"]);
        let s = all.skipped.expect("skips");
        assert_eq!(
            (s.first_interval_start, s.last_interval_start, s.occurrences),
            (t("2026-03-02T00:00:00Z"), t("2026-03-02T05:00:00Z"), 6)
        );
        let latest = plan(&job("latest", ""), last, now);
        assert_eq!(starts(&latest), ["02T09"]);
        assert_eq!(latest.skipped.map(|s| s.occurrences), Some(9));
        let none = plan(&job("none", ""), last, now);
        assert_eq!(starts(&none), ["02T09"], "10:05 was seen on time");
        let late = plan(&job("none", ""), last, t("2026-03-02T10:30:00Z"));
        assert!(late.runs.is_empty());
        assert_eq!(late.skipped.map(|s| s.occurrences), Some(10));
        assert_eq!(late.newest_fire, Some(t("2026-03-02T10:05:00Z")));
    }

    #[test]
    fn nothing_before_start_date() {
        let p = plan(
            &job("all", "max_intervals = 100"),
            None,
            t("2026-03-01T03:10:00Z"),
        );
        assert_eq!(starts(&p), ["01T00", "01T01", "01T02"]);
        assert_eq!(p.skipped, None);
    }
}
