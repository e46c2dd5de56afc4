//! A job's shape: its task graph (SVG drawn here), its definition with
//! every version seen and the difference between two, and the pools its
//! tasks share.

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Html;
use axum::Extension;
use chrono::{DateTime, Utc};
use maud::{html, Markup};
use serde::Deserialize;

use super::pages::query;
use super::view::{self, page, segment, time, time_or_na, Section};
use super::{Session, UiError, UiResult};
use crate::dag::rules::TriggerRule;
use crate::dag::Job;
use crate::ledger;
use crate::web::ApiState;

const NODE_W: i64 = 150;
const NODE_H: i64 = 40;
const GAP_X: i64 = 60;
const GAP_Y: i64 = 16;

/// Each task's column: 0 without upstream tasks, else one past its
/// furthest upstream (tasks are in dependency order).
fn layers(job: &Job) -> Vec<usize> {
    let mut at: HashMap<&str, usize> = HashMap::new();
    for t in &job.tasks {
        let layer = t
            .depends_on
            .iter()
            .filter_map(|d| at.get(d.as_str()))
            .map(|l| l + 1)
            .max()
            .unwrap_or(0);
        at.insert(t.id.as_str(), layer);
    }
    job.tasks.iter().map(|t| at[t.id.as_str()]).collect()
}

/// The job's tasks as a graph, left to right; with `states`, each task
/// coloured by its state in one run. Rules other than `all_success`, pools
/// and checks are written under the task's name.
pub fn task_graph(job: &Job, states: Option<&HashMap<String, String>>) -> Markup {
    let layer = layers(job);
    let mut rows: HashMap<usize, i64> = HashMap::new();
    let mut pos: HashMap<&str, (i64, i64)> = HashMap::new();
    for (t, l) in job.tasks.iter().zip(&layer) {
        let row = rows.entry(*l).or_insert(0);
        pos.insert(
            t.id.as_str(),
            (*l as i64 * (NODE_W + GAP_X), *row * (NODE_H + GAP_Y)),
        );
        *row += 1;
    }
    let width = (layer.iter().max().map_or(0, |l| *l as i64) + 1) * (NODE_W + GAP_X) - GAP_X + 2;
    let height = rows.values().max().copied().unwrap_or(1) * (NODE_H + GAP_Y) - GAP_Y + 2;
    html! {
        svg.graph xmlns="http://www.w3.org/2000/svg" role="img"
            aria-label={ "Task graph of " (job.name) }
            width=(width) height=(height) viewBox={ "-1 -1 " (width) " " (height) } {
            defs {
                marker #arrow viewBox="0 0 8 8" refX="8" refY="4" markerWidth="8" markerHeight="8" orient="auto" {
                    path d="M0,0 L8,4 L0,8 z" class="edge-head" {}
                }
            }
            @for t in &job.tasks {
                @for d in &t.depends_on {
                    @if let (Some((x1, y1)), Some((x2, y2))) = (pos.get(d.as_str()), pos.get(t.id.as_str())) {
                        @let (sx, sy, ex, ey) = (x1 + NODE_W, y1 + NODE_H / 2, *x2, y2 + NODE_H / 2);
                        @let mid = (sx + ex) / 2;
                        path.edge data-from=(d) data-to=(t.id)
                            d={ "M" (sx) "," (sy) " C" (mid) "," (sy) " " (mid) "," (ey) " " (ex) "," (ey) }
                            marker-end="url(#arrow)" {}
                    }
                }
            }
            @for t in &job.tasks {
                @let (x, y) = pos[t.id.as_str()];
                @let state = states.and_then(|s| s.get(&t.id)).map_or("none", String::as_str);
                @let notes = notes_of(job, t);
                g.node data-task=(t.id) data-rule=(t.trigger_rule.as_str()) transform={ "translate(" (x) "," (y) ")" } {
                    title { (t.id) " · " (t.kind.name()) " · " (t.trigger_rule.as_str()) @if states.is_some() { " · " (state) } }
                    rect class={ "s-" (state) } width=(NODE_W) height=(NODE_H) rx="5" {}
                    text.name x="8" y="16" { (clip(&t.id, 20)) }
                    text.kind x="8" y="31" {
                        (t.kind.name())
                        @if !notes.is_empty() { " · " (clip(&notes.join(" · "), 20)) }
                    }
                }
            }
        }
    }
}

