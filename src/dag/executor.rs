//! Runs one job for one interval: tasks in dependency order, each attempt
//! under its wall-clock timeout, retries with capped exponential backoff,
//! dependants of a failed task marked `upstream_failed`. Every state change
//! is written to the run ledger (`job_runs`, `task_instances`).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgPool;

use super::{Interval, Job, Task};
use crate::config::Config;
use crate::db::Pools;
use crate::tasks::{self, TaskContext};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunType {
    Scheduled,
    Manual,
    Backfill,
}

impl RunType {
    pub fn as_str(self) -> &'static str {
        match self {
            RunType::Scheduled => "scheduled",
            RunType::Manual => "manual",
            RunType::Backfill => "backfill",
        }
    }

    pub fn parse(s: &str) -> Option<RunType> {
        [RunType::Scheduled, RunType::Manual, RunType::Backfill]
            .into_iter()
            .find(|t| t.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    Success,
    /// Not run in this kind of run (`in_backfill = false`); counts as done.
    Skipped,
    Failed,
    UpstreamFailed,
}

impl TaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Success => "success",
            TaskState::Skipped => "skipped",
            TaskState::Failed => "failed",
            TaskState::UpstreamFailed => "upstream_failed",
        }
    }
}

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
        !self.handed_back
            && self
                .tasks
                .iter()
                .all(|t| matches!(t.state, TaskState::Success | TaskState::Skipped))
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

/// This process, as written to `job_runs.worker`.
pub fn worker_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    format!("{}:{}", host.trim(), std::process::id())
}

/// A run this worker holds: the ledger row is `running` with this worker,
/// and `attempt` (the row's claim count) fences its later writes.
#[derive(Debug, Clone, Copy)]
pub struct Claimed {
    pub run_id: i64,
    pub run_type: RunType,
    pub interval: Interval,
    pub attempt: i32,
}

/// Creates a queued ledger row for a run. A scheduled or backfill interval
/// that already has a run gives `None`; manual runs always get a new row.
pub async fn create_run(
    pool: &PgPool,
    job: &Job,
    interval: Interval,
    run_type: RunType,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO job_runs (job, run_type, interval_start, interval_end)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT DO NOTHING
         RETURNING id",
    )
    .bind(&job.name)
    .bind(run_type.as_str())
    .bind(interval.start)
    .bind(interval.end)
    .fetch_optional(pool)
    .await
}

/// Creates a manual run already claimed by `worker` (a foreground
/// `hxjobs run`), so no daemon picks it up meanwhile.
pub async fn create_claimed_run(
    pool: &PgPool,
    job: &Job,
    interval: Interval,
    worker: &str,
) -> Result<Claimed, sqlx::Error> {
    let run_id = sqlx::query_scalar(
        "INSERT INTO job_runs (job, run_type, interval_start, interval_end, state, worker,
                               started_at, heartbeat_at, attempts)
         VALUES ($1, 'manual', $2, $3, 'running', $4, now(), now(), 1)
         RETURNING id",
    )
    .bind(&job.name)
    .bind(interval.start)
    .bind(interval.end)
    .bind(worker)
    .fetch_one(pool)
    .await?;
    Ok(Claimed {
        run_id,
        run_type: RunType::Manual,
        interval,
        attempt: 1,
    })
}

/// Puts a run this worker could not finish back in the queue; its
/// unfinished tasks run again on the next claim, finished ones are kept.
/// The claim does not count as a lost worker.
pub async fn hand_back(pool: &PgPool, run: &Claimed) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let moved = sqlx::query(
        "UPDATE job_runs SET state = 'queued', worker = NULL, heartbeat_at = NULL,
                attempts = GREATEST(attempts - 1, 0), error = 'handed back at shutdown'
         WHERE id = $1 AND attempts = $2 AND state = 'running'",
    )
    .bind(run.run_id)
    .bind(run.attempt)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if moved {
        sqlx::query(
            "UPDATE task_instances SET state = 'queued', heartbeat_at = NULL
             WHERE run_id = $1 AND state IN ('running', 'up_for_retry')",
        )
        .bind(run.run_id)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(moved)
}

