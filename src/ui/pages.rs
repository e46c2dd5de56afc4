//! The console's pages: overview, jobs, a job's grid, a run.

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Html;
use axum::Extension;
use chrono::{DateTime, Utc};
use maud::{html, Markup};
use serde::Deserialize;

use super::view::{self, na, page, segment, state_badge, time, time_or_na, Section};
use super::{Session, UiError, UiResult};
use crate::dag::Job;
use crate::ledger::{self, console::GridQuery, RunState};
use crate::web::ApiState;

/// A query string's fields, or a page saying what is wrong with them.
pub(super) fn query<T>(q: Result<Query<T>, QueryRejection>) -> UiResult<T> {
    q.map(|Query(t)| t)
        .map_err(|e| UiError::new(StatusCode::BAD_REQUEST, e.body_text()))
}

/// A `state` filter: empty is none, else a run state.
pub(super) fn state_param(v: Option<&str>) -> UiResult<Option<RunState>> {
    match v.filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => RunState::parse(s).map(Some).ok_or_else(|| {
            UiError::new(
                StatusCode::BAD_REQUEST,
                format!("state must be one of {}", RunState::names()),
            )
        }),
    }
}

pub async fn not_found() -> UiError {
    UiError::not_found("There is no console page here.")
}

fn find_job(state: &ApiState, name: &str) -> UiResult<std::sync::Arc<Job>> {
    Ok(state.ops.job(name)?)
}

// ---------------------------------------------------------------- overview

