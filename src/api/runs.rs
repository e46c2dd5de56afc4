//! A run's task logs (as text, or followed live with server-sent events)
//! and the run controls: clear, mark, cancel, pause, unpause.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::Stream;
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::PgPool;

use super::handlers::{find_job, instant, json_body, parse_id, query, ApiResult, OptionalJson};
use super::{ApiError, ApiState, Caller};
use crate::ledger::controls::{self, Actor, ControlError};
use crate::ledger::{self, logs::AttemptRow, RunState};

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
    path: Result<Path<(String, String)>, PathRejection>,
    q: Result<Query<LogQuery>, QueryRejection>,
) -> ApiResult<AttemptRow> {
    let Path((id, task)) =
        path.map_err(|e| ApiError::bad_request("invalid_path", e.body_text()))?;
    let id = parse_id(&id)?;
    let q = query(q)?;
    if q.try_number.is_some_and(|n| n < 1) {
        return Err(ApiError::bad_request("invalid_try", "try counts from 1"));
    }
    let pool = &state.pools.data;
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
    path: Result<Path<(String, String)>, PathRejection>,
    q: Result<Query<LogQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let attempt = find_attempt(&state, path, q).await?;
    let chunks = ledger::logs::chunks(&state.pools.data, attempt.id, 0).await?;
    let mut body: String = chunks.into_iter().map(|(_, b)| b).collect();
    let max = state.config.logs.max_bytes_per_attempt;
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
    path: Result<Path<(String, String)>, PathRejection>,
    q: Result<Query<LogQuery>, QueryRejection>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let attempt = find_attempt(&state, path, q).await?;
    let permit = state.guards.stream()?;
    let follow = Follow {
        _permit: permit,
        max_bytes: state.config.logs.max_bytes_per_attempt,
        pool: state.pools.data.clone(),
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
    _permit: super::StreamPermit,
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

/// Who acts and why, for the ledger's record.
fn actor(caller: &Caller, reason: Option<String>) -> Actor {
    Actor {
        name: caller.0.clone(),
        reason,
    }
}

fn refused(e: ControlError) -> ApiError {
    match e {
        ControlError::NotFound(m) => ApiError::not_found("not_found", m),
        ControlError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
        ControlError::Database(e) => e.into(),
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
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
    OptionalJson(body): OptionalJson<ClearBody>,
) -> ApiResult<Json<Value>> {
    let id = run_path(id)?;
    let actor = actor(&caller, body.reason);
    let tasks = clear_run(&state, id, body.tasks, body.downstream, &actor).await?;
    Ok(Json(
        json!({ "run_id": id, "state": "queued", "cleared": tasks }),
    ))
}

/// Queues a finished run again with `tasks` cleared (every task when
/// none; with `downstream`, every task after them too) and wakes this
/// process's daemon. Returns the tasks cleared.
pub(crate) async fn clear_run(
    state: &ApiState,
    id: i64,
    mut tasks: Vec<String>,
    downstream: bool,
    actor: &Actor,
) -> ApiResult<Vec<String>> {
    let pool = &state.pools.ledger;
    let run = ledger::run(pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found("unknown_run", format!("no run {id}")))?;
    if downstream {
        let job = find_job(state, &run.job)?;
        tasks = job
            .to_clear(&tasks, true)
            .map_err(|m| ApiError::not_found("not_found", m))?;
    }
    if tasks.is_empty() {
        tasks = ledger::tasks(pool, id)
            .await?
            .into_iter()
            .map(|t| t.task)
            .collect();
    }
    controls::clear(pool, id, &tasks, actor)
        .await
        .map_err(refused)?;
    if let Some(wake) = &state.wake {
        wake.notify_one();
    }
    Ok(tasks)
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
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
    body: Result<Json<MarkBody>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let id = run_path(id)?;
    let body = json_body(body)?;
    let to = match RunState::parse(&body.state) {
        Some(s @ (RunState::Success | RunState::Failed)) => s,
        _ => {
            return Err(ApiError::bad_request(
                "invalid_state",
                "state must be success or failed",
            ))
        }
    };
    controls::mark(
        &state.pools.ledger,
        id,
        body.task.as_deref(),
        to,
        &actor(&caller, body.reason),
    )
    .await
    .map_err(refused)?;
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
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
    OptionalJson(body): OptionalJson<ReasonBody>,
) -> ApiResult<Json<Value>> {
    let id = run_path(id)?;
    controls::cancel(&state.pools.ledger, id, &actor(&caller, body.reason))
        .await
        .map_err(refused)?;
    Ok(Json(json!({
        "run_id": id,
        "state": "cancelled",
        "note": format!("its worker stops it within scheduler.heartbeat_secs ({} s)", state.config.scheduler.heartbeat_secs),
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
    Extension(caller): Extension<Caller>,
    Path(job): Path<String>,
    body: Result<Json<ClearFailedBody>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let job = find_job(&state, &job)?;
    let body = json_body(body)?;
    let (from, to) = (instant("from", &body.from)?, instant("to", &body.to)?);
    if from >= to {
        return Err(ApiError::bad_request(
            "invalid_range",
            "from must be before to",
        ));
    }
    let runs = controls::clear_failed(
        &state.pools.ledger,
        &job.name,
        from,
        to,
        &actor(&caller, body.reason),
    )
    .await
    .map_err(refused)?;
    if let Some(wake) = &state.wake {
        wake.notify_one();
    }
    Ok(Json(json!({ "job": job.name, "cleared_runs": runs })))
}

async fn set_paused(
    state: &ApiState,
    caller: &Caller,
    job: &str,
    body: ReasonBody,
    paused: bool,
) -> ApiResult<Json<Value>> {
    let job = find_job(state, job)?;
    controls::set_paused(
        &state.pools.ledger,
        &job.name,
        paused,
        &actor(caller, body.reason),
    )
    .await
    .map_err(refused)?;
    if let Some(wake) = &state.wake {
        wake.notify_one();
    }
    Ok(Json(json!({ "job": job.name, "paused": paused })))
}

/// `POST /jobs/{job}/pause`.
pub async fn pause(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(job): Path<String>,
    OptionalJson(body): OptionalJson<ReasonBody>,
) -> ApiResult<Json<Value>> {
    set_paused(&state, &caller, &job, body, true).await
}

/// `POST /jobs/{job}/unpause`.
pub async fn unpause(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(job): Path<String>,
    OptionalJson(body): OptionalJson<ReasonBody>,
) -> ApiResult<Json<Value>> {
    set_paused(&state, &caller, &job, body, false).await
}