/// Executes a claimed run and records every step. Tasks that succeeded in
/// an earlier claim of the same run are kept, not run again. When `stop`
/// turns true the run stops before its next task and is handed back.
pub async fn execute(
    config: &Config,
    pools: &Pools,
    job: &Job,
    run: &Claimed,
    stop: Arc<AtomicBool>,
) -> Result<RunReport, sqlx::Error> {
    let pool = &pools.ledger;
    let ids: Vec<&str> = job.tasks.iter().map(|t| t.id.as_str()).collect();
    let kinds: Vec<&str> = job.tasks.iter().map(|t| t.kind.as_str()).collect();
    let done: HashSet<String> = sqlx::query_scalar(
        "WITH reset AS (
             INSERT INTO task_instances (run_id, task, kind)
             SELECT $1, * FROM unnest($2::text[], $3::text[])
             ON CONFLICT (run_id, task) DO UPDATE SET state = 'queued', error = NULL
                 WHERE task_instances.state <> 'success'
         )
         SELECT task FROM task_instances WHERE run_id = $1 AND state = 'success'",
    )
    .bind(run.run_id)
    .bind(&ids)
    .bind(&kinds)
    .fetch_all(pool)
    .await?
    .into_iter()
    .collect();

    let fenced = Arc::new(AtomicBool::new(false));
    // Its own task: nothing the run does can delay it (heavy work runs on
    // the blocking pool).
    let heartbeat = AbortOnDrop({
        let pool = pool.clone();
        let every = Duration::from_secs(config.scheduler.heartbeat_secs.max(1));
        let (run_id, attempt) = (run.run_id, run.attempt);
        let fenced = fenced.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let beat: Result<Option<i64>, _> = sqlx::query_scalar(
                    "WITH r AS (UPDATE job_runs SET heartbeat_at = now()
                                WHERE id = $1 AND attempts = $2 AND state = 'running' RETURNING id),
                          t AS (UPDATE task_instances SET heartbeat_at = now()
                                WHERE run_id IN (SELECT id FROM r) AND state = 'running')
                     SELECT id FROM r",
                )
                .bind(run_id)
                .bind(attempt)
                .fetch_optional(&pool)
                .await;
                match beat {
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        tracing::warn!(
                            run_id,
                            attempt,
                            "the run's claim was taken over; stopping its work"
                        );
                        fenced.store(true, Ordering::Relaxed);
                        return;
                    }
                    Err(e) => tracing::warn!(run_id, error = %e, "heartbeat not written"),
                }
            }
        })
    });

    let ctx = TaskContext {
        config,
        pool: &pools.data,
        job,
        interval: run.interval,
        run_id: run.run_id,
        claim: run.attempt,
        fenced,
        run_type: run.run_type,
        stop,
    };
    let result = run_tasks(&ctx, Some(pool), &done).await;
    drop(heartbeat);
    let (outcomes, interrupted) = result?;
    let mut report = RunReport {
        run_id: run.run_id,
        job: job.name.clone(),
        interval: run.interval,
        tasks: outcomes,
        handed_back: false,
        fenced: ctx.fenced.load(Ordering::Relaxed),
    };
    if report.fenced {
        tracing::warn!(run_id = run.run_id, job = %job.name, "run fenced out: its work stopped, nothing more written");
        return Ok(report);
    }
    if interrupted {
        report.handed_back = hand_back(pool, run).await?;
        if report.handed_back {
            return Ok(report);
        }
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
            .map_or("", |x| x.kind.as_str());
        crate::metrics::task_finished(&job.name, kind, t.state.as_str(), t.duration.as_secs_f64());
    }
    crate::metrics::run_finished(
        &job.name,
        if report.succeeded() {
            "success"
        } else {
            "failed"
        },
        total.as_secs_f64(),
    );
    let recorded = sqlx::query(
        "UPDATE job_runs SET state = $3, finished_at = now(), heartbeat_at = now(), error = $4
         WHERE id = $1 AND attempts = $2 AND state = 'running'",
    )
    .bind(run.run_id)
    .bind(run.attempt)
    .bind(if report.succeeded() {
        "success"
    } else {
        "failed"
    })
    .bind(if failed.is_empty() {
        None
    } else {
        Some(failed.join("; "))
    })
    .execute(pool)
    .await?
    .rows_affected();
    if recorded == 0 {
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

/// Runs the tasks in order; `ledger` is where task states go (none for
/// `tasks test`); tasks in `done` already succeeded. Also says whether the
/// run was interrupted by `ctx.stop` before it got through.
pub async fn run_tasks(
    ctx: &TaskContext<'_>,
    ledger: Option<&PgPool>,
    done: &HashSet<String>,
) -> Result<(Vec<TaskOutcome>, bool), sqlx::Error> {
    let mut states: HashMap<&str, TaskState> = HashMap::new();
    let mut outcomes = Vec::new();
    for task in &ctx.job.tasks {
        if done.contains(&task.id) {
            states.insert(task.id.as_str(), TaskState::Success);
            outcomes.push(TaskOutcome {
                task: task.id.clone(),
                state: TaskState::Success,
                attempts: 0,
                message: "succeeded in an earlier claim of this run".into(),
                duration: Duration::ZERO,
                work: Duration::ZERO,
            });
            continue;
        }
        if ctx.stop.load(Ordering::Relaxed) || ctx.fenced.load(Ordering::Relaxed) {
            return Ok((outcomes, true));
        }
        let blocked = task.depends_on.iter().find(|d| {
            !matches!(
                states.get(d.as_str()),
                Some(TaskState::Success | TaskState::Skipped)
            )
        });
        let skip = ctx.run_type == RunType::Backfill && !task.in_backfill;
        let outcome = match blocked {
            None if skip => {
                let message = "not run in backfill runs (in_backfill = false)".to_string();
                finish(
                    ctx,
                    ledger,
                    task,
                    TaskState::Skipped,
                    0,
                    message,
                    Duration::ZERO,
                    Duration::ZERO,
                )
                .await?
            }
            Some(dep) => {
                let message = format!("upstream task `{dep}` did not succeed");
                finish(
                    ctx,
                    ledger,
                    task,
                    TaskState::UpstreamFailed,
                    0,
                    message,
                    Duration::ZERO,
                    Duration::ZERO,
                )
                .await?
            }
            None => match run_with_retries(ctx, task, ledger).await? {
                Some(outcome) => outcome,
                None => return Ok((outcomes, true)),
            },
        };
        states.insert(task.id.as_str(), outcome.state);
        outcomes.push(outcome);
    }
    Ok((outcomes, false))
}

/// One task through its attempts; `None` when a shutdown interrupted it.
async fn run_with_retries(
    ctx: &TaskContext<'_>,
    task: &Task,
    ledger: Option<&PgPool>,
) -> Result<Option<TaskOutcome>, sqlx::Error> {
    let started = Instant::now();
    let mut work = Duration::ZERO;
    let mut attempt = 0u32;
    // Since when the attempts have failed only because a dependency was
    // unreachable, and how many such waits there were.
    let mut waiting: Option<(Instant, u32)> = None;
    loop {
        attempt += 1;
        if let Some(pool) = ledger {
            let held = sqlx::query(
                "UPDATE task_instances SET state = 'running', attempt = $3, heartbeat_at = now(),
                        started_at = COALESCE(started_at, now())
                 WHERE run_id = $1 AND task = $2
                   AND EXISTS (SELECT 1 FROM job_runs
                               WHERE id = $1 AND attempts = $4 AND state = 'running')",
            )
            .bind(ctx.run_id)
            .bind(&task.id)
            .bind(attempt as i32)
            .bind(ctx.claim)
            .execute(pool)
            .await?
            .rows_affected();
            if held == 0 {
                ctx.fenced.store(true, Ordering::Relaxed);
                return Ok(None);
            }
        }
        let limit = Duration::from_secs(task.timeout_secs);
        let mut fatal = false;
        let mut interrupted = false;
        let mut unreachable = false;
        let began = Instant::now();
        // Fenced out mid-task: the attempt is dropped (a shell task's
        // process group is killed, an open transaction rolls back).
        let attempted = tokio::select! {
            r = tokio::time::timeout(limit, tasks::run_task(ctx, task, attempt)) => Some(r),
            _ = crate::dag::scheduler::stopped(&ctx.fenced) => None,
        };
        let Some(attempted) = attempted else {
            return Ok(None);
        };
        let result = match attempted {
            Ok(r) => r.map_err(|e| {
                fatal = e.downcast_ref::<tasks::Fatal>().is_some();
                interrupted = e.downcast_ref::<tasks::Interrupted>().is_some();
                unreachable = tasks::dependency_unreachable(&e);
                format!("{e:#}")
            }),
            Err(_) => Err(format!("timed out after {} s", task.timeout_secs)),
        };
        work += began.elapsed();
        if interrupted {
            return Ok(None);
        }
        // A dependency (PostgreSQL, the broker) that cannot be reached is
        // waited for, with backoff, up to the task's timeout: such attempts
        // do not spend the task's retries.
        let result = match result {
            Err(message) if unreachable => {
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
                    if let Some(pool) = ledger {
                        // The ledger may be the unreachable one: best effort.
                        let note = format!("waiting for a dependency: {message}");
                        if let Err(e) =
                            set_state(ctx, pool, task, "up_for_retry", attempt, Some(&note), None)
                                .await
                        {
                            tracing::debug!(error = %e, "ledger not updated while waiting");
                        }
                    }
                    waiting = Some((since, waits + 1));
                    attempt -= 1;
                    if !sleep_unless_stopped(delay, &ctx.stop).await {
                        return Ok(None);
                    }
                    continue;
                }
                Err(format!(
                    "{message} (unreachable for {} s, the task's timeout)",
                    since.elapsed().as_secs()
                ))
            }
            other => {
                waiting = None;
                other
            }
        };
        let (state, message) = match result {
            Ok(message) => (TaskState::Success, message),
            Err(message) if attempt <= task.retries && !fatal => {
                let delay = task.retry_delay(attempt);
                tracing::warn!(
                    job = %ctx.job.name, task = %task.id, attempt, delay_secs = delay.as_secs(),
                    error = %message, "task failed; retrying"
                );
                if let Some(pool) = ledger {
                    set_state(
                        ctx,
                        pool,
                        task,
                        "up_for_retry",
                        attempt,
                        Some(&message),
                        None,
                    )
                    .await?;
                }
                if !sleep_unless_stopped(delay, &ctx.stop).await {
                    return Ok(None);
                }
                continue;
            }
            Err(message) => (TaskState::Failed, message),
        };
        let elapsed = started.elapsed();
        return finish(ctx, ledger, task, state, attempt, message, elapsed, work)
            .await
            .map(Some);
    }
}

