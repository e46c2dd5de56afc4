//! `hxjobs daemon`, `hxjobs backfill`, `hxjobs runs`.

use std::io::Write;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use sqlx::PgPool;

use super::{refused, stop_on_signal, CliResult, Failure};
use crate::config::Config;
use crate::dag::backfill::Reprocess;
use crate::dag::daemon;
use crate::dag::scheduler::Scheduler;
use crate::db::Pools;
use crate::ledger::{self, worker_id, RunState};
use crate::ops::Actor;

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// One pass and exit: requeue lost runs, enqueue what is due now, run
    /// every claimable run to the end (for running hxjobs from cron).
    #[arg(long)]
    pub once: bool,
    /// Do not serve the REST API (and live stats) next to the scheduler.
    #[arg(long)]
    pub no_api: bool,
}

#[derive(Debug, Args)]
pub struct BackfillArgs {
    pub job: String,
    /// First interval: the one starting at or after this time (e.g. 2026-01-01).
    #[arg(long, value_parser = crate::time::parse_instant)]
    pub from: DateTime<Utc>,
    /// End, exclusive: intervals starting before this time (e.g. 2026-02-01).
    #[arg(long, value_parser = crate::time::parse_instant)]
    pub to: DateTime<Utc>,
    /// Runs in flight at once (a sliding window: a new one starts as soon as one ends).
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// Which intervals that already have a finished backfill run run again.
    #[arg(long, value_enum, default_value = "none")]
    pub reprocess: Reprocess,
    /// Show what would run and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also run intervals before the job's `start_date` (refused otherwise).
    #[arg(long)]
    pub ignore_start_date: bool,
    /// Also run intervals that have not ended yet (refused otherwise).
    #[arg(long)]
    pub allow_unfinished: bool,
    /// Cover up to this many intervals (default: api.max_backfill_intervals).
    #[arg(long)]
    pub max_intervals: Option<usize>,
}

#[derive(Debug, Args)]
pub struct RunsArgs {
    /// Only this job's runs.
    pub job: Option<String>,
    /// queued, running, success, failed, or skipped (occurrences the
    /// catch-up policy did not run).
    #[arg(long)]
    pub state: Option<String>,
    /// At most this many, newest first.
    #[arg(long, default_value_t = 20)]
    pub limit: i64,
}

pub async fn daemon(config: &Config, args: DaemonArgs) -> CliResult {
    let catalog = Arc::new(super::catalog(config)?);
    let pools = Pools::new(crate::db::connect_and_migrate(&config.database).await?);
    let mut scheduler = Scheduler::new(Arc::new(config.clone()), pools, Vec::new(), worker_id());
    scheduler.jobs = catalog.current().jobs.clone();
    if args.once {
        let ledger = &scheduler.pools.ledger;
        let jobs = scheduler.jobs.len();
        crate::ledger::daemons::beat(ledger, &scheduler.worker, jobs, 0).await?;
        let reports = scheduler.tick(Utc::now()).await;
        crate::tasklog::flushed().await;
        crate::ledger::daemons::stopped(ledger, &scheduler.worker).await?;
        let reports = reports?;
        let failed = reports.iter().filter(|r| !r.succeeded()).count();
        for r in &reports {
            print!("{r}");
        }
        // Deadlines, ingest alerts and notifications, once.
        let pool = &scheduler.pools.ledger;
        crate::notify::check_deadlines(pool, config, &scheduler.jobs, Utc::now()).await?;
        crate::notify::check_ingest(pool, config, Utc::now()).await?;
        let sender = crate::notify::Sender::new(scheduler.config.clone())?;
        crate::notify::deliver_due(&sender, pool, &scheduler.worker).await?;
        println!("{} runs, {failed} failed", reports.len());
        if failed > 0 {
            return Err(Failure::from(format!("{failed} runs failed")));
        }
        return Ok(());
    }
    let signals = super::service_signals();
    let stop = signals.stop.clone();
    let wake = Arc::new(tokio::sync::Notify::new());
    // The API first: a port already in use stops the daemon before it
    // schedules anything.
    let api = if args.no_api {
        None
    } else {
        Some(
            super::serve::start(
                config,
                scheduler.pools.clone(),
                catalog.clone(),
                Some(wake.clone()),
                stop.clone(),
            )
            .await?,
        )
    };
    super::serve::watch_jobs(config, &catalog, signals.reload.clone(), stop.clone());
    crate::notify::spawn(
        scheduler.config.clone(),
        scheduler.pools.ledger.clone(),
        catalog.clone(),
        stop.clone(),
    );
    let ingest = (config.ingest.mode == crate::config::IngestMode::Continuous).then(|| {
        tokio::spawn(crate::ingest::worker::run(
            scheduler.config.clone(),
            scheduler.pools.data.clone(),
            scheduler.worker.clone(),
            stop.clone(),
        ))
    });
    let outcome = daemon::run(scheduler, catalog, wake, stop.clone()).await;
    crate::tasklog::flushed().await;
    stop.cancel();
    if let Some(ingest) = ingest {
        tracing::info!(
            "waiting for the ingest worker to commit its last batch and give its partitions back"
        );
        let _ = ingest.await;
    }
    if let Some(api) = api {
        super::serve::finish(api).await?;
    }
    tracing::info!(
        signal = signals.cause.get().copied().unwrap_or("none"),
        "daemon stopped"
    );
    outcome?;
    Ok(())
}

