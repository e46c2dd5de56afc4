//! Run controls: `hxjobs clear`, `mark`, `cancel`, `pause`, `unpause`.
//! Each is recorded in the ledger with the user who ran it and `--reason`.

use chrono::{DateTime, Utc};
use clap::{Args, ValueEnum};

use super::{refused, CliResult, Failure};
use crate::config::Config;
use crate::ops::Actor;

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

pub async fn clear(config: &Config, args: ClearArgs) -> CliResult {
    let ops = super::ops(config).await?;
    let who = Actor::cli();
    if let Some(job) = args.job {
        let (Some(from), Some(to)) = (args.from, args.to) else {
            return Err(usage("--job needs --from and --to"));
        };
        let runs = ops
            .clear_failed(&who, &job, from, to, args.reason)
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
    let (run, tasks) = ops
        .clear(&who, run_id, args.task, args.downstream, args.reason)
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
    let ops = super::ops(config).await?;
    let to = match args.state {
        Mark::Success => "success",
        Mark::Failed => "failed",
    };
    let to = ops
        .mark(
            &Actor::cli(),
            args.run_id,
            args.task.as_deref(),
            to,
            args.reason,
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
    let ops = super::ops(config).await?;
    ops.cancel(&Actor::cli(), args.run_id, args.reason)
        .await
        .map_err(refused)?;
    println!(
        "run {} cancelled; its worker stops it within scheduler.heartbeat_secs ({} s)",
        args.run_id, config.scheduler.heartbeat_secs
    );
    Ok(())
}

pub async fn pause(config: &Config, args: PauseArgs, paused: bool) -> CliResult {
    let ops = super::ops(config).await?;
    ops.set_paused(&Actor::cli(), &args.job, paused, args.reason)
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

fn usage(message: impl Into<String>) -> Failure {
    Failure {
        code: 2,
        message: message.into(),
    }
}