/// The longest single wait for an unreachable dependency, so a task
/// resumes soon after it is back.
const DEPENDENCY_WAIT_MAX: Duration = Duration::from_secs(30);

/// Sleeps for `delay` unless `stop` turns true first; says whether it slept it all.
async fn sleep_unless_stopped(delay: Duration, stop: &AtomicBool) -> bool {
    let until = Instant::now() + delay;
    while Instant::now() < until {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let left = until.saturating_duration_since(Instant::now());
        tokio::time::sleep(left.min(Duration::from_millis(200))).await;
    }
    !stop.load(Ordering::Relaxed)
}

/// Records a task's final state (when there is a ledger) and returns its outcome.
#[allow(clippy::too_many_arguments)]
async fn finish(
    ctx: &TaskContext<'_>,
    ledger: Option<&PgPool>,
    task: &Task,
    state: TaskState,
    attempts: u32,
    message: String,
    duration: Duration,
    work: Duration,
) -> Result<TaskOutcome, sqlx::Error> {
    if let Some(pool) = ledger {
        let error = matches!(state, TaskState::Failed | TaskState::UpstreamFailed)
            .then_some(message.as_str());
        let ran = (attempts > 0).then_some(duration);
        set_state(ctx, pool, task, state.as_str(), attempts, error, ran).await?;
    }
    Ok(TaskOutcome {
        task: task.id.clone(),
        state,
        attempts,
        message,
        duration,
        work,
    })
}

