//! `hxjobs bench scheduler`: what the ledger and executor cost per task.
//! A backfill of hourly runs of a three-task DAG whose tasks are `SELECT 1`,
//! next to the same statements executed with the same parallelism and no
//! ledger at all (the baseline), in a scratch database.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};

use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use chrono::TimeDelta;
use sqlx::PgPool;

use crate::config::Config;
use crate::dag::backfill::{self, Reprocess, Spec};
use crate::dag::job;
use crate::db;

const JOB: &str = r#"
name = "bench_noop"
schedule = "5 * * * *"
interval = "hour"
start_date = "2000-01-01"
[tasks.a]
kind = "sql"
sql = "SELECT 1"
[tasks.b]
kind = "sql"
sql = "SELECT 1"
depends_on = ["a"]
[tasks.c]
kind = "sql"
sql = "SELECT 1"
depends_on = ["b"]
"#;

#[derive(Debug, Clone)]
pub struct SchedulerBench {
    pub runs: usize,
    pub parallel: usize,
    pub tasks_per_run: usize,
    /// The same statements, same parallelism, no ledger.
    pub baseline: Duration,
    pub backfill: Duration,
    pub succeeded: usize,
    /// Per task: (claim → run recorded − time inside the task) / tasks, sorted.
    pub overhead: Vec<Duration>,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

impl fmt::Display for SchedulerBench {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let tasks = (self.runs * self.tasks_per_run) as f64;
        writeln!(
            f,
            "hxjobs bench scheduler: {} hourly runs x {} no-op sql tasks, --parallel {}",
            self.runs, self.tasks_per_run, self.parallel
        )?;
        writeln!(
            f,
            "  baseline: the statements alone    {:>8.2} s  {:>8.0} tasks/s",
            self.baseline.as_secs_f64(),
            tasks / self.baseline.as_secs_f64().max(1e-9)
        )?;
        writeln!(
            f,
            "  hxjobs backfill (ledger + runs)   {:>8.2} s  {:>8.0} tasks/s  {:.0} runs/s  ({} succeeded)",
            self.backfill.as_secs_f64(),
            tasks / self.backfill.as_secs_f64().max(1e-9),
            self.runs as f64 / self.backfill.as_secs_f64().max(1e-9),
            self.succeeded
        )?;
        writeln!(
            f,
            "  backfill / baseline time          {:>8.2}",
            self.backfill.as_secs_f64() / self.baseline.as_secs_f64().max(1e-9)
        )?;
        writeln!(
            f,
            "  overhead per task (claim to recorded, minus the work): p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms",
            ms(percentile(&self.overhead, 0.50)),
            ms(percentile(&self.overhead, 0.95)),
            ms(percentile(&self.overhead, 0.99))
        )?;
        let met = percentile(&self.overhead, 0.50) <= Duration::from_millis(5)
            && (self.runs < 8760 || self.backfill <= Duration::from_secs(120))
            && self.succeeded == self.runs;
        write!(
            f,
            "  targets (p50 <= 5 ms; 8,760 runs <= 120 s): {}",
            if met { "met" } else { "NOT met" }
        )
    }
}

pub async fn scheduler(
    base: &Config,
    runs: usize,
    parallel: usize,
    keep: bool,
) -> anyhow::Result<SchedulerBench> {
    let scratch = super::Scratch::create(base, "sched").await?;
    let result = run(scratch.config.clone(), runs, parallel).await;
    scratch.finish(keep).await;
    result
}

async fn run(config: Config, runs: usize, parallel: usize) -> anyhow::Result<SchedulerBench> {
    let pools = db::Pools::new(db::connect_and_migrate(&config.database).await?);
    let pool = pools.data.clone();
    let job = job::parse(std::path::Path::new("bench_noop.toml"), JOB)?;
    let tasks_per_run = job.tasks.len();
    let baseline = baseline(&pool, runs * tasks_per_run, parallel).await?;

    let from = crate::time::parse_instant("2025-01-01").map_err(anyhow::Error::msg)?;
    let spec = Spec {
        from,
        to: from + TimeDelta::hours(runs as i64),
        parallel,
        reprocess: Reprocess::None,
        ignore_start_date: false,
        allow_unfinished: false,
        max_intervals: runs,
    };
    let summary = backfill::run(
        Arc::new(config),
        &pools,
        Arc::new(job),
        spec,
        "bench",
        CancellationToken::new(),
        |_| {},
    )
    .await?;
    let mut overhead: Vec<Duration> = summary
        .timings
        .iter()
        .map(|(elapsed, work, tasks)| elapsed.saturating_sub(*work) / (*tasks).max(1) as u32)
        .collect();
    overhead.sort();
    pools.ledger.close().await;
    pool.close().await;
    Ok(SchedulerBench {
        runs,
        parallel,
        tasks_per_run,
        baseline,
        backfill: summary.elapsed,
        succeeded: summary.succeeded,
        overhead,
    })
}

/// `statements` times `SELECT 1`, `parallel` at a time, through the same pool.
async fn baseline(pool: &PgPool, statements: usize, parallel: usize) -> anyhow::Result<Duration> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..parallel {
        let (pool, next) = (pool.clone(), next.clone());
        workers.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < statements {
                sqlx::raw_sql("SELECT 1").execute(&pool).await?;
            }
            Ok::<_, sqlx::Error>(())
        });
    }
    while let Some(done) = workers.join_next().await {
        done??;
    }
    Ok(started.elapsed())
}
