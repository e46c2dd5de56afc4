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
    /// The task with its output kept: what the run waits for.
    pub captured: Duration,
    /// Until its last chunk is in PostgreSQL (written in the background).
    pub stored: Duration,
    pub kept_bytes: i64,
    /// From a line's time in the log to a follower (polling as `hxjobs
    /// logs --follow` does) reading it: median and worst of 20 lines.
    pub follow_p50: Duration,
    pub follow_max: Duration,
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
            "  output kept in the attempt's log      {:>8.3} s  (what the run waits for)",
            self.captured.as_secs_f64()
        )?;
        writeln!(
            f,
            "  ... until the log is in PostgreSQL    {:>8.3} s  ({} bytes stored, written behind the task)",
            self.stored.as_secs_f64(),
            self.kept_bytes
        )?;
        writeln!(
            f,
            "  captured / baseline {ratio:.3} (target <= 1.10: {})",
            if ratio <= 1.10 { "met" } else { "NOT met" }
        )?;
        write!(
            f,
            "  a running task's line to a follower: p50 {:.0} ms, max {:.0} ms (target <= 1000 ms: {})",
            self.follow_p50.as_secs_f64() * 1000.0,
            self.follow_max.as_secs_f64() * 1000.0,
            if self.follow_max <= Duration::from_secs(1) {
                "met"
            } else {
                "NOT met"
            }
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
    let mut stored = Vec::new();
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
            let attempt = ledger::Attempt::new(&pools.ledger, fence, "talk", 1)
                .id()
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
            crate::tasklog::flushed().await;
            if capture {
                stored.push(started.elapsed());
            }
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
    stored.sort();
    let mut follow = follow_latency(&config, &pools, &info, interval, &params).await?;
    follow.sort();
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
        stored: stored[stored.len() / 2],
        kept_bytes,
        follow_p50: follow.get(follow.len() / 2).copied().unwrap_or_default(),
        follow_max: follow.last().copied().unwrap_or_default(),
    })
}

/// A task saying a line every 100 ms while a follower polls its log every
/// 250 ms: for each line, the time from its stamp to the follower's read.
async fn follow_latency(
    config: &Config,
    pools: &db::Pools,
    info: &JobInfo<'_>,
    interval: crate::interval::Interval,
    params: &serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<Vec<Duration>> {
    let mut table = toml::Table::new();
    table.insert(
        "command".into(),
        toml::Value::String("for i in $(seq 1 20); do echo tick $i; sleep 0.1; done".into()),
    );
    let kind = tasks::parse("shell", table, info).map_err(anyhow::Error::msg)?;
    let run = ledger::create_claimed_run(
        &pools.ledger,
        "bench_logs_follow",
        interval,
        "bench",
        &Trigger::default(),
    )
    .await?;
    let fence = run.fence();
    ledger::open_tasks(&pools.ledger, fence, &[("tick", "shell")]).await?;
    let attempt = ledger::Attempt::new(&pools.ledger, fence, "tick", 1)
        .id()
        .await?
        .ok_or_else(|| anyhow::anyhow!("the bench's run was taken over"))?;
    let writer = LogWriter::start(
        pools.ledger.clone(),
        attempt,
        config.logs.max_bytes_per_attempt,
    );
    let ctx = TaskContext {
        config,
        pool: &pools.data,
        job: "bench_logs_follow",
        interval,
        run_id: run.run_id,
        run_type: RunType::Manual,
        params,
        attempt: 1,
        seal: None,
        stop: CancellationToken::new(),
        log: Some(writer.log().clone()),
    };
    let done = CancellationToken::new();
    let follower = {
        let (pool, done) = (pools.data.clone(), done.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut seq = 0;
            loop {
                let finished = done.is_cancelled();
                for (n, body) in ledger::logs::chunks(&pool, attempt, seq).await? {
                    seq = n;
                    let now = Utc::now();
                    for line in body.lines() {
                        let stamp = line.get(..24).unwrap_or_default();
                        if let Ok(t) = chrono::DateTime::parse_from_rfc3339(stamp) {
                            seen.push((now - t.with_timezone(&Utc)).to_std().unwrap_or_default());
                        }
                    }
                }
                if finished {
                    return Ok::<_, sqlx::Error>(seen);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let result = kind.run(&ctx).await;
    writer.finish().await;
    crate::tasklog::flushed().await;
    done.cancel();
    result.map_err(|e| anyhow::anyhow!("the bench's task failed: {e}"))?;
    Ok(follower.await??)
}
