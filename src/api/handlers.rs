//! The service's own endpoints: fallbacks, health, live stats, metrics
//! and the OpenAPI document.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use futures::Stream;
use serde_json::json;

use super::extract::ApiResult;
use super::{ApiError, ApiState};

pub async fn not_found() -> ApiError {
    ApiError::not_found("not_found", "no such endpoint; see /openapi.json")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method; see /openapi.json",
    )
}

pub async fn health(State(state): State<ApiState>) -> Response {
    let h = state.health.read().await.clone();
    let jobs = state.ops.jobs.current();
    // A stalled partition is data that stops reaching PostgreSQL: unhealthy.
    let ingest_stalled = h.ingest.as_ref().is_some_and(|i| i.stalled());
    // Reports and archives live in the store: without it they fail.
    let healthy = h.database.up() && h.kafka.up() && h.storage.up() && !ingest_stalled;
    let body = json!({
        "status": if healthy { "healthy" } else { "unhealthy" },
        "service": "batch-processing-api",
        "timestamp": Utc::now(),
        "version": env!("CARGO_PKG_VERSION"),
        "checks": {
            "database": h.database,
            "kafka": h.kafka,
            "storage": h.storage,
            "ingest": h.ingest,
            // Invalid job files do not stop the service: the valid jobs run.
            "jobs": {
                "status": if jobs.errors.is_empty() { "ok" } else { "invalid_files" },
                "loaded": jobs.len(),
                "invalid_files": jobs.errors.as_slice(),
            },
        },
        "checked_at": h.checked_at,
    });
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

fn live(state: &ApiState) -> ApiResult<&Arc<crate::live::LiveStats>> {
    let live = state.live.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "live_stats_disabled",
            "live stats are off (live_stats.enabled = false)",
        )
    })?;
    live.available().map_err(|why| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "live_stats_unavailable",
            format!("no live figures: {why}"),
        )
    })?;
    Ok(live)
}

pub async fn stats(State(state): State<ApiState>) -> ApiResult<Response> {
    let live = live(&state)?;
    let body = live.snapshot_json();
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        body.as_ref().clone(),
    )
        .into_response())
}

/// `GET /stats/stream`: the live figures as server-sent events, the
/// current snapshot at once and then each one published (soon after events
/// are counted, and every second besides).
pub async fn stats_stream(
    State(state): State<ApiState>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let live = live(&state)?.clone();
    let permit = state.guards.stream()?;
    let mut rx = live.subscribe();
    rx.mark_changed();
    let stream = futures::stream::unfold((rx, permit), |(mut rx, permit)| async move {
        rx.changed().await.ok()?;
        let data = rx.borrow_and_update().clone();
        let event = Event::default()
            .event("stats")
            .data(String::from_utf8_lossy(data.as_ref()));
        Some((Ok(event), (rx, permit)))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// The largest message a WebSocket client may send (it has nothing to say;
/// what it sends is read and dropped).
const WS_MAX_MESSAGE: usize = 4096;

/// `GET /stats/ws`: the same figures as `/stats/stream`, over a WebSocket
/// (one text message per snapshot). At most `api.max_websockets` at once;
/// past it, 503 before the upgrade.
pub async fn stats_ws(
    State(state): State<ApiState>,
    upgrade: axum::extract::ws::WebSocketUpgrade,
) -> ApiResult<Response> {
    let live = live(&state)?.clone();
    let permit = state.guards.socket()?;
    let mut rx = live.subscribe();
    rx.mark_changed();
    let stop = state.ops.stop.clone();
    Ok(upgrade
        .max_message_size(WS_MAX_MESSAGE)
        .max_frame_size(WS_MAX_MESSAGE)
        .on_upgrade(move |mut socket| async move {
            use axum::extract::ws::Message;
            let _permit = permit;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    changed = rx.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        let data = rx.borrow_and_update().clone();
                        let text = String::from_utf8_lossy(data.as_ref()).into_owned();
                        if socket.send(Message::Text(text.into())).await.is_err() {
                            break;
                        }
                    }
                    incoming = socket.recv() => match incoming {
                        None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                        Some(Ok(_)) => {}
                    },
                }
            }
        }))
}

/// Renders what is in memory; nothing here waits on PostgreSQL or the broker.
pub async fn metrics() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::render(),
    )
        .into_response()
}

pub async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        super::openapi::document(),
    )
        .into_response()
}
