//! Each section kind of a definition, computed from the rows a report read.
//! A figure without data is `Cell::Empty` ("n/a"), never 0.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Utc};

use super::data::{Row, Totals};
use super::definition::Metric;
use super::{Cell, ChartStyle, Error, Section};
use crate::interval::{Grain, Interval};
use crate::rollup::complete::Bucket;
use crate::{capacity, round};

/// What the sections of one report read.
pub struct Inputs<'a> {
    pub grain: Grain,
    pub period: Interval,
    pub current: &'a [Row],
    pub previous: &'a [Row],
    pub series_grain: Grain,
    /// Rows of the series grain inside the period, and its buckets up to now.
    pub series: &'a [Row],
    pub series_buckets: &'a [Bucket],
    pub slo_pct: f64,
    /// A period still under way: its comparison covers whole hours up to
    /// `through`, against the same span at the start of the previous
    /// period (hourly rows of both), not the whole previous period.
    pub to_date: Option<ToDate<'a>>,
    /// Now: a series bucket that has not ended is drawn as partial.
    pub now: DateTime<Utc>,
}

/// The like-for-like comparison of a period still under way.
pub struct ToDate<'a> {
    /// The end of the last whole hour compared.
    pub through: DateTime<Utc>,
    /// The same span in the previous period: its start and end.
    pub previous: Interval,
    pub current_rows: &'a [Row],
    pub previous_rows: &'a [Row],
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

/// The comparison columns, named for the period: "WoW %" for a week.
fn comparison_columns(grain: Grain, to_date: bool) -> Vec<String> {
    let (this, prev, delta, unit) = match grain {
        Grain::Day => ("This day", "Previous day", "DoD %", "Day"),
        Grain::Week => ("This week", "Previous week", "WoW %", "Week"),
        Grain::Month => ("This month", "Previous month", "MoM %", "Month"),
        _ => ("This period", "Previous period", "Change %", "Period"),
    };
    if to_date {
        // Like for like: the same elapsed span of each (the header line
        // names both spans).
        return [
            "Metric".to_string(),
            format!("{unit} to date"),
            "Same span before".to_string(),
            format!("{delta} to date"),
        ]
        .to_vec();
    }
    ["Metric", this, prev, delta].map(String::from).to_vec()
}

/// A figure as a cell and the number a change is computed from.
type Figure = (Cell, Option<f64>);

#[derive(Clone, Copy)]
enum Kind {
    Int,
    Num(usize),
    Rating,
}

fn figure(v: Option<f64>, kind: Kind) -> Figure {
    let cell = match (v, kind) {
        (Some(v), Kind::Int) => Cell::Int(v.round() as i64),
        (v, Kind::Num(d)) => Cell::opt(v, d),
        (v, Kind::Rating) => Cell::rating(v),
        (None, Kind::Int) => Cell::Empty,
    };
    let value = match (&cell, kind) {
        (Cell::Empty, _) => None,
        (_, Kind::Num(d)) => v.map(|v| round(v, d as u32)),
        _ => v,
    };
    (cell, value)
}

/// A table of measures for this and the previous period, with the change.
fn comparison(
    title: String,
    i: &Inputs,
    measures: Vec<(&str, Kind, Option<f64>, Option<f64>)>,
) -> Section {
    Section::Table {
        title,
        columns: comparison_columns(i.grain, i.to_date.is_some()),
        rows: measures
            .into_iter()
            .map(|(name, kind, now, before)| {
                let (nc, nv) = figure(now, kind);
                let (bc, bv) = figure(before, kind);
                vec![Cell::Text(name.into()), nc, bc, change(nv, bv)]
            })
            .collect(),
    }
}

/// Totals of both periods (to date, for a period under way), `None` for a
/// period without data.
fn both(i: &Inputs) -> Result<(Option<Totals>, Option<Totals>), Error> {
    let (current, previous) = match &i.to_date {
        Some(t) => (t.current_rows, t.previous_rows),
        None => (i.current, i.previous),
    };
    let c = Totals::of(current)?;
    let b = Totals::of(previous)?;
    Ok((c.has_data().then_some(c), b.has_data().then_some(b)))
}

