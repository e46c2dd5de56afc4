//! Reports built from the rollups: the content ([`Report`]) follows a
//! definition from `reports/`, and is written as PDF ([`pdf`]), JSON or CSV
//! with the same numbers. Each generation is recorded in `reports`.

pub mod data;
pub mod definition;
pub mod pdf;
pub mod sections;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::config::Config;
use crate::interval::{Grain, Interval};
use crate::rollup::complete::{self, Bucket, Provenance};
use crate::rollup::sketch;
use crate::{capacity, round};
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
    Rollup(#[from] crate::rollup::Error),
    #[error("the period starting {} UTC has not begun yet (now {} UTC)", sections::when(*start), sections::when(*now))]
    PeriodInFuture {
        start: DateTime<Utc>,
        now: DateTime<Utc>,
    },
    #[error("recording the report: {0}")]
    Seal(#[from] crate::ledger::SealError),
    #[error("the period is not complete: {} not stored completely ({})", hours_count(missing), missing.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Incomplete { missing: Vec<HourRange> },
}

fn hours_count(missing: &[HourRange]) -> String {
    let n: i64 = missing.iter().map(|r| r.hours).sum();
    if n == 1 {
        "1 hour".into()
    } else {
        format!("{n} hours")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Pdf,
    Json,
    Csv,
}

impl Format {
    pub fn parse(s: &str) -> Result<Format, Error> {
        match s {
            "pdf" => Ok(Format::Pdf),
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            other => Err(Error::Format(other.to_string())),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Pdf => "pdf",
            Format::Json => "json",
            Format::Csv => "csv",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Pdf => "application/pdf",
            Format::Json => "application/json",
            Format::Csv => "text/csv; charset=utf-8",
        }
    }
}

/// A report's content, whatever the format.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub report_type: String,
    pub title: String,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    /// Set when the period has not ended: the figures cover up to here.
    pub partial_through: Option<DateTime<Utc>>,
    pub previous_start: DateTime<Utc>,
    /// A period under way is compared to date: (the end of its whole hours
    /// compared, the end of the same span in the previous period).
    pub compared_to_date: Option<(DateTime<Utc>, DateTime<Utc>)>,
    pub generated_at: DateTime<Utc>,
    /// E.g. that the period start asked for was snapped.
    pub notes: Vec<String>,
    /// Which grain each part's figures came from, and buckets without data.
    pub sources: Vec<Source>,
    pub freshness: Freshness,
    pub sections: Vec<Section>,
    /// The newest rollup `seq` read: a later report of the same period
    /// with a higher one was built from newer data.
    #[serde(skip)]
    pub data_seq: i64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Section {
    Table {
        title: String,
        columns: Vec<String>,
        rows: Vec<Vec<Cell>>,
    },
    Chart {
        title: String,
        style: ChartStyle,
        labels: Vec<String>,
        /// `None` where the point has no data: a gap, never 0.
        values: Vec<Option<f64>>,
        /// The point whose bucket has not ended yet: drawn as partial.
        #[serde(skip_serializing_if = "Option::is_none")]
        partial: Option<usize>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChartStyle {
    Line,
    Bar,
}

/// One table cell. Numbers are rounded to the decimals they are shown with,
/// so every format carries the same figures.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Int(i64),
    Num(f64, usize),
    /// A satisfaction rating on the contract's 1-10 scale, two decimals.
    Rating(f64),
    Text(String),
    Empty,
}

impl Cell {
    pub(crate) fn num(v: f64, decimals: usize) -> Cell {
        if !v.is_finite() {
            Cell::Empty
        } else if round(v, decimals as u32) == 0.0 {
            // A tiny negative figure reads "0.00", not "-0.00".
            Cell::Num(0.0, decimals)
        } else {
            Cell::Num(v, decimals)
        }
    }

    pub(crate) fn opt(v: Option<f64>, decimals: usize) -> Cell {
        v.map_or(Cell::Empty, |v| Cell::num(v, decimals))
    }

    pub(crate) fn rating(v: Option<f64>) -> Cell {
        match v {
            Some(v) if v.is_finite() => Cell::Rating(v),
            _ => Cell::Empty,
        }
    }

    /// The cell as a person reads it in a PDF: thousands separators, the
    /// rating's scale, "n/a" where there is no figure.
    pub fn shown(&self) -> String {
        match self {
            Cell::Int(v) => grouped(&v.to_string()),
            Cell::Num(v, d) => grouped(&format!("{v:.d$}")),
            Cell::Rating(v) => format!("{v:.2} / 10"),
            Cell::Text(s) => s.clone(),
            Cell::Empty => "n/a".to_string(),
        }
    }
}

/// `-1234567.891` → `-1,234,567.891`: separators in the integer part.
pub fn grouped(number: &str) -> String {
    let (sign, rest) = match number.strip_prefix('-') {
        Some(r) => ("-", r),
        None => ("", number),
    };
    let (int, frac) = match rest.find('.') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if !int.bytes().all(|b| b.is_ascii_digit()) {
        return number.to_string();
    }
    let mut out = String::with_capacity(number.len() + int.len() / 3);
    out.push_str(sign);
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out.push_str(frac);
    out
}

impl std::fmt::Display for Cell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cell::Int(v) => write!(f, "{v}"),
            Cell::Num(v, d) => write!(f, "{v:.d$}"),
            Cell::Rating(v) => write!(f, "{v:.2}"),
            Cell::Text(s) => f.write_str(s),
            Cell::Empty => f.write_str("-"),
        }
    }
}