/// What the graph writes under a task's name besides its kind.
fn notes_of(job: &Job, t: &crate::dag::Task) -> Vec<String> {
    let mut notes = Vec::new();
    if t.trigger_rule != TriggerRule::AllSuccess {
        notes.push(t.trigger_rule.as_str().to_string());
    }
    if let Some(p) = &t.pool {
        notes.push(format!("pool {p}"));
    }
    let checks = job.checks.iter().filter(|c| c.after == t.id).count();
    if checks > 0 {
        notes.push(format!(
            "{checks} check{}",
            if checks == 1 { "" } else { "s" }
        ));
    }
    notes
}

/// A run's Gantt: a row per attempt of every task, oldest first; each
/// bar its running time (coloured by outcome), after a pale bar for the
/// time it waited once it could have started (its upstream tasks, or its
/// previous try, had ended: retry delays, pool slots, a busy daemon).
pub fn gantt(
    job: Option<&Job>,
    run_started: Option<DateTime<Utc>>,
    attempts: &[ledger::logs::AttemptRow],
    now: DateTime<Utc>,
) -> Markup {
    const LABEL: f64 = 170.0;
    const WIDTH: f64 = 900.0;
    const ROW: f64 = 20.0;
    const TOP: f64 = 22.0;
    let upstream = |task: &str| -> Vec<String> {
        job.and_then(|j| j.tasks.iter().find(|t| t.id == task))
            .map(|t| t.depends_on.clone())
            .unwrap_or_default()
    };
    // (attempt, ready, end)
    let rows: Vec<(&ledger::logs::AttemptRow, DateTime<Utc>, DateTime<Utc>)> = attempts
        .iter()
        .map(|a| {
            let before = upstream(&a.task);
            let ready = attempts
                .iter()
                .filter(|b| b.task == a.task || before.contains(&b.task))
                .filter_map(|b| b.finished_at)
                .chain(run_started)
                .filter(|t| *t <= a.started_at)
                .max()
                .unwrap_or(a.started_at);
            (a, ready, a.finished_at.unwrap_or(now).max(a.started_at))
        })
        .collect();
    let (Some(first), Some(last)) = (
        rows.iter().map(|r| r.1).min(),
        rows.iter().map(|r| r.2).max(),
    ) else {
        return html! { p.muted { "No attempt yet." } };
    };
    let span = ((last - first).num_milliseconds().max(1)) as f64;
    let x = |t: DateTime<Utc>| {
        LABEL + (t - first).num_milliseconds() as f64 / span * (WIDTH - LABEL - 4.0)
    };
    let height = TOP + rows.len() as f64 * ROW + 4.0;
    // Short runs need the milliseconds to tell the ticks apart.
    let tick_format = if span < 10_000.0 {
        "%H:%M:%S%.3f"
    } else {
        "%H:%M:%S"
    };
    let ticks: Vec<DateTime<Utc>> = (0..=4)
        .map(|i| first + chrono::TimeDelta::milliseconds((span * i as f64 / 4.0) as i64))
        .collect();
    html! {
        svg.gantt xmlns="http://www.w3.org/2000/svg" role="img" aria-label="Gantt of the run's attempts"
            width=(WIDTH) height=(height) viewBox={ "0 0 " (WIDTH) " " (height) } {
            @for (i, t) in ticks.iter().enumerate() {
                @let tx = x(*t);
                line.tick x1=(tx) x2=(tx) y1=(TOP - 4.0) y2=(height) {}
                text.tick x=(tx) y="12" text-anchor=(if i == 0 { "start" } else if i == 4 { "end" } else { "middle" }) {
                    (t.format(tick_format)) @if i == 0 { " UTC" }
                }
            }
            @for (i, (a, ready, end)) in rows.iter().enumerate() {
                @let y = TOP + i as f64 * ROW;
                g.attempt data-task=(a.task) data-try=(a.try_number) {
                    title {
                        (a.task) " · try " (a.try_number) " · " (a.outcome)
                        " · waited " (super::view::duration((a.started_at - *ready).num_milliseconds() as f64 / 1000.0))
                        " · ran " (super::view::duration((*end - a.started_at).num_milliseconds() as f64 / 1000.0))
                    }
                    text.label x="0" y=(y + 14.0) { (clip(&format!("{} · try {}", a.task, a.try_number), 26)) }
                    @if a.started_at > *ready {
                        rect.waited x=(x(*ready)) y=(y + 4.0) width=((x(a.started_at) - x(*ready)).max(1.0)) height=(ROW - 8.0) {}
                    }
                    rect class={ "ran s-" (a.outcome) } x=(x(a.started_at)) y=(y + 3.0)
                        width=((x(*end) - x(a.started_at)).max(2.0)) height=(ROW - 6.0) rx="2" {}
                }
            }
        }
    }
}

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefinitionParams {
    version: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

/// A version is 12 hex digits.
fn version_param(field: &str, v: &Option<String>) -> UiResult<Option<String>> {
    match v.as_deref().filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) if v.len() == 12 && v.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(Some(v.to_ascii_lowercase()))
        }
        Some(_) => Err(UiError::new(
            StatusCode::BAD_REQUEST,
            format!("{field} must be a version: 12 hex digits"),
        )),
    }
}