fn get<T>(t: &mut Option<Totals>, f: impl FnOnce(&mut Totals) -> Option<T>) -> Option<T> {
    t.as_mut().and_then(f)
}

fn int(v: i64) -> Option<f64> {
    Some(v as f64)
}

pub fn kpis(title: String, i: &Inputs) -> Result<Section, Error> {
    let (mut c, mut b) = both(i)?;
    let mut m = Vec::new();
    let mut row = |name, kind, f: &dyn Fn(&mut Totals) -> Option<f64>| {
        m.push((name, kind, get(&mut c, f), get(&mut b, f)));
    };
    row("Events", Kind::Int, &|t| int(t.events));
    row("Requests", Kind::Int, &|t| int(t.requests));
    row("Error rate %", Kind::Num(2), &|t| t.error_rate_pct());
    row("Latency p50 ms", Kind::Num(1), &|t| t.quantile(0.50));
    row("Latency p95 ms", Kind::Num(1), &|t| t.quantile(0.95));
    row("Latency p99 ms", Kind::Num(1), &|t| t.quantile(0.99));
    row("Latency avg ms", Kind::Num(1), &|t| t.latency_avg());
    row("Prompt tokens", Kind::Int, &|t| int(t.prompt));
    row("Completion tokens", Kind::Int, &|t| int(t.completion));
    row("Cost USD", Kind::Num(4), &|t| Some(t.cost));
    row("Satisfaction (avg rating)", Kind::Rating, &|t| {
        t.rating_avg()
    });
    row("Distinct users", Kind::Int, &|t| int(t.users()));
    row("Error events", Kind::Int, &|t| int(t.error_events));
    Ok(comparison(title, i, m))
}

/// Business KPIs of the period against the previous one (docs/measures.md).
pub fn business_kpis(title: String, i: &Inputs) -> Result<Section, Error> {
    let (mut c, mut b) = both(i)?;
    let mut m = Vec::new();
    let mut row = |name, kind, f: &dyn Fn(&mut Totals) -> Option<f64>| {
        m.push((name, kind, get(&mut c, f), get(&mut b, f)));
    };
    row("Revenue USD", Kind::Num(2), &|t| Some(t.revenue));
    row("Signups", Kind::Int, &|t| int(t.signups));
    row("Upgrades", Kind::Int, &|t| int(t.upgrades));
    row("LLM cost USD", Kind::Num(2), &|t| Some(t.cost));
    row("Gross margin USD", Kind::Num(2), &|t| {
        Some(t.revenue - t.cost)
    });
    row("Cost per 1,000 requests USD", Kind::Num(4), &|t| {
        t.cost_per_1k_requests()
    });
    row("Requests", Kind::Int, &|t| int(t.requests));
    row("Distinct users", Kind::Int, &|t| int(t.users()));
    row("Satisfaction (avg rating)", Kind::Rating, &|t| {
        t.rating_avg()
    });
    row("Low ratings (<= 3) %", Kind::Num(2), &|t| {
        t.low_rating_pct()
    });
    row("Availability %", Kind::Num(3), &|t| t.availability_pct());
    Ok(comparison(title, i, m))
}

/// ISO weeks overlapping the period, each cut to the period.
fn weeks_in(period: Interval) -> Vec<Interval> {
    Grain::Week
        .starts(Grain::Week.floor(period.start), period.end)
        .into_iter()
        .map(|w| Interval {
            start: w.max(period.start),
            end: Grain::Week.next(w).min(period.end),
        })
        .collect()
}

