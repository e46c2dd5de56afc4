//! Backfills: start one, list them, read and cancel one.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;

use super::extract::{id_of, instant, json_body, query, ApiResult};
use super::ApiState;
use crate::ledger::backfills::BackfillRow;
use crate::ops::runs::Allow;
use crate::ops::{self, Actor};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackfillBody {
    job: String,
    from: String,
    to: String,
    #[serde(default)]
    reprocess: Option<String>,
    #[serde(default)]
    parallel: Option<usize>,
    #[serde(default)]
    ignore_start_date: bool,
    #[serde(default)]
    allow_unfinished: bool,
}

pub async fn backfill(
    State(state): State<ApiState>,
    Extension(actor): Extension<Actor>,
    body: Result<Json<BackfillBody>, JsonRejection>,
) -> ApiResult<Response> {
    let body = json_body(body)?;
    let job = state.ops.job(&body.job)?;
    let (from, to) = (instant("from", &body.from)?, instant("to", &body.to)?);
    let spec = state.ops.backfill_spec(&ops::backfills::Request {
        from: Some(from),
        to: Some(to),
        reprocess: body.reprocess.as_deref(),
        parallel: body.parallel,
        allow: Allow {
            before_start_date: body.ignore_start_date,
            unfinished: body.allow_unfinished,
        },
        max_intervals: None,
    })?;
    let (id, plan) = state.ops.start_backfill(&actor, &job.name, spec).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "backfill_id": id,
            "job": body.job,
            "from": from,
            "to": to,
            "intervals": plan.intervals,
            "to_run": plan.to_run(),
            "state": "started",
            "runs": format!("/jobs/{}/runs", body.job),
            "backfill": format!("/backfills/{id}"),
        })),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackfillsQuery {
    #[serde(default)]
    job: Option<String>,
}

/// `GET /backfills?job=`: backfills, newest first.
pub async fn backfills(
    State(state): State<ApiState>,
    Extension(actor): Extension<Actor>,
    q: Result<Query<BackfillsQuery>, QueryRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let q = query(q)?;
    let rows = state.ops.backfills(&actor, q.job.as_deref()).await?;
    Ok(Json(json!({ "backfills": rows })))
}

/// `GET /backfills/{id}`.
pub async fn backfill_get(
    State(state): State<ApiState>,
    Extension(actor): Extension<Actor>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<BackfillRow>> {
    let id = id_of(id)?;
    Ok(Json(state.ops.backfill(&actor, id).await?))
}

/// `DELETE /backfills/{id}`: cancels a running backfill; its runs in hand
/// are handed back, finished ones stay.
pub async fn backfill_cancel(
    State(state): State<ApiState>,
    Extension(actor): Extension<Actor>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<BackfillRow>> {
    let id = id_of(id)?;
    Ok(Json(state.ops.cancel_backfill(&actor, id).await?))
}
