//! Task kinds, registered in one place ([`run_task`]). Each kind gets the
//! run's context and returns a one-line outcome or an error.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use sqlx::PgPool;

use crate::config::Config;
use crate::dag::executor::RunType;
use crate::dag::{Interval, Job, Task};

/// What a task needs to know about its run.
pub struct TaskContext<'a> {
    pub config: &'a Config,
    pub pool: &'a PgPool,
    pub job: &'a Job,
    pub interval: Interval,
    /// The ledger id, or 0 when the task runs outside the ledger (`tasks test`).
    pub run_id: i64,
    /// The claim this worker holds on the run (`job_runs.attempts`); every
    /// ledger write checks it still does.
    pub claim: i32,
    /// Turns true when a write found the claim taken over: the run's work
    /// stops at once (a running task is dropped, a shell task's process
    /// group killed) and nothing more is written.
    pub fenced: Arc<AtomicBool>,
    pub run_type: RunType,
    pub stop: Arc<AtomicBool>,
}

impl TaskContext<'_> {
    /// `{{ interval_start }}`, `{{ interval_end }}`, `{{ job }}`, `{{ run_id }}`
    /// replaced by the run's values (RFC 3339 times, UTC).
    pub fn render(&self, template: &str) -> String {
        let vars = [
            ("interval_start", self.interval.start.to_rfc3339()),
            ("interval_end", self.interval.end.to_rfc3339()),
            ("job", self.job.name.clone()),
            ("run_id", self.run_id.to_string()),
        ];
        let mut out = template.to_string();
        for (name, value) in vars {
            for pattern in [format!("{{{{ {name} }}}}"), format!("{{{{{name}}}}}")] {
                out = out.replace(&pattern, &value);
            }
        }
        out
    }
}

/// An error that no retry can fix (a kind not built yet, a bad setting).
/// Wrap it in `anyhow::Error` to make the executor fail the task at once.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Fatal(pub String);

/// A task that stopped early because hxjobs is shutting down; the run is
/// handed back and the task runs again on the next claim.
#[derive(Debug, thiserror::Error)]
#[error("interrupted by shutdown")]
pub struct Interrupted;

/// Whether an attempt failed only because PostgreSQL or the broker could
/// not be reached: the executor then waits for it instead of spending
/// retries (README, "Retries and outages").
pub fn dependency_unreachable(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        let kafka = |k: &crate::kafka::Error| matches!(k, crate::kafka::Error::Unreachable { .. });
        let sql = |s: &sqlx::Error| {
            matches!(
                s,
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed
            )
        };
        cause
            .downcast_ref::<crate::kafka::Error>()
            .is_some_and(kafka)
            || cause.downcast_ref::<sqlx::Error>().is_some_and(sql)
            || matches!(
                cause.downcast_ref::<crate::db::Error>(),
                Some(crate::db::Error::Unreachable { .. })
            )
            || match cause.downcast_ref::<crate::ingest::Error>() {
                Some(crate::ingest::Error::Kafka(k)) => kafka(k),
                Some(crate::ingest::Error::Database(s)) => sql(s),
                _ => false,
            }
    })
}

