//! Backfills: plan, start (in the background, for the API and the console)
//! or run (in the foreground, for the CLI), follow and cancel. Every one is
//! recorded in `backfills` with who started it and a heartbeat, so any
//! surface of any process lists, follows and cancels it.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::runs::Allow;
use super::{Actor, Error, Need, Ops, Result};
use crate::dag::backfill::{self, Plan, Reprocess, Spec, Summary};
use crate::dag::Job;
use crate::ledger::backfills::{self, BackfillRow};

/// A backfill asked for, before it is checked.
#[derive(Debug, Clone, Default)]
pub struct Request<'a> {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// `none` (default), `failed` or `all`.
    pub reprocess: Option<&'a str>,
    /// 1 to 64; default 2.
    pub parallel: Option<usize>,
    pub allow: Allow,
    /// Past `api.max_backfill_intervals` (the command line may ask).
    pub max_intervals: Option<usize>,
}

/// The most runs one backfill keeps in flight.
pub const MAX_PARALLEL: usize = 64;

impl Ops {
    /// A backfill's settings, checked.
    pub fn backfill_spec(&self, r: &Request<'_>) -> Result<Spec> {
        let (Some(from), Some(to)) = (r.from, r.to) else {
            return Err(
                Error::invalid("invalid_range", "a backfill needs from and to").field("from"),
            );
        };
        if from >= to {
            return Err(Error::invalid("invalid_range", "from must be before to").field("from"));
        }
        let reprocess = match r.reprocess.unwrap_or("none") {
            "none" => Reprocess::None,
            "failed" => Reprocess::Failed,
            "all" => Reprocess::All,
            other => {
                return Err(Error::invalid(
                    "invalid_reprocess",
                    format!("reprocess must be none, failed or all, not {other:?}"),
                )
                .field("reprocess"))
            }
        };
        let parallel = r.parallel.unwrap_or(2);
        if !(1..=MAX_PARALLEL).contains(&parallel) {
            return Err(Error::invalid(
                "invalid_parallel",
                format!("parallel must be 1 to {MAX_PARALLEL}"),
            )
            .field("parallel"));
        }
        Ok(Spec {
            from,
            to,
            parallel,
            reprocess,
            ignore_start_date: r.allow.before_start_date,
            allow_unfinished: r.allow.unfinished,
            max_intervals: r
                .max_intervals
                .unwrap_or(self.config.api.max_backfill_intervals),
        })
    }

    /// What a backfill of `job` would do (its dry run).
    pub async fn backfill_plan(&self, actor: &Actor, job: &Job, spec: &Spec) -> Result<Plan> {
        self.read(actor, &format!("job:{}", job.name)).await?;
        backfill::plan(&self.pools.ledger, job, spec)
            .await
            .map_err(refusal)
    }

    /// Starts a backfill in this process, in the background; returns its
    /// id and what it found to do.
    pub async fn start_backfill(
        &self,
        actor: &Actor,
        job: &str,
        spec: Spec,
    ) -> Result<(i64, Plan)> {
        let r = async {
            actor.require(Need::Operate, None)?;
            let job = self.job(job)?;
            actor.require(Need::Operate, Some(&job.name))?;
            let plan = backfill::plan(&self.pools.ledger, &job, &spec)
                .await
                .map_err(refusal)?;
            let worker = format!("backfill-{}", crate::ledger::worker_id());
            let held = self.begin(actor, &job, &spec, &worker).await?;
            let id = held.id;
            let ops = self.clone();
            tokio::spawn(async move {
                let outcome = backfill::run(
                    ops.config.clone(),
                    &ops.pools,
                    job,
                    spec,
                    &worker,
                    held.stop.clone(),
                    |_| {},
                )
                .await;
                ops.end(held, &outcome).await;
            });
            Ok((id, plan))
        }
        .await;
        self.audited(actor, "backfill", &format!("job:{job}"), &r)
            .await;
        r
    }

