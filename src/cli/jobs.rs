//! `hxjobs jobs list|check`.

use std::sync::Arc;

use chrono::Utc;
use clap::Subcommand;

use super::{CliResult, Failure};
use crate::config::Config;
use crate::dag::{job, trigger};

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Every job with its version (the file's SHA-256, first 12 hex digits),
    /// schedule, interval, catch-up policy, next run and tasks in order.
    List,
    /// Validate every job file without running anything; print every
    /// error (file:line) and exit 1 when any file is invalid.
    Check,
}

pub async fn run(config: &Config, command: JobsCommand) -> CliResult {
    let loaded = job::load(&config.jobs.dir).map_err(|e| Failure {
        code: 2,
        message: e.to_string(),
    })?;
    for e in &loaded.errors {
        eprintln!("invalid: {e}");
    }
    let jobs = &loaded.jobs;
    match command {
        JobsCommand::Check => {
            println!("{} jobs valid in {}", jobs.len(), config.jobs.dir.display());
            if !loaded.errors.is_empty() {
                return Err(Failure {
                    code: 1,
                    message: format!(
                        "{} job files are invalid (listed above)",
                        loaded.errors.len()
                    ),
                });
            }
        }
        JobsCommand::List => {
            let now = Utc::now();
            let now = chrono::DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now);
            // What completeness-triggered jobs wait on is in the database;
            // without it, the rest of the list still prints.
            let shared: Vec<Arc<job::Job>> = jobs.iter().cloned().map(Arc::new).collect();
            let waiting = match crate::db::connect(&config.database).await {
                Ok(pool) => trigger::waiting_on(config, &pool, &shared, now).await.ok(),
                Err(_) => None,
            };
            for j in jobs {
                let next = j
                    .next_fire(now)
                    .map_or_else(|| "never".into(), |t| t.to_rfc3339());
                let tasks: Vec<String> = j
                    .tasks
                    .iter()
                    .map(|t| {
                        let mut about = vec![t.kind.name().to_string()];
                        if t.trigger_rule != crate::dag::rules::TriggerRule::AllSuccess {
                            about.push(t.trigger_rule.as_str().to_string());
                        }
                        if let Some(p) = &t.pool {
                            about.push(format!("pool {p}"));
                        }
                        format!("{}({})", t.id, about.join(", "))
                    })
                    .collect();
                println!(
                    "{:<26} {} {:<14} {:<5} catchup={:<6} next={}  tasks: {}",
                    j.name,
                    j.version,
                    j.schedule.as_ref().map_or("-", |s| s.text.as_str()),
                    j.interval.as_str(),
                    format!("{:?}", j.catchup.policy).to_lowercase(),
                    next,
                    tasks.join(" → ")
                );
                if let Some(when) = trigger::describe(j) {
                    let waits = waiting
                        .as_ref()
                        .and_then(|w| w.get(&j.name).cloned())
                        .unwrap_or_else(|| "n/a (the database could not say)".into());
                    println!("{:<26} queued when {when}; waiting on {waits}", "");
                }
                if !j.checks.is_empty() {
                    let checks: Vec<String> = j
                        .checks
                        .iter()
                        .map(|c| {
                            let gate = if c.blocking { "blocking" } else { "warning" };
                            format!("{} ({} after {}, {gate})", c.name, c.kind.name(), c.after)
                        })
                        .collect();
                    println!("{:<26} checks: {}", "", checks.join(", "));
                }
            }
        }
    }
    Ok(())
}
