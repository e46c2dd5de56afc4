//! What the data says: capacity, retention, rollup rows, the audit log.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};

use super::extract::{instant, json_body, query, ApiResult};
use super::{ApiError, ApiState};
use crate::ledger::{self};
use crate::ops::{self, Actor};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapacityQuery {
    to: Option<String>,
}

pub async fn capacity(
    State(state): State<ApiState>,
    Extension(actor): Extension<Actor>,
    q: Result<Query<CapacityQuery>, QueryRejection>,
) -> ApiResult<Json<crate::capacity::Analysis>> {
    let q = query(q)?;
    let to =
        q.to.as_deref()
            .map(|s| {
                crate::time::parse_day(s)
                    .map_err(|e| ApiError::bad_request("invalid_date", format!("to: {e}")))
            })
            .transpose()?;
    Ok(Json(state.ops.capacity(&actor, to).await?))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionBody {
    #[serde(default)]
    dry_run: bool,
}

pub async fn retention(
    State(state): State<ApiState>,
    Extension(actor): Extension<Actor>,
    body: Result<Json<RetentionBody>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let body = json_body(body)?;
    let done = state.ops.retention(&actor, body.dry_run).await?;
    let days: Vec<Value> = done
        .plan
        .event_days
        .iter()
        .map(|(d, n)| json!({"day": d, "rows": n}))
        .collect();
    let classes: Vec<Value> = done
        .plan
        .classes
        .iter()
        .map(|c| json!({"class": c.name, "cutoff": c.cutoff, "rows": c.rows}))
        .collect();
    let archived: Vec<Value> = done
        .archived
        .iter()
        .map(|a| json!({"day": a.day, "rows": a.rows, "bytes": a.bytes, "key": a.key}))
        .collect();
    Ok(Json(json!({
        "dry_run": body.dry_run,
        "event_days": days,
        "classes": classes,
        "archived": archived,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollupsQuery {
    grain: Option<String>,
    from: Option<String>,
    to: Option<String>,
    event_type: Option<String>,
    source: Option<String>,
    subject: Option<String>,
    limit: Option<i64>,
}

pub async fn rollups(
    State(state): State<ApiState>,
    Extension(actor): Extension<Actor>,
    q: Result<Query<RollupsQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let q = query(q)?;
    let grain = q.grain.as_deref().unwrap_or("hour");
    let to = q.to.as_deref().map(|s| instant("to", s)).transpose()?;
    let from = q.from.as_deref().map(|s| instant("from", s)).transpose()?;
    let (from, to) = ops::data::range(grain, from, to);
    let filter = crate::rollup::read::RollupFilter {
        grain,
        from,
        to,
        event_type: q.event_type.as_deref(),
        source: q.source.as_deref(),
        subject: q.subject.as_deref(),
        limit: q.limit.unwrap_or(1000),
        sketches: false,
    };
    let rows = state.ops.rollups(&actor, &filter).await?;
    Ok(Json(json!({
        "grain": grain,
        "from": from,
        "to": to,
        "rows": rows,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    actor: Option<String>,
    action: Option<String>,
    outcome: Option<String>,
    since: Option<String>,
    before: Option<i64>,
    limit: Option<i64>,
}

/// `GET /audit`: the audit log, newest first (admins).
pub async fn audit(
    State(state): State<ApiState>,
    Extension(actor): Extension<Actor>,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let q = query(q)?;
    let filter = ledger::audit::Filter {
        actor: q.actor,
        action: q.action,
        outcome: q.outcome,
        since: q
            .since
            .as_deref()
            .map(|s| instant("since", s))
            .transpose()?,
        before: q.before,
        limit: q.limit.unwrap_or(100),
    };
    let rows = state.ops.audit_log(&actor, &filter).await?;
    Ok(Json(json!({ "audit": rows })))
}
