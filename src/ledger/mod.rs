//! The run ledger: `job_runs`, `task_instances`, `job_schedule`,
//! `schedule_skips` and `backfills`. Every statement that reads or writes
//! them is in this module, and so are the rules that keep a run right when
//! several workers share the database:
//!
//! - a worker holds a run through its claim: the row is `running` and its
//!   `attempts` is the claim's number. Every write the worker makes for the
//!   run (run state, task state, heartbeat) carries that number and changes
//!   nothing once another claim replaced it ([`Fence`]);
//! - a task that writes data commits its data and its `success` in one
//!   transaction that checks the claim and holds the run row until commit
//!   ([`Seal`]), so a fenced-out worker's work is rolled back;
//! - a run whose heartbeat stopped is queued again ([`reap_stale`]).

pub mod audit;
pub mod backfills;
pub mod checks;
pub mod console;
pub mod controls;
pub mod daemons;
pub mod deadlines;
pub mod logs;
pub mod pools;
mod read;
mod schedule;
pub mod versions;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

use crate::interval::Interval;

pub use read::{
    run, runs, skips, success_rates, tasks, RunFilter, RunRow, SkipRow, TaskRow, RETENTION_RUNS,
    RETENTION_SKIPS,
};
pub use schedule::{complete_cursors, succeeded_intervals, JobLock, Skipped};

/// Defines a state enum stored as `text`, with its names in one place.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, sqlx::Type)]
        #[sqlx(type_name = "text", rename_all = "snake_case")]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vmeta])* $variant,)+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)+ }
            }

            pub fn parse(s: &str) -> Option<$name> {
                Self::ALL.iter().copied().find(|v| v.as_str() == s)
            }

            /// Every name, for error messages.
            pub fn names() -> String {
                Self::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(
    /// A run's state in `job_runs.state`.
    RunState {
        Queued = "queued",
        Running = "running",
        Success = "success",
        Failed = "failed",
        /// Stopped by an operator; not retried.
        Cancelled = "cancelled",
    }
);

text_enum!(
    /// What started a run (`job_runs.run_type`).
    RunType {
        Scheduled = "scheduled",
        Manual = "manual",
        Backfill = "backfill",
    }
);

text_enum!(
    /// A task instance's state in `task_instances.state`.
    TaskState {
        Queued = "queued",
        Running = "running",
        /// Failed, waiting for its next attempt (or for a dependency).
        UpForRetry = "up_for_retry",
        Success = "success",
        Failed = "failed",
        /// Not run in this kind of run (`in_backfill = false`); counts as done.
        Skipped = "skipped",
        UpstreamFailed = "upstream_failed",
        /// Its run was cancelled before it ended.
        Cancelled = "cancelled",
    }
);

impl TaskState {
    /// Whether the task is over in this run.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskState::Success
                | TaskState::Failed
                | TaskState::Skipped
                | TaskState::UpstreamFailed
                | TaskState::Cancelled
        )
    }

    /// Whether its dependants may run.
    pub fn is_done(self) -> bool {
        matches!(self, TaskState::Success | TaskState::Skipped)
    }
}

/// A run this worker holds: the ledger row is `running` with this worker,
/// and `attempt` (the row's claim count) fences its later writes.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub run_id: i64,
    pub run_type: RunType,
    pub interval: Interval,
    pub attempt: i32,
    /// The parameters the run was queued with (the job's defaults fill the rest).
    pub params: serde_json::Value,
    /// Set when the claim also opened the run's tasks ([`open_tasks`] in
    /// the claim's own statement): the tasks that had ended before it.
    pub opened: Option<HashMap<String, TaskState>>,
}

impl Claimed {
    pub fn fence(&self) -> Fence {
        Fence {
            run_id: self.run_id,
            claim: self.attempt,
        }
    }
}

/// The claim a worker's writes for a run carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    pub run_id: i64,
    pub claim: i32,
}

