//! `hxjobs backfill`: one `backfill` run per interval in a range, each
//! created once (`job_runs_backfill_once`), executed by this process with a
//! sliding window of `parallel` runs in flight. Interrupting hands the
//! running ones back; running the same command again resumes.

use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::scheduler::{reap_stale, Finished, Running};
use super::{Interval, Job};
use crate::config::Config;
use crate::db::Pools;
use crate::ledger::{self, RunState};

/// Which runs already in the range run again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Reprocess {
    /// Only intervals without a finished run (new or left queued).
    None,
    /// Also intervals whose backfill run failed.
    Failed,
    /// Every interval in the range.
    All,
}

#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// Intervals starting at or after `from` and before `to`.
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub parallel: usize,
    pub reprocess: Reprocess,
    /// Also run intervals before the job's `start_date`.
    pub ignore_start_date: bool,
    /// Also run intervals that have not ended yet (refused otherwise: their
    /// data is not all there, and a run would count them as done).
    pub allow_unfinished: bool,
    /// The most intervals it may cover (`api.max_backfill_intervals`
    /// unless the command line asks for more).
    pub max_intervals: usize,
}

/// What a backfill finds in the ledger before it starts (`--dry-run` shows it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub intervals: usize,
    /// Intervals with no backfill run yet.
    pub new: usize,
    pub succeeded: usize,
    pub failed: usize,
    /// Left queued by an interrupted backfill: they run.
    pub queued: usize,
    /// Held by another live process right now: left alone.
    pub running: usize,
    /// Finished runs that `--reprocess` queues again.
    pub rerun: usize,
}

impl Plan {
    /// Runs this backfill executes.
    pub fn to_run(&self) -> usize {
        self.new + self.queued + self.rerun
    }
}

impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} intervals: {} new, {} queued from an earlier backfill, {} to re-run; \
             already finished: {} succeeded, {} failed; {} running elsewhere; {} runs to execute",
            self.intervals,
            self.new,
            self.queued,
            self.rerun,
            self.succeeded,
            self.failed,
            self.running,
            self.to_run()
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the range's start ({from}) must be before its end ({to})")]
    EmptyRange {
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    },
    #[error("no {grain} interval of {job} starts in [{from}, {to})")]
    NoIntervals {
        job: String,
        grain: &'static str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    },
    #[error(
        "{job} starts on {start_date}: the range begins with intervals before it \
         (first: {first}); start the range at {start_date}, or allow intervals before the start date"
    )]
    BeforeStartDate {
        job: String,
        start_date: DateTime<Utc>,
        first: DateTime<Utc>,
    },
    #[error(
        "the interval starting {first} ends at {end}, which is still to come: \
         end the range at {latest} at the latest, or allow unfinished intervals"
    )]
    Unfinished {
        first: DateTime<Utc>,
        end: DateTime<Utc>,
        latest: DateTime<Utc>,
    },
    #[error(
        "the range holds more than {max} {grain} intervals, the most one backfill may cover \
         (api.max_backfill_intervals): split it, or raise the limit"
    )]
    TooMany { max: usize, grain: &'static str },
    #[error("parallel must be at least 1")]
    Parallel,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The intervals a backfill covers, oldest first.
pub fn intervals(job: &Job, spec: &Spec) -> Result<Vec<Interval>, Error> {
    if spec.from >= spec.to {
        return Err(Error::EmptyRange {
            from: spec.from,
            to: spec.to,
        });
    }
    if spec.parallel == 0 {
        return Err(Error::Parallel);
    }
    let grain = job.interval;
    let out: Vec<Interval> = grain
        .starts_at_most(spec.from, spec.to, spec.max_intervals)
        .map_err(|max| Error::TooMany {
            max,
            grain: grain.as_str(),
        })?
        .into_iter()
        .map(|start| Interval {
            start,
            end: grain.next(start),
        })
        .collect();
    if let Some(first) = out.first().filter(|i| i.start < job.start_date) {
        if !spec.ignore_start_date {
            return Err(Error::BeforeStartDate {
                job: job.name.clone(),
                start_date: job.start_date,
                first: first.start,
            });
        }
    }
    let now = Utc::now();
    if let Some(open) = out.iter().find(|i| i.end > now) {
        if !spec.allow_unfinished {
            return Err(Error::Unfinished {
                first: open.start,
                end: open.end,
                latest: grain.floor(now),
            });
        }
    }
    if out.is_empty() {
        return Err(Error::NoIntervals {
            job: job.name.clone(),
            grain: grain.as_str(),
            from: spec.from,
            to: spec.to,
        });
    }
    Ok(out)
}

/// Reads the ledger for the range; writes nothing.
pub async fn plan(pool: &PgPool, job: &Job, spec: &Spec) -> Result<Plan, Error> {
    let intervals = intervals(job, spec)?;
    let counts = ledger::backfill_counts(pool, &job.name, spec.from, spec.to).await?;
    let mut plan = Plan {
        intervals: intervals.len(),
        ..Plan::default()
    };
    let mut existing = 0;
    for (state, n) in counts {
        let n = n as usize;
        existing += n;
        match state {
            RunState::Success => plan.succeeded += n,
            // A cancelled run is reprocessed like a failed one.
            RunState::Failed | RunState::Cancelled => plan.failed += n,
            RunState::Queued => plan.queued += n,
            RunState::Running => plan.running += n,
        }
    }
    plan.new = plan.intervals.saturating_sub(existing);
    plan.rerun = match spec.reprocess {
        Reprocess::None => 0,
        Reprocess::Failed => plan.failed,
        Reprocess::All => plan.failed + plan.succeeded,
    };
    Ok(plan)
}

/// Progress as runs finish.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    pub total: usize,
    pub succeeded: usize,
    pub failed: usize,
}

