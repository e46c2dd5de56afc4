//! The platform's dashboards: business and performance figures of a day,
//! week or month (built by the reports' own code from the rollups, so they
//! are the report's numbers), and the live figures over 1, 5 and 15
//! minutes, redrawn from the WebSocket (or server-sent events) as they
//! change.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Html;
use axum::Extension;
use chrono::Utc;
use maud::{html, Markup};
use serde::Deserialize;

use super::pages::query;
use super::view::{na, page_refreshed, Section};
use super::{Session, UiError, UiResult};
use crate::interval::Grain;
use crate::reports::definition::{Definition, Metric, SectionDef, SectionKind};
use crate::reports::{Cell, Report, Section as Part};
use crate::web::ApiState;

/// The dashboards, for the sub-menu.
pub const PAGES: [(&str, &str); 3] = [
    ("/ui/dashboards/business", "Business"),
    ("/ui/dashboards/performance", "Performance"),
    ("/ui/dashboards/live", "Live"),
];

/// Business and performance pages reload this often (seconds).
const REFRESH_SECS: u32 = 5;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeriodParams {
    /// `day`, `week` or `month`.
    period: Option<String>,
    /// A day in the period (default: the one under way).
    start: Option<String>,
}

fn section(kind: SectionKind, title: &str, metric: Option<Metric>) -> SectionDef {
    SectionDef {
        kind,
        title: title.to_string(),
        metric,
    }
}

/// The period asked for, and the definition the page is built from.
fn definition(p: &PeriodParams, business: bool) -> UiResult<Definition> {
    let period = match p.period.as_deref().unwrap_or("week") {
        "day" => Grain::Day,
        "week" => Grain::Week,
        "month" => Grain::Month,
        _ => {
            return Err(UiError::new(
                StatusCode::BAD_REQUEST,
                "period must be day, week or month",
            ))
        }
    };
    let series = if period == Grain::Day {
        Grain::Hour
    } else {
        Grain::Day
    };
    let sections = if business {
        let mut s = vec![
            section(SectionKind::BusinessKpis, "Business KPIs", None),
            section(SectionKind::Chart, "Revenue (USD)", Some(Metric::Revenue)),
            section(SectionKind::Chart, "Requests", Some(Metric::Requests)),
            section(SectionKind::CostByModel, "LLM cost by model", None),
        ];
        if period == Grain::Month {
            s.insert(1, section(SectionKind::BusinessWeekly, "Per week", None));
        }
        s
    } else {
        vec![
            section(SectionKind::Kpis, "Operations", None),
            section(
                SectionKind::Chart,
                "p95 latency (ms)",
                Some(Metric::P95Latency),
            ),
            section(SectionKind::ByModel, "Per model", None),
            section(
                SectionKind::Availability,
                "Availability and error budget",
                None,
            ),
            section(
                SectionKind::Chart,
                "Error events by type",
                Some(Metric::ErrorsByType),
            ),
        ]
    };
    Ok(Definition {
        title: if business { "Business" } else { "Performance" }.to_string(),
        period,
        series,
        sections,
    })
}

async fn build(
    state: &ApiState,
    p: &PeriodParams,
    business: bool,
) -> UiResult<(Definition, Report)> {
    let def = definition(p, business)?;
    let now = Utc::now();
    let start = match p.start.as_deref().filter(|s| !s.is_empty()) {
        None => Some(now),
        Some(s) => Some(
            crate::time::parse_instant(s)
                .map_err(|e| UiError::new(StatusCode::BAD_REQUEST, format!("start: {e}")))?,
        ),
    };
    let resolved =
        crate::reports::period(&def, start, now).map_err(crate::ops::reports::refusal)?;
    let kind = if business {
        "business_dashboard"
    } else {
        "performance_dashboard"
    };
    let report = crate::reports::build(
        &state.ops.config,
        &state.ops.pools.data,
        kind,
        &def,
        &resolved,
        now,
    )
    .await
    .map_err(crate::ops::reports::refusal)?;
    Ok((def, report))
}

/// `GET /ui/dashboards/business?period=&start=`: revenue, signups,
/// upgrades, cost, margin, requests and users of a day, week or month,
/// against the period before.
pub async fn business(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
    params: Result<Query<PeriodParams>, QueryRejection>,
) -> UiResult<Html<String>> {
    let p = query(params)?;
    let (def, report) = build(&state, &p, true).await?;
    Ok(page_refreshed(
        "Business",
        Section::Dashboards,
        &session,
        Some(REFRESH_SECS),
        body(&def, &report, "/ui/dashboards/business"),
    ))
}

/// `GET /ui/dashboards/performance?period=&start=`: latency percentiles,
/// error rate, tokens and cost per model, availability.
pub async fn performance(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
    params: Result<Query<PeriodParams>, QueryRejection>,
) -> UiResult<Html<String>> {
    let p = query(params)?;
    let (def, report) = build(&state, &p, false).await?;
    Ok(page_refreshed(
        "Performance",
        Section::Dashboards,
        &session,
        Some(REFRESH_SECS),
        body(&def, &report, "/ui/dashboards/performance"),
    ))
}

fn body(def: &Definition, report: &Report, action: &str) -> Markup {
    html! {
        form.filters method="get" action=(action) {
            label { "Period " select name="period" {
                @for g in ["day", "week", "month"] {
                    option value=(g) selected[def.period.as_str() == g] { (g) }
                }
            } }
            label { "Containing " input type="date" name="start" value=(report.period_start.format("%Y-%m-%d")); }
            button type="submit" { "Show" }
        }
        div.report-head.small.muted {
            @for line in report.header_lines() { div { (line) } }
        }
        @for part in &report.sections { (render(part)) }
    }
}