/// Runs attempt `attempt` (from 1) of `task`. The caller applies the
/// timeout and retries.
pub async fn run_task(ctx: &TaskContext<'_>, task: &Task, attempt: u32) -> anyhow::Result<String> {
    match task.kind.as_str() {
        "ingest" => {
            let summary = crate::ingest::drain(ctx.config, ctx.pool, ctx.stop.clone()).await?;
            if summary.interrupted {
                return Err(Interrupted.into());
            }
            Ok(summary.to_string())
        }
        "sql" => {
            let text = match (&task.sql, &task.file) {
                (Some(sql), _) => sql.clone(),
                (None, Some(file)) => {
                    let base = ctx.job.file.parent().unwrap_or(std::path::Path::new("."));
                    let path = base.join(file);
                    std::fs::read_to_string(&path)
                        .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?
                }
                (None, None) => return Err(Fatal("sql task without sql or file".into()).into()),
            };
            let sql = ctx.render(&text);
            let done = sqlx::raw_sql(&sql).execute(ctx.pool).await?;
            Ok(format!("{} rows affected", done.rows_affected()))
        }
        "shell" => {
            let command = ctx.render(task.command.as_deref().unwrap_or_default());
            // Its own process group, killed whole if the attempt is dropped
            // (timeout, shutdown): no orphans left from `a | b` or `a; b`.
            let child = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(&command)
                .env("HXJOBS_JOB", &ctx.job.name)
                .env("HXJOBS_RUN_ID", ctx.run_id.to_string())
                .env("HXJOBS_TRY", attempt.to_string())
                .env("HXJOBS_INTERVAL_START", ctx.interval.start.to_rfc3339())
                .env("HXJOBS_INTERVAL_END", ctx.interval.end.to_rfc3339())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .process_group(0)
                .kill_on_drop(true)
                .spawn()?;
            let mut group = ProcessGroup(child.id());
            let output = child.wait_with_output().await?;
            group.0 = None;
            let stderr = String::from_utf8_lossy(&output.stderr);
            let last = stderr.lines().last().unwrap_or_default().to_string();
            if output.status.success() {
                Ok(format!("exit 0, {} bytes of output", output.stdout.len()))
            } else {
                anyhow::bail!("{} ({last})", output.status)
            }
        }
        "aggregate" => {
            use crate::rollup::{self, Readiness};
            let grain = task.grain.unwrap_or(ctx.job.interval);
            let mut note = String::new();
            if grain != crate::dag::Grain::Minute {
                let end = grain.containing(ctx.interval.start).end;
                let grace = chrono::TimeDelta::seconds(
                    i64::try_from(ctx.config.rollups.ready_grace_secs).unwrap_or(i64::MAX),
                );
                let group = &ctx.config.kafka.group_id;
                let never = || "never".to_string();
                match rollup::readiness(ctx.pool, group, end, grace, chrono::Utc::now()).await? {
                    Readiness::Ready => {}
                    Readiness::GraceOver(t) => {
                        note = format!(
                            " (ingest had stored only up to {}; late events count when the hour is rolled up again)",
                            t.map(|t| t.to_rfc3339()).unwrap_or_else(never)
                        );
                    }
                    Readiness::NotYet(t) => anyhow::bail!(
                        "not ready: ingest has stored everything up to {}, the {} ends at {}; retrying until rollups.ready_grace_secs after its end",
                        t.map(|t| t.to_rfc3339()).unwrap_or_else(never),
                        grain.as_str(),
                        end.to_rfc3339()
                    ),
                }
            }
            let fatal = |e: rollup::Error| match e {
                rollup::Error::Grain(_) => anyhow::Error::from(Fatal(e.to_string())),
                other => anyhow::Error::from(other),
            };
            let now = chrono::Utc::now();
            // A coarser bucket first completes the finer ones it merges
            // (missing or stale hours and days are computed here).
            let mut finer_note = String::new();
            if let Some(finer) = rollup::source_grain(grain) {
                let bucket = grain.containing(ctx.interval.start);
                let buckets =
                    rollup::complete::ensure(ctx.pool, finer, bucket.start, bucket.end, now)
                        .await
                        .map_err(fatal)?;
                let p = rollup::complete::Provenance::of(finer, &buckets);
                finer_note = format!(" ({} {}s: {})", p.buckets, finer.as_str(), p.describe());
            }
            let summary = rollup::aggregate(ctx.pool, grain, ctx.interval.start)
                .await
                .map_err(fatal)?;
            let mut out = format!("{summary}{finer_note}{note}");
            if grain == crate::dag::Grain::Hour {
                out.push_str(&refresh_late(ctx, now).await?);
            }
            Ok(out)
        }
        "retention" => {
            let plan =
                crate::retention::plan(ctx.pool, &ctx.config.retention, chrono::Utc::now()).await?;
            let archived = crate::retention::apply(
                ctx.pool,
                &ctx.config.retention.archive_dir,
                &ctx.config.reports.output_dir,
                &plan,
            )
            .await?;
            let removed: i64 = plan.classes.iter().map(|c| c.rows).sum();
            Ok(format!(
                "{} raw event days archived and dropped, about {removed} other rows removed",
                archived.len()
            ))
        }
        "report" => {
            use crate::reports::{self, Error as ReportError, Format};
            let Some(report_type) = task.report.as_deref() else {
                return Err(Fatal("a report task needs `report = \"<type>\"`".into()).into());
            };
            let record = reports::generate(
                ctx.config,
                ctx.pool,
                report_type,
                Format::Pdf,
                Some(ctx.interval.start),
                chrono::Utc::now(),
            )
            .await
            .map_err(|e| match e {
                ReportError::Definition(_) | ReportError::Format(_) => {
                    anyhow::Error::from(Fatal(e.to_string()))
                }
                other => anyhow::Error::from(other),
            })?;
            Ok(format!(
                "report {} ({report_type}, {} bytes): {}",
                record.id,
                record.size.unwrap_or(0),
                ctx.config
                    .reports
                    .output_dir
                    .join(record.path.unwrap_or_default())
                    .display()
            ))
        }
        other => Err(Fatal(format!("unknown task kind `{other}`")).into()),
    }
}

/// Hours that got events after they were rolled up: rolled up again, the
/// change carried to every stored day, week and month above them, and
/// their reports generated again (superseding the old ones).
async fn refresh_late(
    ctx: &TaskContext<'_>,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<String> {
    let refreshed = crate::rollup::complete::refresh_stale(ctx.pool, 168, now).await?;
    if refreshed.hours.is_empty() {
        return Ok(String::new());
    }
    let mut regenerated = 0;
    for (grain, start) in &refreshed.coarser {
        regenerated += crate::reports::regenerate_period(ctx.config, ctx.pool, *grain, *start, now)
            .await?
            .len();
    }
    tracing::info!(
        hours = refreshed.hours.len(), coarser = refreshed.coarser.len(), regenerated,
        first = %refreshed.hours[0].to_rfc3339(),
        "late events: stale hours rolled up again and carried upward"
    );
    Ok(format!(
        "; late events: {} stale hour(s) rolled up again, {} day/week/month bucket(s) merged again, {} report(s) generated again",
        refreshed.hours.len(),
        refreshed.coarser.len(),
        regenerated
    ))
}

/// Kills a process group when dropped, unless disarmed (`.0 = None`).
struct ProcessGroup(Option<u32>);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}
