//! Reports built from the rollups: the content ([`Report`]) follows a
//! definition from `reports/`, and is written as PDF ([`pdf`]), JSON or CSV
//! with the same numbers. Each generation is recorded in `reports`.

pub mod definition;
pub mod pdf;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};
use sha2::{Digest, Sha256};
use sketches_ddsketch::DDSketch;
use sqlx::PgPool;

use crate::config::Config;
use crate::dag::{Grain, Interval};
use crate::rollup::sketch::{self, Users};
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
    pub previous_start: DateTime<Utc>,
    pub generated_at: DateTime<Utc>,
    pub sections: Vec<Section>,
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
        values: Vec<f64>,
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
    fn num(v: f64, decimals: usize) -> Cell {
        if v.is_finite() {
            Cell::Num(v, decimals)
        } else {
            Cell::Empty
        }
    }

    fn opt(v: Option<f64>, decimals: usize) -> Cell {
        v.map_or(Cell::Empty, |v| Cell::num(v, decimals))
    }

    fn rating(v: Option<f64>) -> Cell {
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

/// A stored rollup row, as reports read it.
#[derive(sqlx::FromRow)]
struct Row {
    bucket_start: DateTime<Utc>,
    event_type: String,
    source: String,
    subject: String,
    event_count: i64,
    error_count: i64,
    latency_count: i64,
    latency_sum_ms: f64,
    prompt_tokens: i64,
    completion_tokens: i64,
    cost_usd: f64,
    rating_sum: f64,
    rating_count: i64,
    latency_sketch: Option<Vec<u8>>,
    users_sketch: Option<Vec<u8>>,
    /// The sketches, decoded once when the rows are read.
    #[sqlx(skip)]
    latency: Option<DDSketch>,
    #[sqlx(skip)]
    users: Option<Users>,
}

/// Measures summed over rollup rows, sketches merged.
struct Totals {
    events: i64,
    requests: i64,
    /// Failed requests: llm_request with status error or timeout.
    request_errors: i64,
    error_events: i64,
    latency_count: i64,
    latency_sum: f64,
    prompt: i64,
    completion: i64,
    cost: f64,
    rating_sum: f64,
    rating_count: i64,
    latency: DDSketch,
    users: Users,
}

impl Default for Totals {
    fn default() -> Self {
        Totals {
            events: 0,
            requests: 0,
            request_errors: 0,
            error_events: 0,
            latency_count: 0,
            latency_sum: 0.0,
            prompt: 0,
            completion: 0,
            cost: 0.0,
            rating_sum: 0.0,
            rating_count: 0,
            latency: sketch::new_latency(),
            users: sketch::new_users(),
        }
    }
}

impl Totals {
    fn add(&mut self, r: &Row) -> Result<(), Error> {
        self.events += r.event_count;
        match r.event_type.as_str() {
            "llm_request" => {
                self.requests += r.event_count;
                self.request_errors += r.error_count;
            }
            "error_event" => self.error_events += r.event_count,
            _ => {}
        }
        self.latency_count += r.latency_count;
        self.latency_sum += r.latency_sum_ms;
        self.prompt += r.prompt_tokens;
        self.completion += r.completion_tokens;
        self.cost += r.cost_usd;
        self.rating_sum += r.rating_sum;
        self.rating_count += r.rating_count;
        if let Some(l) = &r.latency {
            sketch::merge_latency(&mut self.latency, l)?;
        }
        if let Some(u) = &r.users {
            sketch::merge_users(&mut self.users, u)?;
        }
        Ok(())
    }

    fn of<'a>(rows: impl IntoIterator<Item = &'a Row>) -> Result<Totals, Error> {
        let mut t = Totals::default();
        for r in rows {
            t.add(r)?;
        }
        Ok(t)
    }

    fn error_rate_pct(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.request_errors as f64 * 100.0 / self.requests as f64)
    }

    fn quantile(&self, q: f64) -> Option<f64> {
        if self.latency_count == 0 {
            return None;
        }
        sketch::quantile(&self.latency, q)
    }

    fn latency_avg(&self) -> Option<f64> {
        (self.latency_count > 0).then(|| self.latency_sum / self.latency_count as f64)
    }

    fn rating_avg(&self) -> Option<f64> {
        (self.rating_count > 0).then(|| self.rating_sum / self.rating_count as f64)
    }

    fn users(&mut self) -> i64 {
        sketch::count_users(&mut self.users)
    }
}

