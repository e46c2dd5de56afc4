//! Runs one job for one interval: tasks in dependency order, each attempt
//! under its wall-clock timeout, retries with capped exponential backoff,
//! dependants of a failed task marked `upstream_failed`. Every state change
//! is written to the run ledger (`job_runs`, `task_instances`).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgPool;

use super::{Interval, Job, Task};
use crate::config::Config;
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    Success,
    Failed,
    UpstreamFailed,
}

impl TaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Success => "success",
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
    pub duration: Duration,
}

#[derive(Debug, Clone)]
pub struct RunReport {
    pub run_id: i64,
    pub job: String,
    pub interval: Interval,
    pub tasks: Vec<TaskOutcome>,
}

impl RunReport {
    pub fn succeeded(&self) -> bool {
        self.tasks.iter().all(|t| t.state == TaskState::Success)
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
            if self.succeeded() {
                "success"
            } else {
                "failed"
            }
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

/// Creates a ledger row for a run. A scheduled or backfill interval that
/// already has a run gives `None`; manual runs always get a new row.
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

/// Executes run `run_id` (already in the ledger) and records every step.
pub async fn execute(
    config: &Config,
    pool: &PgPool,
    job: &Job,
    interval: Interval,
    run_id: i64,
    stop: Arc<AtomicBool>,
) -> Result<RunReport, sqlx::Error> {
    sqlx::query(
        "UPDATE job_runs SET state = 'running', started_at = now(), heartbeat_at = now(), worker = $2
         WHERE id = $1",
    )
    .bind(run_id)
    .bind(worker_id())
    .execute(pool)
    .await?;
    for task in &job.tasks {
        sqlx::query(
            "INSERT INTO task_instances (run_id, task, kind) VALUES ($1, $2, $3)
             ON CONFLICT (run_id, task) DO UPDATE SET state = 'queued', attempt = 0, error = NULL",
        )
        .bind(run_id)
        .bind(&task.id)
        .bind(&task.kind)
        .execute(pool)
        .await?;
    }
    let heartbeat = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            loop {
                tick.tick().await;
                let _ = sqlx::query(
                    "WITH r AS (UPDATE job_runs SET heartbeat_at = now() WHERE id = $1)
                     UPDATE task_instances SET heartbeat_at = now() WHERE run_id = $1 AND state = 'running'",
                )
                .bind(run_id)
                .execute(&pool)
                .await;
            }
        })
    };

    let ctx = TaskContext {
        config,
        pool,
        job,
        interval,
        run_id,
        stop,
    };
    let result = run_tasks(&ctx, Some(pool)).await;
    heartbeat.abort();
    let outcomes = result?;
    let report = RunReport {
        run_id,
        job: job.name.clone(),
        interval,
        tasks: outcomes,
    };
    let failed: Vec<String> = report
        .tasks
        .iter()
        .filter(|t| t.state == TaskState::Failed)
        .map(|t| format!("{}: {}", t.task, t.message))
        .collect();
    sqlx::query(
        "UPDATE job_runs SET state = $2, finished_at = now(), heartbeat_at = now(), error = $3 WHERE id = $1",
    )
    .bind(run_id)
    .bind(if report.succeeded() { "success" } else { "failed" })
    .bind(if failed.is_empty() { None } else { Some(failed.join("; ")) })
    .execute(pool)
    .await?;
    Ok(report)
}

/// Runs the tasks in order; `ledger` is where task states go (none for `tasks test`).
pub async fn run_tasks(
    ctx: &TaskContext<'_>,
    ledger: Option<&PgPool>,
) -> Result<Vec<TaskOutcome>, sqlx::Error> {
    let mut states: HashMap<&str, TaskState> = HashMap::new();
    let mut outcomes = Vec::new();
    for task in &ctx.job.tasks {
        let blocked = task
            .depends_on
            .iter()
            .find(|d| states.get(d.as_str()) != Some(&TaskState::Success));
        let outcome = match blocked {
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
                )
                .await?
            }
            None => run_with_retries(ctx, task, ledger).await?,
        };
        states.insert(task.id.as_str(), outcome.state);
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

