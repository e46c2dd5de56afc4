//! `hxjobs run <job>` and `hxjobs tasks test`: one interval, in the foreground.

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};

use super::{stop_on_signal, CliResult, Failure};
use crate::config::Config;
use crate::dag::executor::{self, RunContext};
use crate::dag::{Interval, Job};
use crate::ledger::{self, RunType, TaskState};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The job to run (see `hxjobs jobs list`); `ingest` drains every event topic.
    pub job: String,
    /// Run the last interval complete at this time (default: now).
    #[arg(long, value_parser = crate::time::parse_instant, conflicts_with = "interval_start")]
    pub at: Option<DateTime<Utc>>,
    /// Run the interval that contains this time.
    #[arg(long, value_parser = crate::time::parse_instant)]
    pub interval_start: Option<DateTime<Utc>>,
    /// Also run an interval before the job's `start_date` (refused otherwise).
    #[arg(long)]
    pub ignore_start_date: bool,
    /// Also run an interval that has not ended yet (refused otherwise).
    #[arg(long)]
    pub allow_unfinished: bool,
    /// A run parameter the job declares, NAME=VALUE (repeatable).
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum TasksCommand {
    /// Run one task of a job for one interval, without writing the run ledger.
    Test {
        job: String,
        task: String,
        /// The last interval complete at this time (default: now).
        #[arg(long, value_parser = crate::time::parse_instant)]
        at: Option<DateTime<Utc>>,
    },
}

pub(super) fn find_job(config: &Config, name: &str) -> Result<Job, Failure> {
    let loaded = super::load_jobs(config)?;
    if let Some(e) = loaded.error_for(name) {
        return Err(Failure {
            code: 2,
            message: format!("job `{name}` is not valid: {e}"),
        });
    }
    let names: Vec<String> = loaded.jobs.iter().map(|j| j.name.clone()).collect();
    let mut message = format!("unknown job `{name}` (known jobs: {})", names.join(", "));
    if !loaded.errors.is_empty() {
        message.push_str(&format!(
            "; {} job files are invalid:\n{}",
            loaded.errors.len(),
            loaded.error_lines()
        ));
    }
    loaded
        .jobs
        .into_iter()
        .find(|j| j.name == name)
        .ok_or(Failure { code: 2, message })
}

fn interval_of(job: &Job, at: Option<DateTime<Utc>>, start: Option<DateTime<Utc>>) -> Interval {
    match start {
        Some(s) => job.interval.containing(s),
        None => job.interval.last_complete(at.unwrap_or_else(Utc::now)),
    }
}

pub async fn run(config: &Config, args: RunArgs) -> CliResult {
    let job = find_job(config, &args.job)?;
    let interval = interval_of(&job, args.at, args.interval_start);
    if interval.end > Utc::now() && !args.allow_unfinished {
        return Err(Failure {
            code: 2,
            message: format!(
                "the interval {} → {} has not ended yet; pass --allow-unfinished to run it anyway",
                interval.start, interval.end
            ),
        });
    }
    if interval.start < job.start_date && !args.ignore_start_date {
        return Err(Failure {
            code: 2,
            message: format!(
                "{} starts on {}: the interval {} is before it; pass --ignore-start-date to run it anyway",
                job.name, job.start_date, interval.start
            ),
        });
    }
    let params = crate::dag::params::parse_pairs(&job.params, &args.params)
        .map_err(|message| Failure { code: 2, message })?;
    let pool = crate::db::connect_and_migrate(&config.database).await?;
    let stop = stop_on_signal();
    let pools = crate::db::Pools::new(pool);
    let trigger = ledger::Trigger {
        by: Some(crate::config::cli_actor()),
        params,
    };
    let run = ledger::create_claimed_run(
        &pools.ledger,
        &job.name,
        interval,
        &ledger::worker_id(),
        &trigger,
    )
    .await?;
    let report = executor::execute(config, &pools, &job, &run, stop.clone()).await;
    crate::tasklog::flushed().await;
    let report = report?;
    print!("{report}");
    if report.handed_back || stop.is_cancelled() {
        return Err(Failure {
            code: 130,
            message: format!(
                "interrupted; run {} is queued again and a daemon will finish it (committed work is kept)",
                run.run_id
            ),
        });
    }
    if !report.succeeded() {
        return Err(Failure::from(format!(
            "job {} failed for this interval",
            job.name
        )));
    }
    Ok(())
}

pub async fn test_task(config: &Config, command: TasksCommand) -> CliResult {
    let TasksCommand::Test { job, task, at } = command;
    let mut job = find_job(config, &job)?;
    let Some(t) = job.tasks.iter().find(|t| t.id == task).cloned() else {
        return Err(Failure {
            code: 2,
            message: format!("job {} has no task `{task}`", job.name),
        });
    };
    let mut only = t.clone();
    only.depends_on.clear();
    job.tasks = vec![only];
    let interval = interval_of(&job, at, None);
    let pool = crate::db::connect_and_migrate(&config.database).await?;
    let ctx = RunContext {
        config,
        pool: &pool,
        ledger: None,
        job: &job,
        interval,
        run_type: RunType::Manual,
        params: crate::dag::params::effective(&job.params, &serde_json::Value::Null),
        stop: stop_on_signal(),
        fenced: Default::default(),
    };
    let (outcomes, _) = executor::run_tasks(&ctx, &Default::default()).await?;
    let mut ok = true;
    for o in &outcomes {
        println!(
            "{} {} attempts={} {}",
            o.task,
            o.state.as_str(),
            o.attempts,
            o.message
        );
        ok &= o.state == TaskState::Success;
    }
    if ok {
        Ok(())
    } else {
        Err(Failure::from(format!("task {task} failed")))
    }
}