impl Serialize for Cell {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Cell::Int(v) => s.serialize_i64(*v),
            Cell::Num(v, d) => s.serialize_f64(round(*v, *d as u32)),
            Cell::Rating(v) => s.serialize_f64(round(*v, 2)),
            Cell::Text(t) => s.serialize_str(t),
            Cell::Empty => s.serialize_none(),
        }
    }
}

/// Where the figures of one part of a report came from.
#[derive(Debug, Clone, Serialize)]
pub struct Source {
    /// "this period", "previous period" or "series".
    pub figures: String,
    pub grain: Grain,
    /// E.g. "week rollups" or "merged from day rollups".
    pub from: String,
    pub buckets: usize,
    /// Buckets without any data (their figures are n/a, or gaps).
    pub missing: Vec<DateTime<Utc>>,
}

/// The ingest position a report reflects.
#[derive(Debug, Clone, Serialize)]
pub struct Freshness {
    /// The newest event time stored.
    pub latest_event_time: Option<DateTime<Utc>>,
    /// Ingest had stored everything the broker held at this time.
    pub ingest_drained_through: Option<DateTime<Utc>>,
    /// Whether ingest had caught up with the broker when the report was
    /// built (`None`: the broker could not be asked).
    pub ingest_caught_up: Option<bool>,
    /// Messages on the broker not stored yet, over the event topics.
    pub ingest_lag_messages: Option<i64>,
    /// Whether every hour of the period (up to now) is ready: ingest stored
    /// everything up to its end.
    pub hours_ready: bool,
    /// The hours that are not, as ranges.
    pub hours_not_ready: Vec<HourRange>,
}

/// Consecutive hours `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HourRange {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub hours: i64,
}

impl std::fmt::Display for HourRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} to {} UTC ({} h)",
            sections::when(self.from),
            sections::when(self.to),
            self.hours
        )
    }
}

