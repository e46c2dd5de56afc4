//! Runs one job for one interval: tasks in dependency order, each attempt
//! under its wall-clock timeout, retries with capped exponential backoff,
//! dependants of a failed task marked `upstream_failed`. Every state change
//! goes to the run ledger ([`crate::ledger`]) under the run's claim; the
//! first write that finds the claim taken over cancels the run's work.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::rules::Decision;
use super::{Job, Task};
use crate::config::Config;
use crate::db::Pools;
use crate::interval::Interval;
use crate::ledger::{self, Claimed, Fence, RunState, RunType, Seal, TaskState};
use crate::notify::Rule;
use crate::tasklog::LogWriter;
use crate::tasks::{Failure, TaskContext};

#[derive(Debug, Clone)]
pub struct TaskOutcome {
    pub task: String,
    pub state: TaskState,
    pub attempts: u32,
    pub message: String,
    /// From the first attempt's start to the end, backoff included.
    pub duration: Duration,
    /// Time spent inside the task's own attempts (its work, no bookkeeping).
    pub work: Duration,
}

#[derive(Debug, Clone)]
pub struct RunReport {
    pub run_id: i64,
    pub job: String,
    pub interval: Interval,
    pub tasks: Vec<TaskOutcome>,
    /// Stopped by a shutdown before it finished; back in the queue.
    pub handed_back: bool,
    /// Its claim was taken over by another worker (which runs it now): this
    /// worker stopped its work and wrote nothing more.
    pub fenced: bool,
}

impl RunReport {
    pub fn succeeded(&self) -> bool {
        !self.handed_back && !self.fenced && self.tasks.iter().all(|t| t.state.is_done())
    }

    pub fn state(&self) -> &'static str {
        if self.fenced {
            "fenced out (another worker holds the run)"
        } else if self.handed_back {
            "handed back"
        } else if self.succeeded() {
            "success"
        } else {
            "failed"
        }
    }
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "run {} of {} for [{}, {}): {}",
            self.run_id,
            self.job,
            self.interval.start.to_rfc3339(),
            self.interval.end.to_rfc3339(),
            self.state()
        )?;
        for t in &self.tasks {
            writeln!(
                f,
                "  {:<20} {:<16} attempts={} {:>8.2} s  {}",
                t.task,
                t.state.as_str(),
                t.attempts,
                t.duration.as_secs_f64(),
                t.message
            )?;
        }
        Ok(())
    }
}

/// One run's tasks as the executor runs them.
pub struct RunContext<'a> {
    pub config: &'a Config,
    /// Where tasks read and write data.
    pub pool: &'a PgPool,
    /// Where task states go; `None` runs outside the ledger (`tasks test`).
    pub ledger: Option<(&'a PgPool, Fence)>,
    pub job: &'a Job,
    pub interval: Interval,
    pub run_type: RunType,
    /// The run's parameters, defaults filled in.
    pub params: serde_json::Map<String, serde_json::Value>,
    /// Shutdown: no new task starts; the run is handed back.
    pub stop: CancellationToken,
    /// Cancelled when a ledger write found the claim taken over: the
    /// running attempt is dropped at once (a shell task's process group
    /// killed, an open transaction rolled back) and nothing more is written.
    pub fenced: CancellationToken,
}

impl RunContext<'_> {
    fn run_id(&self) -> i64 {
        self.ledger.map_or(0, |(_, f)| f.run_id)
    }

    /// Writes a task's state while the claim holds; fences the run otherwise.
    async fn set(
        &self,
        task: &Task,
        state: TaskState,
        attempt: u32,
        error: Option<&str>,
        duration: Option<Duration>,
    ) -> Result<(), sqlx::Error> {
        let Some((pool, fence)) = self.ledger else {
            return Ok(());
        };
        if self.fenced.is_cancelled() {
            return Ok(());
        }
        let on_failure = match state {
            TaskState::Failed => crate::notify::targets(self.config, self.job, Rule::TaskFailed),
            _ => Vec::new(),
        };
        let held = ledger::set_task(
            pool,
            fence,
            &task.id,
            state,
            attempt as i32,
            error,
            duration,
            &on_failure,
        )
        .await?;
        if !held {
            tracing::warn!(run_id = fence.run_id, task = %task.id, "the run's claim was taken over; stopping its work");
            self.fenced.cancel();
        }
        Ok(())
    }
}

