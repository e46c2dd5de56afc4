//! Running a job by hand from the console: one interval with parameters
//! (a form built from the job's declared params), or a backfill of a range
//! (its dry run shown before it starts, then its progress).

use axum::extract::rejection::FormRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use chrono::{DateTime, Utc};
use maud::html;

use super::view::{self, na, page, page_refreshed, segment, state_badge, time, Section};
use super::{Session, UiError, UiResult};
use crate::dag::params::ParamType;
use crate::dag::Job;
use crate::ledger::{self, RunState};
use crate::ops::runs::{Allow, TriggerRequest};
use crate::ops::Actor;
use crate::web::ApiState;

fn find_job(state: &ApiState, name: &str) -> UiResult<std::sync::Arc<Job>> {
    Ok(state.ops.job(name)?)
}

/// A form's fields in order (parameter fields have dynamic names).
type Fields = Vec<(String, String)>;

fn field<'a>(fields: &'a Fields, name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// A date (`2026-11-23`), a local-less date and time (`2026-11-23T14:00`,
/// read as UTC) or an RFC 3339 instant.
pub(super) fn instant(name: &str, text: &str) -> UiResult<DateTime<Utc>> {
    crate::time::parse_instant(text)
        .map_err(|e| UiError::new(StatusCode::BAD_REQUEST, format!("{name}: {e}")))
}

fn checked_csrf(session: &Session, fields: &Fields) -> UiResult<Actor> {
    let csrf = field(fields, "csrf").unwrap_or("");
    super::actions::allowed(session, csrf)
}

// ------------------------------------------------------------ one interval

/// The form: which interval, the job's parameters, why.
pub async fn trigger_form(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
) -> UiResult<Html<String>> {
    let job = find_job(&state, &name)?;
    let last = job.interval.last_complete(Utc::now());
    let body = html! {
        p.lead { "Queues one run; a daemon claims it within seconds." }
        form.stack method="post" action={ "/ui/jobs/" (segment(&job.name)) "/run" } {
            (view::csrf_field(&session))
            label { "Interval containing "
                input type="text" name="interval_start" placeholder=(last.start.format("%Y-%m-%dT%H:%M").to_string());
                span.muted { " (UTC; empty: the last complete one, " (view::interval(last.start, last.end)) ")" }
            }
            @if !job.params.is_empty() {
                fieldset {
                    legend { "Parameters" }
                    @for p in &job.params {
                        label {
                            code { (p.name) } " "
                            @match p.kind {
                                ParamType::Bool => {
                                    select name={ "param." (p.name) } {
                                        option value="" { "default (" (p.default) ")" }
                                        option value="true" { "true" }
                                        option value="false" { "false" }
                                    }
                                }
                                _ => {
                                    input type="text" name={ "param." (p.name) }
                                        placeholder={ "default: " (p.default.as_str().map_or_else(|| p.default.to_string(), str::to_string)) };
                                }
                            }
                            span.muted { " " (format!("{:?}", p.kind).to_lowercase()) @if !p.description.is_empty() { ": " (p.description) } }
                        }
                    }
                }
            }
            label { "Reason " input type="text" name="reason" placeholder="optional, kept with the action"; }
            label.check { input type="checkbox" name="ignore_start_date" value="true"; " also before the job's start date (" (job.start_date.format("%Y-%m-%d")) ")" }
            div { button type="submit" disabled[!session.may_write] { "Run" } }
        }
    };
    Ok(page(
        &format!("Run {}", job.name),
        Section::Jobs,
        &session,
        body,
    ))
}

pub async fn trigger(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
    f: Result<Form<Fields>, FormRejection>,
) -> UiResult<Redirect> {
    let f = super::actions::form(f)?;
    let actor = checked_csrf(&session, &f)?;
    let job = find_job(&state, &name)?;
    let at = match field(&f, "interval_start") {
        Some(t) => Some(instant("interval start", t)?),
        None => None,
    };
    let pairs: Vec<String> = f
        .iter()
        .filter_map(|(k, v)| {
            let name = k.strip_prefix("param.")?;
            (!v.trim().is_empty()).then(|| format!("{name}={v}"))
        })
        .collect();
    let params = crate::dag::params::parse_pairs(&job.params, &pairs)
        .map_err(|m| UiError::new(StatusCode::BAD_REQUEST, m))?;
    let reason = field(&f, "reason").map(str::to_string);
    let ignore = field(&f, "ignore_start_date") == Some("true");
    let request = TriggerRequest {
        at,
        allow: Allow {
            before_start_date: ignore,
            unfinished: false,
        },
        params,
        reason,
    };
    let (id, _) = state.ops.trigger(&actor, &job.name, request).await?;
    Ok(Redirect::to(&format!("/ui/runs/{id}")))
}

