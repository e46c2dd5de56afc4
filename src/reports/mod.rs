//! Reports built from the rollups: the content ([`Report`]) follows a
//! definition from `reports/`, and is written as PDF ([`pdf`]), JSON or CSV
//! with the same numbers. Each generation is recorded in `reports`.

mod csv;
pub mod data;
pub mod definition;
mod freshness;
mod model;
pub mod pdf;
pub mod sections;
pub mod store;

pub use freshness::{incomplete_hours, Freshness, HourRange};
pub use model::{grouped, Cell, ChartStyle, Format, Report, Section, Source};
pub use store::{file_in, file_of, get, list, Record};

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::capacity;
use crate::config::Config;
use crate::interval::{Grain, Interval};
use crate::rollup::complete::{self, Bucket, Provenance};
use crate::rollup::sketch;
use definition::{Definition, Metric, SectionKind};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Definition(#[from] definition::Error),
    #[error("format must be pdf, json or csv, not {0:?}")]
    Format(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Sketch(#[from] sketch::Error),
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("rendering: {0}")]
    Render(String),
    #[error(transparent)]
    Storage(#[from] crate::storage::Error),
    #[error(transparent)]
    Rollup(#[from] crate::rollup::Error),
    #[error("the period starting {} UTC has not begun yet (now {} UTC)", sections::when(*start), sections::when(*now))]
    PeriodInFuture {
        start: DateTime<Utc>,
        now: DateTime<Utc>,
    },
    #[error("recording the report: {0}")]
    Seal(#[from] crate::ledger::SealError),
    #[error("the period is not complete: {} not stored completely ({})", freshness::hours_count(missing), missing.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Incomplete { missing: Vec<HourRange> },
}

/// The period a report covers, and a note when the start asked for was
/// snapped to the period's boundary.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub period: Interval,
    pub note: Option<String>,
}

/// The period a report of `def` covers: the one containing `start`, or the
/// last complete one before `now`. A period that starts after `now` is an
/// error.
pub fn period(
    def: &Definition,
    start: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<Resolved, Error> {
    let (period, note) = match start {
        Some(t) => {
            let p = def.period.containing(t);
            let note = (p.start != t).then(|| {
                format!(
                    "period_start {} is not the start of a {}: the report covers the {} from {} UTC",
                    t.to_rfc3339(),
                    def.period.as_str(),
                    def.period.as_str(),
                    sections::when(p.start)
                )
            });
            (p, note)
        }
        None => (def.period.last_complete(now), None),
    };
    if period.start >= now {
        return Err(Error::PeriodInFuture {
            start: period.start,
            now,
        });
    }
    Ok(Resolved { period, note })
}

/// Options of one generation.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Refuse ([`Error::Incomplete`]) rather than render a period whose
    /// hours are not all stored, or which has not ended.
    pub require_complete: bool,
    /// A `report` task's: the record commits with the task's success.
    pub seal: Option<crate::ledger::Seal>,
}

/// Builds the content of a report of `report_type` for `period`
/// (`--require-complete` is checked by [`generate_with`], before this).
pub async fn build(
    config: &Config,
    pool: &PgPool,
    report_type: &str,
    def: &Definition,
    resolved: &Resolved,
    now: DateTime<Utc>,
) -> Result<Report, Error> {
    let period = resolved.period;
    let (grain, series_grain) = (def.period, def.series);
    let ends = freshness::broker_ends(config);
    let previous = grain.containing(grain.prev(period.start));
    // The series first, so the period is merged from it and says so.
    let series_buckets =
        complete::ensure(pool, series_grain, period.start, period.end, now).await?;
    let current_buckets = complete::ensure(pool, grain, period.start, period.end, now).await?;
    let previous_buckets = complete::ensure(pool, grain, previous.start, previous.end, now).await?;
    let with_data = |b: &[Bucket]| b.iter().any(Bucket::has_data);
    let current = if with_data(&current_buckets) {
        data::rows(pool, grain, period.start, period.end).await?
    } else {
        Vec::new()
    };
    let before = if with_data(&previous_buckets) {
        data::rows(pool, grain, previous.start, previous.end).await?
    } else {
        Vec::new()
    };
    let uses_series = def.sections.iter().any(|s| {
        s.kind == SectionKind::BusinessWeekly
            || (s.kind == SectionKind::Chart
                && matches!(
                    s.metric,
                    Some(Metric::Requests | Metric::P95Latency | Metric::Revenue)
                ))
    });
    let series = if uses_series && with_data(&series_buckets) {
        data::rows(pool, series_grain, period.start, period.end).await?
    } else {
        Vec::new()
    };
    let source = |figures: &str, g: Grain, b: &[Bucket]| {
        let p = Provenance::of(g, b);
        Source {
            figures: figures.to_string(),
            grain: g,
            from: p.describe(),
            buckets: p.buckets,
            missing: p.missing,
        }
    };
    let sources = vec![
        source("this period", grain, &current_buckets),
        source("previous period", grain, &previous_buckets),
        source("series", series_grain, &series_buckets),
    ];
    let fresh = freshness::read(config, pool, period, now, ends).await?;
    let data_quality = crate::ledger::checks::quality(pool, period.start, period.end).await?;
    let data_seq = current_buckets
        .iter()
        .chain(&previous_buckets)
        .chain(&series_buckets)
        .map(|b| b.seq)
        .max()
        .unwrap_or(0);

    // A period under way is compared to date: its whole hours so far with
    // the same span at the start of the previous period.
    let through = Grain::Hour.floor(now);
    let to_date_spans =
        (period.end > now && grain != Grain::Hour && through > period.start).then(|| {
            (
                Interval {
                    start: period.start,
                    end: through,
                },
                Interval {
                    start: previous.start,
                    end: previous.start + (through - period.start),
                },
            )
        });
    let (mut current_to_date, mut previous_to_date) = (Vec::new(), Vec::new());
    if let Some((c, p)) = to_date_spans {
        let cb = complete::ensure(pool, Grain::Hour, c.start, c.end, now).await?;
        let pb = complete::ensure(pool, Grain::Hour, p.start, p.end, now).await?;
        if with_data(&cb) {
            current_to_date = data::rows(pool, Grain::Hour, c.start, c.end).await?;
        }
        if with_data(&pb) {
            previous_to_date = data::rows(pool, Grain::Hour, p.start, p.end).await?;
        }
    }
    let inputs = sections::Inputs {
        grain,
        period,
        current: &current,
        previous: &before,
        series_grain,
        series: &series,
        series_buckets: &series_buckets,
        slo_pct: config.reports.availability_slo_pct,
        to_date: to_date_spans.map(|(_, p)| sections::ToDate {
            through,
            previous: p,
            current_rows: &current_to_date,
            previous_rows: &previous_to_date,
        }),
        now,
    };
    let mut out = Vec::new();
    let mut capacity: Option<capacity::Analysis> = None;
    for s in &def.sections {
        let title = s.title.clone();
        match s.kind {
            SectionKind::Kpis => out.push(sections::kpis(title, &inputs)?),
            SectionKind::BusinessKpis => out.push(sections::business_kpis(title, &inputs)?),
            SectionKind::BusinessWeekly => out.push(sections::business_weekly(title, &inputs)?),
            SectionKind::ByModel => out.push(sections::by_model(title, &current)?),
            SectionKind::CostByModel => out.push(sections::cost_by_model(title, &current)?),
            SectionKind::Satisfaction => out.push(sections::satisfaction(title, &current)?),
            SectionKind::Availability => out.push(sections::availability(title, &inputs)?),
            SectionKind::TopSources => out.extend(sections::top_sources(title, &current)?),
            SectionKind::BySource => out.push(sections::by_source(title, &current)?),
            SectionKind::ErrorsByType => out.push(sections::errors_by_type(title, &current)),
            SectionKind::Capacity => {
                let a = capacity_for(config, pool, period, now, &mut capacity).await?;
                out.extend(sections::capacity_tables(title, a));
            }
            SectionKind::Chart => {
                let metric = s.metric.unwrap_or(Metric::Requests);
                out.push(match metric {
                    Metric::Requests | Metric::P95Latency | Metric::Revenue => {
                        sections::series_chart(title, metric, &inputs)?
                    }
                    Metric::ErrorsByType | Metric::CostByModel => {
                        sections::category_chart(title, metric, &current)
                    }
                    Metric::PeakEventsPerSec => {
                        let a = capacity_for(config, pool, period, now, &mut capacity).await?;
                        sections::peak_chart(title, a)
                    }
                });
            }
        }
    }
    Ok(Report {
        report_type: report_type.to_string(),
        title: def.title.clone(),
        period_start: period.start,
        period_end: period.end,
        partial_through: (period.end > now).then_some(now),
        previous_start: previous.start,
        compared_to_date: to_date_spans.map(|(c, p)| (c.end, p.end)),
        generated_at: now,
        notes: resolved.note.iter().cloned().collect(),
        sources,
        freshness: fresh,
        data_quality,
        sections: out,
        data_seq,
    })
}

async fn capacity_for<'a>(
    config: &Config,
    pool: &PgPool,
    period: Interval,
    now: DateTime<Utc>,
    cache: &'a mut Option<capacity::Analysis>,
) -> Result<&'a capacity::Analysis, Error> {
    if let Some(a) = cache {
        return Ok(a);
    }
    let to = period.end.date_naive();
    let a = capacity::analyse(pool, &config.capacity, Some(to), now).await?;
    Ok(cache.insert(a))
}

impl Report {
    /// The title block under the title, in the PDF and the CSV: period,
    /// partial, where the figures came from, what had no data, freshness.
    pub fn header_lines(&self) -> Vec<String> {
        let w = sections::when;
        let mut out = vec![format!(
            "Period: {} to {} UTC",
            w(self.period_start),
            w(self.period_end)
        )];
        if let Some(t) = self.partial_through {
            out.push(format!(
                "partial: through {} UTC (the period has not ended)",
                w(t)
            ));
        }
        out.push(match self.compared_to_date {
            Some((through, previous_end)) => format!(
                "Compared to date: {} to {} UTC against the same span of the previous period, {} to {} UTC",
                w(self.period_start),
                w(through),
                w(self.previous_start),
                w(previous_end)
            ),
            None => format!(
                "Compared with the previous period from {} UTC",
                w(self.previous_start)
            ),
        });
        for s in &self.sources {
            let mut line = format!("Data, {}: {}", s.figures, s.from);
            if !s.missing.is_empty() && s.buckets > 1 {
                let shown: Vec<String> = s
                    .missing
                    .iter()
                    .take(6)
                    .map(|t| match s.grain {
                        Grain::Hour => t.format("%m-%d %Hh").to_string(),
                        _ => t.format("%Y-%m-%d").to_string(),
                    })
                    .collect();
                let more = s.missing.len().saturating_sub(shown.len());
                line.push_str(&format!(
                    "; no data for {} of {} {}s ({}{})",
                    s.missing.len(),
                    s.buckets,
                    s.grain.as_str(),
                    shown.join(", "),
                    if more > 0 {
                        format!(", {more} more")
                    } else {
                        String::new()
                    }
                ));
            }
            out.push(line);
        }
        let f = &self.freshness;
        out.push(format!(
            "Ingest: events stored up to {}; caught up with the broker: {}",
            f.latest_event_time
                .map(|t| format!("{} UTC", w(t)))
                .unwrap_or_else(|| "n/a".into()),
            match (f.ingest_caught_up, f.ingest_lag_messages) {
                (Some(true), _) => "yes".to_string(),
                (Some(false), Some(n)) => format!("no, {n} messages behind"),
                _ => "unknown (broker not reachable)".to_string(),
            }
        ));
        if !f.hours_ready {
            let hours: i64 = f.hours_not_ready.iter().map(|r| r.hours).sum();
            let first = f
                .hours_not_ready
                .first()
                .map(|r| r.to_string())
                .unwrap_or_default();
            out.push(format!(
                "Not ready: {hours} hour(s) not stored completely by ingest yet (first: {first}); figures may rise"
            ));
        }
        out.push(self.data_quality_line());
        out.extend(self.notes.iter().map(|n| format!("Note: {n}")));
        out.push(format!(
            "Generated: {} UTC by hxjobs",
            self.generated_at.format("%Y-%m-%d %H:%M:%S")
        ));
        out
    }
}

impl Report {
    /// What the data checks on the period's intervals found (their latest
    /// results); n/a when none ran.
    pub fn data_quality_line(&self) -> String {
        let q = &self.data_quality;
        if q.checks == 0 {
            return "Data quality: n/a (no data check ran on the period's intervals)".into();
        }
        let mut line = format!(
            "Data quality: {} checks on the period's intervals: {} passed, {} failed, {} warned, {} could not run, {} n/a",
            q.checks, q.passed, q.failed, q.warned, q.errors, q.skipped
        );
        if !q.problems.is_empty() {
            line.push_str(&format!("; {}", q.problems.join(", ")));
        }
        line
    }
}

/// The report in `format`.
pub fn render(report: &Report, format: Format) -> Result<Vec<u8>, Error> {
    match format {
        Format::Pdf => pdf::render(report),
        Format::Json => serde_json::to_vec_pretty(report).map_err(|e| Error::Render(e.to_string())),
        Format::Csv => Ok(csv::render(report).into_bytes()),
    }
}

/// Generates again every report of the period of `grain` at `start` that
/// is done and not superseded (same type and format), after the period's
/// rollups changed; the new ones supersede them. Returns the new records.
pub async fn regenerate_period(
    config: &Config,
    pool: &PgPool,
    grain: Grain,
    start: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Vec<Record>, Error> {
    let period = Interval {
        start,
        end: grain.next(start),
    };
    let wanted = store::current_of(pool, period).await?;
    let mut out = Vec::new();
    for (report_type, format) in wanted {
        let Ok(format) = Format::parse(&format) else {
            continue;
        };
        out.push(generate(config, pool, &report_type, format, Some(start), now).await?);
    }
    Ok(out)
}

/// Generates, writes and records one report. A failure after the row
/// exists is recorded on it (status `failed`) and returned.
pub async fn generate(
    config: &Config,
    pool: &PgPool,
    report_type: &str,
    format: Format,
    period_start: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<Record, Error> {
    generate_with(
        config,
        pool,
        report_type,
        format,
        period_start,
        now,
        Options::default(),
    )
    .await
}

/// [`generate`] with options. A refused or invalid request (unknown type,
/// period in the future, incomplete with `require_complete`) records nothing.
pub async fn generate_with(
    config: &Config,
    pool: &PgPool,
    report_type: &str,
    format: Format,
    period_start: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    options: Options,
) -> Result<Record, Error> {
    let def = definition::load(&config.reports.definitions_dir, report_type)?;
    let resolved = period(&def, period_start, now)?;
    let period = resolved.period;
    if options.require_complete {
        let f = freshness::read(config, pool, period, now, freshness::broker_ends(config)).await?;
        let missing = incomplete_hours(&f, period, now);
        if !missing.is_empty() {
            return Err(Error::Incomplete { missing });
        }
    }
    let id = store::start(pool, report_type, period, format).await?;
    let outcome = async {
        let report = build(config, pool, report_type, &def, &resolved, now).await?;
        let (data_seq, partial_through) = (report.data_seq, report.partial_through);
        let bytes = tokio::task::spawn_blocking(move || render(&report, format))
            .await
            .map_err(|e| Error::Render(e.to_string()))??;
        let name = format!(
            "{report_type}-{}-{id}.{}",
            period.start.format("%Y%m%d"),
            format.as_str()
        );
        let files = crate::storage::Store::open(&config.storage)?;
        let stored = files
            .put(&crate::storage::report_key(&name), bytes.into())
            .await?;
        Ok::<_, Error>(store::Written {
            name,
            key: stored.key,
            size: stored.size,
            sha256: stored.sha256,
            data_seq,
            partial_through,
        })
    }
    .await;
    let written = match outcome {
        Ok(written) => written,
        Err(e) => {
            store::fail(pool, id, &e.to_string()).await?;
            return Err(e);
        }
    };
    let recorded = async {
        let mut tx = pool.begin().await?;
        let record = store::finish(&mut tx, id, &written).await?;
        if let Some(seal) = &options.seal {
            // Another worker holds the run: this copy is discarded.
            seal.apply(&mut tx).await?;
        }
        tx.commit().await?;
        Ok::<_, Error>(record)
    }
    .await;
    let mut record = match recorded {
        Ok(record) => record,
        Err(e) => {
            if let Ok(files) = crate::storage::Store::open(&config.storage) {
                let _ = files.delete(&written.key).await;
            }
            store::fail(pool, id, &e.to_string()).await?;
            return Err(e);
        }
    };
    record.notes = resolved.note.into_iter().collect();
    Ok(record)
}
