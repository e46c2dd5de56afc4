//! Operator controls on runs and jobs: clear, mark, cancel, pause. Each
//! changes the ledger and records who did it, when and why (`run_actions`)
//! in one transaction, or changes nothing and says why not. Its statements
//! are checked against the schema when hxjobs compiles.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Postgres, Transaction};

use super::{RunState, TaskState};

/// Why a control changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{0}")]
    NotFound(String),
    /// The run or job is not in a state the control applies to.
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Who acts, and why (shown with the action).
#[derive(Debug, Clone)]
pub struct Actor {
    /// `cli:<user>` or `api:<token name>`.
    pub name: String,
    pub reason: Option<String>,
}

/// A recorded action.
#[derive(Debug, Clone, Serialize)]
pub struct ActionRow {
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub job: String,
    pub run_id: Option<i64>,
    pub task: Option<String>,
    pub reason: Option<String>,
    pub detail: Option<serde_json::Value>,
}

async fn record(
    tx: &mut Transaction<'static, Postgres>,
    actor: &Actor,
    action: &str,
    job: &str,
    run_id: Option<i64>,
    task: Option<&str>,
    detail: Option<serde_json::Value>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO run_actions (actor, action, job, run_id, task, reason, detail)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        actor.name,
        action,
        job,
        run_id,
        task,
        actor.reason,
        detail,
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Records an action that changed no ledger row of its own (a trigger).
pub async fn record_action(
    pool: &PgPool,
    actor: &Actor,
    action: &str,
    job: &str,
    run_id: Option<i64>,
    detail: Option<serde_json::Value>,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    record(&mut tx, actor, action, job, run_id, None, detail).await?;
    tx.commit().await
}

/// A run's row, locked for the rest of the transaction.
async fn lock_run(
    tx: &mut Transaction<'static, Postgres>,
    run_id: i64,
) -> Result<(String, RunState), ControlError> {
    sqlx::query!(
        r#"SELECT job, state AS "state: RunState" FROM job_runs WHERE id = $1 FOR UPDATE"#,
        run_id
    )
    .fetch_optional(&mut **tx)
    .await?
    .map(|r| (r.job, r.state))
    .ok_or_else(|| ControlError::NotFound(format!("no run {run_id}")))
}

fn finished(run_id: i64, state: RunState, what: &str) -> Result<(), ControlError> {
    match state {
        RunState::Queued | RunState::Running => Err(ControlError::Conflict(format!(
            "run {run_id} is {state}: only a finished run can be {what} (cancel it first, or wait)"
        ))),
        _ => Ok(()),
    }
}

/// The tasks a run has rows for.
async fn run_tasks(
    tx: &mut Transaction<'static, Postgres>,
    run_id: i64,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT task FROM task_instances WHERE run_id = $1 ORDER BY task",
        run_id
    )
    .fetch_all(&mut **tx)
    .await
}

/// Queues a finished run again with `tasks` cleared: only those run (the
/// others keep their state). Returns the job's name.
pub async fn clear(
    pool: &PgPool,
    run_id: i64,
    tasks: &[String],
    actor: &Actor,
) -> Result<String, ControlError> {
    let mut tx = pool.begin().await?;
    let (job, state) = lock_run(&mut tx, run_id).await?;
    finished(run_id, state, "cleared")?;
    let known = run_tasks(&mut tx, run_id).await?;
    if let Some(t) = tasks.iter().find(|t| !known.contains(t)) {
        return Err(ControlError::NotFound(format!(
            "run {run_id} has no task `{t}` (its tasks: {})",
            known.join(", ")
        )));
    }
    clear_in(&mut tx, &[run_id], Some(tasks)).await?;
    let detail = serde_json::json!({ "tasks": tasks, "was": state });
    record(
        &mut tx,
        actor,
        "clear",
        &job,
        Some(run_id),
        None,
        Some(detail),
    )
    .await?;
    tx.commit().await?;
    Ok(job)
}