pub async fn backfill(config: &Config, args: BackfillArgs) -> CliResult {
    let ops = super::ops(config).await?;
    let actor = Actor::cli();
    let job = ops.job(&args.job).map_err(refused)?;
    let spec = ops
        .backfill_spec(&crate::ops::backfills::Request {
            from: Some(args.from),
            to: Some(args.to),
            reprocess: Some(match args.reprocess {
                Reprocess::None => "none",
                Reprocess::Failed => "failed",
                Reprocess::All => "all",
            }),
            parallel: Some(args.parallel),
            allow: crate::ops::runs::Allow {
                before_start_date: args.ignore_start_date,
                unfinished: args.allow_unfinished,
            },
            max_intervals: args.max_intervals,
        })
        .map_err(refused)?;
    let plan = ops
        .backfill_plan(&actor, &job, &spec)
        .await
        .map_err(refused)?;
    println!("backfill {} [{}, {}): {plan}", job.name, spec.from, spec.to);
    if args.dry_run {
        println!("dry run: nothing changed");
        return Ok(());
    }
    let stop = stop_on_signal();
    let bar = ProgressBar::new(plan.to_run() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{wide_bar}] {pos}/{len} runs  {msg}  {per_sec}  ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    // Log lines print above the bar, never on its line.
    crate::telemetry::logs_above(Some(&bar));
    let outcome = ops
        .run_backfill(&actor, job.clone(), spec, stop.clone(), |p| {
            bar.set_length(p.total as u64);
            bar.set_position((p.succeeded + p.failed) as u64);
            bar.set_message(format!("{} ok, {} failed", p.succeeded, p.failed));
        })
        .await;
    crate::tasklog::flushed().await;
    crate::telemetry::logs_above(None);
    // An interrupted backfill's bar stays where it stopped.
    if stop.is_cancelled() {
        bar.abandon_with_message("interrupted");
    } else {
        bar.finish();
    }
    let (id, summary) = outcome.map_err(refused)?;
    // After a SIGHUP the terminal may be gone: a failed print must not
    // turn into a panic.
    let _ = writeln!(
        std::io::stdout(),
        "backfill {id} of {}: {} succeeded, {} failed, {} handed back in {:.1} s",
        job.name,
        summary.succeeded,
        summary.failed,
        summary.handed_back,
        summary.elapsed.as_secs_f64()
    );
    if stop.is_cancelled() {
        let cancelled = ops
            .backfill(&actor, id)
            .await
            .ok()
            .filter(|b| b.state == "cancelled");
        return Err(Failure {
            code: 130,
            message: match cancelled {
                Some(b) => format!(
                    "cancelled by {}; run the same command again to resume",
                    b.cancelled_by.as_deref().unwrap_or("another process")
                ),
                None => "interrupted; run the same command again to resume".into(),
            },
        });
    }
    // What the ledger holds for the range now, whoever ran it.
    let after = ops
        .backfill_plan(&actor, &job, &spec)
        .await
        .map_err(refused)?;
    let not_done = after.intervals.saturating_sub(after.succeeded);
    if not_done > 0 {
        let mut why = Vec::new();
        if after.failed > 0 {
            why.push(format!(
                "{} failed (see `hxjobs runs {} --state failed`; re-run them with --reprocess failed)",
                after.failed, job.name
            ));
        }
        if after.running > 0 {
            why.push(format!(
                "{} running elsewhere (held by another process; if it is gone they are \
                 handed back after scheduler.stale_after_secs = {} s: run the same command again then)",
                after.running, config.scheduler.stale_after_secs
            ));
        }
        let waiting = not_done.saturating_sub(after.failed + after.running);
        if waiting > 0 {
            why.push(format!("{waiting} not run yet"));
        }
        return Err(Failure::from(format!(
            "{not_done} of {} intervals have not succeeded: {}",
            after.intervals,
            why.join("; ")
        )));
    }
    Ok(())
}