/// A successful attempt's right to record itself together with its data:
/// [`Seal::apply`] inside the task's own transaction (the database function
/// `hxjobs_seal`, migration 0018, holds the rule). It names the attempt by
/// its key, so it also records an attempt that had not been written yet
/// ([`Attempt`]).
#[derive(Debug, Clone)]
pub struct Seal {
    pub fence: Fence,
    pub task: String,
    pub try_number: i32,
    /// When the attempt started.
    pub started: DateTime<Utc>,
    /// Set once [`Seal::apply`] wrote the success: the executor then does
    /// not write it again.
    applied: Arc<AtomicBool>,
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error(
        "the run's claim was taken over by another worker; this attempt's writes are rolled back"
    )]
    Fenced,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl SealError {
    /// `hxjobs_seal`'s refusal (SQLSTATE HX409) is `Fenced`.
    pub fn of(e: sqlx::Error) -> SealError {
        let fenced = e
            .as_database_error()
            .and_then(|d| d.code())
            .is_some_and(|c| c == "HX409");
        if fenced {
            SealError::Fenced
        } else {
            SealError::Database(e)
        }
    }
}

impl Seal {
    pub fn new(attempt: &Attempt) -> Seal {
        Seal {
            fence: attempt.fence,
            task: attempt.task.clone(),
            try_number: attempt.try_number,
            started: attempt.started,
            applied: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Checks that the claim is still held, locking the run row against a
    /// takeover until the transaction ends (`Fenced`: roll back).
    pub async fn check(&self, conn: &mut PgConnection) -> Result<(), SealError> {
        let held: Option<i64> = sqlx::query_scalar!(
            "SELECT id FROM job_runs WHERE id = $1 AND attempts = $2 AND state = 'running' FOR SHARE",
            self.fence.run_id,
            self.fence.claim,
        )
        .fetch_optional(&mut *conn)
        .await?;
        match held {
            Some(_) => Ok(()),
            None => Err(SealError::Fenced),
        }
    }

    /// [`Seal::check`], and records the attempt and the task as succeeded
    /// (with its duration) in the same transaction. Its commit does not
    /// wait for the WAL flush: the data and its success are lost or kept
    /// together, and a lost success runs the task again, so a PostgreSQL
    /// crash cannot make its effect happen twice or leave it recorded
    /// without its data.
    pub async fn apply(&self, conn: &mut PgConnection) -> Result<(), SealError> {
        sqlx::query!(
            "SELECT hxjobs_seal($1, $2, $3, $4, $5)",
            self.fence.run_id,
            self.fence.claim,
            self.task,
            self.try_number,
            self.started,
        )
        .execute(&mut *conn)
        .await
        .map_err(SealError::of)?;
        self.applied.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// [`Seal::apply`] as a statement of its own, for a simple-protocol
    /// batch (`…; COMMIT`). Call [`Seal::applied_by_statement`] once the
    /// batch succeeded.
    pub fn statement(&self) -> String {
        format!(
            "SELECT hxjobs_seal({}, {}, {}, {}, '{}')",
            self.fence.run_id,
            self.fence.claim,
            quote_literal(&self.task),
            self.try_number,
            self.started
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        )
    }

    pub fn applied_by_statement(&self) {
        self.applied.store(true, Ordering::Relaxed);
    }

    /// Whether the success was recorded with the task's data.
    pub fn applied(&self) -> bool {
        self.applied.load(Ordering::Relaxed)
    }
}

/// Whether an error chain says a seal found its claim gone.
pub fn is_fenced(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|c| matches!(c.downcast_ref::<SealError>(), Some(SealError::Fenced)))
}

/// `text` as an SQL string literal (standard-conforming strings).
fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// One attempt of a task under a claim, and its `task_attempts` row,
/// written when first needed. A task that seals its success writes its
/// attempt only once it has run for [`Attempt::RECORD_AFTER`] or logged a
/// line (the seal records a short one with its data), which spares the
/// ledger a write per task; other tasks record theirs before they start.
#[derive(Debug)]
pub struct Attempt {
    pub fence: Fence,
    pub task: String,
    pub try_number: i32,
    pub started: DateTime<Utc>,
    pool: PgPool,
    id: tokio::sync::Mutex<Option<i64>>,
}

impl Attempt {
    /// How long a sealing task runs before its attempt shows as running.
    pub const RECORD_AFTER: Duration = Duration::from_secs(1);

    pub fn new(pool: &PgPool, fence: Fence, task: &str, try_number: i32) -> Attempt {
        Attempt {
            fence,
            task: task.to_string(),
            try_number,
            started: Utc::now(),
            pool: pool.clone(),
            id: tokio::sync::Mutex::new(None),
        }
    }

    /// The attempt's `task_attempts` id, writing the row (`running`) if it
    /// is not there yet. `None`: the claim is gone.
    pub async fn id(&self) -> Result<Option<i64>, sqlx::Error> {
        let mut id = self.id.lock().await;
        if id.is_none() {
            *id = start_attempt(&self.pool, self).await?;
        }
        Ok(*id)
    }
}

/// This process, as written to `job_runs.worker`.
pub fn worker_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    format!("{}:{}", host.trim(), std::process::id())
}

/// Who queued a manual run and with which parameters.
#[derive(Debug, Clone, Default)]
pub struct Trigger {
    pub by: Option<String>,
    /// The parameters given (validated against the job's declarations).
    pub params: serde_json::Map<String, serde_json::Value>,
}

/// Queues a manual run (its own row, never a scheduled interval's).
pub async fn create_manual_run(
    pool: &PgPool,
    job: &str,
    interval: Interval,
    trigger: &Trigger,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        "INSERT INTO job_runs (job, run_type, interval_start, interval_end, params, triggered_by)
         VALUES ($1, 'manual', $2, $3, $4, $5)
         RETURNING id",
        job,
        interval.start,
        interval.end,
        serde_json::Value::Object(trigger.params.clone()),
        trigger.by,
    )
    .fetch_one(pool)
    .await
}

