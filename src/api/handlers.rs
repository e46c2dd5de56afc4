//! The endpoints. Inputs are checked here and turned into [`ApiError`]s
//! with stable codes; nothing a client sends can cause a 500.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{ApiError, ApiState};
use crate::ledger::backfills::BackfillRow;
use crate::ledger::{self};
use crate::ops::runs::{Allow, TriggerRequest};
use crate::ops::{self, Actor};
use crate::reports::{self, Format};

pub(super) type ApiResult<T> = Result<T, ApiError>;

pub(super) fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> ApiResult<T> {
    match body {
        Ok(Json(v)) => Ok(v),
        Err(JsonRejection::BytesRejection(e)) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the request body is larger than api.max_body_bytes",
            ))
        }
        Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with Content-Type: application/json",
        )),
        Err(e) => Err(ApiError::bad_request(
            "invalid_json",
            client_words(&e.body_text()),
        )),
    }
}

/// A JSON body that may be left out: no body at all is `T::default()`. A
/// body that is not `Content-Type: application/json` is refused (415) and
/// one that does not parse is a 400: never read as the default.
pub(super) struct OptionalJson<T>(pub T);

impl<S, T> axum::extract::FromRequest<S> for OptionalJson<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned + Default,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let json_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|m| m.trim().to_ascii_lowercase())
            .is_some_and(|m| m == "application/json" || m.ends_with("+json"));
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        "the request body is larger than api.max_body_bytes",
                    )
                } else {
                    ApiError::bad_request("invalid_body", "the request body could not be read")
                }
            })?;
        if bytes.is_empty() {
            return Ok(OptionalJson(T::default()));
        }
        if !json_type {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with Content-Type: application/json (or send no body)",
            ));
        }
        json_body(Json::<T>::from_bytes(&bytes)).map(OptionalJson)
    }
}

pub(super) fn query<T>(q: Result<Query<T>, QueryRejection>) -> ApiResult<T> {
    q.map(|Query(v)| v)
        .map_err(|e| ApiError::bad_request("invalid_query", client_words(&e.body_text())))
}

/// A deserializer's message in the words of the request: the fields and
/// JSON types a client sent, never the names of hxjobs's own Rust types.
fn client_words(message: &str) -> String {
    let mut out = message
        .replace(
            "Failed to deserialize the JSON body into the target type: ",
            "",
        )
        .replace("Failed to deserialize query string: ", "query: ");
    for (marker, words) in [
        ("expected struct ", "expected a JSON object"),
        ("expected enum ", "expected one of the documented values"),
    ] {
        while let Some(at) = out.find(marker) {
            let name_end = out[at + marker.len()..]
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .map_or(out.len(), |n| at + marker.len() + n);
            out.replace_range(at..name_end, words);
        }
    }
    out
}

fn id_of(p: Result<Path<String>, PathRejection>) -> ApiResult<i64> {
    let Path(raw) = p.map_err(|e| ApiError::bad_request("invalid_path", e.body_text()))?;
    parse_id(&raw)
}

/// A positive integer id from a path segment.
pub(super) fn parse_id(raw: &str) -> ApiResult<i64> {
    raw.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_id",
            format!("{raw:?} is not an id (a positive integer)"),
        )
    })
}

