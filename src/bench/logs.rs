//! `hxjobs bench logs`: what keeping a task's log costs. A shell task that
//! prints N lines runs with its output captured into its attempt's log in
//! PostgreSQL (until the last chunk is written) and, as the baseline, the
//! same task with its output read and dropped; each several times, medians
//! compared.

use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::db;
use crate::interval::Grain;
use crate::ledger::{self, RunType, Trigger};
use crate::tasklog::LogWriter;
use crate::tasks::{self, JobInfo, TaskContext};

#[derive(Debug, Clone)]
pub struct LogsBench {
    pub lines: u64,
    pub bytes: u64,
    pub rounds: usize,
    pub baseline: Duration,
    pub captured: Duration,
    pub kept_bytes: i64,
}

impl fmt::Display for LogsBench {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ratio = self.captured.as_secs_f64() / self.baseline.as_secs_f64().max(1e-9);
        writeln!(
            f,
            "hxjobs bench logs: a shell task printing {} lines ({} bytes), median of {} rounds",
            self.lines, self.bytes, self.rounds
        )?;
        writeln!(
            f,
            "  baseline: output read and dropped     {:>8.3} s",
            self.baseline.as_secs_f64()
        )?;
        writeln!(
            f,
            "  output kept in the attempt's log      {:>8.3} s  ({} bytes stored)",
            self.captured.as_secs_f64(),
            self.kept_bytes
        )?;
        write!(
            f,
            "  captured / baseline {ratio:.3} (target <= 1.10: {})",
            if ratio <= 1.10 { "met" } else { "NOT met" }
        )
    }
}

pub async fn logs(base: &Config, lines: u64, rounds: usize) -> anyhow::Result<LogsBench> {
    let scratch = super::Scratch::create(base, "logs").await?;
    let result = run(scratch.config.clone(), lines, rounds.max(1)).await;
    scratch.finish(false).await;
    result
}

async fn run(mut config: Config, lines: u64, rounds: usize) -> anyhow::Result<LogsBench> {
    // Everything kept: the cost of storing it all, not of dropping it.
    config.logs.max_bytes_per_attempt = 1 << 30;
    let pools = db::Pools::new(db::connect_and_migrate(&config.database).await?);
    let line = "a log line of a task, about as long as the lines real tasks print";
    let command = format!("awk 'BEGIN {{ for (i = 1; i <= {lines}; i++) print i \": {line}\" }}'");
    let mut table = toml::Table::new();
    table.insert("command".into(), toml::Value::String(command));
    let info = JobInfo {
        interval: Grain::Hour,
        dir: Path::new("."),
    };
    let kind = tasks::parse("shell", table, &info).map_err(anyhow::Error::msg)?;
    let interval = Grain::Hour.last_complete(Utc::now());
    let params = serde_json::Map::new();

    let mut baseline = Vec::new();
    let mut captured = Vec::new();
    let mut kept_bytes = 0;
    for _ in 0..rounds {
        for capture in [false, true] {
            let run = ledger::create_claimed_run(
                &pools.ledger,
                "bench_logs",
                interval,
                "bench",
                &Trigger::default(),
            )
            .await?;
            let fence = run.fence();
            ledger::open_tasks(&pools.ledger, fence, &[("talk", "shell")]).await?;
            let attempt = ledger::start_attempt(&pools.ledger, fence, "talk", 1)
                .await?
                .ok_or_else(|| anyhow::anyhow!("the bench's run was taken over"))?;
            let started = Instant::now();
            let writer = capture.then(|| {
                LogWriter::start(
                    pools.ledger.clone(),
                    attempt,
                    config.logs.max_bytes_per_attempt,
                )
            });
            let ctx = TaskContext {
                config: &config,
                pool: &pools.data,
                job: "bench_logs",
                interval,
                run_id: run.run_id,
                run_type: RunType::Manual,
                params: &params,
                attempt: 1,
                seal: None,
                stop: CancellationToken::new(),
                log: writer.as_ref().map(|w| w.log().clone()),
            };
            let result = kind.run(&ctx).await;
            if let Some(w) = writer {
                w.finish().await;
            }
            let took = started.elapsed();
            result.map_err(|e| anyhow::anyhow!("the bench's task failed: {e}"))?;
            if capture {
                captured.push(took);
                kept_bytes =
                    sqlx::query_scalar("SELECT log_bytes FROM task_attempts WHERE id = $1")
                        .bind(attempt)
                        .fetch_one(&pools.data)
                        .await?;
            } else {
                baseline.push(took);
            }
        }
    }
    baseline.sort();
    captured.sort();
    let bytes = (1..=lines)
        .map(|i| i.to_string().len() as u64 + 3 + line.len() as u64)
        .sum();
    pools.ledger.close().await;
    pools.data.close().await;
    Ok(LogsBench {
        lines,
        bytes,
        rounds,
        baseline: baseline[baseline.len() / 2],
        captured: captured[captured.len() / 2],
        kept_bytes,
    })
}