/// Executes a claimed run and records every step. Tasks that succeeded in
/// an earlier claim of the same run are kept, not run again. Once `stop` is
/// cancelled the run stops before its next task and is handed back.
pub async fn execute(
    config: &Config,
    pools: &Pools,
    job: &Job,
    run: &Claimed,
    stop: CancellationToken,
) -> Result<RunReport, sqlx::Error> {
    let pool = &pools.ledger;
    let fence = run.fence();
    let mut report = RunReport {
        run_id: run.run_id,
        job: job.name.clone(),
        interval: run.interval,
        tasks: Vec::new(),
        handed_back: false,
        fenced: false,
    };
    let kinds = job.task_kinds();
    let opened = match &run.opened {
        Some(done) => Some(done.clone()),
        None => ledger::open_tasks(pool, fence, &kinds).await?,
    };
    let Some(done) = opened else {
        report.fenced = true;
        tracing::warn!(run_id = run.run_id, "run fenced out before it started");
        return Ok(report);
    };
    if !ledger::versions::stamp(pool, fence, job).await? {
        report.fenced = true;
        tracing::warn!(run_id = run.run_id, "run fenced out before it started");
        return Ok(report);
    }

    let fenced = CancellationToken::new();
    // Its own task: nothing the run does can delay it (heavy work runs on
    // the blocking pool).
    let heartbeat = AbortOnDrop({
        let pool = pool.clone();
        let every = Duration::from_secs(config.scheduler.heartbeat_secs.max(1));
        let fenced = fenced.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                match ledger::heartbeat(&pool, fence).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(
                            run_id = fence.run_id,
                            claim = fence.claim,
                            "the run's claim was taken over; stopping its work"
                        );
                        fenced.cancel();
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(run_id = fence.run_id, error = %e, "heartbeat not written")
                    }
                }
            }
        })
    });

    let ctx = RunContext {
        config,
        pool: &pools.data,
        ledger: Some((pool, fence)),
        job,
        interval: run.interval,
        run_type: run.run_type,
        params: super::params::effective(&job.params, &run.params),
        stop,
        fenced,
    };
    let result = run_tasks(&ctx, &done).await;
    drop(heartbeat);
    let (outcomes, interrupted) = result?;
    report.tasks = outcomes;
    report.fenced = ctx.fenced.is_cancelled();
    if report.fenced {
        tracing::warn!(run_id = run.run_id, job = %job.name, "run fenced out: its work stopped, nothing more written");
        return Ok(report);
    }
    if interrupted {
        report.handed_back = ledger::hand_back(pool, run).await?;
        if report.handed_back {
            return Ok(report);
        }
        report.fenced = true;
        return Ok(report);
    }
    let failed: Vec<String> = report
        .tasks
        .iter()
        .filter(|t| t.state == TaskState::Failed)
        .map(|t| format!("{}: {}", t.task, t.message))
        .collect();
    let total: Duration = report.tasks.iter().map(|t| t.duration).sum();
    for t in &report.tasks {
        let kind = job
            .tasks
            .iter()
            .find(|x| x.id == t.task)
            .map_or("", |x| x.kind.name());
        crate::metrics::task_finished(&job.name, kind, t.state.as_str(), t.duration.as_secs_f64());
    }
    let state = if report.succeeded() {
        RunState::Success
    } else {
        RunState::Failed
    };
    crate::metrics::run_finished(&job.name, state.as_str(), total.as_secs_f64());
    let error = (!failed.is_empty()).then(|| failed.join("; "));
    let alerts = ledger::RunAlerts {
        on_failure: crate::notify::targets(config, job, Rule::RunFailed),
        on_recovered: crate::notify::targets(config, job, Rule::Recovered),
    };
    if !ledger::finish_run(pool, fence, state, error.as_deref(), &alerts).await? {
        report.fenced = true;
        tracing::warn!(
            run_id = run.run_id,
            "run finished after its claim was taken over (no heartbeat seen in time); the ledger keeps the newer claim"
        );
    }
    Ok(report)
}

