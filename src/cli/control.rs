//! Run controls: `hxjobs clear`, `mark`, `cancel`, `pause`, `unpause`.
//! Each is recorded in the ledger with the user who ran it and `--reason`.

use chrono::{DateTime, Utc};
use clap::{Args, ValueEnum};

use super::{CliResult, Failure};
use crate::config::Config;
use crate::ledger::controls::{self, Actor, ControlError};
use crate::ledger::RunState;

#[derive(Debug, Args)]
pub struct ClearArgs {
    /// The finished run to queue again (or --job with --from/--to).
    #[arg(conflicts_with_all = ["job", "from", "to"])]
    pub run_id: Option<i64>,
    /// Only this task (repeatable); without it, every task of the run.
    #[arg(long, requires = "run_id")]
    pub task: Vec<String>,
    /// With --task: also every task after it.
    #[arg(long, requires = "task")]
    pub downstream: bool,
    /// Every failed run of this job whose interval starts in [--from, --to).
    #[arg(long, requires_all = ["from", "to"])]
    pub job: Option<String>,
    #[arg(long, value_parser = crate::time::parse_instant)]
    pub from: Option<DateTime<Utc>>,
    #[arg(long, value_parser = crate::time::parse_instant)]
    pub to: Option<DateTime<Utc>>,
    /// Why (kept with the action).
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Mark {
    Success,
    Failed,
}

#[derive(Debug, Args)]
pub struct MarkArgs {
    pub run_id: i64,
    pub state: Mark,
    /// Only this task of the (finished) run.
    #[arg(long)]
    pub task: Option<String>,
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    pub run_id: i64,
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Debug, Args)]
pub struct PauseArgs {
    pub job: String,
    #[arg(long)]
    pub reason: Option<String>,
}

fn actor(reason: Option<String>) -> Actor {
    Actor {
        name: crate::config::cli_actor(),
        reason,
    }
}

fn refused(e: ControlError) -> Failure {
    match e {
        ControlError::NotFound(m) | ControlError::Conflict(m) => Failure {
            code: 2,
            message: m,
        },
        ControlError::Database(e) => Failure::from(crate::db::describe(&e)),
    }
}

fn usage(message: impl Into<String>) -> Failure {
    Failure {
        code: 2,
        message: message.into(),
    }
}

pub async fn clear(config: &Config, args: ClearArgs) -> CliResult {
    let pool = crate::db::connect_and_migrate(&config.database).await?;
    let who = actor(args.reason);
    if let Some(job) = args.job {
        let (Some(from), Some(to)) = (args.from, args.to) else {
            return Err(usage("--job needs --from and --to"));
        };
        if from >= to {
            return Err(usage("--from must be before --to"));
        }
        super::run::find_job(config, &job)?;
        let runs = controls::clear_failed(&pool, &job, from, to, &who)
            .await
            .map_err(refused)?;
        println!(
            "{} failed run(s) of {job} queued again with their failed tasks cleared{}",
            runs.len(),
            if runs.is_empty() {
                String::new()
            } else {
                format!(": {runs:?}")
            }
        );
        return Ok(());
    }
    let Some(run_id) = args.run_id else {
        return Err(usage(
            "name a run (hxjobs clear RUN_ID) or a job with --job --from --to",
        ));
    };
    let run = crate::ledger::run(&pool, run_id)
        .await?
        .ok_or_else(|| usage(format!("no run {run_id}")))?;
    let mut tasks = args.task;
    if args.downstream {
        let job = super::run::find_job(config, &run.job)?;
        tasks = job.to_clear(&tasks, true).map_err(usage)?;
    }
    if tasks.is_empty() {
        // The whole run: every task runs again.
        tasks = crate::ledger::tasks(&pool, run_id)
            .await?
            .into_iter()
            .map(|t| t.task)
            .collect();
    }
    controls::clear(&pool, run_id, &tasks, &who)
        .await
        .map_err(refused)?;
    println!(
        "run {run_id} ({}) queued again; these tasks run: {}",
        run.job,
        tasks.join(", ")
    );
    Ok(())
}

pub async fn mark(config: &Config, args: MarkArgs) -> CliResult {
    let pool = crate::db::connect_and_migrate(&config.database).await?;
    let to = match args.state {
        Mark::Success => RunState::Success,
        Mark::Failed => RunState::Failed,
    };
    controls::mark(
        &pool,
        args.run_id,
        args.task.as_deref(),
        to,
        &actor(args.reason),
    )
    .await
    .map_err(refused)?;
    match &args.task {
        Some(t) => println!("task {t} of run {} marked {to}", args.run_id),
        None => println!("run {} marked {to}", args.run_id),
    }
    Ok(())
}

pub async fn cancel(config: &Config, args: CancelArgs) -> CliResult {
    let pool = crate::db::connect_and_migrate(&config.database).await?;
    controls::cancel(&pool, args.run_id, &actor(args.reason))
        .await
        .map_err(refused)?;
    println!(
        "run {} cancelled; its worker stops it within scheduler.heartbeat_secs ({} s)",
        args.run_id, config.scheduler.heartbeat_secs
    );
    Ok(())
}

pub async fn pause(config: &Config, args: PauseArgs, paused: bool) -> CliResult {
    super::run::find_job(config, &args.job)?;
    let pool = crate::db::connect_and_migrate(&config.database).await?;
    controls::set_paused(&pool, &args.job, paused, &actor(args.reason))
        .await
        .map_err(refused)?;
    if paused {
        println!(
            "{} paused: no new scheduled runs, none of its runs starts",
            args.job
        );
    } else {
        println!(
            "{} unpaused: its catch-up policy decides what of the missed schedule runs",
            args.job
        );
    }
    Ok(())
}