/// Creates a manual run already claimed by `worker` (a foreground
/// `hxjobs run`), so no daemon picks it up meanwhile.
pub async fn create_claimed_run(
    pool: &PgPool,
    job: &str,
    interval: Interval,
    worker: &str,
    trigger: &Trigger,
) -> Result<Claimed, sqlx::Error> {
    let params = serde_json::Value::Object(trigger.params.clone());
    let run_id = sqlx::query_scalar!(
        "INSERT INTO job_runs (job, run_type, interval_start, interval_end, state, worker,
                               started_at, heartbeat_at, attempts, params, triggered_by)
         VALUES ($1, 'manual', $2, $3, 'running', $4, now(), now(), 1, $5, $6)
         RETURNING id",
        job,
        interval.start,
        interval.end,
        worker,
        params,
        trigger.by,
    )
    .fetch_one(pool)
    .await?;
    Ok(Claimed {
        run_id,
        run_type: RunType::Manual,
        interval,
        attempt: 1,
        params,
        opened: None,
    })
}

/// A [`Claimed`] from a claim statement's row (its `id`, `run_type`,
/// `interval_start`, `interval_end`, `attempts` and `params`).
macro_rules! claimed {
    ($r:expr) => {
        $crate::ledger::Claimed {
            run_id: $r.id,
            run_type: $r.run_type,
            interval: $crate::interval::Interval {
                start: $r.interval_start,
                end: $r.interval_end,
            },
            attempt: $r.attempts,
            params: $r.params,
            opened: None,
        }
    };
}
pub(super) use claimed;

/// Claims, oldest interval first.
pub(super) fn in_order(mut claimed: Vec<Claimed>) -> Vec<Claimed> {
    claimed.sort_by_key(|c| (c.interval.start, c.run_id));
    claimed
}

/// Puts a run this worker could not finish back in the queue; its
/// unfinished tasks run again on the next claim, finished ones are kept.
/// The claim does not count as a lost worker. False: the claim was gone.
pub async fn hand_back(pool: &PgPool, run: &Claimed) -> Result<bool, sqlx::Error> {
    let moved = sqlx::query_scalar!(
        "WITH r AS (
             UPDATE job_runs SET state = 'queued', worker = NULL, heartbeat_at = NULL,
                    attempts = GREATEST(attempts - 1, 0), error = 'handed back at shutdown'
             WHERE id = $1 AND attempts = $2 AND state = 'running'
             RETURNING id),
         t AS (
             UPDATE task_instances SET state = 'queued', heartbeat_at = NULL
             WHERE run_id IN (SELECT id FROM r) AND state IN ('running', 'up_for_retry')),
         a AS (
             UPDATE task_attempts SET outcome = 'handed_back', finished_at = now()
             WHERE run_id IN (SELECT id FROM r) AND outcome = 'running')
         SELECT id FROM r",
        run.run_id,
        run.attempt,
    )
    .fetch_optional(pool)
    .await?;
    Ok(moved.is_some())
}