    /// Runs a backfill here until it ends (the CLI), recorded like any
    /// other; `stop` (or the row cancelled elsewhere) interrupts it. While
    /// another backfill of the job is recorded running, it waits up to
    /// `scheduler.stale_after_secs` for that one's heartbeat to stop (its
    /// process died: this one resumes the range), then refuses. Returns its
    /// id and what it did.
    pub async fn run_backfill(
        &self,
        actor: &Actor,
        job: Arc<Job>,
        spec: Spec,
        stop: CancellationToken,
        on_progress: impl FnMut(&backfill::Progress),
    ) -> Result<(i64, Summary)> {
        let target = format!("job:{}", job.name);
        let r = async {
            actor.require(Need::Operate, Some(&job.name))?;
            let worker = format!("backfill-{}", crate::ledger::worker_id());
            // Run again right after its process died, the same backfill
            // waits for the dead one's heartbeat to go stale, then resumes.
            let patience = Duration::from_secs(self.config.scheduler.stale_after_secs + 3);
            let started = std::time::Instant::now();
            let held = loop {
                match self.begin(actor, &job, &spec, &worker).await {
                    Err(e) if e.code == "backfill_running" && started.elapsed() < patience => {
                        tracing::info!(job = %job.name, "another backfill of the job holds it; waiting for its heartbeat to stop or go on");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                            _ = stop.cancelled() => return Err(e),
                        }
                    }
                    other => break other?,
                }
            };
            let id = held.id;
            // Interrupted here: the row's stop follows.
            let interrupt = {
                let (outer, inner) = (stop.clone(), held.stop.clone());
                tokio::spawn(async move {
                    outer.cancelled().await;
                    inner.cancel();
                })
            };
            let outcome = backfill::run(
                self.config.clone(),
                &self.pools,
                job.clone(),
                spec,
                &worker,
                held.stop.clone(),
                on_progress,
            )
            .await;
            interrupt.abort();
            if held.stop.is_cancelled() {
                // Cancelled elsewhere: the caller's stop says so too.
                stop.cancel();
            }
            self.end(held, &outcome).await;
            outcome.map(|s| (id, s)).map_err(refusal)
        }
        .await;
        self.audited(actor, "backfill", &target, &r).await;
        r
    }

    /// Records a backfill as running (one per job) and keeps its heartbeat.
    async fn begin(&self, actor: &Actor, job: &Job, spec: &Spec, worker: &str) -> Result<Held> {
        let stale = Duration::from_secs(self.config.scheduler.stale_after_secs);
        let new = backfills::New {
            job: &job.name,
            from: spec.from,
            to: spec.to,
            reprocess: match spec.reprocess {
                Reprocess::None => "none",
                Reprocess::Failed => "failed",
                Reprocess::All => "all",
            },
            parallel: spec.parallel as i32,
            worker,
            started_by: &actor.name,
        };
        let id = match backfills::start(&self.pools.ledger, &new, stale).await? {
            Ok(id) => id,
            Err(running) => {
                return Err(Error::conflict(
                    "backfill_running",
                    format!(
                        "backfill {running} of {} is running; cancel it or wait for it",
                        job.name
                    ),
                )
                .with("backfill_id", json!(running)))
            }
        };
        let stop = CancellationToken::new();
        // The heartbeat, and the stop: shutdown, or the row cancelled.
        let beat = {
            let (pool, stop, shutdown) =
                (self.pools.ledger.clone(), stop.clone(), self.stop.clone());
            let every = Duration::from_secs(self.config.scheduler.heartbeat_secs.clamp(1, 2));
            tokio::spawn(async move {
                loop {
                    let running = backfills::heartbeat(&pool, id).await;
                    if matches!(running, Ok(false)) || shutdown.is_cancelled() {
                        stop.cancel();
                    }
                    tokio::time::sleep(every).await;
                }
            })
        };
        Ok(Held {
            id,
            job: job.name.clone(),
            stop,
            beat,
        })
    }

    /// Records how a backfill ended.
    async fn end(&self, held: Held, outcome: &Result<Summary, backfill::Error>) {
        held.beat.abort();
        let (all_ok, ok, failed, error) = match outcome {
            Ok(s) if s.failed == 0 && s.handed_back == 0 => (true, s.succeeded, 0, None),
            Ok(s) => (
                false,
                s.succeeded,
                s.failed,
                Some(format!(
                    "{} failed, {} handed back",
                    s.failed, s.handed_back
                )),
            ),
            Err(e) => (false, 0, 0, Some(e.to_string())),
        };
        match outcome {
            Ok(s) => {
                tracing::info!(job = %held.job, backfill = held.id, succeeded = s.succeeded, failed = s.failed, "backfill finished")
            }
            Err(e) => {
                tracing::error!(job = %held.job, backfill = held.id, error = %e, "backfill failed")
            }
        }
        let recorded = backfills::finish(
            &self.pools.ledger,
            held.id,
            all_ok,
            ok as i32,
            failed as i32,
            error.as_deref(),
        )
        .await;
        if let Err(e) = recorded {
            tracing::error!(backfill = held.id, error = %e, "the backfill's end was not recorded");
        }
    }

    /// Backfills, newest first (of one job, if named).
    pub async fn backfills(&self, actor: &Actor, job: Option<&str>) -> Result<Vec<BackfillRow>> {
        self.read(actor, "backfills").await?;
        Ok(backfills::list(&self.pools.ledger, job).await?)
    }

    pub async fn backfill(&self, actor: &Actor, id: i64) -> Result<BackfillRow> {
        self.read(actor, &format!("backfill:{id}")).await?;
        backfills::get(&self.pools.ledger, id)
            .await?
            .ok_or_else(|| Error::not_found("unknown_backfill", format!("no backfill {id}")))
    }

    /// Cancels a running backfill: its runs in hand are handed back,
    /// finished ones stay.
    pub async fn cancel_backfill(&self, actor: &Actor, id: i64) -> Result<BackfillRow> {
        let r = async {
            actor.require(Need::Operate, None)?;
            let row = backfills::get(&self.pools.ledger, id)
                .await?
                .ok_or_else(|| Error::not_found("unknown_backfill", format!("no backfill {id}")))?;
            actor.require(Need::Operate, Some(&row.job))?;
            match backfills::cancel(&self.pools.ledger, id, &actor.name).await? {
                Ok(row) => {
                    tracing::info!(backfill = id, job = %row.job, by = %actor.name, "backfill cancelled");
                    Ok(row)
                }
                Err(state) => Err(Error::conflict(
                    "backfill_finished",
                    format!(
                        "backfill {id} is {}, not running",
                        state.as_deref().unwrap_or("gone")
                    ),
                )),
            }
        }
        .await;
        self.audited(actor, "cancel_backfill", &format!("backfill:{id}"), &r)
            .await;
        r
    }
}

/// A running backfill this process holds.
struct Held {
    id: i64,
    job: String,
    stop: CancellationToken,
    beat: tokio::task::JoinHandle<()>,
}

/// A backfill's refusal, in no surface's words.
fn refusal(e: backfill::Error) -> Error {
    match e {
        backfill::Error::BeforeStartDate { .. } => {
            Error::invalid("before_start_date", e.to_string()).field("ignore_start_date")
        }
        backfill::Error::Unfinished { .. } => {
            Error::invalid("interval_not_ended", e.to_string()).field("allow_unfinished")
        }
        backfill::Error::TooMany { max, .. } => Error::invalid("too_many_intervals", e.to_string())
            .field("max_intervals")
            .with("max_intervals", json!(max)),
        backfill::Error::Parallel => {
            Error::invalid("invalid_parallel", e.to_string()).field("parallel")
        }
        backfill::Error::Database(e) => e.into(),
        other => Error::invalid("invalid_range", other.to_string()).field("from"),
    }
}