/// `GET /ui/jobs/{job}/definition?version=&from=&to=`: the job file's text
/// as loaded (or an older version), its versions, and the lines that
/// changed between two.
pub async fn definition(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
    params: Result<Query<DefinitionParams>, QueryRejection>,
) -> UiResult<Html<String>> {
    let job = state.ops.job(&name)?;
    let p = query(params)?;
    let version = version_param("version", &p.version)?;
    let from = version_param("from", &p.from)?;
    let to = version_param("to", &p.to)?;
    let pool = &state.ops.pools.data;
    let versions = ledger::versions::of_job(pool, &job.name).await?;
    let shown = version.clone().unwrap_or_else(|| job.version.clone());
    let text = version_text(&state, &job, &shown).await?;
    let diff = match (from, to) {
        (Some(a), Some(b)) => {
            let ta = version_text(&state, &job, &a).await?;
            let tb = version_text(&state, &job, &b).await?;
            Some((a, b, ta, tb))
        }
        (None, None) => None,
        _ => {
            return Err(UiError::new(
                StatusCode::BAD_REQUEST,
                "a difference needs both from and to",
            ))
        }
    };
    let base = format!("/ui/jobs/{}", segment(&job.name));
    let body = html! {
        p.lead {
            a href=(base) { "← runs" } " · " code { (job.file.display()) }
            " · loaded version " code { (job.version) }
        }
        h2 { "Task graph" }
        (task_graph(&job, None))
        h2 { "Versions" }
        @if versions.is_empty() {
            p.muted { "No run has recorded a version yet; a daemon records the versions it loads." }
        } @else {
            form.filters method="get" action={ (base) "/definition" } {
                table.versions {
                    thead { tr { th { "Version" } th { "First seen" } th { "By" } th { "Runs" } th { "Last run" } th { "From" } th { "To" } } }
                    tbody {
                        @for (i, v) in versions.iter().enumerate() {
                            tr.chosen[v.version == shown] {
                                td {
                                    a href={ (base) "/definition?version=" (v.version) } { code { (v.version) } }
                                    @if v.version == job.version { " " span.badge.s-success { "loaded" } }
                                }
                                td { (time(v.first_seen_at)) }
                                td.small { (v.first_seen_by) }
                                td.num { (v.runs) }
                                td { (time_or_na(v.last_run_at)) }
                                td { input type="radio" name="from" value=(v.version) checked[i == 1 || (versions.len() == 1 && i == 0)]; }
                                td { input type="radio" name="to" value=(v.version) checked[i == 0]; }
                            }
                        }
                    }
                }
                button type="submit" { "Show the difference" }
            }
        }
        @if let Some((a, b, ta, tb)) = &diff {
            h2 #diff { "From " code { (a) } " to " code { (b) } }
            (diff_of(ta, tb))
        }
        h2 #definition { "Definition " code { (shown) } }
        pre.definition { (text) }
    };
    Ok(page(
        &format!("{} · definition", job.name),
        Section::Jobs,
        &session,
        body,
    ))
}