// ----------------------------------------------------------------- backfill

pub async fn backfill_form(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
) -> UiResult<Html<String>> {
    let job = find_job(&state, &name)?;
    let running = ledger::backfills::list(&state.ops.pools.ledger, Some(&job.name))
        .await?
        .into_iter()
        .take(10)
        .collect::<Vec<_>>();
    let body = html! {
        p.lead { "Runs every " (job.interval.as_str()) " of a range in this server, a few at a time. The next step shows what it would do before it starts." }
        form.stack method="post" action={ "/ui/jobs/" (segment(&job.name)) "/backfill" } {
            (view::csrf_field(&session))
            input type="hidden" name="step" value="preview";
            label { "From " input type="text" name="from" required placeholder="2026-11-01"; span.muted { " intervals starting at or after (UTC)" } }
            label { "To " input type="text" name="to" required placeholder="2026-11-08"; span.muted { " … and before" } }
            label { "Parallel runs " input type="number" name="parallel" min="1" max="64" value="2"; }
            label { "Reprocess "
                select name="reprocess" {
                    option value="none" { "none: only intervals without a run" }
                    option value="failed" { "failed: also failed or cancelled runs" }
                    option value="all" { "all: every interval again" }
                }
            }
            label.check { input type="checkbox" name="ignore_start_date" value="true"; " also before the job's start date" }
            div { button type="submit" { "Preview" } }
        }
        @if !running.is_empty() {
            h2 { "Backfills of this job" }
            (backfill_table(&running))
        }
    };
    Ok(page(
        &format!("Backfill {}", job.name),
        Section::Jobs,
        &session,
        body,
    ))
}

fn backfill_table(rows: &[ledger::backfills::BackfillRow]) -> maud::Markup {
    html! {
        table {
            thead { tr { th { "Backfill" } th { "Range" } th { "State" } th { "Reprocess" } th { "Parallel" } th { "Started" } th { "Succeeded" } th { "Failed" } } }
            tbody {
                @for b in rows {
                    tr {
                        td { a href={ "/ui/backfills/" (b.id) } { (b.id) } }
                        td { (view::interval(b.range_from, b.range_to)) }
                        td { (state_badge(&b.state)) }
                        td { (b.reprocess) }
                        td.num { (b.parallel) }
                        td { (time(b.created_at)) }
                        td.num { @match b.succeeded { Some(n) => (n), None => (na()) } }
                        td.num { @match b.failed { Some(n) => (n), None => (na()) } }
                    }
                }
            }
        }
    }
}