/// Makes sure every task of the run has a row, queues again the ones that
/// had not ended in an earlier claim, and returns those that had, with
/// their states (they are not run again: a cleared run runs only its
/// cleared tasks). Only while `fence` holds; `None` when it does not.
pub async fn open_tasks(
    pool: &PgPool,
    fence: Fence,
    tasks: &[(&str, &str)],
) -> Result<Option<HashMap<String, TaskState>>, sqlx::Error> {
    let ids: Vec<&str> = tasks.iter().map(|t| t.0).collect();
    let kinds: Vec<&str> = tasks.iter().map(|t| t.1).collect();
    // One statement: the claim check, the attempts of earlier claims still
    // open (their worker is gone), the task rows. It reads the rows as they
    // were before it: the ended tasks, which it does not change.
    let opened = sqlx::query!(
        r#"WITH r AS (SELECT id FROM job_runs
                    WHERE id = $1 AND attempts = $4 AND state = 'running' FOR SHARE),
              lost AS (
                 UPDATE task_attempts SET outcome = 'lost', finished_at = now(),
                        error = 'its worker lost the run (stopped, or its claim was taken over)'
                 WHERE run_id IN (SELECT id FROM r) AND claim < $4 AND outcome = 'running'),
              reset AS (
                 INSERT INTO task_instances (run_id, task, kind)
                 SELECT $1, * FROM unnest($2::text[], $3::text[]) WHERE EXISTS (SELECT 1 FROM r)
                 ON CONFLICT (run_id, task) DO UPDATE SET state = 'queued', error = NULL
                     WHERE task_instances.state IN ('queued', 'running', 'up_for_retry')),
              ended AS (
                 SELECT task, state FROM task_instances
                 WHERE run_id = $1
                   AND state NOT IN ('queued', 'running', 'up_for_retry'))
         SELECT (SELECT count(*) FROM r) AS "held!",
                array(SELECT task FROM ended ORDER BY task) AS "names!",
                array(SELECT state FROM ended ORDER BY task) AS "states!""#,
        fence.run_id,
        &ids as &[&str],
        &kinds as &[&str],
        fence.claim,
    )
    .fetch_one(pool)
    .await?;
    if opened.held == 0 {
        return Ok(None);
    }
    Ok(Some(ended_tasks(opened.names, opened.states)))
}

/// Task names and states, as read by [`open_tasks`], into a map.
fn ended_tasks(names: Vec<String>, states: Vec<String>) -> HashMap<String, TaskState> {
    names
        .into_iter()
        .zip(states)
        .filter_map(|(task, state)| TaskState::parse(&state).map(|s| (task, s)))
        .collect()
}

/// The run's heartbeat, and its running tasks'. False: the claim is gone.
pub async fn heartbeat(pool: &PgPool, fence: Fence) -> Result<bool, sqlx::Error> {
    let beat = sqlx::query_scalar!(
        "WITH r AS (UPDATE job_runs SET heartbeat_at = now()
                    WHERE id = $1 AND attempts = $2 AND state = 'running' RETURNING id),
              t AS (UPDATE task_instances SET heartbeat_at = now()
                    WHERE run_id IN (SELECT id FROM r) AND state = 'running')
         SELECT id FROM r",
        fence.run_id,
        fence.claim,
    )
    .fetch_optional(pool)
    .await?;
    Ok(beat.is_some())
}