pub async fn runs(config: &Config, args: RunsArgs) -> CliResult {
    let skips = args.state.as_deref() == Some("skipped");
    let state = match args.state.as_deref() {
        None => None,
        Some(_) if skips => None,
        Some(s) => Some(RunState::parse(s).ok_or_else(|| Failure {
            code: 2,
            message: format!(
                "unknown state `{s}` (one of {}, skipped)",
                RunState::names()
            ),
        })?),
    };
    if args.limit < 1 {
        return Err(Failure {
            code: 2,
            message: "--limit must be at least 1".into(),
        });
    }
    let pool = crate::db::connect_and_migrate(&config.database).await?;
    if skips {
        return print_skips(&pool, &args).await;
    }
    let filter = ledger::RunFilter {
        job: args.job.clone(),
        state,
        limit: args.limit,
        from: None,
        to: None,
    };
    let rows = ledger::runs(&pool, &filter).await?;
    println!(
        "{:>8}  {:<24} {:<9} {:<25} {:<13} {:>6} {:>5}  {:<20} {:>9}  {:<18} WORKER / ERROR",
        "ID",
        "JOB",
        "TYPE",
        "INTERVAL START",
        "STATE",
        "CLAIMS",
        "TRIES",
        "STARTED",
        "SECONDS",
        "BY"
    );
    for r in rows {
        println!(
            "{:>8}  {:<24} {:<9} {:<25} {:<13} {:>6} {:>5}  {:<20} {:>9}  {:<18} {}",
            r.id,
            r.job,
            r.run_type.as_str(),
            r.interval_start.to_rfc3339(),
            if r.late {
                format!("{}+late", r.state)
            } else {
                r.state.to_string()
            },
            r.attempts,
            r.tries,
            r.started_at
                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_else(|| "-".into()),
            r.duration_secs
                .map(|s| format!("{s:.2}"))
                .unwrap_or_else(|| "-".into()),
            r.triggered_by.as_deref().unwrap_or("-"),
            r.error.or(r.worker).unwrap_or_default()
        );
    }
    if let Some(job) = &args.job {
        if ledger::controls::paused_jobs(&pool).await?.contains(job) {
            println!("{job} is paused (hxjobs unpause {job})");
        }
        let actions = ledger::controls::job_actions(&pool, job, 10).await?;
        if !actions.is_empty() {
            println!("recent actions:");
        }
        for a in actions {
            println!(
                "  {}  {:<18} {:<12} {}{}{}",
                a.at.format("%Y-%m-%d %H:%M:%S"),
                a.actor,
                a.action,
                a.run_id.map(|r| format!("run {r} ")).unwrap_or_default(),
                a.task.map(|t| format!("task {t} ")).unwrap_or_default(),
                a.reason.map(|r| format!("({r})")).unwrap_or_default()
            );
        }
    }
    Ok(())
}

async fn print_skips(pool: &PgPool, args: &RunsArgs) -> CliResult {
    let rows = ledger::skips(pool, args.job.as_deref(), args.limit).await?;
    println!(
        "{:<24} {:<7} {:<25} {:<25} {:>11}  RECORDED",
        "JOB", "POLICY", "FIRST INTERVAL", "LAST INTERVAL", "OCCURRENCES"
    );
    for r in rows {
        println!(
            "{:<24} {:<7} {:<25} {:<25} {:>11}  {}",
            r.job,
            r.policy,
            r.first_interval_start.to_rfc3339(),
            r.last_interval_start.to_rfc3339(),
            r.occurrences,
            r.recorded_at.format("%Y-%m-%d %H:%M:%S")
        );
    }
    Ok(())
}
