//! A run's task logs (as text, or followed live with server-sent events)
//! and the run controls: clear, mark, cancel, pause, unpause.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::Stream;
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::PgPool;

use super::extract::{instant, json_body, parse_id, query, ApiResult, OptionalJson};
use super::{ApiError, ApiState};
use crate::ledger::{self, logs::AttemptRow};
use crate::ops::Actor;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// Which try, from 1; default: the latest.
    #[serde(rename = "try")]
    try_number: Option<i64>,
}

/// The attempt a log request names.
async fn find_attempt(
    state: &ApiState,
    actor: &Actor,
    path: Result<Path<(String, String)>, PathRejection>,
    q: Result<Query<LogQuery>, QueryRejection>,
) -> ApiResult<AttemptRow> {
    let Path((id, task)) =
        path.map_err(|e| ApiError::bad_request("invalid_path", e.body_text()))?;
    let id = parse_id(&id)?;
    state.ops.read(actor, &format!("run:{id}")).await?;
    let q = query(q)?;
    if q.try_number.is_some_and(|n| n < 1) {
        return Err(ApiError::bad_request("invalid_try", "try counts from 1"));
    }
    let pool = &state.ops.pools.data;
    if ledger::run(pool, id).await?.is_none() {
        return Err(ApiError::not_found("unknown_run", format!("no run {id}")));
    }
    let mut attempts = ledger::logs::attempts(pool, id, Some(&task)).await?;
    let found = match q.try_number {
        Some(n) => attempts.into_iter().find(|a| a.try_number == n),
        None => attempts.pop(),
    };
    found.ok_or_else(|| {
        let what = match q.try_number {
            Some(n) => format!("task `{task}` of run {id} has no try {n}"),
            None => format!("task `{task}` of run {id} has no attempt"),
        };
        ApiError::not_found("unknown_attempt", what)
    })
}

/// `GET /runs/{id}/tasks/{task}/logs?try=N`: the log as text.
pub async fn task_log(
    State(state): State<ApiState>,
    Extension(actor): Extension<Actor>,
    path: Result<Path<(String, String)>, PathRejection>,
    q: Result<Query<LogQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let attempt = find_attempt(&state, &actor, path, q).await?;
    let chunks = ledger::logs::chunks(&state.ops.pools.data, attempt.id, 0).await?;
    let mut body: String = chunks.into_iter().map(|(_, b)| b).collect();
    let max = state.ops.config.logs.max_bytes_per_attempt;
    body.push_str(&ledger::logs::closing_lines(&attempt, max));
    let mut response =
        ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response();
    let headers = response.headers_mut();
    headers.insert("x-hxjobs-try", HeaderValue::from(attempt.try_number));
    if let Ok(v) = HeaderValue::from_str(&attempt.outcome) {
        headers.insert("x-hxjobs-outcome", v);
    }
    Ok(response)
}