/// Health, ingest lag, the last day's failures, live event rates.
pub async fn overview(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
) -> UiResult<Html<String>> {
    let pool = &state.ops.pools.data;
    let health = state.health.read().await.clone();
    let daemons = ledger::daemons::list(pool).await?;
    let counts: HashMap<RunState, i64> = ledger::console::state_counts(pool)
        .await?
        .into_iter()
        .collect();
    let failed = ledger::console::failed_last_day(pool, 10).await?;
    let late: i64 = ledger::console::late_last_day(pool)
        .await?
        .iter()
        .map(|(_, n)| n)
        .sum();
    let stale = state.ops.config.scheduler.stale_after_secs as f64;
    let lag = crate::metrics::lag_by_topic();
    let live: Option<serde_json::Value> = state
        .live
        .as_ref()
        .filter(|l| l.available().is_ok())
        .and_then(|l| serde_json::from_slice(l.snapshot_json().as_ref()).ok());
    let count = |s: RunState| counts.get(&s).copied().unwrap_or(0);
    let body = html! {
        section.cards {
            div.card {
                h2 { "PostgreSQL" }
                p { (state_badge(health.database.status)) }
                p.muted { (latency(health.database.latency_ms)) }
                @if let Some(d) = &health.database.detail { p.error { (d) } }
            }
            div.card {
                h2 { "Broker" }
                p { (state_badge(health.kafka.status)) }
                p.muted { (latency(health.kafka.latency_ms)) }
                @if let Some(d) = &health.kafka.detail { p.error { (d) } }
            }
            div.card id="storage" {
                h2 { "Storage" }
                p { (state_badge(health.storage.status)) }
                p.muted { (latency(health.storage.latency_ms)) }
                p.muted {
                    @match crate::storage::Store::open(&state.ops.config.storage) {
                        Ok(store) => (store.url()),
                        Err(_) => (state.ops.config.storage.url),
                    }
                }
                @if let Some(d) = &health.storage.detail { p.error { (d) } }
            }
            div.card {
                h2 { "Ingest" }
                @match &health.ingest {
                    Some(i) => {
                        p { (state_badge(i.status)) " " (i.mode_name()) }
                        @if i.stalled() {
                            p.error id="ingest-stalled" {
                                "Not moving while the broker has data: "
                                (i.stalled.join(", "))
                            }
                        }
                    }
                    None => p.muted { "n/a: not checked yet" },
                }
            }
            div.card {
                h2 { "Runs, last 24 h" }
                p {
                    a href="/ui/jobs" { (count(RunState::Running)) " running" } ", "
                    (count(RunState::Queued)) " queued"
                }
                p {
                    span.s-success-text { (count(RunState::Success)) " succeeded" } ", "
                    span.s-failed-text id="failed-24h" { (count(RunState::Failed)) " failed" } ", "
                    span id="late-24h" { (late) " late" }
                }
            }
        }
        h2 { "Daemons" }
        @if daemons.is_empty() {
            p.muted { "No daemon has run against this database in the last day." }
        } @else {
            table {
                thead { tr { th { "Daemon" } th { "State" } th { "Last heartbeat" } th { "Started" } th { "Jobs" } th { "Running runs" } th { "Version" } } }
                tbody {
                    @for d in &daemons {
                        @let alive = d.stopped_at.is_none() && d.age_secs <= stale;
                        tr {
                            td { code { (d.worker) } }
                            td {
                                @if d.stopped_at.is_some() { (state_badge("stopped")) }
                                @else if alive { (state_badge("alive")) }
                                @else { (state_badge("lost")) }
                            }
                            td { (time(d.heartbeat_at)) " (" (view::duration(d.age_secs)) " ago)" }
                            td { (time(d.started_at)) }
                            td.num { (d.jobs) }
                            td.num { (d.running_runs) }
                            td { (d.version) }
                        }
                    }
                }
            }
        }
        h2 { "Ingest lag" }
        @if lag.is_empty() {
            p.muted { "n/a: no ingest position stored yet, or the broker not reached." }
        } @else {
            table {
                thead { tr { th { "Topic" } th { "Messages behind" } th { "Measured" } } }
                tbody {
                    @for (topic, (behind, at)) in &lag {
                        tr { td { code { (topic) } } td.num { (behind) } td { (time(*at)) } }
                    }
                }
            }
        }
        h2 { "Live events" }
        @match &live {
            None => p.muted { "n/a: live stats are off in this process (live_stats.enabled)." },
            Some(snapshot) => {
                table id="live" data-stream="/stats/stream" {
                    thead { tr { th { "Window" } th { "Events/s" } th { "p95 latency" } th { "Error rate" } } }
                    tbody {
                        @for w in ["1m", "5m", "15m"] {
                            @let s = &snapshot["total"][w];
                            tr {
                                td { (w) }
                                td.num data-live=(format!("{w}.events_per_sec")) { (number(&s["events_per_sec"], 2, "")) }
                                td.num data-live=(format!("{w}.latency_p95_ms")) { (number(&s["latency_p95_ms"], 0, " ms")) }
                                td.num data-live=(format!("{w}.error_rate")) { (percent(&s["error_rate"])) }
                            }
                        }
                    }
                }
                p.muted { "Updated every second from " code { "/stats/stream" } "." }
            }
        }
        h2 { "Failed in the last 24 h" }
        @if failed.is_empty() {
            p.muted { "None." }
        } @else {
            table {
                thead { tr { th { "Run" } th { "Job" } th { "Interval start" } th { "Error" } } }
                tbody {
                    @for (id, job, start, error) in &failed {
                        tr {
                            td { a href={ "/ui/runs/" (id) } { (id) } }
                            td { a href={ "/ui/jobs/" (segment(job)) } { (job) } }
                            td { (time(*start)) }
                            td.error { (error.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
        }
    };
    Ok(view::page_refreshed(
        "Overview",
        Section::Overview,
        &session,
        Some(30),
        body,
    ))
}

fn latency(ms: Option<f64>) -> Markup {
    match ms {
        Some(ms) => html! { (format!("{ms:.1} ms")) " to answer" },
        None => na(),
    }
}

/// A JSON number with `digits` decimals and a unit; "n/a" for null.
fn number(v: &serde_json::Value, digits: usize, unit: &str) -> String {
    match v.as_f64() {
        Some(x) => format!("{x:.digits$}{unit}"),
        None => "n/a".into(),
    }
}

fn percent(v: &serde_json::Value) -> String {
    match v.as_f64() {
        Some(x) => format!("{:.2} %", x * 100.0),
        None => "n/a".into(),
    }
}

// -------------------------------------------------------------------- jobs

/// Every job: schedule, next run, paused, its last 25 runs, deadline.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsParams {
    /// Part of the job's name or description.
    q: Option<String>,
    /// The state of its latest run.
    state: Option<String>,
    /// "yes" or "no".
    paused: Option<String>,
    /// "yes": an interval late in the last day.
    late: Option<String>,
}

pub async fn jobs(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
    params: Result<Query<JobsParams>, QueryRejection>,
) -> UiResult<Html<String>> {
    let f = query(params)?;
    let wanted_state = state_param(f.state.as_deref())?;
    let yes_no = |field: &str, v: &Option<String>| match v.as_deref().unwrap_or("") {
        "" => Ok(None),
        "yes" => Ok(Some(true)),
        "no" => Ok(Some(false)),
        _ => Err(UiError::new(
            StatusCode::BAD_REQUEST,
            format!("{field} must be yes or no"),
        )),
    };
    let wanted_paused = yes_no("paused", &f.paused)?;
    let wanted_late = yes_no("late", &f.late)?;
    let needle = f.q.as_deref().unwrap_or("").trim().to_lowercase();
    let pool = &state.ops.pools.data;
    let set = state.ops.jobs.current();
    let names: Vec<String> = set.iter().map(|j| j.name.clone()).collect();
    let loaded_by =
        ledger::daemons::job_versions(pool, state.ops.config.scheduler.stale_after_secs).await?;
    let paused = ledger::controls::paused_jobs(pool).await?;
    let latest: HashMap<String, ledger::console::LatestRuns> =
        ledger::console::latest_runs(pool, &names, 25)
            .await?
            .into_iter()
            .map(|l| (l.job.clone(), l))
            .collect();
    let late: HashMap<String, i64> = ledger::console::late_last_day(pool)
        .await?
        .into_iter()
        .collect();
    let now = Utc::now();
    let waiting = crate::dag::trigger::waiting_on(&state.ops.config, pool, &set.jobs, now).await?;
    let shown: Vec<&std::sync::Arc<Job>> = set
        .iter()
        .filter(|j| {
            needle.is_empty()
                || j.name.to_lowercase().contains(&needle)
                || j.description.to_lowercase().contains(&needle)
        })
        .filter(|j| {
            wanted_state.is_none_or(|w| {
                latest
                    .get(&j.name)
                    .and_then(|l| l.states.first())
                    .is_some_and(|s| s == w.as_str())
            })
        })
        .filter(|j| wanted_paused.is_none_or(|w| paused.contains(&j.name) == w))
        .filter(|j| wanted_late.is_none_or(|w| (late.get(&j.name).copied().unwrap_or(0) > 0) == w))
        .collect();
    let choice = |v: &Option<String>, want: &str| v.as_deref() == Some(want);
    let body = html! {
        @if !set.errors.is_empty() {
            div.notice.error {
                p { "Job files that did not load:" }
                ul { @for f in set.errors.iter() { li { code { (f) } } } }
            }
        }
        p.buttons { a.button href="/ui/runs" { "All runs" } a.button href="/ui/pools" { "Pools" } }
        form.filters method="get" action="/ui/jobs" {
            label { "Find " input type="text" name="q" value=(f.q.as_deref().unwrap_or("")) placeholder="name or description"; }
            label { "Last run " select name="state" {
                option value="" { "any" }
                @for s in RunState::ALL.iter().copied() {
                    option value=(s.as_str()) selected[wanted_state == Some(s)] { (s.as_str()) }
                }
            } }
            label { "Paused " select name="paused" {
                option value="" { "any" }
                option value="yes" selected[choice(&f.paused, "yes")] { "yes" }
                option value="no" selected[choice(&f.paused, "no")] { "no" }
            } }
            label { "Late in 24 h " select name="late" {
                option value="" { "any" }
                option value="yes" selected[choice(&f.late, "yes")] { "yes" }
                option value="no" selected[choice(&f.late, "no")] { "no" }
            } }
            button type="submit" { "Show" }
            span.muted { (shown.len()) " of " (set.jobs.len()) " jobs" }
        }
        table.jobs {
            thead { tr { th { "Job" } th { "Version" } th { "Schedule" } th { "Next run" } th { "Last 25 runs" } th { "Deadline" } th { "Paused" } th {} } }
            tbody {
                @for job in &shown {
                    @let is_paused = paused.contains(&job.name);
                    tr data-job=(job.name) {
                        td {
                            a href={ "/ui/jobs/" (segment(&job.name)) } { (job.name) }
                            @if !job.description.is_empty() { div.muted { (job.description) } }
                        }
                        td.version {
                            code { (job.version) }
                            @if let Some(at) = set.since.get(&job.name) { div.muted { "since " (time(*at)) } }
                            @let daemons: Vec<&ledger::daemons::JobVersion> = loaded_by.iter().filter(|v| v.job == job.name).collect();
                            @if daemons.is_empty() {
                                div.muted { "no live daemon has it loaded" }
                            } @else {
                                @for d in daemons {
                                    div.muted title={ "loaded " (d.loaded_at.format("%Y-%m-%d %H:%M:%S UTC")) } {
                                        code { (d.worker) } " "
                                        @if d.version == job.version { "this version" } @else { "version " code { (d.version) } }
                                    }
                                }
                            }
                        }
                        td {
                            @match (crate::dag::trigger::describe(job), &job.schedule) {
                                (Some(when), None) => { "When " (when) "." }
                                (when, Some(schedule)) => {
                                    @if let Some(when) = when {
                                        div { "When " (when) ", or at the latest:" }
                                    }
                                    (schedule.cron.describe())
                                    div.muted { code { (schedule.text) } " " (job.timezone.name()) }
                                }
                                (None, None) => (na()),
                            }
                        }
                        td {
                            @if let Some(w) = waiting.get(&job.name).filter(|_| !is_paused) {
                                div.waiting { (w) }
                            }
                            @match job.next_fire(now) {
                                Some(fire) if !is_paused => (time(fire)),
                                Some(_) => span.muted { "paused" },
                                None => (na()),
                            }
                        }
                        td {
                            div.squares {
                                @if let Some(l) = latest.get(&job.name) {
                                    @for ((id, st), start) in l.ids.iter().zip(&l.states).zip(&l.starts) {
                                        a class={ "sq s-" (st) } href={ "/ui/runs/" (id) }
                                          title={ (start.format("%Y-%m-%d %H:%M UTC")) " " (st) } {}
                                    }
                                }
                            }
                        }
                        td {
                            @match job.deadline {
                                None => span.muted { "none" },
                                Some(d) => {
                                    (view::duration(d.num_seconds() as f64)) " after the interval"
                                    @let n = late.get(&job.name).copied().unwrap_or(0);
                                    @if n > 0 { div { span.badge.s-late { (n) " late in 24 h" } } }
                                    @else { div.muted { "none late in 24 h" } }
                                }
                            }
                        }
                        td.paused {
                            @let action = if is_paused { "unpause" } else { "pause" };
                            form method="post" action={ "/ui/jobs/" (segment(&job.name)) "/" (action) } {
                                (view::csrf_field(&session))
                                @if is_paused { span.badge.s-paused { "paused" } } @else { span.badge.s-success { "active" } }
                                " "
                                button type="submit" disabled[!session.may_write]
                                    title=(if is_paused { "Let the schedule create runs again" } else { "Stop new runs; running ones finish" }) {
                                    @if is_paused { "Unpause" } @else { "Pause" }
                                }
                            }
                        }
                        td { a.button.trigger href={ "/ui/jobs/" (segment(&job.name)) "/run" } title="Run an interval of this job now" { "Trigger…" } }
                    }
                }
            }
        }
    };
    Ok(page("Jobs", Section::Jobs, &session, body))
}

// -------------------------------------------------------------------- grid

#[derive(Debug, Default, Deserialize)]
pub struct GridParams {
    state: Option<String>,
    from: Option<String>,
    to: Option<String>,
    runs: Option<i64>,
    /// The next page: runs older than `<interval start>_<run id>`.
    before: Option<String>,
}

/// The choices of how many runs a grid page shows.
const PAGE_SIZES: [i64; 4] = [25, 50, 100, 200];

/// A day (`2026-11-23`) or an instant (RFC 3339) from a filter field.
pub(super) fn day_or_instant(field: &str, text: &str) -> UiResult<Option<DateTime<Utc>>> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    crate::time::parse_instant(text)
        .map(Some)
        .map_err(|e| UiError::new(StatusCode::BAD_REQUEST, format!("{field}: {e}")))
}

/// Tasks × runs, newest run first, coloured by state; a cell opens the
/// task's attempt in its run.
pub async fn grid(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
    params: Result<Query<GridParams>, QueryRejection>,
) -> UiResult<Html<String>> {
    let job = find_job(&state, &name)?;
    let p = query(params)?;
    let limit = p.runs.unwrap_or(100);
    if !PAGE_SIZES.contains(&limit) {
        return Err(UiError::new(
            StatusCode::BAD_REQUEST,
            "runs per page must be 25, 50, 100 or 200",
        ));
    }
    let run_state = state_param(p.state.as_deref())?;
    let from = day_or_instant("from", p.from.as_deref().unwrap_or(""))?;
    let to = day_or_instant("to", p.to.as_deref().unwrap_or(""))?;
    let before = match p.before.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(b) => {
            let parsed = b.rsplit_once('_').and_then(|(t, id)| {
                let t = DateTime::parse_from_rfc3339(t).ok()?.with_timezone(&Utc);
                Some((t, id.parse::<i64>().ok()?))
            });
            Some(parsed.ok_or_else(|| {
                UiError::new(StatusCode::BAD_REQUEST, "before is not a page position")
            })?)
        }
    };
    let q = GridQuery {
        job: job.name.clone(),
        state: run_state,
        from,
        to,
        before,
        limit: limit + 1,
    };
    let mut runs = ledger::console::grid(&state.ops.pools.data, &q).await?;
    let more = runs.len() as i64 > limit;
    runs.truncate(limit as usize);
    let paused = ledger::controls::paused_jobs(&state.ops.pools.data)
        .await?
        .contains(&job.name);
    let checked = if job.checks.is_empty() {
        Default::default()
    } else {
        let ids: Vec<i64> = runs.iter().map(|r| r.id).collect();
        ledger::checks::worst_by_run(&state.ops.pools.data, &ids).await?
    };
    // Keeps the filters in the page links.
    let mut filters = format!("runs={limit}");
    for (k, v) in [("state", &p.state), ("from", &p.from), ("to", &p.to)] {
        if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
            filters.push_str(&format!("&{k}={}", view::url_encode(v)));
        }
    }
    let base = format!("/ui/jobs/{}", segment(&job.name));
    // Each column's interval, as precise as the job's interval needs.
    let date_label = match job.interval {
        crate::interval::Grain::Minute | crate::interval::Grain::Hour => "%m-%d %H:%M",
        crate::interval::Grain::Month => "%Y-%m",
        _ => "%Y-%m-%d",
    };
    let body = html! {
        p.lead {
            @if !job.description.is_empty() { (job.description) " · " }
            @if let Some(when) = crate::dag::trigger::describe(&job) {
                "When " (when)
                @if job.schedule.is_some() { ", or at the latest: " }
            }
            @if let Some(schedule) = &job.schedule {
                (schedule.cron.describe()) " (" code { (schedule.text) } ", " (job.timezone.name()) ")"
            }
            @if paused { " · " span.badge.s-paused { "paused" } }
        }
        p.buttons {
            a.button href={ (base) "/run" } { "Run an interval…" }
            a.button href={ (base) "/backfill" } { "Backfill a range…" }
            a.button href={ (base) "/definition" } { "Definition and versions" }
            a.button href={ (base) "/calendar" } { "Calendar" }
            a.button href={ (base) "/durations" } { "Durations" }
        }
        div.graphwrap { (super::shape::task_graph(&job, None)) }
        form.filters method="get" action=(base) {
            label { "State " select name="state" {
                option value="" { "any" }
                @for s in RunState::ALL.iter().copied() {
                    option value=(s.as_str()) selected[run_state == Some(s)] { (s.as_str()) }
                }
            } }
            label { "From " input type="date" name="from" value=(p.from.as_deref().unwrap_or("")); }
            label { "To " input type="date" name="to" value=(p.to.as_deref().unwrap_or("")); }
            label { "Runs " select name="runs" {
                @for n in PAGE_SIZES { option value=(n) selected[n == limit] { (n) } }
            } }
            button type="submit" { "Show" }
        }
        @if runs.is_empty() {
            p.muted { "No runs match." }
        } @else {
            div.gridwrap {
                table.grid {
                    thead {
                        tr.dates {
                            th.corner { "UTC" }
                            @for r in &runs {
                                th.date { span { (r.interval_start.format(date_label)) } }
                            }
                        }
                        tr {
                            th.corner { "task ╲ run" }
                            @for r in &runs {
                                th {
                                    a class={ "sq s-" (r.state.as_str()) } href={ "/ui/runs/" (r.id) }
                                      title={ "run " (r.id) " · " (r.run_type.as_str()) " · " (r.interval_start.format("%Y-%m-%d %H:%M UTC")) " · " (r.state.as_str()) } {}
                                }
                            }
                        }
                    }
                    tbody {
                        @for task in &job.tasks {
                            tr {
                                th.task { (task.id) }
                                @for r in &runs {
                                    @let i = r.tasks.iter().position(|t| *t == task.id);
                                    // No task row yet: the run has not started.
                                    @let idle = if r.state == RunState::Queued { "queued" } else { "none" };
                                    @let st = i.map_or(idle, |i| r.task_states[i].as_str());
                                    @let tries = i.map_or(0, |i| r.task_tries[i]);
                                    td {
                                        a class={ "c s-" (st) } href={ "/ui/runs/" (r.id) "?task=" (view::url_encode(&task.id)) "#log" }
                                          title={ (task.id) " · " (st) " · try " (tries) " · " (r.interval_start.format("%Y-%m-%d %H:%M UTC")) } {}
                                    }
                                }
                            }
                        }
                        @if !job.checks.is_empty() {
                            tr.checks {
                                th.task title="The worst latest outcome of the run's data checks" { "data checks" }
                                @for r in &runs {
                                    @let k = checked.get(&r.id).map_or("none", String::as_str);
                                    td {
                                        a class={ "c k k-" (k) } href={ "/ui/runs/" (r.id) "#checks" }
                                          title={ "data checks · " (k) " · " (r.interval_start.format("%Y-%m-%d %H:%M UTC")) } {}
                                    }
                                }
                            }
                        }
                    }
                }
            }
            p.pager {
                @if before.is_some() { a href={ (base) "?" (filters) } { "← newest" } " " }
                @if more {
                    @if let Some(last) = runs.last() {
                        a href={ (base) "?" (filters) "&before=" (view::url_encode(&format!("{}_{}", last.interval_start.to_rfc3339(), last.id))) } { "older →" }
                    }
                }
            }
        }
        (legend(!job.checks.is_empty()))
    };
    Ok(page(&job.name, Section::Jobs, &session, body))
}

/// The grid's colours; with `checks`, the data checks' outcomes too.
fn legend(checks: bool) -> Markup {
    let states = [
        "success",
        "running",
        "queued",
        "up_for_retry",
        "failed",
        "upstream_failed",
        "skipped",
        "cancelled",
        "none",
    ];
    html! {
        p.legend {
            @for s in states { span { span class={ "sq s-" (s) } {} " " (s) } " " }
        }
        @if checks {
            p.legend {
                "data checks: "
                @for k in ["pass", "warn", "fail", "error", "skipped"] { span { span class={ "c k k-" (k) } {} " " (k) } " " }
            }
        }
    }
}

// --------------------------------------------------------------------- run

#[derive(Debug, Default, Deserialize)]
pub struct RunParams {
    task: Option<String>,
    #[serde(rename = "try")]
    try_number: Option<i64>,
}

/// A run: what it ran, each task's tries with a Gantt bar, a try's log,
/// and the controls.
pub async fn run(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    params: Result<Query<RunParams>, QueryRejection>,
) -> UiResult<Html<String>> {
    let id: i64 = id
        .parse()
        .map_err(|_| UiError::not_found(format!("{id:?} is not a run id")))?;
    let p = query(params)?;
    let pool = &state.ops.pools.data;
    let run = ledger::run(pool, id)
        .await?
        .ok_or_else(|| UiError::not_found(format!("There is no run {id}.")))?;
    let tasks = ledger::tasks(pool, id).await?;
    let attempts = ledger::logs::attempts(pool, id, None).await?;
    let actions = ledger::controls::run_actions(pool, id).await?;
    let checks = ledger::checks::of_run(pool, id).await?;
    let set = state.ops.jobs.current();
    let job = set.find(&run.job);
    // Tasks in the job's order (a task no longer in the job file last).
    let mut ordered = tasks.clone();
    if let Some(job) = job {
        ordered.sort_by_key(|t| {
            job.tasks
                .iter()
                .position(|x| x.id == t.task)
                .unwrap_or(usize::MAX)
        });
    }
    // The log shown: the chosen task's chosen try, else its latest.
    let chosen = p.task.as_deref().and_then(|task| {
        let of_task: Vec<_> = attempts.iter().filter(|a| a.task == task).collect();
        match p.try_number {
            Some(n) => of_task.into_iter().find(|a| a.try_number == n),
            None => of_task.into_iter().last(),
        }
    });
    let log = match chosen {
        Some(a) => {
            let chunks = ledger::logs::chunks(pool, a.id, 0).await?;
            let mut text: String = chunks.into_iter().map(|(_, b)| b).collect();
            text.push_str(&ledger::logs::closing_lines(
                a,
                state.ops.config.logs.max_bytes_per_attempt,
            ));
            Some((a, text))
        }
        None => None,
    };
    // The Gantt chart's scale: from the first task's start to the last end.
    let t0 = tasks.iter().filter_map(|t| t.started_at).min();
    let now = Utc::now();
    let t1 = tasks
        .iter()
        .filter_map(|t| t.finished_at.or(t.started_at.map(|_| now)))
        .max();
    let span = match (t0, t1) {
        (Some(a), Some(b)) => (b - a).num_milliseconds().max(1) as f64,
        _ => 1.0,
    };
    let finished = !matches!(run.state, RunState::Queued | RunState::Running);
    let w = session.may_write;
    let base = format!("/ui/runs/{id}");
    let body = html! {
        dl.facts {
            dt { "Job" } dd { a href={ "/ui/jobs/" (segment(&run.job)) } { (run.job) } }
            dt { "State" } dd { (state_badge(run.state.as_str())) @if run.late { " " span.badge.s-late { "late" } } }
            dt { "Interval" } dd { (view::interval(run.interval_start, run.interval_end)) }
            dt { "Type" } dd { (run.run_type.as_str()) }
            dt { "Triggered by" } dd { @match &run.triggered_by { Some(t) => (t), None => span.muted { "the schedule" } } }
            dt { "Claims" } dd { (run.attempts) " (tries: " (run.tries) ")" }
            dt { "Started" } dd { (time_or_na(run.started_at)) }
            dt { "Finished" } dd { (time_or_na(run.finished_at)) }
            dt { "Duration" } dd { @match run.duration_secs { Some(d) => (view::duration(d)), None => (na()) } }
            @if let Some(w) = &run.worker { dt { "Worker" } dd { code { (w) } } }
            dt { "Version" } dd {
                @match (&run.job_version, job) {
                    (Some(v), Some(j)) => {
                        a href={ "/ui/jobs/" (segment(&run.job)) "/definition?version=" (v) } { code { (v) } }
                        @if *v == j.version { " (loaded now)" } @else {
                            " · " a href={ "/ui/jobs/" (segment(&run.job)) "/definition?from=" (v) "&to=" (j.version) "#diff" } { "changes since" }
                        }
                    }
                    (Some(v), None) => code { (v) },
                    (None, _) => (na()),
                }
            }
            @if run.params.as_object().is_some_and(|m| !m.is_empty()) {
                dt { "Params" } dd { code { (run.params.to_string()) } }
            }
            @if let Some(e) = &run.error { dt { "Error" } dd.error { (e) } }
        }
        div.actions {
            @if matches!(run.state, RunState::Queued | RunState::Running) {
                form method="post" action={ (base) "/cancel" } {
                    (view::csrf_field(&session))
                    input type="text" name="reason" placeholder="reason (optional)";
                    button.danger type="submit" disabled[!w] { "Cancel run" }
                }
            }
            @if finished {
                form method="post" action={ (base) "/mark" } {
                    (view::csrf_field(&session))
                    input type="hidden" name="state" value="success";
                    button type="submit" disabled[!w || run.state == RunState::Success] { "Mark succeeded" }
                }
                form method="post" action={ (base) "/mark" } {
                    (view::csrf_field(&session))
                    input type="hidden" name="state" value="failed";
                    button type="submit" disabled[!w || run.state == RunState::Failed] { "Mark failed" }
                }
            }
            @if !w { p.muted { "Log in with an API token to change runs." } }
        }
        @if let Some(j) = job {
            @let states: HashMap<String, String> = tasks.iter().map(|t| (t.task.clone(), t.state.as_str().to_string())).collect();
            div.graphwrap { (super::shape::task_graph(j, Some(&states))) }
        }
        h2 { "Tasks" }
        table.tasks {
            thead { tr { th { "Task" } th { "Kind" } th { "State" } th { "Tries" } th { "Started" } th { "Duration" } th.gantt { "Timeline" } th {} } }
            tbody {
                @for t in &ordered {
                    tr id={ "t-" (t.task) } {
                        td { a href={ (base) "?task=" (view::url_encode(&t.task)) "#log" } { (t.task) } }
                        td { (t.kind) }
                        td { (state_badge(t.state.as_str())) @if let Some(e) = &t.error { div.error.small { (e) } } }
                        // Every try of every claim (a clear starts a claim's tries at 1 again).
                        td.num { (attempts.iter().filter(|a| a.task == t.task).count().max(t.attempt as usize)) }
                        td { (time_or_na(t.started_at)) }
                        td.num { @match t.duration_ms { Some(ms) => (view::duration(ms as f64 / 1000.0)), None => (na()) } }
                        td.gantt { (gantt(t0, span, t.started_at, t.finished_at.or(t.started_at.map(|_| now)), t.state.as_str())) }
                        td {
                            @if finished {
                                form.inline method="post" action={ (base) "/clear" } {
                                    (view::csrf_field(&session))
                                    input type="hidden" name="task" value=(t.task);
                                    button type="submit" disabled[!w] title="Run this task again" { "Clear" }
                                }
                                form.inline method="post" action={ (base) "/clear" } {
                                    (view::csrf_field(&session))
                                    input type="hidden" name="task" value=(t.task);
                                    input type="hidden" name="downstream" value="true";
                                    button type="submit" disabled[!w] title="Run this task and every task after it again" { "Clear + downstream" }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if !checks.is_empty() || job.is_some_and(|j| !j.checks.is_empty()) {
            h2 id="checks" { "Data checks" }
            @if checks.is_empty() {
                p.muted { "No check has run on this run yet." }
            } @else {
                table.checks {
                    thead { tr { th { "Check" } th { "After" } th { "Kind" } th { "Try" } th { "Outcome" } th { "Found" } th { "Checked" } } }
                    tbody {
                        @for c in &checks {
                            tr {
                                td { (c.check) @if c.blocking { " " span.muted.small { "blocking" } } }
                                td { (c.task) }
                                td { (c.kind) }
                                td.num { (c.try_number) }
                                td { span class={ "badge c-" (c.outcome) } { (c.outcome) } }
                                td.small { (c.message) }
                                td { (time(c.checked_at)) }
                            }
                        }
                    }
                }
            }
        }
        h2 id="gantt" { "Gantt" }
        div.graphwrap { (super::shape::gantt(job.map(|j| &**j), run.started_at, &attempts, Utc::now())) }
        h2 { "Attempts" }
        @if attempts.is_empty() {
            p.muted { "No attempt yet." }
        } @else {
            table {
                thead { tr { th { "Task" } th { "Try" } th { "Claim" } th { "Outcome" } th { "Started" } th { "Duration" } th { "Version" } th { "Log" } th { "Error" } } }
                tbody {
                    @for a in &attempts {
                        @let here = chosen.is_some_and(|c| c.id == a.id);
                        tr.chosen[here] {
                            td { (a.task) }
                            td.num { (a.try_number) }
                            td.num { (a.claim) }
                            td { (state_badge(&a.outcome)) }
                            td { (time(a.started_at)) }
                            td.num { @match a.duration_ms { Some(ms) => (view::duration(ms as f64 / 1000.0)), None => (na()) } }
                            td { @match &a.job_version {
                                Some(v) => a href={ "/ui/jobs/" (segment(&run.job)) "/definition?version=" (v) } { code { (v) } },
                                None => (na()),
                            } }
                            td { a href={ (base) "?task=" (view::url_encode(&a.task)) "&try=" (a.try_number) "#log" } { "log" } " " span.muted { (a.log_bytes) " B" } }
                            td.error.small { (a.error.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
        }
        @if let Some((a, text)) = &log {
            h2 id="log" { "Log of " (a.task) ", try " (a.try_number) }
            @let stream = format!("/runs/{id}/tasks/{}/logs/stream?try={}", segment(&a.task), a.try_number);
            pre.log data-follow=[(!a.log_ended).then_some(stream.as_str())] { (text) }
            @if !a.log_ended { p.muted id="log-state" { "Following: new lines appear as the task writes them." } }
        } @else if p.task.is_some() {
            h2 id="log" { "Log" }
            p.muted { "This task has no attempt yet." }
        }
        @if !actions.is_empty() {
            h2 { "Actions" }
            table {
                thead { tr { th { "When" } th { "Who" } th { "What" } th { "Task" } th { "Why" } } }
                tbody {
                    @for x in &actions {
                        tr { td { (time(x.at)) } td { (x.actor) } td { (x.action) } td { (x.task.as_deref().unwrap_or("")) } td { (x.reason.as_deref().unwrap_or("")) } }
                    }
                }
            }
        }
    };
    let refresh = (!finished).then_some(5);
    Ok(view::page_refreshed(
        &format!("Run {id}"),
        Section::Jobs,
        &session,
        refresh,
        body,
    ))
}

/// A task's bar on the run's timeline, as SVG (sizes are attributes, so
/// the policy needs no inline style).
fn gantt(
    t0: Option<DateTime<Utc>>,
    span_ms: f64,
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
    state: &str,
) -> Markup {
    const WIDTH: f64 = 240.0;
    let (Some(t0), Some(start), Some(end)) = (t0, start, end) else {
        return html! { svg.bar width=(WIDTH) height="12" {} };
    };
    let x = (start - t0).num_milliseconds() as f64 / span_ms * WIDTH;
    let w = ((end - start).num_milliseconds() as f64 / span_ms * WIDTH).max(2.0);
    html! {
        svg.bar width=(WIDTH) height="12" viewBox={ "0 0 " (WIDTH) " 12" } {
            rect class={ "s-" (state) } x=(format!("{x:.1}")) y="1" width=(format!("{w:.1}")) height="10" rx="2" {}
        }
    }
}

// ------------------------------------------------------------------- login

#[derive(Debug, Default, Deserialize)]
pub struct LoginParams {
    next: Option<String>,
    failed: Option<String>,
}

pub async fn login(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
    params: Result<Query<LoginParams>, QueryRejection>,
) -> Html<String> {
    let p = params.map(|Query(p)| p).unwrap_or_default();
    let next = super::actions::safe_next(p.next.as_deref());
    let sso = state.ops.config.api.oidc.as_ref().map(|o| o.label.clone());
    let body = html! {
        @if p.failed.is_some() { p.error { "That is not one of this server's API tokens." } }
        @if let Some(label) = &sso {
            p { a.button #sso href={ "/ui/login/oidc?next=" (view::url_encode(&next)) } { (label) } }
            p.muted { "Or, for machines and break-glass access:" }
        }
        form.login method="post" action="/ui/login" {
            (view::csrf_field(&session))
            input type="hidden" name="next" value=(next);
            label { "API token " input type="password" name="token" autocomplete="current-password" required autofocus; }
            button type="submit" { "Log in" }
        }
        p.muted { "The token is kept in a cookie this page's scripts cannot read, sent only to this server." }
    };
    page("Log in", Section::None, &session, body)
}