/// Per week of the period (cut at its edges): revenue, signups, upgrades,
/// requests and distinct users, from the series rows.
pub fn business_weekly(title: String, i: &Inputs) -> Result<Section, Error> {
    let mut rows = Vec::new();
    for w in weeks_in(i.period) {
        let buckets: Vec<&Bucket> = i
            .series_buckets
            .iter()
            .filter(|b| b.start >= w.start && b.start < w.end)
            .collect();
        if buckets.is_empty() {
            continue; // not begun yet
        }
        let mut t = Totals::of(
            i.series
                .iter()
                .filter(|r| r.bucket_start >= w.start && r.bucket_start < w.end),
        )?;
        let iso = w.start.iso_week();
        let name = format!(
            "W{:02} {}..{}",
            iso.week(),
            w.start.format("%m-%d"),
            (w.end - chrono::TimeDelta::days(1)).format("%m-%d")
        );
        let with_data = buckets.iter().filter(|b| b.has_data()).count();
        let days = format!("{with_data} of {}", buckets.len());
        if !t.has_data() {
            rows.push(vec![
                Cell::Text(name),
                Cell::Text(days),
                Cell::Empty,
                Cell::Empty,
                Cell::Empty,
                Cell::Empty,
                Cell::Empty,
            ]);
            continue;
        }
        let users = t.users();
        rows.push(vec![
            Cell::Text(name),
            Cell::Text(days),
            Cell::num(t.revenue, 2),
            Cell::Int(t.signups),
            Cell::Int(t.upgrades),
            Cell::Int(t.requests),
            Cell::Int(users),
        ]);
    }
    Ok(Section::Table {
        title,
        columns: [
            "Week",
            "Days with data",
            "Revenue USD",
            "Signups",
            "Upgrades",
            "Requests",
            "Distinct users",
        ]
        .map(String::from)
        .to_vec(),
        rows,
    })
}

/// llm_request and user_feedback rows by model.
fn by_model_rows(current: &[Row]) -> BTreeMap<&str, (Vec<&Row>, Vec<&Row>)> {
    let mut groups: BTreeMap<&str, (Vec<&Row>, Vec<&Row>)> = BTreeMap::new();
    for r in current {
        match r.event_type.as_str() {
            "llm_request" => groups.entry(&r.subject).or_default().0.push(r),
            "user_feedback" => groups.entry(&r.subject).or_default().1.push(r),
            _ => {}
        }
    }
    groups
}

