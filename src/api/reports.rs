//! Reports: generate one, list them, read one's record, download its file.

use axum::body::Body;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};

use super::extract::{id_of, instant, json_body, query, ApiResult};
use super::ApiState;
use crate::ops::{self, Actor};
use crate::reports::{self, Format};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateBody {
    report_type: String,
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    period_start: Option<String>,
    /// Refuse (409) rather than render a period not completely stored.
    #[serde(default)]
    require_complete: bool,
}

pub async fn generate_report(
    State(state): State<ApiState>,
    Extension(actor): Extension<Actor>,
    body: Result<Json<GenerateBody>, JsonRejection>,
) -> ApiResult<Response> {
    let body = json_body(body)?;
    let period_start = body
        .period_start
        .as_deref()
        .map(|s| instant("period_start", s))
        .transpose()?;
    let record = state
        .ops
        .generate_report(
            &actor,
            &ops::reports::Generate {
                report_type: &body.report_type,
                format: body.format.as_deref().unwrap_or("pdf"),
                period_start,
                require_complete: body.require_complete,
            },
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "report_id": record.id,
            "status": record.status,
            "notes": record.notes,
            "partial_through": record.partial_through,
            "report": record,
            "download": format!("/reports/{}/download", record.id),
        })),
    )
        .into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownloadQuery {
    /// Shown in the browser (`Content-Disposition: inline`) rather than saved.
    #[serde(default)]
    inline: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportsQuery {
    #[serde(rename = "type")]
    report_type: Option<String>,
    limit: Option<i64>,
}

pub async fn reports(
    State(state): State<ApiState>,
    Extension(actor): Extension<Actor>,
    q: Result<Query<ReportsQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let q = query(q)?;
    let list = state
        .ops
        .reports(&actor, q.report_type.as_deref(), q.limit.unwrap_or(50))
        .await?;
    Ok(Json(json!({ "reports": list })))
}

pub async fn report(
    State(state): State<ApiState>,
    Extension(actor): Extension<Actor>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<reports::Record>> {
    let id = id_of(id)?;
    Ok(Json(state.ops.report(&actor, id).await?))
}

pub async fn download_report(
    State(state): State<ApiState>,
    Extension(actor): Extension<Actor>,
    id: Result<Path<String>, PathRejection>,
    q: Result<Query<DownloadQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let q = query(q)?;
    let id = id_of(id)?;
    let (record, stream) = state.ops.report_file(&actor, id).await?;
    let format = Format::parse(&record.format).unwrap_or(Format::Pdf);
    let name = record.path.clone().unwrap_or_default();
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(format.content_type()),
    );
    if let Some(size) = record.size {
        if let Ok(v) = header::HeaderValue::from_str(&size.to_string()) {
            headers.insert(header::CONTENT_LENGTH, v);
        }
    }
    let disposition = if q.inline { "inline" } else { "attachment" };
    if let Ok(v) = header::HeaderValue::from_str(&format!("{disposition}; filename=\"{name}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}
