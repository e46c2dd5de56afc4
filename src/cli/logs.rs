//! `hxjobs logs <run-id> [<task>] [--try N] [--follow]`.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use clap::Args;
use sqlx::PgPool;

use super::{CliResult, Failure};
use crate::config::Config;
use crate::ledger::{self, logs::AttemptRow, RunState};

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The run (`hxjobs runs` lists them).
    pub run_id: i64,
    /// One task of the run; without it, every attempt of every task.
    pub task: Option<String>,
    /// Which try of the task, from 1 (default: its latest).
    #[arg(long = "try", value_name = "N")]
    pub try_number: Option<i64>,
    /// Keep printing what the attempts say while the run runs; ends when
    /// it ends (or, with --try, when that try ends).
    #[arg(long, short)]
    pub follow: bool,
}

fn usage(message: String) -> Failure {
    Failure { code: 2, message }
}

pub async fn logs(config: &Config, args: LogsArgs) -> CliResult {
    if args.try_number.is_some() && args.task.is_none() {
        return Err(usage("--try needs a task".into()));
    }
    if args.try_number.is_some_and(|n| n < 1) {
        return Err(usage("--try counts from 1".into()));
    }
    let pool = crate::db::connect_and_migrate(&config.database).await?;
    let Some(run) = ledger::run(&pool, args.run_id).await? else {
        return Err(usage(format!("no run {}", args.run_id)));
    };
    if let Some(task) = &args.task {
        let tasks = ledger::tasks(&pool, args.run_id).await?;
        if !tasks.iter().any(|t| &t.task == task) {
            let names: Vec<&str> = tasks.iter().map(|t| t.task.as_str()).collect();
            return Err(usage(format!(
                "run {} ({}) has no task `{task}` (its tasks: {})",
                run.id,
                run.job,
                if names.is_empty() {
                    "none yet".to_string()
                } else {
                    names.join(", ")
                }
            )));
        }
    }
    // One attempt's log alone is printed bare; several get a header each.
    let headers = args.task.is_none() || (args.follow && args.try_number.is_none());
    let mut printed: HashMap<i64, (i32, bool)> = HashMap::new();
    loop {
        let chosen = chosen(&pool, &args).await?;
        if chosen.is_empty() && !args.follow {
            return Err(Failure {
                code: 1,
                message: match (&args.task, args.try_number) {
                    (Some(t), Some(n)) => format!("task `{t}` of run {} has no try {n}", run.id),
                    (Some(t), None) => format!("task `{t}` of run {} has not started", run.id),
                    _ => format!("run {} has no task attempts yet", run.id),
                },
            });
        }
        let mut all_ended = true;
        for a in &chosen {
            let (seq, ended) = printed.entry(a.id).or_insert((0, false));
            if *ended {
                continue;
            }
            if *seq == 0 && headers {
                println!(
                    "==> {} try {} (worker {}, started {}) <==",
                    a.task,
                    a.try_number,
                    a.worker.as_deref().unwrap_or("-"),
                    a.started_at.format("%Y-%m-%d %H:%M:%S")
                );
                // A header with no line yet is not printed twice.
                *seq = -1;
            }
            let after = (*seq).max(0);
            let chunks = ledger::logs::chunks(&pool, a.id, after).await?;
            let mut out = std::io::stdout().lock();
            for (n, body) in &chunks {
                out.write_all(body.as_bytes())?;
                *seq = *n;
            }
            // Its log had ended before these chunks were read: all are in.
            // (Without --follow, an attempt that ended is shown ended.)
            if a.log_ended || (!args.follow && a.finished_at.is_some()) {
                let max = config.logs.max_bytes_per_attempt;
                out.write_all(ledger::logs::closing_lines(a, max).as_bytes())?;
                *ended = true;
            } else {
                all_ended = false;
            }
            out.flush()?;
        }
        if !args.follow {
            return Ok(());
        }
        if all_ended {
            let done = match args.try_number {
                Some(_) => !chosen.is_empty(),
                None => ledger::run(&pool, args.run_id)
                    .await?
                    .is_none_or(|r| !matches!(r.state, RunState::Queued | RunState::Running)),
            };
            if done {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The attempts the arguments name: one try, a task's latest (all of
/// them when following), or every attempt of the run.
async fn chosen(pool: &PgPool, args: &LogsArgs) -> Result<Vec<AttemptRow>, sqlx::Error> {
    let mut all = ledger::logs::attempts(pool, args.run_id, args.task.as_deref()).await?;
    Ok(match (&args.task, args.try_number) {
        (Some(_), Some(n)) => all.into_iter().filter(|a| a.try_number == n).collect(),
        (Some(_), None) if !args.follow => all.pop().into_iter().collect(),
        _ => all,
    })
}