/// Writes a started attempt (and its task as running); its
/// `task_attempts` id. An attempt its seal already recorded keeps its
/// success, and its id is found even once the run has finished (its log's
/// last lines are written after the seal). `None`: the claim is gone.
async fn start_attempt(pool: &PgPool, attempt: &Attempt) -> Result<Option<i64>, sqlx::Error> {
    let fence = attempt.fence;
    sqlx::query_scalar!(
        r#"WITH r AS (SELECT id, worker FROM job_runs
                    WHERE id = $1 AND attempts = $4 AND state = 'running'),
              a AS (INSERT INTO task_attempts (run_id, task, claim, try, worker, started_at)
                    SELECT $1, $2, $4, $3, worker, $5 FROM r
                    ON CONFLICT (run_id, task, claim, try)
                    DO UPDATE SET outcome = 'running', finished_at = NULL, error = NULL
                    WHERE task_attempts.outcome <> 'success'
                    RETURNING id),
              t AS (UPDATE task_instances SET state = 'running', attempt = $3, heartbeat_at = now(),
                           started_at = COALESCE(started_at, $5)
                    WHERE run_id = $1 AND task = $2 AND EXISTS (SELECT 1 FROM a))
         SELECT id AS "id!" FROM a
         UNION ALL
         SELECT x.id FROM task_attempts x
         WHERE x.run_id = $1 AND x.task = $2 AND x.claim = $4 AND x.try = $3
           AND x.outcome = 'success'"#,
        fence.run_id,
        attempt.task,
        attempt.try_number,
        fence.claim,
        attempt.started,
    )
    .fetch_optional(pool)
    .await
}

/// Writes a task's state. False: the claim is gone, nothing was written.
/// A task that failed for good notifies `on_task_failure` (an outbox row
/// in the same statement).
#[allow(clippy::too_many_arguments)]
pub async fn set_task(
    pool: &PgPool,
    fence: Fence,
    task: &str,
    state: TaskState,
    attempt: i32,
    error: Option<&str>,
    duration: Option<Duration>,
    on_task_failure: &[String],
) -> Result<bool, sqlx::Error> {
    let held = sqlx::query!(
        "WITH r AS (SELECT id, job, interval_start, interval_end FROM job_runs
                    WHERE id = $1 AND attempts = $8 AND state = 'running'),
              a AS (UPDATE task_attempts
                    SET outcome = CASE WHEN $3 = 'success' THEN 'success' ELSE 'failed' END,
                        finished_at = COALESCE(finished_at, now()), error = $5
                    WHERE run_id = $1 AND task = $2 AND claim = $8 AND try = $4
                      AND $3 IN ('success', 'failed', 'up_for_retry') AND EXISTS (SELECT 1 FROM r)),
              n AS (INSERT INTO notifications (target, event, payload)
                    SELECT t, 'task_failed', jsonb_build_object(
                               'event', 'task_failed', 'job', r.job, 'run_id', r.id,
                               'interval_start', r.interval_start, 'interval_end', r.interval_end,
                               'task', $2::text, 'error', $5::text,
                               'try', (SELECT count(*) FROM task_attempts x
                                       WHERE x.run_id = $1 AND x.task = $2))
                    FROM r, unnest($9::text[]) t
                    WHERE $3 = 'failed')
         UPDATE task_instances SET state = $3, attempt = GREATEST(attempt, $4), error = $5,
                finished_at = CASE WHEN $6 THEN COALESCE(finished_at, now()) ELSE finished_at END,
                duration_ms = COALESCE($7, duration_ms)
         WHERE run_id = $1 AND task = $2 AND EXISTS (SELECT 1 FROM r)",
        fence.run_id,
        task,
        state.as_str(),
        attempt,
        error,
        state.is_final(),
        duration.map(|d| d.as_millis() as i64),
        fence.claim,
        on_task_failure,
    )
    .execute(pool)
    .await?
    .rows_affected();
    Ok(held == 1)
}

/// Who is told when a run ends: failed, or succeeded after a failed attempt.
#[derive(Debug, Clone, Default)]
pub struct RunAlerts {
    pub on_failure: Vec<String>,
    pub on_recovered: Vec<String>,
}