async fn rows(
    pool: &PgPool,
    grain: Grain,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<Row>, Error> {
    let mut rows: Vec<Row> = sqlx::query_as(
        "SELECT bucket_start, event_type, source, subject, event_count, error_count, latency_count,
                latency_sum_ms, prompt_tokens, completion_tokens, cost_usd, rating_sum,
                rating_count, latency_sketch, users_sketch
         FROM rollups WHERE grain = $1 AND bucket_start >= $2 AND bucket_start < $3
         ORDER BY bucket_start, event_type, source, subject",
    )
    .bind(grain.as_str())
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?;
    for r in &mut rows {
        if let Some(b) = r.latency_sketch.take() {
            r.latency = Some(sketch::decode_latency(&b)?);
        }
        if let Some(b) = r.users_sketch.take() {
            r.users = Some(sketch::decode_users(&b)?);
        }
    }
    Ok(rows)
}

/// The period a report of `def` covers: the one containing `start`, or the
/// last complete one before `now`.
pub fn period(def: &Definition, start: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Interval {
    match start {
        Some(t) => def.period.containing(t),
        None => def.period.last_complete(now),
    }
}

/// Builds the content of a report of `report_type` for `period`.
pub async fn build(
    config: &Config,
    pool: &PgPool,
    report_type: &str,
    def: &Definition,
    period: Interval,
    now: DateTime<Utc>,
) -> Result<Report, Error> {
    let (grain, series) = (def.period, def.series);
    let previous = grain.containing(grain.prev(period.start));
    let current = rows(pool, grain, period.start, period.end).await?;
    let before = rows(pool, grain, previous.start, previous.end).await?;
    let mut sections = Vec::new();
    let mut series_rows: Option<Vec<Row>> = None;
    let mut capacity: Option<capacity::Analysis> = None;
    for s in &def.sections {
        let title = s.title.clone();
        match s.kind {
            SectionKind::Kpis => sections.push(kpis(title, &current, &before)?),
            SectionKind::ByModel => sections.push(by_model(title, &current)?),
            SectionKind::BySource => sections.push(by_source(title, &current)?),
            SectionKind::ErrorsByType => sections.push(errors_by_type(title, &current)),
            SectionKind::Capacity => {
                let a = capacity_for(config, pool, period, now, &mut capacity).await?;
                sections.extend(capacity_tables(title, a));
            }
            SectionKind::Chart => {
                let metric = s.metric.unwrap_or(Metric::Requests);
                let section = match metric {
                    Metric::Requests | Metric::P95Latency => {
                        if series_rows.is_none() {
                            series_rows = Some(rows(pool, series, period.start, period.end).await?);
                        }
                        let points = series_rows.as_deref().unwrap_or_default();
                        series_chart(title, metric, series, period, points)?
                    }
                    Metric::ErrorsByType => {
                        let (labels, values) = error_types(&current).into_iter().unzip();
                        Section::Chart {
                            title,
                            style: ChartStyle::Bar,
                            labels,
                            values,
                        }
                    }
                    Metric::CostByModel => {
                        let mut by: BTreeMap<&str, f64> = BTreeMap::new();
                        for r in current.iter().filter(|r| r.event_type == "llm_request") {
                            *by.entry(r.subject.as_str()).or_default() += r.cost_usd;
                        }
                        Section::Chart {
                            title,
                            style: ChartStyle::Bar,
                            labels: by.keys().map(|k| label(k)).collect(),
                            values: by.values().map(|v| round(*v, 4)).collect(),
                        }
                    }
                    Metric::PeakEventsPerSec => {
                        let a = capacity_for(config, pool, period, now, &mut capacity).await?;
                        Section::Chart {
                            title,
                            style: ChartStyle::Line,
                            labels: a
                                .days
                                .iter()
                                .map(|d| d.day.format("%m-%d").to_string())
                                .collect(),
                            values: a.days.iter().map(|d| d.peak_events_per_sec).collect(),
                        }
                    }
                };
                sections.push(section);
            }
        }
    }
    Ok(Report {
        report_type: report_type.to_string(),
        title: def.title.clone(),
        period_start: period.start,
        period_end: period.end,
        previous_start: previous.start,
        generated_at: now,
        sections,
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

fn label(subject: &str) -> String {
    if subject.is_empty() {
        "(none)".to_string()
    } else {
        subject.to_string()
    }
}

fn change(now: Option<f64>, before: Option<f64>) -> Cell {
    match (now, before) {
        (Some(n), Some(b)) if b != 0.0 => Cell::num((n - b) * 100.0 / b.abs(), 1),
        _ => Cell::Empty,
    }
}

fn kpis(title: String, current: &[Row], before: &[Row]) -> Result<Section, Error> {
    let (mut c, mut b) = (Totals::of(current)?, Totals::of(before)?);
    let (cu, bu) = (c.users(), b.users());
    let int = |v: i64| (Cell::Int(v), Some(v as f64));
    let num = |v: Option<f64>, d: usize| {
        let v = v.map(|v| round(v, d as u32));
        (Cell::opt(v, d), v)
    };
    let rating = |v: Option<f64>| {
        let v = v.map(|v| round(v, 2));
        (Cell::rating(v), v)
    };
    type Figure = (Cell, Option<f64>);
    let rows: Vec<(&str, Figure, Figure)> = vec![
        ("Events", int(c.events), int(b.events)),
        ("Requests", int(c.requests), int(b.requests)),
        (
            "Error rate %",
            num(c.error_rate_pct(), 2),
            num(b.error_rate_pct(), 2),
        ),
        (
            "Latency p50 ms",
            num(c.quantile(0.50), 1),
            num(b.quantile(0.50), 1),
        ),
        (
            "Latency p95 ms",
            num(c.quantile(0.95), 1),
            num(b.quantile(0.95), 1),
        ),
        (
            "Latency p99 ms",
            num(c.quantile(0.99), 1),
            num(b.quantile(0.99), 1),
        ),
        (
            "Latency avg ms",
            num(c.latency_avg(), 1),
            num(b.latency_avg(), 1),
        ),
        ("Prompt tokens", int(c.prompt), int(b.prompt)),
        ("Completion tokens", int(c.completion), int(b.completion)),
        ("Cost USD", num(Some(c.cost), 4), num(Some(b.cost), 4)),
        (
            "Satisfaction (avg rating)",
            rating(c.rating_avg()),
            rating(b.rating_avg()),
        ),
        ("Distinct users", int(cu), int(bu)),
        ("Error events", int(c.error_events), int(b.error_events)),
    ];
    Ok(Section::Table {
        title,
        columns: ["Metric", "This period", "Previous", "Change %"]
            .map(String::from)
            .to_vec(),
        rows: rows
            .into_iter()
            .map(|(name, (cc, cv), (bc, bv))| vec![Cell::Text(name.into()), cc, bc, change(cv, bv)])
            .collect(),
    })
}

fn by_model(title: String, current: &[Row]) -> Result<Section, Error> {
    let mut groups: BTreeMap<&str, (Vec<&Row>, Vec<&Row>)> = BTreeMap::new();
    for r in current {
        match r.event_type.as_str() {
            "llm_request" => groups.entry(&r.subject).or_default().0.push(r),
            "user_feedback" => groups.entry(&r.subject).or_default().1.push(r),
            _ => {}
        }
    }
    let mut rows = Vec::new();
    for (model, (requests, feedback)) in groups {
        let t = Totals::of(requests)?;
        let f = Totals::of(feedback)?;
        rows.push(vec![
            Cell::Text(label(model)),
            Cell::Int(t.requests),
            Cell::opt(t.error_rate_pct(), 2),
            Cell::opt(t.quantile(0.95), 1),
            Cell::Int(t.prompt + t.completion),
            Cell::num(t.cost, 4),
            Cell::rating(f.rating_avg()),
        ]);
    }
    Ok(Section::Table {
        title,
        columns: [
            "Model",
            "Requests",
            "Error rate %",
            "p95 ms",
            "Tokens",
            "Cost USD",
            "Avg rating",
        ]
        .map(String::from)
        .to_vec(),
        rows,
    })
}

fn by_source(title: String, current: &[Row]) -> Result<Section, Error> {
    let mut groups: BTreeMap<&str, Vec<&Row>> = BTreeMap::new();
    for r in current {
        groups.entry(&r.source).or_default().push(r);
    }
    let mut rows = Vec::new();
    for (source, members) in groups {
        let t = Totals::of(members)?;
        rows.push(vec![
            Cell::Text(label(source)),
            Cell::Int(t.events),
            Cell::Int(t.requests),
            Cell::Int(t.request_errors),
            Cell::opt(t.error_rate_pct(), 2),
            Cell::Int(t.error_events),
            Cell::num(t.cost, 4),
        ]);
    }
    Ok(Section::Table {
        title,
        columns: [
            "Source",
            "Events",
            "Requests",
            "Failed",
            "Error rate %",
            "Error events",
            "Cost USD",
        ]
        .map(String::from)
        .to_vec(),
        rows,
    })
}

/// Error events per error type, most frequent first.
fn error_types(current: &[Row]) -> Vec<(String, f64)> {
    let mut by: BTreeMap<&str, i64> = BTreeMap::new();
    for r in current.iter().filter(|r| r.event_type == "error_event") {
        *by.entry(&r.subject).or_default() += r.event_count;
    }
    let mut out: Vec<(String, f64)> = by.into_iter().map(|(k, v)| (label(k), v as f64)).collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out
}

fn errors_by_type(title: String, current: &[Row]) -> Section {
    let types = error_types(current);
    let total: f64 = types.iter().map(|(_, n)| n).sum();
    Section::Table {
        title,
        columns: ["Error type", "Events", "Share %"]
            .map(String::from)
            .to_vec(),
        rows: types
            .into_iter()
            .map(|(t, n)| {
                vec![
                    Cell::Text(t),
                    Cell::Int(n as i64),
                    Cell::num(if total > 0.0 { n * 100.0 / total } else { 0.0 }, 1),
                ]
            })
            .collect(),
    }
}

fn series_chart(
    title: String,
    metric: Metric,
    series: Grain,
    period: Interval,
    points: &[Row],
) -> Result<Section, Error> {
    let mut labels = Vec::new();
    let mut values = Vec::new();
    for start in series.starts(period.start, period.end) {
        let t = Totals::of(
            points
                .iter()
                .filter(|r| r.bucket_start == start && r.event_type == "llm_request"),
        )?;
        labels.push(match series {
            Grain::Hour => start.format("%Hh").to_string(),
            _ => start.format("%m-%d").to_string(),
        });
        values.push(match metric {
            Metric::P95Latency => round(t.quantile(0.95).unwrap_or(0.0), 1),
            _ => t.requests as f64,
        });
    }
    Ok(Section::Chart {
        title,
        style: ChartStyle::Line,
        labels,
        values,
    })
}

fn capacity_tables(title: String, a: &capacity::Analysis) -> Vec<Section> {
    let forecast = match &a.forecast {
        capacity::Forecast::Reached { day } => format!("reached on {day}"),
        capacity::Forecast::Projected { day, days_from_now } => {
            format!("{day} ({days_from_now} days from now)")
        }
        capacity::Forecast::NotGrowing => "not growing: capacity not reached at this trend".into(),
        capacity::Forecast::InsufficientData => "not enough data (fewer than 2 days)".into(),
    };
    let trend = a.trend.as_ref();
    let summary = Section::Table {
        title: title.clone(),
        columns: ["Measure", "Value"].map(String::from).to_vec(),
        rows: vec![
            vec![
                Cell::Text("Window".into()),
                Cell::Text(format!("{} to {}", a.from, a.to)),
            ],
            vec![
                Cell::Text("Capacity events/s".into()),
                Cell::num(a.capacity_events_per_sec, 1),
            ],
            vec![
                Cell::Text("Highest daily peak events/s".into()),
                Cell::num(a.peak_events_per_sec, 3),
            ],
            vec![
                Cell::Text("Peak utilization %".into()),
                Cell::num(a.peak_utilization_pct, 2),
            ],
            vec![
                Cell::Text("Trend events/s per day".into()),
                Cell::opt(trend.map(|t| t.slope_per_day), 4),
            ],
            vec![
                Cell::Text("Trend R2".into()),
                Cell::opt(trend.map(|t| t.r_squared), 4),
            ],
            vec![Cell::Text("Capacity reached".into()), Cell::Text(forecast)],
        ],
    };
    let days = Section::Table {
        title: format!("{title}: daily load"),
        columns: [
            "Day",
            "Events",
            "Peak events/s",
            "p95 events/s",
            "Avg events/s",
        ]
        .map(String::from)
        .to_vec(),
        rows: a
            .days
            .iter()
            .map(|d| {
                vec![
                    Cell::Text(d.day.to_string()),
                    Cell::Int(d.events),
                    Cell::num(d.peak_events_per_sec, 3),
                    Cell::num(d.p95_events_per_sec, 3),
                    Cell::num(d.avg_events_per_sec, 3),
                ]
            })
            .collect(),
    };
    vec![summary, days]
}

/// The report in `format`.
pub fn render(report: &Report, format: Format) -> Result<Vec<u8>, Error> {
    match format {
        Format::Pdf => pdf::render(report),
        Format::Json => serde_json::to_vec_pretty(report).map_err(|e| Error::Render(e.to_string())),
        Format::Csv => Ok(csv(report).into_bytes()),
    }
}

/// One line per number: section, row, column, value.
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
                ..
            } => {
                for (l, v) in labels.iter().zip(values) {
                    line(title, l, "value", &v.to_string());
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
}

pub const RECORD_COLUMNS: &str =
    "id, report_type, period_start, period_end, format, status, path, \
     size, sha256, error, created_at, finished_at";

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
    let def = definition::load(&config.reports.definitions_dir, report_type)?;
    let period = period(&def, period_start, now);
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
        let report = build(config, pool, report_type, &def, period, now).await?;
        let bytes = render(&report, format)?;
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
        ))
    }
    .await;
    match outcome {
        Ok((name, size, sha)) => Ok(sqlx::query_as(&format!(
            "UPDATE reports SET status = 'done', path = $2, size = $3, sha256 = $4, finished_at = now()
             WHERE id = $1 RETURNING {RECORD_COLUMNS}"
        ))
        .bind(id)
        .bind(name)
        .bind(size)
        .bind(sha)
        .fetch_one(pool)
        .await?),
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
    }
}
