//! Runs and jobs: trigger, clear, mark, cancel, pause, and their reads.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};

use super::{Actor, Error, Need, Ops, Result};
use crate::dag::Job;
use crate::interval::Interval;
use crate::ledger::{self, controls, RunState};

/// What a run or backfill may include beyond the usual.
#[derive(Debug, Clone, Copy, Default)]
pub struct Allow {
    /// Intervals before the job's `start_date`.
    pub before_start_date: bool,
    /// Intervals that have not ended yet.
    pub unfinished: bool,
}

/// A manual run asked for.
#[derive(Debug, Default)]
pub struct TriggerRequest {
    /// Any instant in the interval to run; `None`: the last complete one.
    pub at: Option<DateTime<Utc>>,
    pub allow: Allow,
    /// Values for the job's parameters, checked against its rules.
    pub params: serde_json::Map<String, Value>,
    pub reason: Option<String>,
}

/// `interval` may run for `job`: representable, ended and not before its
/// start date, unless `allow` says otherwise.
pub fn check_interval(job: &Job, interval: Interval, allow: Allow) -> Result<()> {
    if !interval.representable() {
        return Err(Error::invalid(
            "invalid_interval",
            format!(
                "the {} interval at {} cannot be run: hxjobs schedules the years {} to {}",
                job.interval.as_str(),
                interval.start.format("%Y-%m-%dT%H:%M:%SZ"),
                crate::time::EARLIEST,
                crate::time::LATEST
            ),
        ));
    }
    if interval.end > Utc::now() && !allow.unfinished {
        return Err(Error::invalid(
            "interval_not_ended",
            format!(
                "the interval {} → {} has not ended yet; allow unfinished intervals to run it anyway",
                interval.start, interval.end
            ),
        )
        .field("allow_unfinished"));
    }
    if interval.start < job.start_date && !allow.before_start_date {
        return Err(Error::invalid(
            "before_start_date",
            format!(
                "{} starts on {}: the interval {} is before it; allow intervals before the start date to run it anyway",
                job.name, job.start_date, interval.start
            ),
        )
        .field("ignore_start_date"));
    }
    Ok(())
}

impl Ops {
    /// Queues a manual run of `job`; returns its id and interval.
    pub async fn trigger(
        &self,
        actor: &Actor,
        job: &str,
        request: TriggerRequest,
    ) -> Result<(i64, Interval)> {
        let r: Result<(i64, Interval)> = async {
            let job = self.job(job)?;
            actor.require(Need::Operate, Some(&job.name))?;
            let interval = match request.at {
                Some(t) => job.interval.containing(t),
                None => job.interval.last_complete(Utc::now()),
            };
            check_interval(&job, interval, request.allow)?;
            let params = crate::dag::params::check(&job.params, &request.params)
                .map_err(|m| Error::invalid("invalid_params", m).field("params"))?;
            let trigger = ledger::Trigger {
                by: Some(actor.name.clone()),
                params,
            };
            let pool = &self.pools.ledger;
            let id = ledger::create_manual_run(pool, &job.name, interval, &trigger).await?;
            let detail = json!({ "params": trigger.params, "interval_start": interval.start });
            controls::record_action(
                pool,
                &actor.record(request.reason),
                "trigger",
                &job.name,
                Some(id),
                Some(detail),
            )
            .await?;
            self.wake();
            Ok((id, interval))
        }
        .await;
        self.audited(actor, "trigger", &format!("job:{job}"), &r)
            .await;
        r
    }

    /// Queues a finished run again with `tasks` cleared (every task when
    /// none; with `downstream`, every task after them too). Returns the
    /// tasks cleared.
    pub async fn clear(
        &self,
        actor: &Actor,
        run_id: i64,
        mut tasks: Vec<String>,
        downstream: bool,
        reason: Option<String>,
    ) -> Result<(ledger::RunRow, Vec<String>)> {
        let r: Result<(ledger::RunRow, Vec<String>)> = async {
            actor.require(Need::Operate, None)?;
            let pool = &self.pools.ledger;
            let run = self.run_row(run_id).await?;
            actor.require(Need::Operate, Some(&run.job))?;
            if downstream {
                let job = self.job(&run.job)?;
                tasks = job
                    .to_clear(&tasks, true)
                    .map_err(|m| Error::not_found("unknown_task", m))?;
            }
            if tasks.is_empty() {
                tasks = ledger::tasks(pool, run_id)
                    .await?
                    .into_iter()
                    .map(|t| t.task)
                    .collect();
            }
            controls::clear(pool, run_id, &tasks, &actor.record(reason)).await?;
            self.wake();
            Ok((run, tasks))
        }
        .await;
        self.audited(actor, "clear", &format!("run:{run_id}"), &r)
            .await;
        r
    }