/// Hour starts → ranges of consecutive hours.
fn hour_ranges(hours: &[DateTime<Utc>]) -> Vec<HourRange> {
    let mut out: Vec<HourRange> = Vec::new();
    for &h in hours {
        let end = Grain::Hour.next(h);
        match out.last_mut() {
            Some(r) if r.to == h => {
                r.to = end;
                r.hours += 1;
            }
            _ => out.push(HourRange {
                from: h,
                to: end,
                hours: 1,
            }),
        }
    }
    out
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

/// Where ingest stands, for a report's freshness block.
/// The broker's end offsets of the event topics, asked on a blocking
/// thread (started early, so the round trips overlap the report's queries).
fn broker_ends(config: &Config) -> tokio::task::JoinHandle<Option<HashMap<String, i64>>> {
    let kafka = config.kafka.clone();
    let topics: Vec<String> = config
        .topics
        .event_topics()
        .into_iter()
        .map(|(t, _)| t.to_string())
        .collect();
    tokio::task::spawn_blocking(move || {
        let consumer = crate::kafka::build_consumer(&kafka, &kafka.group_id).ok()?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        crate::kafka::end_offsets(&consumer, &kafka, &names).ok()
    })
}

/// How long a report waits for the broker's answer before it says "unknown".
const BROKER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

async fn freshness(
    config: &Config,
    pool: &PgPool,
    period: Interval,
    now: DateTime<Utc>,
    ends: tokio::task::JoinHandle<Option<HashMap<String, i64>>>,
) -> Result<Freshness, Error> {
    let latest: Option<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT max(event_time) FROM events
         WHERE event_day = (SELECT max(event_day) FROM events)",
    )
    .fetch_one(pool)
    .await?;
    let progress = crate::ingest::progress::Progress::read(config, pool).await?;
    let drained = progress.caught_up_through;
    let stored: Vec<(String, i64)> = progress
        .by_topic(&config.topics.event_topic_names(), None)
        .into_iter()
        .map(|(topic, stored, _)| (topic, stored))
        .collect();
    let ends = tokio::time::timeout(BROKER_WAIT, ends)
        .await
        .ok()
        .and_then(Result::ok)
        .flatten();
    let lag = ends.map(|ends| {
        ends.iter()
            .map(|(topic, end)| {
                let next = stored
                    .iter()
                    .find(|(t, _)| t == topic)
                    .map_or(0, |(_, n)| *n);
                (end - next).max(0)
            })
            .sum::<i64>()
    });
    let through = period.end.min(now);
    let not_ready: Vec<DateTime<Utc>> = Grain::Hour
        .starts(period.start, through)
        .into_iter()
        .filter(|h| drained.is_none_or(|d| Grain::Hour.next(*h) > d))
        .collect();
    Ok(Freshness {
        latest_event_time: latest,
        ingest_drained_through: drained,
        ingest_caught_up: lag.map(|l| l == 0),
        ingest_lag_messages: lag,
        hours_ready: not_ready.is_empty(),
        hours_not_ready: hour_ranges(&not_ready),
    })
}

/// The hours of `period` not stored completely yet: those ingest has not
/// passed, and, for a period under way, the rest of it.
pub fn incomplete_hours(f: &Freshness, period: Interval, now: DateTime<Utc>) -> Vec<HourRange> {
    let mut out = f.hours_not_ready.clone();
    if period.end > now {
        let rest: Vec<DateTime<Utc>> = Grain::Hour
            .starts(Grain::Hour.floor(now), period.end)
            .into_iter()
            .filter(|h| out.last().is_none_or(|r| *h >= r.to))
            .collect();
        let mut all: Vec<DateTime<Utc>> = out
            .iter()
            .flat_map(|r| Grain::Hour.starts(r.from, r.to))
            .collect();
        all.extend(rest);
        all.dedup();
        out = hour_ranges(&all);
    }
    out
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
    let ends = broker_ends(config);
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
    let fresh = freshness(config, pool, period, now, ends).await?;
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
        out.extend(self.notes.iter().map(|n| format!("Note: {n}")));
        out.push(format!(
            "Generated: {} UTC by hxjobs",
            self.generated_at.format("%Y-%m-%d %H:%M:%S")
        ));
        out
    }
}

/// The report in `format`.
pub fn render(report: &Report, format: Format) -> Result<Vec<u8>, Error> {
    match format {
        Format::Pdf => pdf::render(report),
        Format::Json => serde_json::to_vec_pretty(report).map_err(|e| Error::Render(e.to_string())),
        Format::Csv => Ok(csv(report).into_bytes()),
    }
}