async fn run_with_retries(
    ctx: &TaskContext<'_>,
    task: &Task,
    ledger: Option<&PgPool>,
) -> Result<TaskOutcome, sqlx::Error> {
    let started = Instant::now();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        if let Some(pool) = ledger {
            sqlx::query(
                "UPDATE task_instances SET state = 'running', attempt = $3, heartbeat_at = now(),
                        started_at = COALESCE(started_at, now())
                 WHERE run_id = $1 AND task = $2",
            )
            .bind(ctx.run_id)
            .bind(&task.id)
            .bind(attempt as i32)
            .execute(pool)
            .await?;
        }
        let limit = Duration::from_secs(task.timeout_secs);
        let mut fatal = false;
        let result = match tokio::time::timeout(limit, tasks::run_task(ctx, task)).await {
            Ok(r) => r.map_err(|e| {
                fatal = e.downcast_ref::<tasks::Fatal>().is_some();
                format!("{e:#}")
            }),
            Err(_) => Err(format!("timed out after {} s", task.timeout_secs)),
        };
        match result {
            Ok(message) => {
                let elapsed = started.elapsed();
                return finish(
                    ctx,
                    ledger,
                    task,
                    TaskState::Success,
                    attempt,
                    message,
                    elapsed,
                )
                .await;
            }
            Err(message) if attempt <= task.retries && !fatal => {
                let delay = task.retry_delay(attempt);
                tracing::warn!(
                    job = %ctx.job.name, task = %task.id, attempt, delay_secs = delay.as_secs(),
                    error = %message, "task failed; retrying"
                );
                if let Some(pool) = ledger {
                    set_state(
                        pool,
                        ctx.run_id,
                        task,
                        "up_for_retry",
                        attempt,
                        Some(&message),
                        None,
                    )
                    .await?;
                }
                tokio::time::sleep(delay).await;
            }
            Err(message) => {
                let elapsed = started.elapsed();
                return finish(
                    ctx,
                    ledger,
                    task,
                    TaskState::Failed,
                    attempt,
                    message,
                    elapsed,
                )
                .await;
            }
        }
    }
}

/// Records a task's final state (when there is a ledger) and returns its outcome.
async fn finish(
    ctx: &TaskContext<'_>,
    ledger: Option<&PgPool>,
    task: &Task,
    state: TaskState,
    attempts: u32,
    message: String,
    duration: Duration,
) -> Result<TaskOutcome, sqlx::Error> {
    if let Some(pool) = ledger {
        let error = (state != TaskState::Success).then_some(message.as_str());
        let ran = (attempts > 0).then_some(duration);
        set_state(pool, ctx.run_id, task, state.as_str(), attempts, error, ran).await?;
    }
    Ok(TaskOutcome {
        task: task.id.clone(),
        state,
        attempts,
        message,
        duration,
    })
}

async fn set_state(
    pool: &PgPool,
    run_id: i64,
    task: &Task,
    state: &str,
    attempt: u32,
    error: Option<&str>,
    duration: Option<Duration>,
) -> Result<(), sqlx::Error> {
    let finished = matches!(state, "success" | "failed" | "upstream_failed");
    sqlx::query(
        "UPDATE task_instances SET state = $3, attempt = GREATEST(attempt, $4), error = $5,
                finished_at = CASE WHEN $6 THEN now() ELSE finished_at END,
                duration_ms = COALESCE($7, duration_ms)
         WHERE run_id = $1 AND task = $2",
    )
    .bind(run_id)
    .bind(&task.id)
    .bind(state)
    .bind(attempt as i32)
    .bind(error)
    .bind(finished)
    .bind(duration.map(|d| d.as_millis() as i64))
    .execute(pool)
    .await?;
    Ok(())
}
