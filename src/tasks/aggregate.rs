//! `aggregate`: the rollup of the run's bucket at a grain (the job's
//! interval unless `grain` says otherwise). It waits until ingest has
//! stored the bucket's events, completes the finer buckets it merges, and
//! commits the bucket with the task's success. The hourly one also rolls
//! up again the hours that got late events.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use futures::future::BoxFuture;
use serde::Deserialize;

use super::{Failure, JobInfo, Kind, TaskContext};
use crate::interval::Grain;
use crate::rollup::{self, Readiness};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    grain: Option<Grain>,
}

#[derive(Debug)]
struct Aggregate {
    grain: Grain,
}

pub(super) fn parse(table: toml::Table, job: &JobInfo) -> Result<Arc<dyn Kind>, String> {
    let p: Params = super::params("aggregate", table)?;
    let grain = p.grain.unwrap_or(job.interval);
    if grain == Grain::Minute {
        return Err("rollups are hourly, daily, weekly or monthly, not per minute".into());
    }
    Ok(Arc::new(Aggregate { grain }))
}

fn failure(e: rollup::Error) -> Failure {
    match e {
        rollup::Error::Seal(s) => s.into(),
        rollup::Error::Grain(_) => Failure::fatal(e),
        other => Failure::of(other),
    }
}

impl Kind for Aggregate {
    fn name(&self) -> &'static str {
        "aggregate"
    }

    fn seals(&self) -> bool {
        true
    }

    fn run<'a>(&'a self, ctx: &'a TaskContext<'a>) -> BoxFuture<'a, Result<String, Failure>> {
        Box::pin(self.aggregate(ctx))
    }
}

impl Aggregate {
    async fn aggregate(&self, ctx: &TaskContext<'_>) -> Result<String, Failure> {
        let grain = self.grain;
        let bucket = grain.containing(ctx.interval.start);
        tracing::info!(grain = grain.as_str(), start = %bucket.start.to_rfc3339(), end = %bucket.end.to_rfc3339(), "rolling up");
        let note = ready(ctx, grain).await?;
        let now = Utc::now();
        // A coarser bucket first completes the finer ones it merges
        // (missing or stale hours and days are computed here).
        let mut finer_note = String::new();
        if let Some(finer) = rollup::source_grain(grain) {
            let bucket = grain.containing(ctx.interval.start);
            let buckets = rollup::complete::ensure(ctx.pool, finer, bucket.start, bucket.end, now)
                .await
                .map_err(failure)?;
            let p = rollup::complete::Provenance::of(finer, &buckets);
            finer_note = format!(" ({} {}s: {})", p.buckets, finer.as_str(), p.describe());
            tracing::info!(grain = finer.as_str(), buckets = p.buckets, read = %p.describe(), "finer rollups read");
        }
        let late = if grain == Grain::Hour {
            refresh_late(ctx, now).await?
        } else {
            String::new()
        };
        let summary =
            rollup::aggregate_sealed(ctx.pool, grain, ctx.interval.start, ctx.seal.as_ref())
                .await
                .map_err(failure)?;
        tracing::info!("rollup written: {summary}{note}");
        Ok(format!("{summary}{finer_note}{note}{late}"))
    }
}

/// Waits (by failing the attempt, which is retried) until ingest has stored
/// everything up to the bucket's end, or `rollups.ready_grace_secs` after it.
async fn ready(ctx: &TaskContext<'_>, grain: Grain) -> Result<String, Failure> {
    let end = grain.containing(ctx.interval.start).end;
    let grace =
        TimeDelta::seconds(i64::try_from(ctx.config.rollups.ready_grace_secs).unwrap_or(i64::MAX));
    let group = &ctx.config.kafka.group_id;
    let shown = |t: Option<DateTime<Utc>>| t.map_or_else(|| "never".into(), |t| t.to_rfc3339());
    let topics = ctx.config.topics.event_topic_names();
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    match rollup::readiness(ctx.pool, group, &topics, end, grace, Utc::now())
        .await
        .map_err(failure)?
    {
        Readiness::Ready => Ok(String::new()),
        Readiness::GraceOver(t) => Ok(format!(
            " (ingest had stored only up to {}; late events count when the hour is rolled up again)",
            shown(t)
        )),
        Readiness::NotYet(t) => Err(Failure::Retry(anyhow::anyhow!(
            "not ready: ingest has stored everything up to {}, the {} ends at {}; retrying until rollups.ready_grace_secs after its end",
            shown(t),
            grain.as_str(),
            end.to_rfc3339()
        ))),
    }
}

/// Hours that got events after they were rolled up: rolled up again, the
/// change carried to every stored day, week and month above them, and
/// their reports generated again (superseding the old ones).
async fn refresh_late(ctx: &TaskContext<'_>, now: DateTime<Utc>) -> Result<String, Failure> {
    let refreshed = rollup::complete::refresh_stale(ctx.pool, 168, now)
        .await
        .map_err(failure)?;
    let Some(first) = refreshed.hours.first() else {
        return Ok(String::new());
    };
    let mut regenerated = 0;
    for (grain, start) in &refreshed.coarser {
        regenerated += crate::reports::regenerate_period(ctx.config, ctx.pool, *grain, *start, now)
            .await
            .map_err(Failure::of)?
            .len();
    }
    tracing::info!(
        hours = refreshed.hours.len(), coarser = refreshed.coarser.len(), regenerated,
        first = %first.to_rfc3339(),
        "late events: stale hours rolled up again and carried upward"
    );
    Ok(format!(
        "; late events: {} stale hour(s) rolled up again, {} day/week/month bucket(s) merged again, {} report(s) generated again",
        refreshed.hours.len(),
        refreshed.coarser.len(),
        regenerated
    ))
}
