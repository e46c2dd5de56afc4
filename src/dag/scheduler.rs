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
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use croner::Direction;
use sqlx::PgPool;
use tokio::task::{AbortHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use super::executor::{self, RunReport};
use super::job::CatchupPolicy;
use super::trigger;
use super::{Interval, Job};
use crate::config::{Config, SchedulerConfig};
use crate::db::Pools;
use crate::ledger::{self, Claimed, JobLock};
pub use crate::ledger::{Lost, Skipped};

/// Occurrences looked at in one pass at most (a job first seen long after
/// its `start_date` with a schedule of every minute needs ~525,000 a year).
const MAX_SCAN: usize = 5_000_000;

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
    let Some(schedule) = &job.schedule else {
        return Plan {
            runs,
            skipped,
            newest_fire,
        };
    };
    let fires = schedule
        .cron
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

/// Queues again (or fails, after `max_run_attempts` claims) every running
/// run without a heartbeat for `stale_after_secs`.
pub async fn reap_stale(
    pool: &PgPool,
    settings: &SchedulerConfig,
) -> Result<Vec<Lost>, sqlx::Error> {
    ledger::reap_stale(
        pool,
        Duration::from_secs(settings.stale_after_secs),
        settings.max_run_attempts,
    )
    .await
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
        let mut lock = JobLock::take(&self.pools.ledger, &job.name).await?;
        if lock.paused {
            // The cursor stays: on unpause the catch-up policy decides.
            lock.commit().await?;
            return Ok(Enqueued {
                job: job.name.clone(),
                created: Vec::new(),
                skipped: None,
            });
        }
        let plan = plan(job, lock.last_fire, now);
        let mut created = lock.enqueue(&plan.runs).await?;
        let complete = trigger::due(
            &mut lock,
            &self.config,
            &self.pools.ledger,
            &self.jobs,
            job,
            now,
        )
        .await?;
        let by_trigger = lock.enqueue(&complete).await?;
        if let Some(s) = plan.skipped {
            lock.record_skip(policy_name(job.catchup.policy), s).await?;
            tracing::info!(
                job = %job.name, occurrences = s.occurrences,
                first = %s.first_interval_start, last = %s.last_interval_start,
                policy = policy_name(job.catchup.policy), "missed occurrences skipped by the catch-up policy"
            );
        }
        if let Some(fire) = plan.newest_fire {
            lock.advance(fire).await?;
        }
        lock.commit().await?;
        for i in &created {
            tracing::info!(job = %job.name, interval_start = %i.start, "scheduled run queued");
        }
        for i in &by_trigger {
            tracing::info!(job = %job.name, interval_start = %i.start, "interval complete: run queued");
        }
        created.extend(by_trigger);
        created.sort();
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
        let mut lock = JobLock::take(&self.pools.ledger, &job.name).await?;
        if lock.paused {
            lock.commit().await?;
            return Ok(Vec::new());
        }
        let active = lock.active().await?;
        let room = (i64::from(job.max_active_runs) - active).clamp(0, limit as i64);
        if room == 0 {
            lock.commit().await?;
            return Ok(Vec::new());
        }
        let candidates = lock
            .queued(if job.wait_for.is_empty() { room } else { 1000 })
            .await?;
        let mut ids = Vec::new();
        for (id, interval) in candidates {
            if ids.len() as i64 >= room {
                break;
            }
            match self.waiting_on(&mut lock, job, interval).await? {
                None => ids.push(id),
                Some(note) => lock.note_waiting(id, &note).await?,
            }
        }
        let claimed = lock.claim(&ids, &self.worker).await?;
        lock.commit().await?;
        Ok(claimed)
    }

    /// Why a run of `job` for `interval` cannot start yet: the runs of a
    /// `wait_for` job inside the interval that have not succeeded. `None`
    /// once they all have, once `wait_timeout_secs` after the interval's
    /// end is over (its tasks then compute what is missing themselves), or
    /// when the job waited for is not loaded here. An upstream interval a
    /// blocking data check failed holds it however long it takes.
    async fn waiting_on(
        &self,
        lock: &mut JobLock,
        job: &Job,
        interval: Interval,
    ) -> Result<Option<String>, sqlx::Error> {
        if job.wait_for.is_empty() {
            return Ok(None);
        }
        // A failed blocking check beneath it holds it until cleared or marked.
        let held = trigger::upstream_holds(lock.conn(), &self.jobs, job, interval).await?;
        if !held.is_empty() {
            return Ok(Some(format!("waiting: {}", held.join("; "))));
        }
        let timeout = TimeDelta::seconds(i64::try_from(job.wait_timeout_secs).unwrap_or(i64::MAX));
        if Utc::now() >= interval.end + timeout {
            return Ok(None);
        }
        let pending = trigger::upstream_waits(lock.conn(), &self.jobs, job, interval).await?;
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
        let stop = CancellationToken::new();
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

pub fn policy_name(policy: CatchupPolicy) -> &'static str {
    match policy {
        CatchupPolicy::All => "all",
        CatchupPolicy::Latest => "latest",
        CatchupPolicy::None => "none",
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
        stop: CancellationToken,
        claimed_at: Instant,
    ) {
        let id = run.run_id;
        let kept = run.clone();
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
        self.handles.insert(id, (kept, handle));
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
        let left: Vec<Claimed> = self.handles.values().map(|(c, _)| c.clone()).collect();
        let stopped = left.len();
        for (_, handle) in self.handles.values() {
            handle.abort();
        }
        while self.set.join_next().await.is_some() {}
        self.handles.clear();
        for run in left {
            match ledger::hand_back(pool, &run).await {
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