/// One line per number: section, row, column, value; first the `report`
/// lines (period, partial, sources, freshness, notes).
fn csv(report: &Report) -> String {
    fn field(s: &str) -> String {
        if s.contains([',', '"', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    }
    let mut out = String::from("section,row,column,value\n");
    let mut line = |a: &str, b: &str, c: &str, d: &str| {
        out.push_str(&[field(a), field(b), field(c), field(d)].join(","));
        out.push('\n');
    };
    let t = |t: Option<DateTime<Utc>>| t.map(|t| t.to_rfc3339()).unwrap_or_default();
    line("report", "period", "start", &t(Some(report.period_start)));
    line("report", "period", "end", &t(Some(report.period_end)));
    line("report", "partial", "through", &t(report.partial_through));
    for s in &report.sources {
        line("report", "sources", &s.figures, &s.from);
        if !s.missing.is_empty() {
            let missing: Vec<String> = s.missing.iter().map(|m| m.to_rfc3339()).collect();
            line("report", "no data", &s.figures, &missing.join(" "));
        }
    }
    let f = &report.freshness;
    line(
        "report",
        "freshness",
        "latest_event_time",
        &t(f.latest_event_time),
    );
    let opt = |v: Option<String>| v.unwrap_or_default();
    line(
        "report",
        "freshness",
        "ingest_caught_up",
        &opt(f.ingest_caught_up.map(|b| b.to_string())),
    );
    line(
        "report",
        "freshness",
        "hours_ready",
        &f.hours_ready.to_string(),
    );
    for n in &report.notes {
        line("report", "note", "", n);
    }
    for s in &report.sections {
        match s {
            Section::Table {
                title,
                columns,
                rows,
            } => {
                for row in rows {
                    let name = row.first().map(Cell::to_string).unwrap_or_default();
                    for (col, cell) in columns.iter().zip(row).skip(1) {
                        let v = if *cell == Cell::Empty {
                            String::new()
                        } else {
                            cell.to_string()
                        };
                        line(title, &name, col, &v);
                    }
                }
            }
            Section::Chart {
                title,
                labels,
                values,
                partial,
                ..
            } => {
                for (n, (l, v)) in labels.iter().zip(values).enumerate() {
                    let col = if *partial == Some(n) {
                        "value so far"
                    } else {
                        "value"
                    };
                    line(title, l, col, &opt(v.map(|v| v.to_string())));
                }
            }
        }
    }
    out
}

/// A row of `reports`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Record {
    pub id: i64,
    pub report_type: String,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub format: String,
    pub status: String,
    /// The file's name inside `reports.output_dir`.
    pub path: Option<String>,
    pub size: Option<i64>,
    pub sha256: Option<String>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Set when the period had not ended: the report covers up to here.
    pub partial_through: Option<DateTime<Utc>>,
    /// A later report of the same period, built from newer data.
    pub superseded_by: Option<i64>,
    /// What generating it noted (e.g. a period start snapped); not stored.
    #[sqlx(skip)]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

pub const RECORD_COLUMNS: &str =
    "id, report_type, period_start, period_end, format, status, path, \
     size, sha256, error, created_at, finished_at, partial_through, superseded_by";

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
    let wanted: Vec<(String, String)> = sqlx::query_as(
        "SELECT DISTINCT report_type, format FROM reports
         WHERE period_start = $1 AND period_end = $2 AND status = 'done' AND superseded_by IS NULL
         ORDER BY 1, 2",
    )
    .bind(start)
    .bind(grain.next(start))
    .fetch_all(pool)
    .await?;
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
        let f = freshness(config, pool, period, now, broker_ends(config)).await?;
        let missing = incomplete_hours(&f, period, now);
        if !missing.is_empty() {
            return Err(Error::Incomplete { missing });
        }
    }
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO reports (report_type, period_start, period_end, format, status)
         VALUES ($1, $2, $3, $4, 'running') RETURNING id",
    )
    .bind(report_type)
    .bind(period.start)
    .bind(period.end)
    .bind(format.as_str())
    .fetch_one(pool)
    .await?;
    let outcome = async {
        let report = build(config, pool, report_type, &def, &resolved, now).await?;
        let (data_seq, partial) = (report.data_seq, report.partial_through);
        let bytes = tokio::task::spawn_blocking(move || render(&report, format))
            .await
            .map_err(|e| Error::Render(e.to_string()))??;
        let name = format!(
            "{report_type}-{}-{id}.{}",
            period.start.format("%Y%m%d"),
            format.as_str()
        );
        write_file(&config.reports.output_dir, &name, &bytes)?;
        Ok::<_, Error>((
            name,
            bytes.len() as i64,
            format!("{:x}", Sha256::digest(&bytes)),
            data_seq,
            partial,
        ))
    }
    .await;
    match outcome {
        Ok((name, size, sha, data_seq, partial)) => {
            let mut tx = pool.begin().await?;
            let mut record: Record = sqlx::query_as(&format!(
                "UPDATE reports SET status = 'done', path = $2, size = $3, sha256 = $4,
                        data_seq = $5, partial_through = $6, finished_at = now()
                 WHERE id = $1 RETURNING {RECORD_COLUMNS}"
            ))
            .bind(id)
            .bind(name)
            .bind(size)
            .bind(sha)
            .bind(data_seq)
            .bind(partial)
            .fetch_one(&mut *tx)
            .await?;
            // Earlier reports of this period built from older data.
            sqlx::query(
                "UPDATE reports SET superseded_by = $1
                 WHERE report_type = $2 AND period_start = $3 AND format = $4 AND id < $1
                   AND status = 'done' AND superseded_by IS NULL
                   AND (data_seq IS NULL OR data_seq < $5 OR partial_through IS NOT NULL)",
            )
            .bind(id)
            .bind(report_type)
            .bind(period.start)
            .bind(format.as_str())
            .bind(data_seq)
            .execute(&mut *tx)
            .await?;
            if let Some(seal) = &options.seal {
                if let Err(e) = seal.apply(&mut tx).await {
                    drop(tx);
                    // Another worker holds the run: this copy is discarded.
                    if let Some(file) = record
                        .path
                        .as_deref()
                        .and_then(|n| file_in(&config.reports.output_dir, n))
                    {
                        let _ = std::fs::remove_file(file);
                    }
                    sqlx::query("UPDATE reports SET status = 'failed', error = $2, finished_at = now() WHERE id = $1")
                        .bind(id)
                        .bind(e.to_string())
                        .execute(pool)
                        .await?;
                    return Err(e.into());
                }
            }
            tx.commit().await?;
            record.notes = resolved.note.into_iter().collect();
            Ok(record)
        }
        Err(e) => {
            sqlx::query("UPDATE reports SET status = 'failed', error = $2, finished_at = now() WHERE id = $1")
                .bind(id)
                .bind(e.to_string())
                .execute(pool)
                .await?;
            Err(e)
        }
    }
}

