//! Notifications. Rules (`[notify]` for every job, the same keys in a job
//! file for its own) say which targets hear of which events. The ledger
//! writes an outbox row (`notifications`) in the statement that makes the
//! state change (a run failed or recovered, a task failed for good); the
//! deadline and ingest checks here write theirs with what they record. A
//! deliverer in every daemon and `hxjobs serve` claims due rows with `SKIP
//! LOCKED` and sends them (a webhook with a Slack-compatible body, signed
//! with HMAC-SHA256 when the target has a secret; or a mail over SMTP),
//! retrying with backoff and recording every attempt. At least once: a
//! daemon that dies in the middle of a delivery sends it again later, with
//! the same `X-Hxjobs-Delivery` id, so a receiver can drop the repeat.

mod checks;
mod send;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::dag::Job;

pub use checks::{check_deadlines, check_ingest};
pub use send::Sender;

/// What a rule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    RunFailed,
    TaskFailed,
    Recovered,
    Late,
    CheckFailed,
}

/// The targets `rule` names for `job`: `[notify]`'s and the job's own.
pub fn targets(config: &Config, job: &Job, rule: Rule) -> Vec<String> {
    let (global, own) = match rule {
        Rule::RunFailed => (&config.notify.on_failure, &job.notify.on_failure),
        Rule::TaskFailed => (&config.notify.on_task_failure, &job.notify.on_task_failure),
        Rule::Recovered => (&config.notify.on_recovered, &job.notify.on_recovered),
        Rule::Late => (&config.notify.on_late, &job.notify.on_late),
        Rule::CheckFailed => (
            &config.notify.on_check_failure,
            &job.notify.on_check_failure,
        ),
    };
    let mut all: Vec<String> = Vec::new();
    for t in global.iter().chain(own) {
        if !all.contains(t) {
            all.push(t.clone());
        }
    }
    all
}

/// Target names a job file uses that the configuration does not define.
pub fn unknown_targets<'a>(config: &Config, job: &'a Job) -> Vec<&'a str> {
    job.notify
        .all()
        .filter(|n| config.notify.target(n).is_none())
        .map(String::as_str)
        .collect()
}

/// A notification claimed for delivery.
#[derive(Debug, Clone)]
pub struct Due {
    pub id: i64,
    pub target: String,
    pub event: String,
    pub payload: Value,
    pub attempts: i32,
}

/// The words a notification carries, from its payload.
pub fn text(payload: &Value, public_url: Option<&str>) -> String {
    let s = |k: &str| payload.get(k).and_then(Value::as_str).unwrap_or("n/a");
    let n = |k: &str| {
        payload
            .get(k)
            .and_then(Value::as_i64)
            .map_or_else(|| "n/a".to_string(), |v| v.to_string())
    };
    let interval = format!("[{}, {})", s("interval_start"), s("interval_end"));
    let link = match (payload.get("run_id").and_then(Value::as_i64), public_url) {
        (Some(id), Some(base)) => format!(" {}/runs/{id}", base.trim_end_matches('/')),
        (Some(id), None) => format!(" (run {id})"),
        _ => String::new(),
    };
    match s("event") {
        "run_failed" => format!(
            "hxjobs: {} run {} failed for {interval}: {}.{link}",
            s("job"),
            n("run_id"),
            s("error")
        ),
        "task_failed" => format!(
            "hxjobs: task {} of {} failed after try {} (interval {interval}): {}.{link}",
            s("task"),
            s("job"),
            n("try"),
            s("error")
        ),
        "check_failed" => format!(
            "hxjobs: check {} of {} {} on {interval} after task {}: {}.{link}",
            s("check"),
            s("job"),
            match s("outcome") {
                "warn" => "warned",
                "error" => "could not run",
                _ => "failed (blocking: nothing downstream runs on it until it is cleared or marked)",
            },
            s("task"),
            s("message")
        ),
        "run_recovered" => format!(
            "hxjobs: {} run {} recovered: it succeeded for {interval} after a failed attempt.{link}",
            s("job"),
            n("run_id")
        ),
        "deadline_missed" => format!(
            "hxjobs: {} is late: the interval {interval} had not succeeded by its deadline {} ({}).{link}",
            s("job"),
            s("deadline_at"),
            s("status")
        ),
        "dead_letters" | "gaps" => format!(
            "hxjobs: ingest: {} {} in the hour from {} (more than {} an hour).",
            n("count"),
            if s("event") == "gaps" {
                "offset gaps"
            } else {
                "dead letters"
            },
            s("hour"),
            n("threshold")
        ),
        "test" => format!(
            "hxjobs: a test notification to target `{}`; it arrived.",
            s("target")
        ),
        other => format!("hxjobs: {other}: {payload}"),
    }
}