/// Stops a background task when dropped, also when its owner unwinds or is aborted.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs the tasks in order; tasks in `ended` ended before this claim
/// (an earlier claim, or a cleared run's tasks that were not cleared) and
/// keep their state. Also says whether the run stopped (shutdown or
/// fenced) before it got through.
pub async fn run_tasks(
    ctx: &RunContext<'_>,
    ended: &HashMap<String, TaskState>,
) -> Result<(Vec<TaskOutcome>, bool), sqlx::Error> {
    let mut states: HashMap<&str, TaskState> = HashMap::new();
    let mut outcomes = Vec::new();
    for task in &ctx.job.tasks {
        if let Some(&state) = ended.get(&task.id) {
            let mut outcome = TaskOutcome {
                task: task.id.clone(),
                state,
                attempts: 0,
                message: format!("{state} before this claim of the run (kept)"),
                duration: Duration::ZERO,
                work: Duration::ZERO,
            };
            // Its checks, where a lost worker left some unrun.
            if state == TaskState::Success && ctx.has_checks(task) {
                match checks_of_ended(ctx, task).await? {
                    Gate::Open => {}
                    Gate::Interrupted => return Ok((outcomes, true)),
                    Gate::Stopped(why) => {
                        outcome = finish(
                            ctx,
                            task,
                            TaskState::Failed,
                            0,
                            why,
                            Duration::ZERO,
                            Duration::ZERO,
                        )
                        .await?;
                    }
                }
            }
            states.insert(task.id.as_str(), outcome.state);
            outcomes.push(outcome);
            continue;
        }
        if ctx.stop.is_cancelled() || ctx.fenced.is_cancelled() {
            return Ok((outcomes, true));
        }
        // A task skipped by design (not run in backfills) counts as
        // succeeded for its dependants.
        let upstream: Vec<(&str, TaskState)> = task
            .depends_on
            .iter()
            .map(|d| {
                let state = states
                    .get(d.as_str())
                    .copied()
                    .unwrap_or(TaskState::UpstreamFailed);
                let by_design = state == TaskState::Skipped
                    && ctx.run_type == RunType::Backfill
                    && ctx.job.tasks.iter().any(|t| &t.id == d && !t.in_backfill);
                (
                    d.as_str(),
                    if by_design { TaskState::Success } else { state },
                )
            })
            .collect();
        let skip = ctx.run_type == RunType::Backfill && !task.in_backfill;
        // Not run: skipped (by its rule, or in a backfill) or upstream_failed.
        let ended = match task.trigger_rule.decide(&upstream) {
            Decision::Run if skip => Some((
                TaskState::Skipped,
                "not run in backfill runs (in_backfill = false)".to_string(),
            )),
            Decision::Run => None,
            Decision::Skip(message) => Some((TaskState::Skipped, message)),
            Decision::UpstreamFailed(message) => Some((TaskState::UpstreamFailed, message)),
        };
        let outcome = match ended {
            Some((state, message)) => {
                finish(ctx, task, state, 0, message, Duration::ZERO, Duration::ZERO).await?
            }
            None => match run_with_retries(ctx, task).await? {
                Some(outcome) => outcome,
                None => return Ok((outcomes, true)),
            },
        };
        states.insert(task.id.as_str(), outcome.state);
        outcomes.push(outcome);
    }
    Ok((outcomes, false))
}