/// `GET /runs/{id}/tasks/{task}/logs/stream?try=N`: `log` events with new
/// lines while the attempt runs, then one `end` event with its outcome.
pub async fn task_log_stream(
    State(state): State<ApiState>,
    Extension(actor): Extension<Actor>,
    path: Result<Path<(String, String)>, PathRejection>,
    q: Result<Query<LogQuery>, QueryRejection>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let attempt = find_attempt(&state, &actor, path, q).await?;
    let permit = state.guards.stream()?;
    let follow = Follow {
        _permit: permit,
        max_bytes: state.ops.config.logs.max_bytes_per_attempt,
        pool: state.ops.pools.data.clone(),
        attempt_id: attempt.id,
        seq: 0,
        closing_sent: false,
        ended: false,
    };
    let stream = futures::stream::unfold(follow, |mut f| async move {
        let event = f.next().await?;
        Some((Ok(event), f))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

struct Follow {
    /// Its place among the open streams.
    _permit: crate::web::StreamPermit,
    max_bytes: u64,
    pool: PgPool,
    attempt_id: i64,
    seq: i32,
    closing_sent: bool,
    ended: bool,
}

impl Follow {
    /// The next event: new lines, or the end; `None` after the end.
    async fn next(&mut self) -> Option<Event> {
        if self.ended {
            return None;
        }
        loop {
            // Read before the chunks: if the log had ended, they are all in.
            let row = ledger::logs::attempt(&self.pool, self.attempt_id).await;
            let chunks = ledger::logs::chunks(&self.pool, self.attempt_id, self.seq).await;
            let (row, chunks) = match (row, chunks) {
                (Ok(Some(row)), Ok(chunks)) => (row, chunks),
                (Ok(None), _) => {
                    self.ended = true;
                    return Some(
                        Event::default()
                            .event("end")
                            .data("{\"outcome\":\"removed\"}"),
                    );
                }
                (Err(e), _) | (_, Err(e)) => {
                    self.ended = true;
                    tracing::warn!(error = %e, "task log stream stopped");
                    return Some(
                        Event::default()
                            .event("error")
                            .data(crate::db::describe(&e)),
                    );
                }
            };
            if let Some((seq, _)) = chunks.last() {
                self.seq = *seq;
                let text: String = chunks.into_iter().map(|(_, b)| b).collect();
                // One `data:` line per log line; the final line end is implied.
                return Some(
                    Event::default()
                        .event("log")
                        .data(text.trim_end_matches('\n')),
                );
            }
            if row.log_ended && !self.closing_sent {
                self.closing_sent = true;
                let closing = ledger::logs::closing_lines(&row, self.max_bytes);
                return Some(
                    Event::default()
                        .event("log")
                        .data(closing.trim_end_matches('\n')),
                );
            }
            if row.log_ended {
                self.ended = true;
                let end =
                    json!({ "try": row.try_number, "outcome": row.outcome, "error": row.error });
                return Some(Event::default().event("end").data(end.to_string()));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

fn run_path(p: Result<Path<String>, PathRejection>) -> ApiResult<i64> {
    let Path(raw) = p.map_err(|e| ApiError::bad_request("invalid_path", e.body_text()))?;
    parse_id(&raw)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClearBody {
    /// The tasks to clear; none: every task of the run.
    #[serde(default)]
    tasks: Vec<String>,
    /// Also every task after them.
    #[serde(default)]
    downstream: bool,
    reason: Option<String>,
}

/// `POST /runs/{id}/clear`: a finished run queued again with the named
/// tasks (and, with `downstream`, those after them) cleared.
pub async fn clear(
    State(state): State<ApiState>,
    Extension(actor): Extension<Actor>,
    id: Result<Path<String>, PathRejection>,
    OptionalJson(body): OptionalJson<ClearBody>,
) -> ApiResult<Json<Value>> {
    let id = run_path(id)?;
    let (_, tasks) = state
        .ops
        .clear(&actor, id, body.tasks, body.downstream, body.reason)
        .await?;
    Ok(Json(
        json!({ "run_id": id, "state": "queued", "cleared": tasks }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarkBody {
    state: String,
    task: Option<String>,
    reason: Option<String>,
}

/// `POST /runs/{id}/mark {"state": "success"|"failed", "task"?}`.
pub async fn mark(
    State(state): State<ApiState>,
    Extension(actor): Extension<Actor>,
    id: Result<Path<String>, PathRejection>,
    body: Result<Json<MarkBody>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let id = run_path(id)?;
    let body = json_body(body)?;
    let to = state
        .ops
        .mark(&actor, id, body.task.as_deref(), &body.state, body.reason)
        .await?;
    Ok(Json(
        json!({ "run_id": id, "task": body.task, "state": to }),
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    reason: Option<String>,
}

/// `POST /runs/{id}/cancel`.
pub async fn cancel(
    State(state): State<ApiState>,
    Extension(actor): Extension<Actor>,
    id: Result<Path<String>, PathRejection>,
    OptionalJson(body): OptionalJson<ReasonBody>,
) -> ApiResult<Json<Value>> {
    let id = run_path(id)?;
    state.ops.cancel(&actor, id, body.reason).await?;
    Ok(Json(json!({
        "run_id": id,
        "state": "cancelled",
        "note": format!("its worker stops it within scheduler.heartbeat_secs ({} s)", state.ops.config.scheduler.heartbeat_secs),
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClearFailedBody {
    from: String,
    to: String,
    reason: Option<String>,
}

/// `POST /jobs/{job}/clear {"from", "to"}`: every failed run of the job
/// whose interval starts in `[from, to)` queued again.
pub async fn clear_failed(
    State(state): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(job): Path<String>,
    body: Result<Json<ClearFailedBody>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let body = json_body(body)?;
    let (from, to) = (instant("from", &body.from)?, instant("to", &body.to)?);
    let runs = state
        .ops
        .clear_failed(&actor, &job, from, to, body.reason)
        .await?;
    Ok(Json(json!({ "job": job, "cleared_runs": runs })))
}

async fn set_paused(
    state: &ApiState,
    actor: &Actor,
    job: &str,
    body: ReasonBody,
    paused: bool,
) -> ApiResult<Json<Value>> {
    state
        .ops
        .set_paused(actor, job, paused, body.reason)
        .await?;
    Ok(Json(json!({ "job": job, "paused": paused })))
}

/// `POST /jobs/{job}/pause`.
pub async fn pause(
    State(state): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(job): Path<String>,
    OptionalJson(body): OptionalJson<ReasonBody>,
) -> ApiResult<Json<Value>> {
    set_paused(&state, &actor, &job, body, true).await
}

/// `POST /jobs/{job}/unpause`.
pub async fn unpause(
    State(state): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(job): Path<String>,
    OptionalJson(body): OptionalJson<ReasonBody>,
) -> ApiResult<Json<Value>> {
    set_paused(&state, &actor, &job, body, false).await
}