/// Clears `tasks` (every task not succeeded when `None`) of `runs` and
/// queues them again.
async fn clear_in(
    tx: &mut Transaction<'static, Postgres>,
    runs: &[i64],
    tasks: Option<&[String]>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE task_instances SET state = 'queued', error = NULL, started_at = NULL,
                finished_at = NULL, duration_ms = NULL, heartbeat_at = NULL
         WHERE run_id = ANY($1)
           AND CASE WHEN $2::text[] IS NULL THEN state <> 'success' ELSE task = ANY($2) END",
        runs,
        tasks as Option<&[String]>,
    )
    .execute(&mut **tx)
    .await?;
    sqlx::query!(
        "UPDATE job_runs SET state = 'queued', worker = NULL, error = NULL, finished_at = NULL,
                heartbeat_at = NULL, cleared_at = now(), claims_at_clear = attempts
         WHERE id = ANY($1)",
        runs
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Queues again every failed run of `job` whose interval starts in
/// `[from, to)`, its tasks that did not succeed cleared. Returns their ids.
pub async fn clear_failed(
    pool: &PgPool,
    job: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    actor: &Actor,
) -> Result<Vec<i64>, ControlError> {
    let mut tx = pool.begin().await?;
    let runs: Vec<i64> = sqlx::query_scalar!(
        "SELECT id FROM job_runs
         WHERE job = $1 AND state = 'failed' AND interval_start >= $2 AND interval_start < $3
         ORDER BY interval_start FOR UPDATE",
        job,
        from,
        to,
    )
    .fetch_all(&mut *tx)
    .await?;
    if runs.is_empty() {
        return Ok(runs);
    }
    clear_in(&mut tx, &runs, None).await?;
    let detail = serde_json::json!({ "from": from, "to": to, "runs": runs });
    record(
        &mut tx,
        actor,
        "clear_failed",
        job,
        None,
        None,
        Some(detail),
    )
    .await?;
    tx.commit().await?;
    Ok(runs)
}

/// Marks a run that is not running succeeded or failed, with its tasks
/// that had not ended that way; or one task of a finished run.
pub async fn mark(
    pool: &PgPool,
    run_id: i64,
    task: Option<&str>,
    to: RunState,
    actor: &Actor,
) -> Result<String, ControlError> {
    if !matches!(to, RunState::Success | RunState::Failed) {
        return Err(ControlError::Conflict(format!(
            "a run is marked success or failed, not {to}"
        )));
    }
    let task_state = if to == RunState::Success {
        TaskState::Success
    } else {
        TaskState::Failed
    };
    let mut tx = pool.begin().await?;
    let (job, state) = lock_run(&mut tx, run_id).await?;
    if state == RunState::Running {
        return Err(ControlError::Conflict(format!(
            "run {run_id} is running: cancel it first, or wait until it ends"
        )));
    }
    let note = format!("marked {to} by {}", actor.name);
    match task {
        Some(task) => {
            finished(run_id, state, "changed task by task")?;
            let changed = sqlx::query!(
                "UPDATE task_instances SET state = $3, error = CASE WHEN $3 = 'failed' THEN $4 END,
                        finished_at = COALESCE(finished_at, now())
                 WHERE run_id = $1 AND task = $2",
                run_id,
                task,
                task_state.as_str(),
                note,
            )
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if changed == 0 {
                let known = run_tasks(&mut tx, run_id).await?;
                return Err(ControlError::NotFound(format!(
                    "run {run_id} has no task `{task}` (its tasks: {})",
                    known.join(", ")
                )));
            }
        }
        None => {
            if state == to {
                return Err(ControlError::Conflict(format!(
                    "run {run_id} is already {to}"
                )));
            }
            sqlx::query!(
                "UPDATE task_instances SET state = $2, error = CASE WHEN $2 = 'failed' THEN $3 END,
                        finished_at = COALESCE(finished_at, now())
                 WHERE run_id = $1
                   AND CASE WHEN $2 = 'success' THEN state NOT IN ('success', 'skipped')
                       ELSE state NOT IN ('success', 'skipped', 'failed', 'upstream_failed') END",
                run_id,
                task_state.as_str(),
                note,
            )
            .execute(&mut *tx)
            .await?;
            sqlx::query!(
                "UPDATE job_runs SET state = $2, finished_at = now(), worker = NULL,
                        error = CASE WHEN $2 = 'failed' THEN $3 END
                 WHERE id = $1",
                run_id,
                to.as_str(),
                note,
            )
            .execute(&mut *tx)
            .await?;
        }
    }
    let detail = serde_json::json!({ "to": to, "was": state });
    record(
        &mut tx,
        actor,
        "mark",
        &job,
        Some(run_id),
        task,
        Some(detail),
    )
    .await?;
    tx.commit().await?;
    Ok(job)
}

/// Cancels a queued or running run: it is `cancelled` at once and never
/// retried. Its worker finds its claim gone at its next heartbeat (or
/// write) and stops: a shell task's process group is killed, an open data
/// transaction rolls back.
pub async fn cancel(pool: &PgPool, run_id: i64, actor: &Actor) -> Result<String, ControlError> {
    let mut tx = pool.begin().await?;
    let (job, state) = lock_run(&mut tx, run_id).await?;
    if !matches!(state, RunState::Queued | RunState::Running) {
        return Err(ControlError::Conflict(format!(
            "run {run_id} is {state}: only a queued or running run can be cancelled"
        )));
    }
    let note = format!("cancelled by {}", actor.name);
    sqlx::query!(
        "WITH t AS (UPDATE task_instances SET state = 'cancelled', error = $2,
                           finished_at = now()
                    WHERE run_id = $1 AND state IN ('queued', 'running', 'up_for_retry')),
              a AS (UPDATE task_attempts SET outcome = 'cancelled', error = $2,
                           finished_at = now()
                    WHERE run_id = $1 AND outcome = 'running')
         UPDATE job_runs SET state = 'cancelled', finished_at = now(), error = $2 WHERE id = $1",
        run_id,
        note,
    )
    .execute(&mut *tx)
    .await?;
    let detail = serde_json::json!({ "was": state });
    record(
        &mut tx,
        actor,
        "cancel",
        &job,
        Some(run_id),
        None,
        Some(detail),
    )
    .await?;
    tx.commit().await?;
    Ok(job)
}