/// One task through its attempts; `None` when a shutdown interrupted it or
/// the run was fenced out.
async fn run_with_retries(
    ctx: &RunContext<'_>,
    task: &Task,
) -> Result<Option<TaskOutcome>, sqlx::Error> {
    let started = Instant::now();
    let mut work = Duration::ZERO;
    let mut attempt = 0u32;
    // Since when the attempts have failed only because a dependency was
    // unreachable, and how many such waits there were.
    let mut waiting: Option<(Instant, u32)> = None;
    loop {
        attempt += 1;
        // A task in a pool runs its attempt holding one of its slots.
        let slot = match (&task.pool, ctx.ledger) {
            (Some(name), Some((pool, fence))) => {
                if !take_slot(ctx, task, name, attempt).await? {
                    return Ok(None);
                }
                Some((pool, fence))
            }
            _ => None,
        };
        let (record, writer, seal) = match ctx.ledger {
            Some((pool, fence)) => {
                let record = Arc::new(ledger::Attempt::new(pool, fence, &task.id, attempt as i32));
                let seals = task.kind.seals();
                // A task that seals its success is recorded later (see
                // `Kind::seals`); the others before they start.
                if !seals && record.id().await?.is_none() {
                    ctx.fenced.cancel();
                    return Ok(None);
                }
                let writer = LogWriter::deferred(
                    pool.clone(),
                    record.clone(),
                    seals.then_some(ledger::Attempt::RECORD_AFTER),
                    ctx.config.logs.max_bytes_per_attempt,
                );
                let seal = Seal::new(&record);
                (Some(record), Some(writer), Some(seal))
            }
            None => (None, None, None),
        };
        let tctx = TaskContext {
            config: ctx.config,
            pool: ctx.pool,
            job: &ctx.job.name,
            interval: ctx.interval,
            run_id: ctx.run_id(),
            run_type: ctx.run_type,
            params: &ctx.params,
            attempt,
            seal,
            stop: ctx.stop.clone(),
            log: writer.as_ref().map(|w| w.log().clone()),
        };
        let span = writer
            .as_ref()
            .map_or_else(tracing::Span::none, LogWriter::span);
        let limit = Duration::from_secs(task.timeout_secs);
        let began = Instant::now();
        // Fenced out mid-task: the attempt is dropped (a shell task's
        // process group is killed, an open transaction rolls back).
        let attempted = tokio::select! {
            biased;
            _ = ctx.fenced.cancelled() => None,
            r = tokio::time::timeout(limit, task.kind.run(&tctx)).instrument(span) => Some(r),
        };
        work += began.elapsed();
        if let Some((pool, fence)) = slot {
            if let Err(e) = ledger::pools::release(pool, fence, &task.id).await {
                tracing::warn!(run_id = fence.run_id, task = %task.id, error = %e,
                    "pool slot not given back; it frees itself when the run ends");
            }
        }
        let fenced_out = attempted.is_none();
        let result = match attempted {
            None => Err(Failure::Fenced),
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(Failure::Retry(anyhow::anyhow!(
                "timed out after {} s",
                task.timeout_secs
            ))),
        };
        if let Some(writer) = writer {
            writer.finish().await;
        }
        if fenced_out {
            return Ok(None);
        }
        let sealed = result.is_ok() && tctx.seal.as_ref().is_some_and(Seal::applied);
        let ends_here = matches!(result, Err(Failure::Interrupted | Failure::Fenced));
        if let (Some(record), false, false) = (&record, sealed, ends_here) {
            // Its state is written next: its attempt must be there first.
            if record.id().await?.is_none() {
                ctx.fenced.cancel();
                return Ok(None);
            }
        }
        if result.is_ok() && ctx.has_checks(task) {
            let id = match &record {
                Some(r) => r.id().await?,
                None => None,
            };
            match run_checks(ctx, task, id, attempt as i32, &[]).await? {
                Gate::Open => {}
                Gate::Interrupted => return Ok(None),
                Gate::Stopped(why) => {
                    let elapsed = started.elapsed();
                    return finish(ctx, task, TaskState::Failed, attempt, why, elapsed, work)
                        .await
                        .map(Some);
                }
            }
        }
        let failure = match result {
            Ok(message) if sealed => {
                // Recorded by the task's own transaction.
                return Ok(Some(TaskOutcome {
                    task: task.id.clone(),
                    state: TaskState::Success,
                    attempts: attempt,
                    message,
                    duration: started.elapsed(),
                    work,
                }));
            }
            Ok(message) => {
                let elapsed = started.elapsed();
                return finish(
                    ctx,
                    task,
                    TaskState::Success,
                    attempt,
                    message,
                    elapsed,
                    work,
                )
                .await
                .map(Some);
            }
            Err(Failure::Interrupted) => return Ok(None),
            Err(Failure::Fenced) => {
                tracing::warn!(run_id = ctx.run_id(), task = %task.id, "the run's claim was taken over; the attempt was rolled back");
                ctx.fenced.cancel();
                return Ok(None);
            }
            Err(f) => f,
        };
        let mut message = failure.to_string();
        if let Failure::Unreachable(_) = failure {
            // A dependency (PostgreSQL, the broker) that cannot be reached
            // is waited for, with backoff, up to the task's timeout: such
            // attempts do not spend the task's retries.
            let (since, waits) = waiting.unwrap_or((began, 0));
            let delay = task
                .retry_delay(waits + 1)
                .clamp(Duration::from_secs(1), DEPENDENCY_WAIT_MAX);
            if since.elapsed() + delay < limit {
                tracing::warn!(
                    job = %ctx.job.name, task = %task.id, delay_secs = delay.as_secs(),
                    waited_secs = since.elapsed().as_secs(), error = %message,
                    "a dependency is unreachable; waiting for it (retries are not spent)"
                );
                // The ledger may be the unreachable one: best effort.
                let note = format!("waiting for a dependency: {message}");
                if let Err(e) = ctx
                    .set(task, TaskState::UpForRetry, attempt, Some(&note), None)
                    .await
                {
                    tracing::debug!(error = %e, "ledger not updated while waiting");
                }
                waiting = Some((since, waits + 1));
                attempt -= 1;
                if !sleep_unless_stopped(delay, ctx).await {
                    return Ok(None);
                }
                continue;
            }
            message = format!(
                "{message} (unreachable for {} s, the task's timeout)",
                since.elapsed().as_secs()
            );
        } else if matches!(failure, Failure::Retry(_)) && attempt <= task.retries {
            waiting = None;
            let delay = task.retry_delay(attempt);
            tracing::warn!(
                job = %ctx.job.name, task = %task.id, attempt, delay_secs = delay.as_secs(),
                error = %message, "task failed; retrying"
            );
            ctx.set(task, TaskState::UpForRetry, attempt, Some(&message), None)
                .await?;
            if !sleep_unless_stopped(delay, ctx).await {
                return Ok(None);
            }
            continue;
        }
        let elapsed = started.elapsed();
        return finish(
            ctx,
            task,
            TaskState::Failed,
            attempt,
            message,
            elapsed,
            work,
        )
        .await
        .map(Some);
    }
}