    /// Queues again every failed run of `job` whose interval starts in
    /// `[from, to)`; returns their ids.
    pub async fn clear_failed(
        &self,
        actor: &Actor,
        job: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        reason: Option<String>,
    ) -> Result<Vec<i64>> {
        let r: Result<Vec<i64>> = async {
            let job = self.job(job)?;
            actor.require(Need::Operate, Some(&job.name))?;
            if from >= to {
                return Err(Error::invalid("invalid_range", "from must be before to").field("from"));
            }
            let runs = controls::clear_failed(
                &self.pools.ledger,
                &job.name,
                from,
                to,
                &actor.record(reason),
            )
            .await?;
            self.wake();
            Ok(runs)
        }
        .await;
        self.audited(actor, "clear_failed", &format!("job:{job}"), &r)
            .await;
        r
    }

    /// Marks a finished run, or one of its tasks, succeeded or failed.
    pub async fn mark(
        &self,
        actor: &Actor,
        run_id: i64,
        task: Option<&str>,
        to: &str,
        reason: Option<String>,
    ) -> Result<RunState> {
        let r: Result<RunState> = async {
            actor.require(Need::Operate, None)?;
            let to = parse_mark(to)?;
            let run = self.run_row(run_id).await?;
            actor.require(Need::Operate, Some(&run.job))?;
            controls::mark(&self.pools.ledger, run_id, task, to, &actor.record(reason)).await?;
            Ok(to)
        }
        .await;
        self.audited(actor, "mark", &format!("run:{run_id}"), &r)
            .await;
        r
    }

    /// Cancels a queued or running run.
    pub async fn cancel(&self, actor: &Actor, run_id: i64, reason: Option<String>) -> Result<()> {
        let r: Result<()> = async {
            actor.require(Need::Operate, None)?;
            let run = self.run_row(run_id).await?;
            actor.require(Need::Operate, Some(&run.job))?;
            controls::cancel(&self.pools.ledger, run_id, &actor.record(reason)).await?;
            Ok(())
        }
        .await;
        self.audited(actor, "cancel", &format!("run:{run_id}"), &r)
            .await;
        r
    }

    /// Pauses (or unpauses) a job's scheduling and its runs' start.
    pub async fn set_paused(
        &self,
        actor: &Actor,
        job: &str,
        paused: bool,
        reason: Option<String>,
    ) -> Result<()> {
        let r: Result<()> = async {
            let job = self.job(job)?;
            actor.require(Need::Operate, Some(&job.name))?;
            controls::set_paused(&self.pools.ledger, &job.name, paused, &actor.record(reason))
                .await?;
            self.wake();
            Ok(())
        }
        .await;
        self.audited(
            actor,
            if paused { "pause" } else { "unpause" },
            &format!("job:{job}"),
            &r,
        )
        .await;
        r
    }

    async fn run_row(&self, id: i64) -> Result<ledger::RunRow> {
        ledger::run(&self.pools.ledger, id)
            .await?
            .ok_or_else(|| Error::not_found("unknown_run", format!("no run {id}")))
    }

    /// One run with its tasks, every attempt, who changed it and what was
    /// sent about it.
    pub async fn run(&self, actor: &Actor, id: i64) -> Result<RunDetail> {
        self.read(actor, &format!("run:{id}")).await?;
        let pool = &self.pools.data;
        let run = ledger::run(pool, id)
            .await?
            .ok_or_else(|| Error::not_found("unknown_run", format!("no run {id}")))?;
        Ok(RunDetail {
            tasks: ledger::tasks(pool, id).await?,
            attempts: ledger::logs::attempts(pool, id, None).await?,
            actions: controls::run_actions(pool, id).await?,
            notifications: crate::notify::of_run(pool, id).await?,
            checks: ledger::checks::of_run(pool, id).await?,
            run,
        })
    }