/// `step=preview`: the dry run, with a button that starts it;
/// `step=start`: starts it and shows its progress.
pub async fn backfill(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
    f: Result<Form<Fields>, FormRejection>,
) -> UiResult<Response> {
    let f = super::actions::form(f)?;
    // The preview too: it reads the whole range from the ledger.
    let actor = checked_csrf(&session, &f)?;
    let job = find_job(&state, &name)?;
    let from = instant("from", field(&f, "from").unwrap_or(""))?;
    let to = instant("to", field(&f, "to").unwrap_or(""))?;
    let parallel = match field(&f, "parallel") {
        None => None,
        Some(p) => Some(p.parse::<usize>().map_err(|_| {
            UiError::new(
                StatusCode::BAD_REQUEST,
                "parallel must be a number from 1 to 64",
            )
        })?),
    };
    let reprocess = field(&f, "reprocess");
    let ignore = field(&f, "ignore_start_date") == Some("true");
    let spec = state.ops.backfill_spec(&crate::ops::backfills::Request {
        from: Some(from),
        to: Some(to),
        reprocess,
        parallel,
        allow: Allow {
            before_start_date: ignore,
            unfinished: false,
        },
        max_intervals: None,
    })?;
    if field(&f, "step") == Some("start") {
        let (id, _) = state.ops.start_backfill(&actor, &job.name, spec).await?;
        return Ok(Redirect::to(&format!("/ui/backfills/{id}")).into_response());
    }
    let plan = state.ops.backfill_plan(&actor, &job, &spec).await?;
    let intervals = crate::dag::backfill::intervals(&job, &spec)
        .map_err(|e| UiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    const SHOWN: usize = 48;
    let body = html! {
        p.lead { (view::interval(from, to)) ", " (spec.parallel) " at a time, reprocess " (reprocess.unwrap_or("none")) "." }
        table.plan {
            tbody {
                tr { th { "Intervals in the range" } td.num { (plan.intervals) } }
                tr { th { "New (no run yet)" } td.num { (plan.new) } }
                tr { th { "Queued by an earlier backfill" } td.num { (plan.queued) } }
                tr { th { "To run again (reprocess)" } td.num { (plan.rerun) } }
                tr { th { "Succeeded, kept" } td.num { (if reprocess == Some("all") { 0 } else { plan.succeeded }) } }
                tr { th { "Failed, kept" } td.num { (if matches!(reprocess, Some("failed" | "all")) { 0 } else { plan.failed }) } }
                tr { th { "Running elsewhere, left alone" } td.num { (plan.running) } }
                tr.total { th { "Runs this backfill executes" } td.num id="to-run" { (plan.to_run()) } }
            }
        }
        h2 { "Intervals" }
        ul.intervals {
            @for i in intervals.iter().take(SHOWN) { li { (view::interval(i.start, i.end)) } }
            @if intervals.len() > SHOWN { li.muted { "… and " (intervals.len() - SHOWN) " more" } }
        }
        form method="post" action={ "/ui/jobs/" (segment(&job.name)) "/backfill" } {
            (view::csrf_field(&session))
            input type="hidden" name="step" value="start";
            input type="hidden" name="from" value=(from.to_rfc3339());
            input type="hidden" name="to" value=(to.to_rfc3339());
            input type="hidden" name="parallel" value=(spec.parallel);
            input type="hidden" name="reprocess" value=(reprocess.unwrap_or("none"));
            @if ignore { input type="hidden" name="ignore_start_date" value="true"; }
            button type="submit" disabled[!session.may_write || plan.to_run() == 0] { "Start backfill of " (plan.to_run()) " runs" }
            " " a href={ "/ui/jobs/" (segment(&job.name)) "/backfill" } { "Change" }
        }
    };
    Ok(page(
        &format!("Backfill {}: dry run", job.name),
        Section::Jobs,
        &session,
        body,
    )
    .into_response())
}

/// A backfill's progress, from the ledger; reloads while it runs.
pub async fn backfill_progress(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> UiResult<Html<String>> {
    let id: i64 = id
        .parse()
        .map_err(|_| UiError::not_found(format!("{id:?} is not a backfill id")))?;
    let b = ledger::backfills::get(&state.ops.pools.ledger, id)
        .await?
        .ok_or_else(|| UiError::not_found(format!("There is no backfill {id}.")))?;
    let counts =
        ledger::backfill_counts(&state.ops.pools.data, &b.job, b.range_from, b.range_to).await?;
    let count = |s: RunState| counts.iter().find(|(x, _)| *x == s).map_or(0, |(_, n)| *n);
    let running = b.state == "running";
    let body = html! {
        dl.facts {
            dt { "Job" } dd { a href={ "/ui/jobs/" (segment(&b.job)) "?runs=100" } { (b.job) } }
            dt { "Range" } dd { (view::interval(b.range_from, b.range_to)) }
            dt { "State" } dd { (state_badge(&b.state)) }
            dt { "Started" } dd { (time(b.created_at)) }
            dt { "Finished" } dd { (view::time_or_na(b.finished_at)) }
            @if let Some(e) = &b.error { dt { "Error" } dd.error { (e) } }
        }
        table.plan {
            tbody {
                tr { th { "Succeeded" } td.num id="bf-success" { (count(RunState::Success)) } }
                tr { th { "Running" } td.num id="bf-running" { (count(RunState::Running)) } }
                tr { th { "Queued" } td.num id="bf-queued" { (count(RunState::Queued)) } }
                tr { th { "Failed" } td.num id="bf-failed" { (count(RunState::Failed)) } }
            }
        }
        @if running {
            form method="post" action={ "/ui/backfills/" (id) "/cancel" } {
                (view::csrf_field(&session))
                button.danger type="submit" disabled[!session.may_write] { "Cancel backfill" }
            }
        }
    };
    Ok(page_refreshed(
        &format!("Backfill {id}"),
        Section::Jobs,
        &session,
        running.then_some(2),
        body,
    ))
}

pub async fn backfill_cancel(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    f: Result<Form<Fields>, FormRejection>,
) -> UiResult<Redirect> {
    let f = super::actions::form(f)?;
    let actor = checked_csrf(&session, &f)?;
    let id: i64 = id
        .parse()
        .map_err(|_| UiError::not_found(format!("{id:?} is not a backfill id")))?;
    state.ops.cancel_backfill(&actor, id).await?;
    Ok(Redirect::to(&format!("/ui/backfills/{id}")))
}