/// The text of `version` of `job`: the loaded one from memory, others
/// from `job_versions`.
async fn version_text(state: &ApiState, job: &Job, version: &str) -> UiResult<String> {
    if version == job.version {
        return Ok(job.source.to_string());
    }
    ledger::versions::text(&state.ops.pools.data, &job.name, version)
        .await?
        .ok_or_else(|| UiError::not_found(format!("job {} has no version {version}", job.name)))
}

/// The lines of `b` against `a`: removed, added and kept (context).
fn diff_of(a: &str, b: &str) -> Markup {
    let diff = similar::TextDiff::from_lines(a, b);
    if diff.ratio() >= 1.0 {
        return html! { p.muted { "The two versions are the same." } };
    }
    html! {
        pre.diff {
            @for group in diff.grouped_ops(3) {
                span.hunk { "@@\n" }
                @for op in group {
                    @for change in diff.iter_changes(&op) {
                        @let (class, sign) = match change.tag() {
                            similar::ChangeTag::Delete => ("del", "-"),
                            similar::ChangeTag::Insert => ("ins", "+"),
                            similar::ChangeTag::Equal => ("same", " "),
                        };
                        span class=(class) { (sign) " " (change.value().trim_end_matches('\n')) "\n" }
                    }
                }
            }
        }
    }
}

/// `GET /ui/pools`: every pool's slots, who holds them and who waits.
pub async fn pools(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
) -> UiResult<Html<String>> {
    let config = &state.ops.config;
    let holders =
        ledger::pools::holders(&state.ops.pools.data, config.scheduler.stale_after_secs).await?;
    let jobs = state.ops.jobs.current();
    let body = html! {
        @if config.pools.is_empty() {
            p.muted { "No pool is configured ([pools.NAME] slots = N in the configuration)." }
        }
        @for (name, p) in &config.pools {
            @let held: Vec<_> = holders.iter().filter(|h| &h.pool == name && h.granted_at.is_some()).collect();
            @let waiting: Vec<_> = holders.iter().filter(|h| &h.pool == name && h.granted_at.is_none()).collect();
            @let users: Vec<String> = jobs.iter().flat_map(|j| j.tasks.iter()
                .filter(|t| t.pool.as_deref() == Some(name.as_str()))
                .map(|t| format!("{}.{}", j.name, t.id)).collect::<Vec<_>>()).collect();
            section.pool data-pool=(name) {
                h2 { (name) }
                p {
                    span.used { (held.len()) } " of " (p.slots) " slots in use · "
                    span.queue { (waiting.len()) } " waiting"
                    @if !p.description.is_empty() { " · " (p.description) }
                }
                p.small.muted { "Tasks: " @if users.is_empty() { "none" } @else { (users.join(", ")) } }
                @if !held.is_empty() || !waiting.is_empty() {
                    table {
                        thead { tr { th { "Run" } th { "Job" } th { "Task" } th { "Worker" } th { "Asked" } th { "Holds since" } } }
                        tbody {
                            @for h in held.iter().chain(waiting.iter()) {
                                tr {
                                    td { a href={ "/ui/runs/" (h.run_id) } { (h.run_id) } }
                                    td { (h.job) }
                                    td { (h.task) }
                                    td.small { (h.worker) }
                                    td { (time(h.asked_at)) }
                                    td { @match h.granted_at { Some(t) => (time(t)), None => span.muted { "waiting" } } }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(view::page("Pools", Section::Jobs, &session, body))
}