pub(super) fn instant(field: &str, s: &str) -> ApiResult<DateTime<Utc>> {
    crate::time::parse_instant(s)
        .map_err(|e| ApiError::bad_request("invalid_date", format!("{field}: {e}")))
}

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
    let healthy = h.database.up() && h.kafka.up() && !ingest_stalled;
    let body = json!({
        "status": if healthy { "healthy" } else { "unhealthy" },
        "service": "batch-processing-api",
        "timestamp": Utc::now(),
        "version": env!("CARGO_PKG_VERSION"),
        "checks": {
            "database": h.database,
            "kafka": h.kafka,
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

#[derive(Serialize)]
struct JobView<'a> {
    name: &'a str,
    description: &'a str,
    /// The first 12 hex digits of the job file's SHA-256.
    version: &'a str,
    file: String,
    /// When this process loaded this version.
    loaded_at: Option<DateTime<Utc>>,
    /// Live daemons with this job loaded, and which version each has.
    daemons: Vec<&'a ledger::daemons::JobVersion>,
    schedule: &'a str,
    timezone: String,
    interval: &'a str,
    start_date: DateTime<Utc>,
    max_active_runs: u32,
    wait_for: &'a [String],
    tasks: Vec<Value>,
    params: &'a [crate::dag::params::Param],
    /// `null` when the database could not say.
    paused: Option<bool>,
}

pub async fn jobs(
    State(state): State<ApiState>,
    Extension(actor): Extension<Actor>,
) -> ApiResult<Json<Value>> {
    state.ops.read(&actor, "jobs").await?;
    let pool = &state.ops.pools.data;
    let paused = ledger::controls::paused_jobs(pool).await.ok();
    let stale = state.ops.config.scheduler.stale_after_secs;
    let loaded_by = ledger::daemons::job_versions(pool, stale)
        .await
        .unwrap_or_default();
    let set = state.ops.jobs.current();
    let jobs: Vec<JobView> = set
        .iter()
        .map(|j| JobView {
            name: &j.name,
            description: &j.description,
            version: &j.version,
            file: j.file.display().to_string(),
            loaded_at: set.since.get(&j.name).copied(),
            daemons: loaded_by.iter().filter(|v| v.job == j.name).collect(),
            schedule: &j.schedule_text,
            timezone: j.timezone.to_string(),
            interval: j.interval.as_str(),
            start_date: j.start_date,
            max_active_runs: j.max_active_runs,
            wait_for: &j.wait_for,
            tasks: j
                .tasks
                .iter()
                .map(|t| json!({"id": t.id, "kind": t.kind.name(), "depends_on": t.depends_on}))
                .collect(),
            params: &j.params,
            paused: paused.as_ref().map(|p| p.contains(&j.name)),
        })
        .collect();
    Ok(Json(json!({ "jobs": jobs, "invalid_files": set.errors })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunsQuery {
    state: Option<String>,
    limit: Option<i64>,
}

pub async fn job_runs(
    State(state): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(job): Path<String>,
    q: Result<Query<RunsQuery>, QueryRejection>,
) -> ApiResult<Json<ops::runs::JobRuns>> {
    let q = query(q)?;
    let runs = state
        .ops
        .job_runs(&actor, &job, q.state.as_deref(), q.limit.unwrap_or(50))
        .await?;
    Ok(Json(runs))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GridQuery {
    runs: Option<i64>,
}

/// `GET /jobs/{job}/grid?runs=N`: the job's newest runs with every task's
/// state and try (what the console's grid shows), as JSON.
pub async fn job_grid(
    State(state): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(job): Path<String>,
    q: Result<Query<GridQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let q = query(q)?;
    state.ops.read(&actor, &format!("job:{job}")).await?;
    let job = state.ops.job(&job)?;
    let limit = q.runs.unwrap_or(100);
    ops::runs::check_limit("runs", limit, 1000)?;
    let q = ledger::console::GridQuery {
        job: job.name.clone(),
        state: None,
        from: None,
        to: None,
        before: None,
        limit,
    };
    let runs = ledger::console::grid(&state.ops.pools.data, &q).await?;
    let tasks: Vec<&str> = job.tasks.iter().map(|t| t.id.as_str()).collect();
    Ok(Json(
        json!({ "job": job.name, "tasks": tasks, "runs": runs }),
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerBody {
    /// Any instant in the interval to run; default: the last complete one.
    interval_start: Option<String>,
    /// Also run an interval before the job's `start_date`.
    #[serde(default)]
    ignore_start_date: bool,
    /// Also run an interval that has not ended yet.
    #[serde(default)]
    allow_unfinished: bool,
    /// Values for parameters the job declares; the rest keep their defaults.
    #[serde(default)]
    params: serde_json::Map<String, Value>,
    /// Why (kept with the action).
    reason: Option<String>,
}

pub async fn trigger_run(
    State(state): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(job): Path<String>,
    OptionalJson(body): OptionalJson<TriggerBody>,
) -> ApiResult<Response> {
    let at = match &body.interval_start {
        Some(s) => Some(instant("interval_start", s)?),
        None => None,
    };
    let request = TriggerRequest {
        at,
        allow: Allow {
            before_start_date: body.ignore_start_date,
            unfinished: body.allow_unfinished,
        },
        params: body.params,
        reason: body.reason,
    };
    let (id, interval) = state.ops.trigger(&actor, &job, request).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "run_id": id,
            "job": job,
            "state": "queued",
            "interval_start": interval.start,
            "interval_end": interval.end,
            "note": "a daemon (hxjobs daemon) claims and runs it",
        })),
    )
        .into_response())
}

pub async fn run(
    State(state): State<ApiState>,
    Extension(actor): Extension<Actor>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<ops::runs::RunDetail>> {
    let id = id_of(id)?;
    Ok(Json(state.ops.run(&actor, id).await?))
}

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
    let (record, file) = state.ops.report_file(&actor, id).await?;
    let format = Format::parse(&record.format).unwrap_or(Format::Pdf);
    let name = record.path.clone().unwrap_or_default();
    let stream = tokio_util::io::ReaderStream::new(file);
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
        .map(|a| json!({"day": a.day, "rows": a.rows, "bytes": a.bytes, "path": a.path}))
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
    let (from, to) = ops::data::range(from, to);
    let filter = crate::rollup::read::RollupFilter {
        grain,
        from,
        to,
        event_type: q.event_type.as_deref(),
        source: q.source.as_deref(),
        subject: q.subject.as_deref(),
        limit: q.limit.unwrap_or(1000),
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

pub async fn stats_stream(
    State(state): State<ApiState>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let live = live(&state)?.clone();
    let permit = state.guards.stream()?;
    let stream = futures::stream::unfold((live, permit), |(live, permit)| async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let data = live.snapshot_json();
        let event = Event::default()
            .event("stats")
            .data(String::from_utf8_lossy(data.as_ref()));
        Some((Ok(event), (live, permit)))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
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

#[cfg(test)]
mod tests {
    use super::client_words;

    #[test]
    fn errors_name_fields_not_types() {
        let m = client_words(
            "Failed to deserialize the JSON body into the target type: invalid type: sequence, expected struct GenerateBody at line 1 column 1",
        );
        assert_eq!(
            m,
            "invalid type: sequence, expected a JSON object at line 1 column 1"
        );
        let m = client_words("unknown field `x`, expected one of `job`, `from`");
        assert_eq!(m, "unknown field `x`, expected one of `job`, `from`");
    }
}