/// How often a task waiting for a pool's slot asks again.
const POOL_POLL: Duration = Duration::from_millis(500);

/// Waits for a slot of `name` for `task`; false when the run was stopped
/// or fenced out first. The task shows `queued` with why while it waits.
async fn take_slot(
    ctx: &RunContext<'_>,
    task: &Task,
    name: &str,
    attempt: u32,
) -> Result<bool, sqlx::Error> {
    let Some((pool, fence)) = ctx.ledger else {
        return Ok(true);
    };
    let slots = ctx.config.pools.get(name).map_or(1, |p| p.slots);
    let stale = ctx.config.scheduler.stale_after_secs;
    let mut told = None;
    loop {
        match ledger::pools::ask(pool, fence, &task.id, name, slots, stale).await? {
            ledger::pools::Ask::Granted => return Ok(true),
            ledger::pools::Ask::Fenced => {
                ctx.fenced.cancel();
                return Ok(false);
            }
            ledger::pools::Ask::Wait { used, ahead } => {
                let note = format!(
                    "waiting for a slot of pool `{name}` ({used} of {slots} in use, {ahead} waiting before it)"
                );
                if told.as_ref() != Some(&note) {
                    ctx.set(task, TaskState::Queued, attempt - 1, Some(&note), None)
                        .await?;
                    told = Some(note);
                }
            }
        }
        if !sleep_unless_stopped(POOL_POLL, ctx).await {
            if let Err(e) = ledger::pools::release(pool, fence, &task.id).await {
                tracing::debug!(error = %e, "pool place not given back; it frees itself");
            }
            return Ok(false);
        }
    }
}

/// What a task's checks decided.
enum Gate {
    /// Nothing blocking failed: the task's success stands.
    Open,
    /// A blocking check failed or could not run: the task fails with this.
    Stopped(String),
    /// Shutdown or fenced out while checking.
    Interrupted,
}

impl RunContext<'_> {
    fn has_checks(&self, task: &Task) -> bool {
        self.job.checks.iter().any(|c| c.after == task.id)
    }
}

