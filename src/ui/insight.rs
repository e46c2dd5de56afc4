//! Rollups, capacity and retention: the data hxjobs keeps, as tables and
//! charts (SVG drawn on the server: sizes are attributes, no script).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Html;
use axum::Extension;
use chrono::{DateTime, Utc};
use maud::{html, Markup};
use serde::Deserialize;

use super::view::{self, na, page, time, Section};
use super::{Session, UiError, UiResult};
use crate::capacity::Forecast;
use crate::rollup::read::RollupFilter;
use crate::web::ApiState;

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 220.0;
const PAD: f64 = 40.0;

/// One line of a chart: its class (colour) and points (x from 0 to 1).
struct Line<'a> {
    class: &'a str,
    points: Vec<(f64, f64)>,
    dashed: bool,
}

/// A line chart with the y axis from 0 to the largest value; `labels`: the
/// first and last x labels.
fn chart(lines: &[Line<'_>], labels: (&str, &str), unit: &str) -> Markup {
    let max = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .fold(0.0_f64, f64::max);
    let top = if max > 0.0 { max * 1.1 } else { 1.0 };
    let x = |v: f64| PAD + v * (WIDTH - 2.0 * PAD);
    let y = |v: f64| HEIGHT - PAD + -(v / top) * (HEIGHT - 2.0 * PAD);
    html! {
        svg.chart width=(WIDTH) height=(HEIGHT) viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img" {
            line.axis x1=(PAD) y1=(HEIGHT - PAD) x2=(WIDTH - PAD) y2=(HEIGHT - PAD) {}
            line.axis x1=(PAD) y1=(PAD) x2=(PAD) y2=(HEIGHT - PAD) {}
            text.tick x=(PAD - 4.0) y=(PAD + 4.0) text-anchor="end" { (format!("{:.0}", top)) }
            text.tick x=(PAD - 4.0) y=(HEIGHT - PAD) text-anchor="end" { "0" }
            text.tick x=(PAD) y=(HEIGHT - PAD + 16.0) { (labels.0) }
            text.tick x=(WIDTH - PAD) y=(HEIGHT - PAD + 16.0) text-anchor="end" { (labels.1) }
            text.tick x=(PAD + 4.0) y=(PAD - 8.0) { (unit) }
            @for l in lines {
                @let pts: Vec<String> = l.points.iter().map(|(a, b)| format!("{:.1},{:.1}", x(*a), y(*b))).collect();
                polyline class={ "series " (l.class) @if l.dashed { " dashed" } } points=(pts.join(" ")) {}
            }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct RollupQuery {
    grain: Option<String>,
    from: Option<String>,
    to: Option<String>,
    event_type: Option<String>,
    source: Option<String>,
    subject: Option<String>,
}

/// Rollup rows by grain, period, event type, source and subject, with the
/// events per bucket drawn.
pub async fn rollups(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
    q: Result<Query<RollupQuery>, QueryRejection>,
) -> UiResult<Html<String>> {
    let q = super::pages::query(q)?;
    let grain = q
        .grain
        .as_deref()
        .filter(|g| !g.is_empty())
        .unwrap_or("hour");
    if !matches!(grain, "hour" | "day" | "week" | "month") {
        return Err(UiError::new(
            StatusCode::BAD_REQUEST,
            "grain must be hour, day, week or month",
        ));
    }
    let opt = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let to = opt(&q.to)
        .map(|t| super::trigger::instant("to", &t))
        .transpose()?;
    let from = opt(&q.from)
        .map(|t| super::trigger::instant("from", &t))
        .transpose()?;
    let (from, to) = crate::ops::data::range(grain, from, to);
    let (event_type, source, subject) = (opt(&q.event_type), opt(&q.source), opt(&q.subject));
    const LIMIT: i64 = 2000;
    let filter = RollupFilter {
        grain,
        from,
        to,
        event_type: event_type.as_deref(),
        source: source.as_deref(),
        subject: subject.as_deref(),
        limit: LIMIT,
        sketches: false,
    };
    let rows = state.ops.rollups(session.reader()?, &filter).await?;
    // Events per bucket, every row of the bucket summed.
    let mut buckets: Vec<(DateTime<Utc>, i64)> = Vec::new();
    for r in &rows {
        match buckets.last_mut() {
            Some((b, n)) if *b == r.bucket_start => *n += r.event_count,
            _ => buckets.push((r.bucket_start, r.event_count)),
        }
    }
    let span = (to - from).num_seconds().max(1) as f64;
    let points: Vec<(f64, f64)> = buckets
        .iter()
        .map(|(b, n)| {
            (
                ((*b - from).num_seconds() as f64 / span).clamp(0.0, 1.0),
                *n as f64,
            )
        })
        .collect();
    let v = |o: &Option<String>| o.clone().unwrap_or_default();
    let body = html! {
        form.filters method="get" action="/ui/rollups" {
            label { "Grain " select name="grain" {
                @for g in ["hour", "day", "week", "month"] { option value=(g) selected[g == grain] { (g) } }
            } }
            label { "From " input type="text" name="from" value=(v(&q.from)) placeholder=(from.format("%Y-%m-%d").to_string()); }
            label { "To " input type="text" name="to" value=(v(&q.to)) placeholder="now"; }
            label { "Type " input type="text" name="event_type" value=(v(&event_type)) placeholder="any" size="14"; }
            label { "Source " input type="text" name="source" value=(v(&source)) placeholder="any" size="10"; }
            label { "Subject " input type="text" name="subject" value=(v(&subject)) placeholder="any (model, service…)" size="16"; }
            button type="submit" { "Show" }
        }
        @if rows.is_empty() {
            p.muted { "No rollup rows in this range (has the aggregate job run for it?)." }
        } @else {
            h2 { "Events per " (grain) }
            (chart(&[Line { class: "events", points, dashed: false }],
                   (&from.format("%Y-%m-%d %H:%M").to_string(), &to.format("%Y-%m-%d %H:%M").to_string()), "events"))
            h2 { (rows.len()) " rows" @if rows.len() as i64 == LIMIT { " (the first " (LIMIT) "; narrow the filters)" } }
            table.rollups {
                thead { tr { th { "Bucket" } th { "Type" } th { "Source" } th { "Subject" } th { "Events" } th { "Errors" } th { "p50 ms" } th { "p95 ms" } th { "Tokens" } th { "Cost USD" } th { "Rating" } th { "Users" } } }
                tbody {
                    @for r in &rows {
                        tr {
                            td { (time(r.bucket_start)) }
                            td { (r.event_type) } td { (r.source) } td { (r.subject) }
                            td.num { (r.event_count) } td.num { (r.error_count) }
                            td.num { (opt_num(r.latency_p50_ms, 0)) } td.num { (opt_num(r.latency_p95_ms, 0)) }
                            td.num { (r.prompt_tokens + r.completion_tokens) }
                            td.num { (format!("{:.4}", r.cost_usd)) }
                            td.num { (opt_num(r.rating_avg, 2)) }
                            td.num { (r.distinct_users) }
                        }
                    }
                }
            }
        }
    };
    Ok(page("Rollups", Section::Data, &session, body))
}

fn opt_num(v: Option<f64>, digits: usize) -> Markup {
    match v {
        Some(x) => html! { (format!("{x:.digits$}")) },
        None => na(),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct CapacityQuery {
    to: Option<String>,
}

/// Daily peak and average load against capacity, the trend and when it
/// reaches capacity.
pub async fn capacity(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
    q: Result<Query<CapacityQuery>, QueryRejection>,
) -> UiResult<Html<String>> {
    let q = super::pages::query(q)?;
    let to = match q.to.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        Some(t) => Some(
            crate::time::parse_day(t)
                .map_err(|e| UiError::new(StatusCode::BAD_REQUEST, format!("to: {e}")))?,
        ),
        None => None,
    };
    let a = crate::capacity::analyse(
        &state.ops.pools.data,
        &state.ops.config.capacity,
        to,
        Utc::now(),
    )
    .await?;
    let days = a.days.len().max(1);
    // The chart spans the window and, when the trend reaches capacity
    // within a year, up to that day.
    let horizon = match a.forecast {
        Forecast::Projected { days_from_now, .. } if days_from_now <= 365 => {
            days_from_now.max(0) as usize
        }
        _ => 0,
    };
    let total = (days + horizon).max(2) as f64 - 1.0;
    let x = |i: usize| i as f64 / total;
    let peak: Vec<(f64, f64)> = a
        .days
        .iter()
        .enumerate()
        .filter(|(_, d)| d.hours > 0)
        .map(|(i, d)| (x(i), d.peak_events_per_sec))
        .collect();
    let avg: Vec<(f64, f64)> = a
        .days
        .iter()
        .enumerate()
        .filter(|(_, d)| d.hours > 0)
        .map(|(i, d)| (x(i), d.avg_events_per_sec))
        .collect();
    let cap = vec![
        (0.0, a.capacity_events_per_sec),
        (1.0, a.capacity_events_per_sec),
    ];
    let mut lines = vec![
        Line {
            class: "peak",
            points: peak,
            dashed: false,
        },
        Line {
            class: "avg",
            points: avg,
            dashed: false,
        },
        Line {
            class: "capacity",
            points: cap,
            dashed: true,
        },
    ];
    if let Some(t) = &a.trend {
        let last = days - 1;
        let end = last + horizon;
        let at = |i: usize| t.fitted_last + t.slope_per_day * (i as f64 - last as f64);
        lines.push(Line {
            class: "trend",
            points: vec![(x(0), at(0).max(0.0)), (x(end), at(end).max(0.0))],
            dashed: true,
        });
    }
    let last_label = (a.to + chrono::Duration::days(horizon as i64))
        .format("%Y-%m-%d")
        .to_string();
    let body = html! {
        p.lead {
            (a.from.format("%Y-%m-%d")) " to " (a.to.format("%Y-%m-%d")) " (exclusive), capacity "
            (format!("{:.0}", a.capacity_events_per_sec)) " events/s. "
            @match a.peak_events_per_sec { Some(p) => { "Highest daily peak " (format!("{p:.1}")) " events/s" }, None => "No hourly rollups in the window" }
            @if let Some(u) = a.peak_utilization_pct { " (" (format!("{u:.1}")) " % of capacity)" }
            ". "
            strong id="forecast" {
                @match &a.forecast {
                    Forecast::Reached { day } => { "Capacity reached on " (day.format("%Y-%m-%d")) "." }
                    Forecast::Projected { day, days_from_now } => { "At this trend, capacity is reached on " (day.format("%Y-%m-%d")) " (in " (days_from_now) " days)." }
                    Forecast::NotGrowing => "The trend is flat or falling: capacity is not reached at this rate.",
                    Forecast::InsufficientData => "Not enough days with rollups for a forecast (n/a).",
                }
            }
        }
        (chart(&lines, (&a.from.format("%Y-%m-%d").to_string(), &last_label), "events/s"))
        p.legend { span.key.peak {} " daily peak " span.key.avg {} " daily average " span.key.capacity {} " capacity " span.key.trend {} " trend of the peaks" }
        table {
            thead { tr { th { "Day" } th { "Events" } th { "Hours with data" } th { "Peak events/s" } th { "Average events/s" } } }
            tbody {
                @for d in a.days.iter().rev() {
                    tr {
                        td { (d.day.format("%Y-%m-%d")) }
                        @if d.hours == 0 { td.num { (na()) } td.num { "0" } td.num { (na()) } td.num { (na()) } }
                        @else {
                            td.num { (d.events) } td.num { (d.hours) }
                            td.num { (format!("{:.2}", d.peak_events_per_sec)) } td.num { (format!("{:.2}", d.avg_events_per_sec)) }
                        }
                    }
                }
            }
        }
    };
    Ok(page("Capacity", Section::Data, &session, body))
}

/// What retention would do now (its dry run), and the archived days.
pub async fn retention(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
) -> UiResult<Html<String>> {
    let plan = state.ops.retention_plan(session.reader()?).await?;
    let archives = crate::retention::archives(&state.ops.pools.data, 200).await?;
    let body = html! {
        p.lead { "A dry run: nothing below has been removed. The " code { "hxp_retention" } " job (or " code { "hxjobs retention" } ") archives and removes it." }
        h2 { "Raw event days to archive and drop" }
        @if plan.event_days.is_empty() {
            p.muted { "None: every stored day is within its retention." }
        } @else {
            table { thead { tr { th { "Day" } th { "Events" } } }
                tbody { @for (d, n) in &plan.event_days { tr { td { (d.format("%Y-%m-%d")) } td.num { (n) } } } } }
        }
        h2 { "Other rows past their retention" }
        table { thead { tr { th { "What" } th { "Older than" } th { "Rows" } } }
            tbody { @for c in &plan.classes { tr { td { (c.name) } td { (time(c.cutoff)) } td.num { (c.rows) } } } } }
        h2 { "Archives" }
        @if archives.is_empty() {
            p.muted { "No day archived yet." }
        } @else {
            table { thead { tr { th { "Day" } th { "Events" } th { "Size" } th { "File" } th { "Archived" } th { "Restored" } } }
                tbody { @for a in &archives { tr {
                    td { (a.day.format("%Y-%m-%d")) } td.num { (a.rows) } td.num { (a.bytes) " B" }
                    td { code { (a.path) } } td { (time(a.archived_at)) } td { (view::time_or_na(a.restored_at)) }
                } } } }
        }
    };
    Ok(page("Retention", Section::Data, &session, body))
}

#[derive(Debug, Default, Deserialize)]
pub struct AuditQuery {
    actor: Option<String>,
    outcome: Option<String>,
    before: Option<i64>,
}

/// The audit log: logins, refusals and every change, newest first (admins).
pub async fn audit(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> UiResult<Html<String>> {
    let q = super::pages::query(q)?;
    const PAGE: i64 = 100;
    let opt = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let filter = crate::ledger::audit::Filter {
        actor: opt(&q.actor),
        outcome: opt(&q.outcome),
        before: q.before,
        limit: PAGE,
        ..Default::default()
    };
    let rows = state.ops.audit_log(session.reader()?, &filter).await?;
    let next = (rows.len() as i64 == PAGE)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    let body = html! {
        form.filters method="get" action="/ui/audit" {
            label { "Who " input type="text" name="actor" value=(q.actor.as_deref().unwrap_or("")) placeholder="api:ci, ui:alice"; }
            label { "Outcome " select name="outcome" {
                option value="" { "any" }
                @for o in ["ok", "refused", "failed"] {
                    option value=(o) selected[q.outcome.as_deref() == Some(o)] { (o) }
                }
            } }
            button type="submit" { "Show" }
        }
        @if rows.is_empty() {
            p.muted { "Nothing recorded." }
        } @else {
            table.audit {
                thead { tr { th { "When" } th { "Who" } th { "Role" } th { "By" } th { "From" } th { "Did" } th { "On" } th { "Outcome" } th { "Detail" } } }
                tbody { @for r in &rows { tr {
                    td { (time(r.at)) } td { (r.actor) } td { (or_na(r.role.as_deref())) } td { (r.means) }
                    td { (or_na(r.client.as_deref())) } td { (r.action) } td { (or_na(r.target.as_deref())) }
                    td { span class={ "badge " (r.outcome) } { (r.outcome) } }
                    td { @if let Some(d) = &r.detail { code { (d.get("message").and_then(|m| m.as_str()).unwrap_or("")) } } }
                } } }
            }
            @if let Some(before) = next {
                p { a href={ "/ui/audit?before=" (before) } { "Older" } }
            }
        }
    };
    Ok(page("Audit log", Section::Data, &session, body))
}

fn or_na(v: Option<&str>) -> Markup {
    match v {
        Some(v) => html! { (v) },
        None => na(),
    }
}
