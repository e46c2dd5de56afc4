//! Pools: at most `slots` attempts of the tasks in a pool run at once,
//! across jobs and daemons (`pool_slots`, migration 0029). A task asks
//! under its run's claim; the pool's rows are decided one asker at a time
//! (a transaction-scoped advisory lock on the pool's name), first asked
//! first served. A slot is held while its run is running under the same
//! claim with a fresh heartbeat: a lost worker's slots free themselves.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::Fence;

/// What an ask found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// The slot is this task's until [`release`].
    Granted,
    /// Every slot is held: `used` of them, `ahead` askers before this one.
    Wait { used: i64, ahead: i64 },
    /// The run's claim is no longer this worker's.
    Fenced,
}

/// Asks for a slot of `pool` (of `slots`) for `task` of the fenced run.
/// Asking again while waiting keeps the task's place.
pub async fn ask(
    pool: &PgPool,
    fence: Fence,
    task: &str,
    name: &str,
    slots: u32,
    stale_after_secs: u64,
) -> Result<Ask, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtext('hxjobs.pool'), hashtext($1))",
        name
    )
    .execute(&mut *tx)
    .await?;
    // Rows of runs that ended, were taken over or went silent hold nothing.
    sqlx::query!(
        "DELETE FROM pool_slots s USING job_runs r
         WHERE s.pool = $1 AND r.id = s.run_id
           AND (r.state <> 'running' OR r.attempts <> s.claim
                OR r.heartbeat_at < now() - make_interval(secs => $2))",
        name,
        stale_after_secs as f64,
    )
    .execute(&mut *tx)
    .await?;
    let mine = sqlx::query_scalar!(
        r#"INSERT INTO pool_slots (run_id, task, pool, claim, job, worker)
           SELECT r.id, $2, $3, r.attempts, r.job, coalesce(r.worker, '')
           FROM job_runs r WHERE r.id = $1 AND r.attempts = $4 AND r.state = 'running'
           ON CONFLICT (run_id, task) DO UPDATE
             SET pool = excluded.pool, claim = excluded.claim, worker = excluded.worker,
                 asked_at = CASE WHEN pool_slots.claim = excluded.claim
                                 THEN pool_slots.asked_at ELSE now() END,
                 granted_at = CASE WHEN pool_slots.claim = excluded.claim
                                   THEN pool_slots.granted_at END
           RETURNING asked_at"#,
        fence.run_id,
        task,
        name,
        fence.claim,
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(asked_at) = mine else {
        tx.rollback().await?;
        return Ok(Ask::Fenced);
    };
    let seen = sqlx::query!(
        r#"SELECT count(*) FILTER (WHERE granted_at IS NOT NULL) AS "used!",
                  count(*) FILTER (WHERE granted_at IS NULL
                                   AND (asked_at, run_id, task) < ($2, $3, $4)) AS "ahead!",
                  bool_or(granted_at IS NOT NULL AND run_id = $3 AND task = $4) AS "held!"
           FROM pool_slots WHERE pool = $1"#,
        name,
        asked_at,
        fence.run_id,
        task,
    )
    .fetch_one(&mut *tx)
    .await?;
    let outcome = if seen.held {
        Ask::Granted
    } else if seen.used + seen.ahead < i64::from(slots) {
        sqlx::query!(
            "UPDATE pool_slots SET granted_at = now() WHERE run_id = $1 AND task = $2",
            fence.run_id,
            task,
        )
        .execute(&mut *tx)
        .await?;
        Ask::Granted
    } else {
        Ask::Wait {
            used: seen.used,
            ahead: seen.ahead,
        }
    };
    tx.commit().await?;
    Ok(outcome)
}

/// Gives the task's slot (or its place in the queue) back.
pub async fn release(pool: &PgPool, fence: Fence, task: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "DELETE FROM pool_slots WHERE run_id = $1 AND task = $2 AND claim = $3",
        fence.run_id,
        task,
        fence.claim,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// A slot held or asked for now, for the console and the API.
#[derive(Debug, Clone, Serialize)]
pub struct Holder {
    pub pool: String,
    pub run_id: i64,
    pub job: String,
    pub task: String,
    pub worker: String,
    pub asked_at: DateTime<Utc>,
    /// `None`: waiting for a slot.
    pub granted_at: Option<DateTime<Utc>>,
}

/// Every live slot holder and waiter, by pool, first asked first.
pub async fn holders(pool: &PgPool, stale_after_secs: u64) -> Result<Vec<Holder>, sqlx::Error> {
    sqlx::query_as!(
        Holder,
        "SELECT s.pool, s.run_id, s.job, s.task, s.worker, s.asked_at, s.granted_at
         FROM pool_slots s JOIN job_runs r ON r.id = s.run_id
         WHERE r.state = 'running' AND r.attempts = s.claim
           AND r.heartbeat_at >= now() - make_interval(secs => $1)
         ORDER BY s.pool, s.granted_at IS NULL, s.asked_at, s.run_id, s.task",
        stale_after_secs as f64,
    )
    .fetch_all(pool)
    .await
}