#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub plan: Plan,
    pub succeeded: usize,
    pub failed: usize,
    pub handed_back: usize,
    pub elapsed: Duration,
    /// Per finished run: claim to final ledger write, time inside tasks, tasks.
    pub timings: Vec<(Duration, Duration, usize)>,
}

/// Creates the missing runs, queues the ones `--reprocess` names and runs
/// everything queued in the range, `spec.parallel` at a time.
pub async fn run(
    config: Arc<Config>,
    pools: &Pools,
    job: Arc<Job>,
    spec: Spec,
    worker: &str,
    stop: CancellationToken,
    mut on_progress: impl FnMut(&Progress),
) -> Result<Summary, Error> {
    let started = Instant::now();
    let pool = &pools.ledger;
    let all = intervals(&job, &spec)?;
    let s = &config.scheduler;
    reap_stale(pool, s).await?;
    let plan = plan(pool, &job, &spec).await?;
    ledger::create_backfill_runs(pool, &job.name, &all).await?;
    requeue(pool, &job.name, &spec).await?;

    let mut progress = Progress {
        total: plan.to_run(),
        ..Progress::default()
    };
    on_progress(&progress);
    let mut summary = Summary {
        plan,
        ..Summary::default()
    };
    let mut running = Running::default();
    let mut exhausted = false;
    // Claims go oldest interval first; each starts its search at the last
    // claimed interval, so it never walks past the runs already done (a
    // search from the range's start reads them all: quadratic over a long
    // backfill). A short claim sweeps once more from the start, for runs
    // queued again behind the cursor (a lost worker's).
    let mut cursor = spec.from;
    let kinds = job.task_kinds();
    loop {
        let free = spec.parallel.saturating_sub(running.len());
        if free > 0 && !exhausted && !stop.is_cancelled() {
            let mut claimed =
                ledger::claim_backfill(pool, &job.name, cursor, spec.to, worker, free, &kinds)
                    .await?;
            if claimed.len() < free && cursor > spec.from {
                let more = free - claimed.len();
                let swept = ledger::claim_backfill(
                    pool, &job.name, spec.from, spec.to, worker, more, &kinds,
                )
                .await?;
                claimed.extend(swept);
            }
            exhausted = claimed.len() < free;
            if let Some(last) = claimed.iter().map(|r| r.interval.start).max() {
                cursor = cursor.max(last);
            }
            for run in claimed {
                running.spawn(
                    config.clone(),
                    pools.clone(),
                    job.clone(),
                    run,
                    stop.clone(),
                    Instant::now(),
                );
            }
        }
        if running.is_empty() {
            break;
        }
        let done = tokio::select! {
            done = running.next() => done,
            _ = stop.cancelled() => None,
        };
        match done {
            Some(done) => {
                count(&mut summary, &mut progress, &done);
                on_progress(&progress);
            }
            None if stop.is_cancelled() => {
                let grace = Duration::from_secs(s.shutdown_grace_secs);
                let (finished, stopped) = running.shutdown(grace, pool).await;
                for done in finished {
                    count(&mut summary, &mut progress, &done);
                }
                summary.handed_back += stopped;
                break;
            }
            None => {}
        }
    }
    summary.elapsed = started.elapsed();
    Ok(summary)
}

fn count(summary: &mut Summary, progress: &mut Progress, done: &Finished) {
    match &done.result {
        Ok(report) if report.handed_back => summary.handed_back += 1,
        Ok(report) => {
            let work = report.tasks.iter().map(|t| t.work).sum();
            summary
                .timings
                .push((done.elapsed, work, report.tasks.len()));
            if report.succeeded() {
                summary.succeeded += 1;
                progress.succeeded += 1;
            } else {
                summary.failed += 1;
                progress.failed += 1;
            }
        }
        Err(e) => {
            tracing::error!(run_id = done.run.run_id, error = %e, "backfill run not recorded");
            summary.failed += 1;
            progress.failed += 1;
        }
    }
}

/// Queues the finished runs `spec.reprocess` names again, with fresh tasks.
async fn requeue(pool: &PgPool, job: &str, spec: &Spec) -> Result<(), sqlx::Error> {
    let states: &[RunState] = match spec.reprocess {
        Reprocess::None => return Ok(()),
        Reprocess::Failed => &[RunState::Failed, RunState::Cancelled],
        Reprocess::All => &[RunState::Failed, RunState::Cancelled, RunState::Success],
    };
    ledger::requeue_backfill(pool, job, spec.from, spec.to, states).await
}
