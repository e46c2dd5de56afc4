//! What happened over many runs: every job's runs in one list, a job's
//! calendar of intervals by state, and its task durations and landing
//! times over its latest runs (SVG drawn here).

use std::collections::BTreeMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Html;
use axum::Extension;
use chrono::{Datelike, NaiveDate, TimeDelta, Utc};
use maud::{html, Markup};
use serde::Deserialize;

use super::pages::query;
use super::view::{self, na, page, segment, state_badge, time_or_na, Section};
use super::{Session, UiResult};
use crate::ledger::{self, RunState};
use crate::web::ApiState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunsParams {
    job: Option<String>,
    state: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<i64>,
}

/// `GET /ui/runs`: runs of every job, newest first, filtered.
pub async fn runs(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
    params: Result<Query<RunsParams>, QueryRejection>,
) -> UiResult<Html<String>> {
    let p = query(params)?;
    let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    let from = super::pages::day_or_instant("from", p.from.as_deref().unwrap_or(""))?;
    let to = super::pages::day_or_instant("to", p.to.as_deref().unwrap_or(""))?;
    let limit = p.limit.unwrap_or(100);
    if ![50, 100, 500, 1000].contains(&limit) {
        return Err(super::UiError::new(
            StatusCode::BAD_REQUEST,
            "runs per page must be 50, 100, 500 or 1000",
        ));
    }
    let run_state = super::pages::state_param(p.state.as_deref())?;
    let filter = ledger::RunFilter {
        job: nonempty(&p.job),
        state: run_state,
        from,
        to,
        limit,
    };
    let runs = ledger::runs(&state.ops.pools.data, &filter).await?;
    let jobs = state.ops.jobs.current();
    let body = html! {
        form.filters method="get" action="/ui/runs" {
            label { "Job " select name="job" {
                option value="" { "any" }
                @for j in jobs.iter() {
                    option value=(j.name) selected[filter.job.as_deref() == Some(j.name.as_str())] { (j.name) }
                }
            } }
            label { "State " select name="state" {
                option value="" { "any" }
                @for s in RunState::ALL.iter().copied() {
                    option value=(s.as_str()) selected[run_state == Some(s)] { (s.as_str()) }
                }
            } }
            label { "Intervals from " input type="date" name="from" value=(p.from.as_deref().unwrap_or("")); }
            label { "to " input type="date" name="to" value=(p.to.as_deref().unwrap_or("")); }
            label { "Runs " select name="limit" {
                @for n in [50, 100, 500, 1000] { option value=(n) selected[n == limit] { (n) } }
            } }
            button type="submit" { "Show" }
        }
        @if runs.is_empty() {
            p.muted { "No runs match." }
        } @else {
            table.runs {
                thead { tr { th { "Run" } th { "Job" } th { "Interval" } th { "State" } th { "Type" } th { "Started" } th { "Duration" } th { "Version" } } }
                tbody {
                    @for r in &runs {
                        tr data-run=(r.id) {
                            td { a href={ "/ui/runs/" (r.id) } { (r.id) } }
                            td { a href={ "/ui/jobs/" (segment(&r.job)) } { (r.job) } }
                            td { (view::interval(r.interval_start, r.interval_end)) }
                            td { (state_badge(r.state.as_str())) }
                            td { (r.run_type.as_str()) }
                            td { (time_or_na(r.started_at)) }
                            td.num { @match r.duration_secs { Some(d) => (view::duration(d)), None => (na()) } }
                            td { @match &r.job_version { Some(v) => code { (v) }, None => (na()) } }
                        }
                    }
                }
            }
        }
    };
    Ok(page("Runs", Section::Jobs, &session, body))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalendarParams {
    year: Option<i32>,
}

/// `GET /ui/jobs/{job}/calendar?year=`: a year of the job's intervals, a
/// cell per day coloured by its runs' states (the latest run of each
/// interval): failed if one failed, running or queued if one is, success
/// if all succeeded.
pub async fn calendar(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
    params: Result<Query<CalendarParams>, QueryRejection>,
) -> UiResult<Html<String>> {
    let job = state.ops.job(&name)?;
    let p = query(params)?;
    let year = p.year.unwrap_or_else(|| Utc::now().year());
    if !(1970..=9999).contains(&year) {
        return Err(super::UiError::new(
            StatusCode::BAD_REQUEST,
            "year must be 1970 to 9999",
        ));
    }
    let first = NaiveDate::from_ymd_opt(year, 1, 1).unwrap_or_default();
    let next = NaiveDate::from_ymd_opt(year + 1, 1, 1).unwrap_or_default();
    let at = |d: NaiveDate| d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
    let days =
        ledger::console::calendar(&state.ops.pools.data, &job.name, at(first), at(next)).await?;
    let by_day: BTreeMap<NaiveDate, &ledger::console::Day> =
        days.iter().map(|d| (d.day, d)).collect();
    // Weeks as columns (Monday first), days as rows.
    let offset = first.weekday().num_days_from_monday() as i64;
    let cell = 13i64;
    let base = format!("/ui/jobs/{}", segment(&job.name));
    let total: i64 = days
        .iter()
        .map(|d| d.success + d.failed + d.running + d.queued + d.cancelled)
        .sum();
    let body = html! {
        p.lead { a href=(base) { "← runs" } " · intervals starting each day (UTC), the latest run of each" }
        p.buttons {
            a.button href={ (base) "/calendar?year=" (year - 1) } { "← " (year - 1) }
            a.button href={ (base) "/calendar?year=" (year + 1) } { (year + 1) " →" }
        }
        p { (total) " intervals with runs in " (year) }
        svg.calendar xmlns="http://www.w3.org/2000/svg" role="img" aria-label={ "Calendar of " (job.name) " in " (year) }
            width=(54 * cell + 40) height=(7 * cell + 24) {
            @for (i, label) in ["Mon", "Wed", "Fri"].iter().enumerate() {
                text.tick x="0" y=(20 + (i as i64 * 2 + 1) * cell) { (label) }
            }
            @for n in 0..(next - first).num_days() {
                @let d = first + TimeDelta::days(n);
                @let slot = n + offset;
                @let (x, y) = (32 + (slot / 7) * cell, 12 + (slot % 7) * cell);
                @if d.day() == 1 {
                    text.tick x=(x) y="9" { (d.format("%b")) }
                }
                @let (class, what) = match by_day.get(&d) {
                    None => ("none".to_string(), "no runs".to_string()),
                    Some(day) => (day_state(day).to_string(), format!(
                        "{} succeeded, {} failed, {} running, {} queued, {} cancelled",
                        day.success, day.failed, day.running, day.queued, day.cancelled)),
                };
                rect class={ "day s-" (class) } data-day=(d.format("%Y-%m-%d")) x=(x) y=(y)
                    width=(cell - 2) height=(cell - 2) rx="2" {
                    title { (d.format("%Y-%m-%d")) " · " (what) }
                }
            }
        }
    };
    Ok(page(
        &format!("{} · calendar", job.name),
        Section::Jobs,
        &session,
        body,
    ))
}

/// A day's colour: the worst state among its intervals' latest runs.
fn day_state(d: &ledger::console::Day) -> &'static str {
    if d.failed > 0 {
        "failed"
    } else if d.running > 0 {
        "running"
    } else if d.queued > 0 {
        "queued"
    } else if d.cancelled > 0 && d.success == 0 {
        "cancelled"
    } else {
        "success"
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DurationParams {
    runs: Option<i64>,
}

const W: f64 = 900.0;
const H: f64 = 220.0;
const PAD: f64 = 80.0;

/// `GET /ui/jobs/{job}/durations?runs=N`: each task's duration and the
/// run's landing time (from its interval's end to its success) over its
/// latest N runs.
pub async fn durations(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
    params: Result<Query<DurationParams>, QueryRejection>,
) -> UiResult<Html<String>> {
    let job = state.ops.job(&name)?;
    let p = query(params)?;
    let n = p.runs.unwrap_or(50);
    if ![25, 50, 100, 500, 1000].contains(&n) {
        return Err(super::UiError::new(
            StatusCode::BAD_REQUEST,
            "runs must be 25, 50, 100, 500 or 1000",
        ));
    }
    let runs = ledger::console::timed(&state.ops.pools.data, &job.name, n).await?;
    let base = format!("/ui/jobs/{}", segment(&job.name));
    // Per task, its duration in seconds per run (None: did not run).
    let series: Vec<(String, Vec<Option<f64>>)> = job
        .tasks
        .iter()
        .map(|t| {
            let points = runs
                .iter()
                .map(|r| {
                    r.tasks
                        .iter()
                        .position(|x| *x == t.id)
                        .and_then(|i| r.durations_ms.get(i).copied())
                        .filter(|ms| *ms >= 0)
                        .map(|ms| ms as f64 / 1000.0)
                })
                .collect();
            (t.id.clone(), points)
        })
        .collect();
    let landing: Vec<Option<f64>> = runs
        .iter()
        .map(|r| match (r.state, r.finished_at) {
            (RunState::Success, Some(f)) => {
                Some((f - r.interval_end).num_milliseconds() as f64 / 1000.0)
            }
            _ => None,
        })
        .collect();
    let labels = (
        runs.first()
            .map(|r| r.interval_start.format("%Y-%m-%d %H:%M UTC").to_string())
            .unwrap_or_default(),
        runs.last()
            .map(|r| r.interval_start.format("%Y-%m-%d %H:%M UTC").to_string())
            .unwrap_or_default(),
    );
    let body = html! {
        p.lead { a href=(base) { "← runs" } " · the latest runs by interval, oldest left" }
        form.filters method="get" action={ (base) "/durations" } {
            label { "Runs " select name="runs" {
                @for k in [25, 50, 100, 500, 1000] { option value=(k) selected[k == n] { (k) } }
            } }
            button type="submit" { "Show" }
        }
        @if runs.is_empty() {
            p.muted { "No runs yet." }
        } @else {
            h2 { "Task duration" }
            (line_chart(&series, &labels))
            p.legend {
                @for (i, (task, _)) in series.iter().enumerate() {
                    span { span class={ "key k" (i % 6) } {} " " (task) }
                }
            }
            h2 { "Landing time" }
            p.muted.small { "From the interval's end to the run's success; n/a for runs that did not succeed." }
            (line_chart(&[("landing".to_string(), landing)], &labels))
        }
    };
    Ok(page(
        &format!("{} · durations", job.name),
        Section::Jobs,
        &session,
        body,
    ))
}

/// Lines of seconds over runs (x: the run's place); a missing value breaks
/// its line.
fn line_chart(series: &[(String, Vec<Option<f64>>)], labels: &(String, String)) -> Markup {
    let max = series
        .iter()
        .flat_map(|(_, v)| v.iter().flatten())
        .fold(0.0_f64, |a, b| a.max(*b));
    let top = if max > 0.0 { max * 1.1 } else { 1.0 };
    let count = series.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
    let x = |i: usize| {
        if count <= 1 {
            W / 2.0
        } else {
            PAD + i as f64 / (count - 1) as f64 * (W - 2.0 * PAD)
        }
    };
    let y = |v: f64| H - PAD - v / top * (H - 2.0 * PAD);
    html! {
        svg.chart.durations xmlns="http://www.w3.org/2000/svg" role="img" width=(W) height=(H) viewBox={ "0 0 " (W) " " (H) } {
            line.axis x1=(PAD) y1=(H - PAD) x2=(W - PAD) y2=(H - PAD) {}
            line.axis x1=(PAD) y1=(PAD) x2=(PAD) y2=(H - PAD) {}
            text.tick x=(PAD - 4.0) y=(PAD + 4.0) text-anchor="end" { (view::duration(top)) }
            text.tick x=(PAD - 4.0) y=(H - PAD) text-anchor="end" { "0" }
            text.tick x=(PAD) y=(H - PAD + 16.0) { (labels.0) }
            text.tick x=(W - PAD) y=(H - PAD + 16.0) text-anchor="end" { (labels.1) }
            @for (k, (name, values)) in series.iter().enumerate() {
                @for run in segments(values) {
                    @let pts: Vec<String> = run.iter().map(|(i, v)| format!("{:.1},{:.1}", x(*i), y(*v))).collect();
                    @if pts.len() == 1 {
                        circle class={ "dot k" (k % 6) } cx=(x(run[0].0)) cy=(y(run[0].1)) r="2.5" data-series=(name) {}
                    } @else {
                        polyline class={ "series k" (k % 6) } points=(pts.join(" ")) data-series=(name) {}
                    }
                }
            }
        }
    }
}

/// The unbroken runs of values, with their places.
fn segments(values: &[Option<f64>]) -> Vec<Vec<(usize, f64)>> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    for (i, v) in values.iter().enumerate() {
        match v {
            Some(v) => current.push((i, *v)),
            None if !current.is_empty() => out.push(std::mem::take(&mut current)),
            None => {}
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}
