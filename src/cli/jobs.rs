//! `hxjobs jobs list|check`.

use chrono::Utc;
use clap::Subcommand;

use super::{CliResult, Failure};
use crate::config::Config;
use crate::dag::job;

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Every job with its schedule, interval, catch-up policy, next run and tasks in order.
    List,
    /// Validate every job file without running anything; exit 2 on the first error.
    Check,
}

pub fn run(config: &Config, command: JobsCommand) -> CliResult {
    let jobs = job::load(&config.jobs.dir).map_err(|e| Failure {
        code: 2,
        message: e.to_string(),
    })?;
    match command {
        JobsCommand::Check => {
            println!("{} jobs valid in {}", jobs.len(), config.jobs.dir.display());
        }
        JobsCommand::List => {
            let now = Utc::now();
            let now = chrono::DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now);
            for j in &jobs {
                let next = j
                    .schedule
                    .find_next_occurrence(&now.with_timezone(&j.timezone), false)
                    .map(|t| t.with_timezone(&Utc).to_rfc3339())
                    .unwrap_or_else(|_| "never".into());
                let tasks: Vec<String> = j
                    .tasks
                    .iter()
                    .map(|t| format!("{}({})", t.id, t.kind))
                    .collect();
                println!(
                    "{:<26} {:<14} {:<5} catchup={:<6} next={}  tasks: {}",
                    j.name,
                    j.schedule_text,
                    j.interval.as_str(),
                    format!("{:?}", j.catchup.policy).to_lowercase(),
                    next,
                    tasks.join(" → ")
                );
            }
        }
    }
    Ok(())
}
