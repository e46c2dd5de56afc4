//! Reports and dead letters: what hxjobs produced and what it refused.

use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, Redirect};
use axum::{Extension, Form};
use maud::html;
use serde::Deserialize;

use super::view::{self, na, page, state_badge, time, Section};
use super::{Session, UiError, UiResult};
use crate::ingest::dead_letters;
use crate::reports;
use crate::web::ApiState;

fn bytes(n: i64) -> String {
    match n {
        n if n < 1024 => format!("{n} B"),
        n if n < 1 << 20 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{:.1} MiB", n as f64 / (1 << 20) as f64),
    }
}

/// Generated reports, and the form that generates one.
pub async fn reports(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
) -> UiResult<Html<String>> {
    let list = reports::list(&state.ops.pools.data, None, 100)
        .await
        .map_err(|e| UiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let types = reports::definition::types(&state.ops.config.reports.definitions_dir);
    let body = html! {
        form.filters method="post" action="/ui/reports/generate" {
            (view::csrf_field(&session))
            label { "Report " select name="report_type" {
                @for t in &types { option value=(t) selected[t == "weekly_summary"] { (t) } }
            } }
            label { "Format " select name="format" {
                option value="pdf" { "PDF" } option value="json" { "JSON" } option value="csv" { "CSV" }
            } }
            label { "Period containing " input type="text" name="period_start" placeholder="the last complete one"; }
            button type="submit" disabled[!session.may_write] { "Generate" }
        }
        @if list.is_empty() {
            p.muted { "No report generated yet." }
        } @else {
            table.reports {
                thead { tr { th { "Report" } th { "Type" } th { "Period" } th { "Format" } th { "Status" } th { "Size" } th { "Generated" } th {} } }
                tbody {
                    @for r in &list {
                        tr id={ "report-" (r.id) } {
                            td.num { (r.id) }
                            td { (r.report_type) }
                            td { (view::interval(r.period_start, r.period_end))
                                 @if let Some(p) = r.partial_through { div.small.muted { "partial: data through " (time(p)) } } }
                            td { (r.format) }
                            td { (state_badge(&r.status))
                                 @if let Some(s) = r.superseded_by { div.small.muted { "superseded by " (s) } }
                                 @if let Some(e) = &r.error { div.small.error { (e) } } }
                            td.num { @match r.size { Some(n) => (bytes(n)), None => (na()) } }
                            td { (time(r.created_at)) }
                            td {
                                @if r.status == "done" {
                                    @if r.format == "pdf" {
                                        a.open href={ "/reports/" (r.id) "/download?inline=true" } target="_blank" rel="noopener" { "Open" }
                                        " · "
                                    }
                                    a href={ "/reports/" (r.id) "/download" } { "Download" }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(page("Reports", Section::Reports, &session, body))
}

#[derive(Debug, Deserialize)]
pub struct GenerateForm {
    csrf: String,
    report_type: String,
    format: String,
    period_start: Option<String>,
}

pub async fn generate(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
    f: Result<Form<GenerateForm>, FormRejection>,
) -> UiResult<Redirect> {
    let f = super::actions::form(f)?;
    let actor = super::actions::allowed(&session, &f.csrf)?;
    let period = match f
        .period_start
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        Some(t) => Some(super::trigger::instant("period", t)?),
        None => None,
    };
    let record = state
        .ops
        .generate_report(
            &actor,
            &crate::ops::reports::Generate {
                report_type: &f.report_type,
                format: &f.format,
                period_start: period,
                require_complete: false,
            },
        )
        .await?;
    Ok(Redirect::to(&format!("/ui/reports#report-{}", record.id)))
}

#[derive(Debug, Default, Deserialize)]
pub struct DeadLetterQuery {
    reason: Option<String>,
    before: Option<i64>,
}

/// Rejected messages: why, where from, and their first bytes as text.
pub async fn dead_letters(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
    q: Result<Query<DeadLetterQuery>, QueryRejection>,
) -> UiResult<Html<String>> {
    let q = super::pages::query(q)?;
    const PAGE: i64 = 100;
    let reason = q.reason.as_deref().filter(|r| !r.is_empty());
    let rows = dead_letters::recent(&state.ops.pools.data, reason, q.before, PAGE).await?;
    let reasons = dead_letters::reasons(&state.ops.pools.data).await?;
    let body = html! {
        p.lead {
            "By reason: "
            a href="/ui/dead-letters" { "all" }
            @for (r, n) in &reasons { " · " a href={ "/ui/dead-letters?reason=" (view::url_encode(r)) } { (r) } " (" (n) ")" }
        }
        @if rows.is_empty() {
            p.muted { "None." }
        } @else {
            table.dead {
                thead { tr { th { "Received" } th { "Reason" } th { "Topic / partition / offset" } th { "Size" } th { "Raw bytes (first " (dead_letters::PREVIEW_BYTES) ")" } th { "Republished" } } }
                tbody {
                    @for d in &rows {
                        tr {
                            td { (time(d.received_at)) }
                            td { strong { (d.reason) } div.small.muted { (d.detail) } }
                            td { code { (d.kafka_topic) " / " (d.kafka_partition) " / " (d.kafka_offset) } }
                            td.num { @match d.size { Some(n) => (bytes(i64::from(n))), None => (na()) } }
                            td { @match &d.head { Some(b) => code.raw { (dead_letters::preview(b)) }, None => (na()) } }
                            td { (view::time_or_na(d.published_at)) }
                        }
                    }
                }
            }
            @if rows.len() as i64 == PAGE {
                @if let Some(last) = rows.last() {
                    p.pager { a href={ "/ui/dead-letters?before=" (last.id) @if let Some(r) = reason { "&reason=" (view::url_encode(r)) } } { "older →" } }
                }
            }
        }
    };
    Ok(page("Dead letters", Section::Data, &session, body))
}