pub fn by_model(title: String, current: &[Row]) -> Result<Section, Error> {
    let mut rows = Vec::new();
    for (model, (requests, feedback)) in by_model_rows(current) {
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

/// LLM cost per model, per 1,000 requests, and its share of the cost.
pub fn cost_by_model(title: String, current: &[Row]) -> Result<Section, Error> {
    let total = Totals::of(current.iter().filter(|r| r.event_type == "llm_request"))?;
    let mut rows = Vec::new();
    for (model, (requests, _)) in by_model_rows(current) {
        if requests.is_empty() {
            continue;
        }
        let t = Totals::of(requests)?;
        rows.push(vec![
            Cell::Text(label(model)),
            Cell::Int(t.requests),
            Cell::num(t.cost, 2),
            Cell::opt(t.cost_per_1k_requests(), 4),
            Cell::opt((total.cost > 0.0).then(|| t.cost * 100.0 / total.cost), 1),
        ]);
    }
    if total.has_data() {
        rows.push(vec![
            Cell::Text("All models".into()),
            Cell::Int(total.requests),
            Cell::num(total.cost, 2),
            Cell::opt(total.cost_per_1k_requests(), 4),
            Cell::opt((total.cost > 0.0).then_some(100.0), 1),
        ]);
    }
    Ok(Section::Table {
        title,
        columns: [
            "Model",
            "Requests",
            "Cost USD",
            "Per 1k req. USD",
            "Share of cost %",
        ]
        .map(String::from)
        .to_vec(),
        rows,
    })
}

/// Satisfaction per model: ratings, average and the share of low ratings.
pub fn satisfaction(title: String, current: &[Row]) -> Result<Section, Error> {
    let mut rows = Vec::new();
    let mut all = Totals::default();
    for (model, (_, feedback)) in by_model_rows(current) {
        if feedback.is_empty() {
            continue;
        }
        let t = Totals::of(feedback.iter().copied())?;
        for r in feedback {
            all.add(r)?;
        }
        rows.push(vec![
            Cell::Text(label(model)),
            Cell::Int(t.rating_count),
            Cell::rating(t.rating_avg()),
            Cell::opt(t.low_rating_pct(), 2),
        ]);
    }
    if all.has_data() {
        rows.push(vec![
            Cell::Text("All models".into()),
            Cell::Int(all.rating_count),
            Cell::rating(all.rating_avg()),
            Cell::opt(all.low_rating_pct(), 2),
        ]);
    }
    Ok(Section::Table {
        title,
        columns: ["Model", "Ratings", "Avg rating", "Low ratings (<= 3) %"]
            .map(String::from)
            .to_vec(),
        rows,
    })
}

/// Availability (1 − error rate) against the objective, and how much of
/// the error budget the failed requests spent.
pub fn availability(title: String, i: &Inputs) -> Result<Section, Error> {
    let t = Totals::of(i.current)?;
    let has = t.requests > 0;
    let allowed = t.requests as f64 * (100.0 - i.slo_pct) / 100.0;
    let spent = (has && allowed > 0.0).then(|| t.request_errors as f64 * 100.0 / allowed);
    let status = match (t.availability_pct(), spent) {
        (Some(a), _) if a >= i.slo_pct => "met",
        (Some(_), _) => "missed",
        (None, _) => "n/a",
    };
    let text = |s: &str| Cell::Text(s.to_string());
    Ok(Section::Table {
        title,
        columns: ["Measure", "Value"].map(String::from).to_vec(),
        rows: vec![
            vec![text("Objective (SLO) %"), Cell::num(i.slo_pct, 3)],
            vec![text("Availability %"), Cell::opt(t.availability_pct(), 3)],
            vec![
                text("Requests"),
                if has {
                    Cell::Int(t.requests)
                } else {
                    Cell::Empty
                },
            ],
            vec![
                text("Failed requests"),
                if has {
                    Cell::Int(t.request_errors)
                } else {
                    Cell::Empty
                },
            ],
            vec![
                text("Error budget (failures allowed)"),
                Cell::opt(has.then_some(allowed), 1),
            ],
            vec![text("Error budget spent %"), Cell::opt(spent, 1)],
            vec![text("Objective"), text(status)],
        ],
    })
}

/// The five sources with the most requests and with the most failed requests.
pub fn top_sources(title: String, current: &[Row]) -> Result<Vec<Section>, Error> {
    let mut groups: BTreeMap<&str, Vec<&Row>> = BTreeMap::new();
    for r in current.iter().filter(|r| r.event_type == "llm_request") {
        groups.entry(&r.source).or_default().push(r);
    }
    let mut totals = Vec::new();
    for (source, members) in groups {
        totals.push((source, Totals::of(members)?));
    }
    let all_requests: i64 = totals.iter().map(|(_, t)| t.requests).sum();
    let all_failed: i64 = totals.iter().map(|(_, t)| t.request_errors).sum();
    let share = |n: i64, of: i64| Cell::opt((of > 0).then(|| n as f64 * 100.0 / of as f64), 1);

    totals.sort_by(|a, b| b.1.requests.cmp(&a.1.requests).then(a.0.cmp(b.0)));
    let by_requests = Section::Table {
        title: format!("{title}: by requests"),
        columns: ["Source", "Requests", "Share %", "Error rate %"]
            .map(String::from)
            .to_vec(),
        rows: totals
            .iter()
            .take(5)
            .map(|(s, t)| {
                vec![
                    Cell::Text(label(s)),
                    Cell::Int(t.requests),
                    share(t.requests, all_requests),
                    Cell::opt(t.error_rate_pct(), 2),
                ]
            })
            .collect(),
    };
    totals.sort_by(|a, b| {
        b.1.request_errors
            .cmp(&a.1.request_errors)
            .then(a.0.cmp(b.0))
    });
    let by_errors = Section::Table {
        title: format!("{title}: by failed requests"),
        columns: ["Source", "Failed", "Share %", "Error rate %"]
            .map(String::from)
            .to_vec(),
        rows: totals
            .iter()
            .filter(|(_, t)| t.request_errors > 0)
            .take(5)
            .map(|(s, t)| {
                vec![
                    Cell::Text(label(s)),
                    Cell::Int(t.request_errors),
                    share(t.request_errors, all_failed),
                    Cell::opt(t.error_rate_pct(), 2),
                ]
            })
            .collect(),
    };
    Ok(vec![by_requests, by_errors])
}

pub fn by_source(title: String, current: &[Row]) -> Result<Section, Error> {
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

pub fn errors_by_type(title: String, current: &[Row]) -> Section {
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
                    Cell::opt((total > 0.0).then(|| n * 100.0 / total), 1),
                ]
            })
            .collect(),
    }
}

