//! A run's task logs: as text, or followed live (server-sent events).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::Deserialize;
use serde_json::json;
use sqlx::PgPool;

use super::handlers::{parse_id, query, ApiResult};
use super::{ApiError, ApiState};
use crate::ledger::{self, logs::AttemptRow};

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
    let body: String = chunks.into_iter().map(|(_, b)| b).collect();
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
    let follow = Follow {
        pool: state.pools.data.clone(),
        attempt_id: attempt.id,
        seq: 0,
        ended: false,
    };
    let stream = futures::stream::unfold(follow, |mut f| async move {
        let event = f.next().await?;
        Some((Ok(event), f))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

struct Follow {
    pool: PgPool,
    attempt_id: i64,
    seq: i32,
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
