//! `hxjobs bench reports`: 35 days of rollups in a scratch database, then
//! the weekly summary and the monthly business-intelligence report timed as
//! PDF from stored rollups of every grain, as JSON (the same content
//! without PDF rendering), and as PDF from the hourly rollups alone (days,
//! weeks and months merged on demand), in the same run.

use std::fmt;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};

use crate::config::Config;
use crate::interval::Grain;
use crate::reports::{self, definition, Format};
use crate::{db, rollup};

/// Medians of one report type.
#[derive(Debug, Clone)]
pub struct Timed {
    pub report_type: String,
    /// PDF from stored rollups of every grain.
    pub pdf: Duration,
    /// JSON from stored rollups (the same content without PDF rendering).
    pub json: Duration,
    /// PDF from hourly rollups only.
    pub pdf_from_hours: Duration,
    pub bytes: usize,
}

/// Removes every day, week and month rollup: only hours are left.
async fn drop_coarser(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    sqlx::query("DELETE FROM rollups WHERE grain <> 'hour'")
        .execute(pool)
        .await?;
    sqlx::query("DELETE FROM rollup_buckets WHERE grain <> 'hour'")
        .execute(pool)
        .await?;
    Ok(())
}

#[derive(Debug, Clone)]
pub struct ReportsBench {
    pub days: i64,
    pub events: u64,
    pub rollup_rows: i64,
    pub reports: Vec<Timed>,
    pub repeats: usize,
}

impl fmt::Display for ReportsBench {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "hxjobs bench reports: {} days, {} events, {} rollup rows; median of {} runs",
            self.days, self.events, self.rollup_rows, self.repeats
        )?;
        for r in &self.reports {
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            let target = if r.report_type == "weekly_summary" {
                1.0
            } else {
                3.0
            };
            writeln!(
                f,
                "  {:<32} PDF from stored rollups {:>7.1} ms ({} bytes)  JSON {:>7.1} ms  PDF from hours only {:>7.1} ms ({:.2}x stored; target <= {target:.0} s: {})",
                r.report_type,
                ms(r.pdf),
                r.bytes,
                ms(r.json),
                ms(r.pdf_from_hours),
                r.pdf_from_hours.as_secs_f64() / r.pdf.as_secs_f64().max(1e-9),
                if r.pdf_from_hours.as_secs_f64() <= target { "met" } else { "NOT met" }
            )?;
        }
        Ok(())
    }
}

pub async fn reports(
    base: &Config,
    events_per_day: u64,
    keep: bool,
) -> anyhow::Result<ReportsBench> {
    let scratch = super::Scratch::create(base, "reports").await?;
    let result = run(&scratch.config, events_per_day).await;
    scratch.finish(keep).await;
    result
}

const FIRST_DAY: &str = "2026-01-26T00:00:00Z";
const DAYS: i64 = 35;

async fn run(config: &Config, events_per_day: u64) -> anyhow::Result<ReportsBench> {
    let pool = db::connect_and_migrate(&config.database).await?;
    let first: DateTime<Utc> = crate::time::parse_instant(FIRST_DAY).map_err(anyhow::Error::msg)?;
    let end = first + TimeDelta::days(DAYS);
    for d in 0..DAYS {
        let start = first + TimeDelta::days(d);
        let day = start.date_naive();
        super::rollup::insert_events(
            &pool,
            day,
            start,
            86_400,
            d * events_per_day as i64,
            events_per_day,
        )
        .await?;
        let mut conn = pool.acquire().await?;
        rollup::stage::restage_day(&mut conn, day).await?;
    }
    for start in Grain::Hour.starts(first, end) {
        rollup::aggregate(&pool, Grain::Hour, start).await?;
    }
    for start in Grain::Day.starts(first, end) {
        rollup::aggregate(&pool, Grain::Day, start).await?;
    }
    for start in Grain::Week.starts(first, end) {
        rollup::aggregate(&pool, Grain::Week, start).await?;
    }
    for start in Grain::Month.starts(Grain::Month.floor(first), end) {
        rollup::aggregate(&pool, Grain::Month, start).await?;
    }
    let rollup_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM rollups")
        .fetch_one(&pool)
        .await?;

    let now = end + TimeDelta::days(3);
    let repeats = 5;
    let mut out = Vec::new();
    for (report_type, period) in [
        ("weekly_summary", "2026-02-16"),
        ("monthly_business_intelligence", "2026-02-01"),
    ] {
        let def = definition::load(&config.reports.definitions_dir, report_type)?;
        let resolved = reports::period(
            &def,
            Some(crate::time::parse_instant(period).map_err(anyhow::Error::msg)?),
            now,
        )?;
        let mut stored = Vec::new();
        let mut hours_only = Vec::new();
        let mut json_times = Vec::new();
        let mut bytes = 0;
        for _ in 0..repeats {
            // From stored rollups of every grain.
            let started = Instant::now();
            let report = reports::build(config, &pool, report_type, &def, &resolved, now).await?;
            let pdf = reports::render(&report, Format::Pdf)?;
            stored.push(started.elapsed());
            bytes = pdf.len();
            let started = Instant::now();
            let report = reports::build(config, &pool, report_type, &def, &resolved, now).await?;
            reports::render(&report, Format::Json)?;
            json_times.push(started.elapsed());
            // From hourly rollups alone: days, weeks and months merged on
            // demand (and stored again, as the report does).
            drop_coarser(&pool).await?;
            let started = Instant::now();
            let report = reports::build(config, &pool, report_type, &def, &resolved, now).await?;
            reports::render(&report, Format::Pdf)?;
            hours_only.push(started.elapsed());
        }
        stored.sort();
        json_times.sort();
        hours_only.sort();
        out.push(Timed {
            report_type: report_type.to_string(),
            pdf: stored[repeats / 2],
            json: json_times[repeats / 2],
            pdf_from_hours: hours_only[repeats / 2],
            bytes,
        });
    }
    pool.close().await;
    Ok(ReportsBench {
        days: DAYS,
        events: events_per_day * DAYS as u64,
        rollup_rows,
        reports: out,
        repeats,
    })
}