/// Claims up to `limit` due notifications for this worker.
pub async fn claim(pool: &PgPool, limit: i64) -> Result<Vec<Due>, sqlx::Error> {
    sqlx::query_as!(
        Due,
        "UPDATE notifications SET attempts = attempts + 1,
                claimed_until = now() + interval '60 seconds'
         WHERE id IN (
             SELECT id FROM notifications
             WHERE delivered_at IS NULL AND failed_at IS NULL AND next_attempt_at <= now()
               AND (claimed_until IS NULL OR claimed_until < now())
             ORDER BY id LIMIT $1
             FOR UPDATE SKIP LOCKED)
         RETURNING id, target, event, payload, attempts",
        limit,
    )
    .fetch_all(pool)
    .await
}

/// Records one delivery attempt and what follows from it: delivered, due
/// again after a backoff, or given up after `max_attempts`.
pub async fn record(
    pool: &PgPool,
    due: &Due,
    worker: &str,
    outcome: &Result<String, String>,
    max_attempts: u32,
) -> Result<(), sqlx::Error> {
    let (ok, detail) = match outcome {
        Ok(d) => (true, crate::redact::text(d)),
        Err(e) => (false, crate::redact::text(e)),
    };
    // 2 s, 4 s, 8 s … at most an hour.
    let backoff = 2f64.powi(due.attempts.clamp(1, 12)).min(3600.0);
    sqlx::query!(
        "WITH a AS (INSERT INTO notification_attempts (notification_id, worker, ok, detail)
                    VALUES ($1, $2, $3, $4))
         UPDATE notifications SET claimed_until = NULL,
                delivered_at = CASE WHEN $3 THEN now() END,
                last_error = CASE WHEN $3 THEN NULL ELSE $4 END,
                next_attempt_at = CASE WHEN $3 THEN next_attempt_at
                                       ELSE now() + make_interval(secs => $5) END,
                failed_at = CASE WHEN NOT $3 AND attempts >= $6 THEN now() END
         WHERE id = $1",
        due.id,
        worker,
        ok,
        detail,
        backoff,
        max_attempts as i32,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Delivers what is due now; returns how many were sent. Each outcome is
/// recorded the moment its send ends, so a daemon killed while a slow
/// target is still being tried does not send the others again.
pub async fn deliver_due(
    sender: &Sender,
    pool: &PgPool,
    worker: &str,
) -> Result<usize, sqlx::Error> {
    let due = claim(pool, 20).await?;
    let sends = due.iter().map(|d| async move {
        let outcome = sender.deliver(d).await;
        if let Err(e) = &outcome {
            tracing::warn!(
                notification = d.id, target = %d.target, event = %d.event, attempt = d.attempts,
                error = %e, "notification not delivered; trying again later"
            );
        }
        record(pool, d, worker, &outcome, sender.max_attempts()).await?;
        Ok::<bool, sqlx::Error>(outcome.is_ok())
    });
    let mut sent = 0;
    for recorded in futures::future::join_all(sends).await {
        if recorded? {
            sent += 1;
        }
    }
    Ok(sent)
}

/// Notifications of a run, for the API and the CLI.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NotificationRow {
    pub id: i64,
    pub created_at: DateTime<Utc>,
    pub target: String,
    pub event: String,
    pub attempts: i32,
    pub delivered_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

pub async fn of_run(pool: &PgPool, run_id: i64) -> Result<Vec<NotificationRow>, sqlx::Error> {
    sqlx::query_as!(
        NotificationRow,
        "SELECT id, created_at, target, event, attempts, delivered_at, failed_at, last_error
         FROM notifications WHERE (payload->>'run_id')::bigint = $1 ORDER BY id",
        run_id,
    )
    .fetch_all(pool)
    .await
}

/// The background work of a daemon or `hxjobs serve`: delivering due
/// notifications every second, checking deadlines and ingest alerts every
/// `scheduler.poll_secs`, until `stop`.
pub fn spawn(
    config: Arc<Config>,
    pool: PgPool,
    jobs: Arc<crate::dag::catalog::Catalog>,
    stop: CancellationToken,
) {
    tokio::spawn(async move {
        let sender = match Sender::new(config.clone()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "notifications cannot be sent from this process");
                return;
            }
        };
        let worker = crate::ledger::worker_id();
        let poll = Duration::from_secs(config.scheduler.poll_secs.max(1));
        let mut last_check: Option<tokio::time::Instant> = None;
        while !stop.is_cancelled() {
            if last_check.is_none_or(|t| t.elapsed() >= poll) {
                last_check = Some(tokio::time::Instant::now());
                let current = jobs.current();
                if let Err(e) = check_deadlines(&pool, &config, &current, Utc::now()).await {
                    tracing::warn!(error = %e, "deadlines not checked; trying again");
                }
                if let Err(e) = check_ingest(&pool, &config, Utc::now()).await {
                    tracing::warn!(error = %e, "ingest alerts not checked; trying again");
                }
            }
            if let Err(e) = deliver_due(&sender, &pool, &worker).await {
                tracing::warn!(error = %e, "notifications not delivered; trying again");
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.cancelled() => {}
            }
        }
    });
}