fn cell(c: &Cell) -> Markup {
    match c {
        Cell::Empty => na(),
        Cell::Int(_) | Cell::Num(..) | Cell::Rating(_) => html! { (c) },
        Cell::Text(t) => html! { (t) },
    }
}

fn numeric(c: &Cell) -> bool {
    matches!(c, Cell::Int(_) | Cell::Num(..) | Cell::Rating(_))
}

/// One section of a report as a table or an SVG chart.
fn render(part: &Part) -> Markup {
    match part {
        Part::Table {
            title,
            columns,
            rows,
        } => html! {
            h2 { (title) }
            @if rows.is_empty() {
                p.muted { "n/a (no data in the period)" }
            } @else {
                table.dashboard data-title=(title) {
                    thead { tr { @for c in columns { th { (c) } } } }
                    tbody {
                        @for row in rows {
                            tr { @for c in row { td.num[numeric(c)] { (cell(c)) } } }
                        }
                    }
                }
            }
        },
        Part::Chart {
            title,
            labels,
            values,
            ..
        } => chart(title, labels, values),
    }
}

/// A bar per label; a missing value is a gap (never 0).
fn chart(title: &str, labels: &[String], values: &[Option<f64>]) -> Markup {
    const W: f64 = 900.0;
    const H: f64 = 200.0;
    const PAD: f64 = 56.0;
    let max = values.iter().flatten().fold(0.0_f64, |a, b| a.max(*b));
    let top = if max > 0.0 { max * 1.1 } else { 1.0 };
    let n = values.len().max(1) as f64;
    let slot = (W - 2.0 * PAD) / n;
    html! {
        h2 { (title) }
        svg.chart.dashboard xmlns="http://www.w3.org/2000/svg" role="img" aria-label=(title)
            width=(W) height=(H) viewBox={ "0 0 " (W) " " (H) } data-title=(title) {
            line.axis x1=(PAD) y1=(H - PAD) x2=(W - PAD) y2=(H - PAD) {}
            text.tick x=(PAD - 4.0) y=(PAD) text-anchor="end" { (figure(top)) }
            text.tick x=(PAD - 4.0) y=(H - PAD) text-anchor="end" { "0" }
            @for (i, v) in values.iter().enumerate() {
                @let x = PAD + i as f64 * slot;
                @if let Some(v) = v {
                    @let h = v / top * (H - 2.0 * PAD);
                    rect.bar x=(x + slot * 0.15) y=(H - PAD - h) width=(slot * 0.7) height=(h) {
                        title { (labels.get(i).map_or("", String::as_str)) ": " (figure(*v)) }
                    }
                }
            }
            @if let (Some(first), Some(last)) = (labels.first(), labels.last()) {
                text.tick x=(PAD) y=(H - PAD + 16.0) { (first) }
                text.tick x=(W - PAD) y=(H - PAD + 16.0) text-anchor="end" { (last) }
            }
        }
    }
}

/// A figure with thousands grouped: two decimals below 100.
fn figure(v: f64) -> String {
    let text = if v.abs() < 100.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.0}")
    };
    crate::reports::grouped(&text)
}

/// `GET /ui/dashboards/live`: the live figures over 1, 5 and 15 minutes,
/// overall and per model, redrawn as each snapshot arrives.
pub async fn live(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
) -> UiResult<Html<String>> {
    let available = state.live.as_ref().map(|l| l.available());
    let fields = [
        ("events_per_sec", "events/s"),
        ("requests", "requests"),
        ("error_rate", "error rate"),
        ("latency_p50_ms", "p50 latency"),
        ("latency_p95_ms", "p95 latency"),
        ("latency_p99_ms", "p99 latency"),
        ("tokens_per_sec", "tokens/s"),
        ("cost_per_sec", "cost/s (USD)"),
        ("avg_rating", "average rating"),
    ];
    let body = html! {
        @match &available {
            None => p.notice { "Live stats are off (live_stats.enabled = false)." },
            Some(Err(why)) => p.notice { "No live figures yet: " (why) },
            Some(Ok(())) => {},
        }
        p.muted.small {
            "Redrawn as the figures change (WebSocket "
            code { "/stats/ws" } ", or server-sent events from " code { "/stats/stream" }
            "). Last snapshot: " span #live-updated { "n/a" } " · via " span #live-transport { "n/a" }
        }
        table #live.dashboard data-stream="/stats/stream" data-socket="/stats/ws" {
            thead { tr { th {} th { "1 minute" } th { "5 minutes" } th { "15 minutes" } } }
            tbody {
                @for (field, label) in fields {
                    tr {
                        th { (label) }
                        @for w in ["1m", "5m", "15m"] {
                            td.num data-live={ (w) "." (field) } { (na()) }
                        }
                    }
                }
            }
        }
        h2 { "Per model, last 5 minutes" }
        table #live-models.dashboard {
            thead { tr { th { "Model" } th { "requests" } th { "error rate" } th { "p95 latency" } th { "tokens/s" } th { "cost/s (USD)" } } }
            tbody { tr { td colspan="6" { (na()) } } }
        }
    };
    Ok(page_refreshed(
        "Live",
        Section::Dashboards,
        &session,
        None,
        body,
    ))
}