/// A bar per category of the period.
pub fn category_chart(title: String, metric: Metric, current: &[Row]) -> Section {
    let (labels, values): (Vec<String>, Vec<Option<f64>>) = match metric {
        Metric::CostByModel => {
            let mut by: BTreeMap<&str, f64> = BTreeMap::new();
            for r in current.iter().filter(|r| r.event_type == "llm_request") {
                *by.entry(r.subject.as_str()).or_default() += r.cost_usd;
            }
            by.into_iter()
                .map(|(k, v)| (label(k), Some(round(v, 4))))
                .unzip()
        }
        _ => error_types(current)
            .into_iter()
            .map(|(k, v)| (k, Some(v)))
            .unzip(),
    };
    Section::Chart {
        title,
        style: ChartStyle::Bar,
        labels,
        values,
        partial: None,
    }
}

/// One point per series bucket up to now; a bucket without data is a gap.
pub fn series_chart(title: String, metric: Metric, i: &Inputs) -> Result<Section, Error> {
    let mut labels = Vec::new();
    let mut values = Vec::new();
    let mut partial = None;
    for (n, b) in i.series_buckets.iter().enumerate() {
        if i.series_grain.next(b.start) > i.now {
            partial = Some(n);
        }
        let rows = i.series.iter().filter(|r| r.bucket_start == b.start);
        labels.push(match i.series_grain {
            Grain::Hour => b.start.format("%Hh").to_string(),
            _ => b.start.format("%m-%d").to_string(),
        });
        if !b.has_data() {
            values.push(None);
            continue;
        }
        let t = Totals::of(rows)?;
        values.push(match metric {
            Metric::P95Latency => t.quantile(0.95).map(|v| round(v, 1)),
            Metric::Revenue => Some(round(t.revenue, 2)),
            _ => Some(t.requests as f64),
        });
    }
    Ok(Section::Chart {
        title,
        style: match metric {
            Metric::Revenue => ChartStyle::Bar,
            _ => ChartStyle::Line,
        },
        labels,
        values,
        partial,
    })
}

/// The capacity analysis as a chart of daily peaks.
pub fn peak_chart(title: String, a: &capacity::Analysis) -> Section {
    Section::Chart {
        title,
        style: ChartStyle::Line,
        labels: a
            .days
            .iter()
            .map(|d| d.day.format("%m-%d").to_string())
            .collect(),
        values: a.days.iter().map(|d| Some(d.peak_events_per_sec)).collect(),
        partial: None,
    }
}

/// A `DateTime` the way report headers show it.
pub fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M").to_string()
}

pub fn capacity_tables(title: String, a: &capacity::Analysis) -> Vec<Section> {
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
                Cell::opt(a.peak_events_per_sec, 3),
            ],
            vec![
                Cell::Text("Peak utilization %".into()),
                Cell::opt(a.peak_utilization_pct, 2),
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