/// Writes a task's state, only while this worker still holds the run's
/// claim; a write that finds it gone fences the run (`ctx.fenced`).
async fn set_state(
    ctx: &TaskContext<'_>,
    pool: &PgPool,
    task: &Task,
    state: &str,
    attempt: u32,
    error: Option<&str>,
    duration: Option<Duration>,
) -> Result<(), sqlx::Error> {
    if ctx.fenced.load(Ordering::Relaxed) {
        return Ok(());
    }
    let finished = matches!(state, "success" | "failed" | "upstream_failed" | "skipped");
    let held = sqlx::query(
        "UPDATE task_instances SET state = $3, attempt = GREATEST(attempt, $4), error = $5,
                finished_at = CASE WHEN $6 THEN now() ELSE finished_at END,
                duration_ms = COALESCE($7, duration_ms)
         WHERE run_id = $1 AND task = $2
           AND EXISTS (SELECT 1 FROM job_runs WHERE id = $1 AND attempts = $8 AND state = 'running')",
    )
    .bind(ctx.run_id)
    .bind(&task.id)
    .bind(state)
    .bind(attempt as i32)
    .bind(error)
    .bind(finished)
    .bind(duration.map(|d| d.as_millis() as i64))
    .bind(ctx.claim)
    .execute(pool)
    .await?
    .rows_affected();
    if held == 0 {
        tracing::warn!(run_id = ctx.run_id, task = %task.id, "the run's claim was taken over; stopping its work");
        ctx.fenced.store(true, Ordering::Relaxed);
    }
    Ok(())
}