    /// A job's newest runs (of one state, if named), its late intervals,
    /// whether it is paused and who changed what on it.
    pub async fn job_runs(
        &self,
        actor: &Actor,
        job: &str,
        state: Option<&str>,
        limit: i64,
    ) -> Result<JobRuns> {
        self.read(actor, &format!("job:{job}")).await?;
        let job = self.job(job)?;
        let state = state.map(parse_state).transpose()?;
        check_limit("limit", limit, 1000)?;
        let pool = &self.pools.data;
        let filter = ledger::RunFilter {
            job: Some(job.name.clone()),
            state,
            limit,
            from: None,
            to: None,
        };
        Ok(JobRuns {
            runs: ledger::runs(pool, &filter).await?,
            late_intervals: ledger::deadlines::late_intervals(pool, &job.name, limit).await?,
            paused: ledger::controls::paused_jobs(pool)
                .await?
                .contains(&job.name),
            actions: controls::job_actions(pool, &job.name, limit).await?,
            job: job.name.clone(),
        })
    }
}

/// Which runs across all jobs to list (`GET /runs`, the console's runs page).
#[derive(Debug, Clone, Default)]
pub struct RunsAcross {
    pub job: Option<String>,
    pub state: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub limit: i64,
}

impl Ops {
    /// Runs of every job (or one), newest first, filtered.
    pub async fn runs(&self, actor: &Actor, q: &RunsAcross) -> Result<Vec<ledger::RunRow>> {
        self.read(actor, "runs").await?;
        let state = q.state.as_deref().map(parse_state).transpose()?;
        check_limit("limit", q.limit, 1000)?;
        if let (Some(from), Some(to)) = (q.from, q.to) {
            if from >= to {
                return Err(Error::invalid("invalid_range", "from must be before to").field("from"));
            }
        }
        let filter = ledger::RunFilter {
            job: q.job.clone(),
            state,
            from: q.from,
            to: q.to,
            limit: q.limit,
        };
        Ok(ledger::runs(&self.pools.data, &filter).await?)
    }
}

/// A run as `GET /runs/{id}` and the run page show it.
#[derive(Debug, Serialize)]
pub struct RunDetail {
    pub run: ledger::RunRow,
    pub tasks: Vec<ledger::TaskRow>,
    pub attempts: Vec<ledger::logs::AttemptRow>,
    pub actions: Vec<controls::ActionRow>,
    pub notifications: Vec<crate::notify::NotificationRow>,
    /// What its data checks found, every try.
    pub checks: Vec<ledger::checks::CheckRow>,
}

/// A job's runs as `GET /jobs/{job}/runs` shows them.
#[derive(Debug, Serialize)]
pub struct JobRuns {
    pub job: String,
    pub paused: bool,
    pub runs: Vec<ledger::RunRow>,
    pub late_intervals: Vec<ledger::deadlines::LateRow>,
    pub actions: Vec<controls::ActionRow>,
}

/// `success` or `failed`: what a run or task may be marked.
pub fn parse_mark(s: &str) -> Result<RunState> {
    match RunState::parse(s) {
        Some(s @ (RunState::Success | RunState::Failed)) => Ok(s),
        _ => Err(Error::invalid(
            "invalid_state",
            format!("a run is marked success or failed, not {s:?}"),
        )
        .field("state")),
    }
}

/// A run state's name.
pub fn parse_state(s: &str) -> Result<RunState> {
    RunState::parse(s).ok_or_else(|| {
        Error::invalid(
            "invalid_state",
            format!("state must be one of {}", RunState::names()),
        )
        .field("state")
    })
}

/// A count a caller asks for, 1 to `max`.
pub fn check_limit(field: &'static str, n: i64, max: i64) -> Result<()> {
    if (1..=max).contains(&n) {
        return Ok(());
    }
    Err(Error::invalid("invalid_limit", format!("{field} must be 1 to {max}")).field(field))
}