/// The checks of a task that succeeded before this claim: those its
/// successful attempt has no result for run now; a recorded blocking
/// failure stops it as well.
async fn checks_of_ended(ctx: &RunContext<'_>, task: &Task) -> Result<Gate, sqlx::Error> {
    let Some((pool, fence)) = ctx.ledger else {
        return Ok(Gate::Open);
    };
    match crate::ledger::checks::recorded_for_task(pool, fence.run_id, &task.id).await? {
        // No successful attempt (marked by an operator): nothing to check.
        None => Ok(Gate::Open),
        Some((id, try_number, done)) => run_checks(ctx, task, Some(id), try_number, &done).await,
    }
}

/// Runs the checks declared after `task` on its successful attempt
/// `attempt_id` (outside the ledger, `tasks test`: printed only), except
/// those in `done` (already recorded: name, outcome, blocking), and
/// records each result with its notifications.
async fn run_checks(
    ctx: &RunContext<'_>,
    task: &Task,
    attempt_id: Option<i64>,
    try_number: i32,
    done: &[(String, String, bool)],
) -> Result<Gate, sqlx::Error> {
    let mut stops: Vec<String> = done
        .iter()
        .filter(|(_, outcome, blocking)| *blocking && (outcome == "fail" || outcome == "error"))
        .map(|(name, outcome, _)| format!("{name} ({outcome}, recorded earlier)"))
        .collect();
    let targets = crate::notify::targets(ctx.config, ctx.job, Rule::CheckFailed);
    let limit = Duration::from_secs(task.timeout_secs);
    for check in ctx.job.checks.iter().filter(|c| c.after == task.id) {
        if done.iter().any(|(name, _, _)| name == &check.name) {
            continue;
        }
        if ctx.stop.is_cancelled() || ctx.fenced.is_cancelled() {
            return Ok(Gate::Interrupted);
        }
        let verdict =
            crate::checks::eval::run(ctx.pool, check, &ctx.job.name, ctx.interval, limit).await;
        let outcome = crate::checks::eval::outcome(check, verdict.found);
        tracing::info!(
            job = %ctx.job.name, task = %task.id, check = %check.name, outcome,
            message = %verdict.message, "data check"
        );
        if let (Some((pool, fence)), Some(attempt_id)) = (ctx.ledger, attempt_id) {
            let result = crate::ledger::checks::NewResult {
                attempt_id,
                task: &task.id,
                check: &check.name,
                try_number,
                kind: check.kind.name(),
                blocking: check.blocking,
                outcome,
                observed: verdict.observed,
                message: &verdict.message,
            };
            if !crate::ledger::checks::record(pool, fence, &result, &targets).await? {
                tracing::warn!(run_id = fence.run_id, task = %task.id, "the run's claim was taken over; stopping its checks");
                ctx.fenced.cancel();
                return Ok(Gate::Interrupted);
            }
        }
        crate::metrics::check_finished(&ctx.job.name, &check.name, outcome);
        if crate::checks::eval::stops(check, verdict.found) {
            stops.push(format!("{}: {}", check.name, verdict.message));
        }
    }
    Ok(if stops.is_empty() {
        Gate::Open
    } else {
        Gate::Stopped(format!("check_failed: {}", stops.join("; ")))
    })
}

/// The longest single wait for an unreachable dependency, so a task
/// resumes soon after it is back.
const DEPENDENCY_WAIT_MAX: Duration = Duration::from_secs(30);

/// Sleeps for `delay` unless the run is stopped or fenced first; says
/// whether it slept it all.
async fn sleep_unless_stopped(delay: Duration, ctx: &RunContext<'_>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => !ctx.stop.is_cancelled() && !ctx.fenced.is_cancelled(),
        _ = ctx.stop.cancelled() => false,
        _ = ctx.fenced.cancelled() => false,
    }
}

/// Records a task's final state and returns its outcome.
async fn finish(
    ctx: &RunContext<'_>,
    task: &Task,
    state: TaskState,
    attempts: u32,
    message: String,
    duration: Duration,
    work: Duration,
) -> Result<TaskOutcome, sqlx::Error> {
    let error =
        matches!(state, TaskState::Failed | TaskState::UpstreamFailed).then_some(message.as_str());
    let ran = (attempts > 0).then_some(duration);
    ctx.set(task, state, attempts, error, ran).await?;
    Ok(TaskOutcome {
        task: task.id.clone(),
        state,
        attempts,
        message,
        duration,
        work,
    })
}