/// Records a run's outcome, and in the same statement its notifications
/// (outbox rows). False: the claim is gone, nothing was written.
pub async fn finish_run(
    pool: &PgPool,
    fence: Fence,
    state: RunState,
    error: Option<&str>,
    alerts: &RunAlerts,
) -> Result<bool, sqlx::Error> {
    let recorded = sqlx::query_scalar!(
        r#"WITH r AS (UPDATE job_runs SET state = $3, finished_at = now(), heartbeat_at = now(),
                           error = $4
                    WHERE id = $1 AND attempts = $2 AND state = 'running'
                    RETURNING id, job, run_type, interval_start, interval_end, state, error),
              ev AS (SELECT r.*, CASE
                         WHEN r.state = 'failed' THEN 'run_failed'
                         WHEN EXISTS (SELECT 1 FROM task_attempts a
                                      WHERE a.run_id = r.id AND a.outcome IN ('failed', 'lost'))
                         THEN 'run_recovered' END AS event
                     FROM r),
              n AS (INSERT INTO notifications (target, event, payload)
                    SELECT t, ev.event, jsonb_build_object(
                               'event', ev.event, 'job', ev.job, 'run_id', ev.id,
                               'run_type', ev.run_type, 'interval_start', ev.interval_start,
                               'interval_end', ev.interval_end, 'error', ev.error)
                    FROM ev, unnest(CASE ev.event WHEN 'run_failed' THEN $5::text[]
                                                  WHEN 'run_recovered' THEN $6::text[]
                                                  ELSE '{}'::text[] END) t)
         SELECT count(*) AS "recorded!" FROM r"#,
        fence.run_id,
        fence.claim,
        state.as_str(),
        error,
        &alerts.on_failure,
        &alerts.on_recovered,
    )
    .fetch_one(pool)
    .await?;
    Ok(recorded == 1)
}

/// A run whose worker stopped sending heartbeats.
#[derive(Debug, Clone)]
pub struct Lost {
    pub run_id: i64,
    pub job: String,
    /// `Queued` (will run again) or `Failed` (lost too often).
    pub state: RunState,
}

/// Queues again (or fails, after `max_attempts` claims) every running run
/// without a heartbeat for `stale_after`; its unfinished tasks with it.
pub async fn reap_stale(
    pool: &PgPool,
    stale_after: Duration,
    max_attempts: u32,
) -> Result<Vec<Lost>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"WITH lost AS (
             UPDATE job_runs SET
                 state = CASE WHEN attempts - claims_at_clear >= $2 THEN 'failed' ELSE 'queued' END,
                 finished_at = CASE WHEN attempts - claims_at_clear >= $2 THEN now() END,
                 error = format('worker %s stopped sending heartbeats (claim %s of at most %s)',
                                worker, attempts - claims_at_clear, $2),
                 worker = NULL
             WHERE state = 'running' AND heartbeat_at < now() - make_interval(secs => $1)
             RETURNING id, job, state
         ), tasks AS (
             UPDATE task_instances t SET
                 state = CASE WHEN lost.state = 'failed' THEN 'failed' ELSE 'queued' END,
                 error = 'its worker stopped sending heartbeats'
             FROM lost
             WHERE t.run_id = lost.id AND t.state IN ('running', 'up_for_retry')
         ), attempts AS (
             UPDATE task_attempts a SET outcome = 'lost', finished_at = now(),
                    error = 'its worker stopped sending heartbeats'
             FROM lost
             WHERE a.run_id = lost.id AND a.outcome = 'running'
         )
         SELECT id AS "id!", job AS "job!", state AS "state!: RunState" FROM lost"#,
        stale_after.as_secs_f64(),
        max_attempts as i32,
    )
    .fetch_all(pool)
    .await?;
    let lost: Vec<Lost> = rows
        .into_iter()
        .map(|r| Lost {
            run_id: r.id,
            job: r.job,
            state: r.state,
        })
        .collect();
    for l in &lost {
        tracing::warn!(run_id = l.run_id, job = l.job, state = %l.state, "run lost its worker");
    }
    Ok(lost)
}