/// Writes through a temporary file renamed into place.
fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), Error> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::File { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
    let path = dir.join(name);
    std::fs::rename(&tmp, &path).map_err(io(&path))
}

/// The file of a recorded report, only if it lies inside `output_dir`.
pub fn file_of(output_dir: &Path, record: &Record) -> Option<PathBuf> {
    file_in(output_dir, record.path.as_deref()?)
}

/// `output_dir/name`, only if `name` is a plain file name there (no
/// separators, not hidden) and the existing file resolves inside it.
pub fn file_in(output_dir: &Path, name: &str) -> Option<PathBuf> {
    if name.is_empty()
        || name.contains(['/', '\\'])
        || name.starts_with('.')
        || Path::new(name).components().count() != 1
    {
        return None;
    }
    let dir = output_dir.canonicalize().ok()?;
    let file = dir.join(name).canonicalize().ok()?;
    file.starts_with(&dir).then_some(file)
}

pub async fn get(pool: &PgPool, id: i64) -> Result<Option<Record>, Error> {
    Ok(sqlx::query_as(&format!(
        "SELECT {RECORD_COLUMNS} FROM reports WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?)
}

pub async fn list(
    pool: &PgPool,
    report_type: Option<&str>,
    limit: i64,
) -> Result<Vec<Record>, Error> {
    Ok(sqlx::query_as(&format!(
        "SELECT {RECORD_COLUMNS} FROM reports WHERE $1::text IS NULL OR report_type = $1
         ORDER BY id DESC LIMIT $2"
    ))
    .bind(report_type)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::{grouped, Cell};

    #[test]
    fn figures_read_as_a_person_writes_them() {
        assert_eq!(grouped("29568003"), "29,568,003");
        assert_eq!(grouped("-1234.5678"), "-1,234.5678");
        assert_eq!(grouped("999"), "999");
        assert_eq!(grouped("1000.00"), "1,000.00");
        assert_eq!(Cell::Rating(7.3812).shown(), "7.38 / 10");
        assert_eq!(Cell::Rating(7.3812).to_string(), "7.38");
        assert_eq!(Cell::Empty.shown(), "n/a");
        assert_eq!(Cell::Num(1234567.891, 2).shown(), "1,234,567.89");
        assert_eq!(Cell::num(-0.00004, 4).shown(), "0.0000");
        assert_eq!(Cell::num(-0.04, 1).to_string(), "0.0");
        assert_eq!(Cell::num(-0.06, 1).to_string(), "-0.1");
    }
}