/// Pauses or unpauses a job. A paused job gets no new scheduled runs and
/// none of its runs is claimed; on unpause its catch-up policy decides
/// what of the missed schedule runs (and records the rest as skipped).
pub async fn set_paused(
    pool: &PgPool,
    job: &str,
    paused: bool,
    actor: &Actor,
) -> Result<(), ControlError> {
    let mut tx = pool.begin().await?;
    sqlx::query!(
        "INSERT INTO job_schedule (job) VALUES ($1) ON CONFLICT DO NOTHING",
        job
    )
    .execute(&mut *tx)
    .await?;
    let was: bool = sqlx::query_scalar!(
        "SELECT paused FROM job_schedule WHERE job = $1 FOR UPDATE",
        job
    )
    .fetch_one(&mut *tx)
    .await?;
    if was == paused {
        return Err(ControlError::Conflict(format!(
            "{job} is {} paused",
            if paused { "already" } else { "not" }
        )));
    }
    sqlx::query!(
        "UPDATE job_schedule SET paused = $2, updated_at = now() WHERE job = $1",
        job,
        paused,
    )
    .execute(&mut *tx)
    .await?;
    let action = if paused { "pause" } else { "unpause" };
    record(&mut tx, actor, action, job, None, None, None).await?;
    tx.commit().await?;
    Ok(())
}

/// The jobs paused now.
pub async fn paused_jobs(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar!("SELECT job FROM job_schedule WHERE paused ORDER BY job")
        .fetch_all(pool)
        .await
}

/// Actions on a run (and on its job while it existed), oldest first.
pub async fn run_actions(pool: &PgPool, run_id: i64) -> Result<Vec<ActionRow>, sqlx::Error> {
    sqlx::query_as!(
        ActionRow,
        "SELECT at, actor, action, job, run_id, task, reason, detail FROM run_actions
         WHERE run_id = $1 ORDER BY id",
        run_id
    )
    .fetch_all(pool)
    .await
}

/// The newest actions on a job's runs and on the job.
pub async fn job_actions(
    pool: &PgPool,
    job: &str,
    limit: i64,
) -> Result<Vec<ActionRow>, sqlx::Error> {
    sqlx::query_as!(
        ActionRow,
        "SELECT at, actor, action, job, run_id, task, reason, detail FROM run_actions
         WHERE job = $1 ORDER BY id DESC LIMIT $2",
        job,
        limit,
    )
    .fetch_all(pool)
    .await
}