/// Backfill runs of `job` in `[from, to)` by state.
pub async fn backfill_counts(
    pool: &PgPool,
    job: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<(RunState, i64)>, sqlx::Error> {
    Ok(sqlx::query!(
        r#"SELECT state AS "state: RunState", count(*) AS "runs!" FROM job_runs
         WHERE job = $1 AND run_type = 'backfill' AND interval_start >= $2 AND interval_start < $3
         GROUP BY state"#,
        job,
        from,
        to,
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|r| (r.state, r.runs))
    .collect())
}

/// Inserts a backfill run for every interval that has none.
pub async fn create_backfill_runs(
    pool: &PgPool,
    job: &str,
    all: &[Interval],
) -> Result<u64, sqlx::Error> {
    let mut created = 0;
    for chunk in all.chunks(10_000) {
        let starts: Vec<DateTime<Utc>> = chunk.iter().map(|i| i.start).collect();
        let ends: Vec<DateTime<Utc>> = chunk.iter().map(|i| i.end).collect();
        created += sqlx::query!(
            "INSERT INTO job_runs (job, run_type, interval_start, interval_end)
             SELECT $1, 'backfill', * FROM unnest($2::timestamptz[], $3::timestamptz[])
             ON CONFLICT DO NOTHING",
            job,
            &starts,
            &ends,
        )
        .execute(pool)
        .await?
        .rows_affected();
    }
    Ok(created)
}

/// Queues again the finished backfill runs of `[from, to)` in `states`,
/// with fresh tasks.
pub async fn requeue_backfill(
    pool: &PgPool,
    job: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    states: &[RunState],
) -> Result<(), sqlx::Error> {
    let states: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
    sqlx::query!(
        "WITH again AS (
             UPDATE job_runs SET state = 'queued', attempts = 0, worker = NULL, error = NULL,
                    started_at = NULL, finished_at = NULL, heartbeat_at = NULL
             WHERE job = $1 AND run_type = 'backfill' AND interval_start >= $2
               AND interval_start < $3 AND state = ANY($4)
             RETURNING id)
         DELETE FROM task_instances WHERE run_id IN (SELECT id FROM again)",
        job,
        from,
        to,
        &states as &[&str],
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Claims up to `limit` queued backfill runs of `[from, to)`, oldest first,
/// and opens their tasks (`tasks`: id and kind) as [`open_tasks`] does, in
/// the same statement.
#[allow(clippy::too_many_arguments)]
pub async fn claim_backfill(
    pool: &PgPool,
    job: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    worker: &str,
    limit: usize,
    tasks: &[(&str, &str)],
) -> Result<Vec<Claimed>, sqlx::Error> {
    let ids: Vec<&str> = tasks.iter().map(|t| t.0).collect();
    let kinds: Vec<&str> = tasks.iter().map(|t| t.1).collect();
    let rows = sqlx::query!(
        r#"WITH c AS (
             UPDATE job_runs SET state = 'running', worker = $4, started_at = now(),
                    heartbeat_at = now(), attempts = attempts + 1, error = NULL
             WHERE id IN (
                 SELECT id FROM job_runs
                 WHERE job = $1 AND run_type = 'backfill' AND state = 'queued'
                   AND interval_start >= $2 AND interval_start < $3
                 ORDER BY interval_start
                 LIMIT $5
                 FOR UPDATE SKIP LOCKED)
             RETURNING id, run_type, interval_start, interval_end, attempts, params),
         lost AS (
             UPDATE task_attempts a SET outcome = 'lost', finished_at = now(),
                    error = 'its worker lost the run (stopped, or its claim was taken over)'
             FROM c
             WHERE a.run_id = c.id AND a.claim < c.attempts AND a.outcome = 'running'),
         reset AS (
             INSERT INTO task_instances (run_id, task, kind)
             SELECT c.id, t.task, t.kind FROM c, unnest($6::text[], $7::text[]) AS t(task, kind)
             ON CONFLICT (run_id, task) DO UPDATE SET state = 'queued', error = NULL
                 WHERE task_instances.state IN ('queued', 'running', 'up_for_retry'))
         SELECT c.id AS "id!", c.run_type AS "run_type!: RunType",
                c.interval_start AS "interval_start!", c.interval_end AS "interval_end!",
                c.attempts AS "attempts!", c.params AS "params!",
                array(SELECT task FROM task_instances t
                      WHERE t.run_id = c.id AND t.state NOT IN ('queued', 'running', 'up_for_retry')
                      ORDER BY task) AS "names!",
                array(SELECT state FROM task_instances t
                      WHERE t.run_id = c.id AND t.state NOT IN ('queued', 'running', 'up_for_retry')
                      ORDER BY task) AS "states!"
         FROM c"#,
        job,
        from,
        to,
        worker,
        limit as i64,
        &ids as &[&str],
        &kinds as &[&str],
    )
    .fetch_all(pool)
    .await?;
    Ok(in_order(
        rows.into_iter()
            .map(|r| {
                let mut run = claimed!(r);
                run.opened = Some(ended_tasks(r.names, r.states));
                run
            })
            .collect(),
    ))
}
