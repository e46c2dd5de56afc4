//! The endpoints. Inputs are checked here and turned into [`ApiError`]s
//! with stable codes; nothing a client sends can cause a 500.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use axum::body::Body;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{ApiError, ApiState};
use crate::dag::backfill::{self, Reprocess, Spec};
use crate::dag::Job;
use crate::ledger::backfills::{self, BackfillRow};
use crate::ledger::{self, RunState};
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

pub(super) fn find_job(state: &ApiState, name: &str) -> ApiResult<Arc<Job>> {
    let set = state.jobs.current();
    set.find(name).cloned().ok_or_else(|| {
        let known: Vec<&str> = set.iter().map(|j| j.name.as_str()).collect();
        ApiError::not_found(
            "unknown_job",
            format!("no job {name:?} (known: {})", known.join(", ")),
        )
    })
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
    let jobs = state.jobs.current();
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

pub async fn jobs(State(state): State<ApiState>) -> Json<Value> {
    let pool = &state.pools.data;
    let paused = ledger::controls::paused_jobs(pool).await.ok();
    let stale = state.config.scheduler.stale_after_secs;
    let loaded_by = ledger::daemons::job_versions(pool, stale)
        .await
        .unwrap_or_default();
    let set = state.jobs.current();
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
    Json(json!({ "jobs": jobs, "invalid_files": set.errors }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunsQuery {
    state: Option<String>,
    limit: Option<i64>,
}

pub async fn job_runs(
    State(state): State<ApiState>,
    Path(job): Path<String>,
    q: Result<Query<RunsQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let q = query(q)?;
    let job = find_job(&state, &job)?;
    let state_filter = match &q.state {
        None => None,
        Some(s) => Some(RunState::parse(s).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_state",
                format!("state must be one of {}", RunState::names()),
            )
        })?),
    };
    let limit = q.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            "limit must be 1 to 1000",
        ));
    }
    let filter = ledger::RunFilter {
        job: Some(job.name.clone()),
        state: state_filter,
        limit,
    };
    let runs = ledger::runs(&state.pools.data, &filter).await?;
    // Intervals past their deadline, with or without a run.
    let late = ledger::deadlines::late_intervals(&state.pools.data, &job.name, limit).await?;
    let paused = ledger::controls::paused_jobs(&state.pools.data)
        .await?
        .contains(&job.name);
    // Who changed what on the job and its runs, newest first.
    let actions = ledger::controls::job_actions(&state.pools.data, &job.name, limit).await?;
    Ok(Json(json!({
        "job": job.name, "paused": paused, "runs": runs, "late_intervals": late,
        "actions": actions,
    })))
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
    Path(job): Path<String>,
    q: Result<Query<GridQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let q = query(q)?;
    let job = find_job(&state, &job)?;
    let limit = q.runs.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            "runs must be 1 to 1000",
        ));
    }
    let q = ledger::console::GridQuery {
        job: job.name.clone(),
        state: None,
        from: None,
        to: None,
        before: None,
        limit,
    };
    let runs = ledger::console::grid(&state.pools.data, &q).await?;
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
    axum::Extension(caller): axum::Extension<super::Caller>,
    Path(job): Path<String>,
    OptionalJson(body): OptionalJson<TriggerBody>,
) -> ApiResult<Response> {
    let job = find_job(&state, &job)?;
    let at = match &body.interval_start {
        Some(s) => Some(instant("interval_start", s)?),
        None => None,
    };
    let (id, interval) = trigger(
        &state,
        &job,
        at,
        Allow {
            before_start_date: body.ignore_start_date,
            unfinished: body.allow_unfinished,
        },
        &body.params,
        caller.0,
        body.reason,
    )
    .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "run_id": id,
            "job": job.name,
            "state": "queued",
            "interval_start": interval.start,
            "interval_end": interval.end,
            "note": "a daemon (hxjobs daemon) claims and runs it",
        })),
    )
        .into_response())
}

/// What a run or backfill may include beyond the usual.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Allow {
    /// Intervals before the job's `start_date`.
    pub before_start_date: bool,
    /// Intervals that have not ended yet.
    pub unfinished: bool,
}

/// Queues a manual run of the interval containing `at` (default: the
/// last complete one) with `params` checked against the job's, recorded
/// as `caller`'s action; wakes this process's daemon. Returns the run's id
/// and interval.
pub(crate) async fn trigger(
    state: &ApiState,
    job: &Job,
    at: Option<DateTime<Utc>>,
    allow: Allow,
    params: &serde_json::Map<String, Value>,
    caller: String,
    reason: Option<String>,
) -> ApiResult<(i64, crate::interval::Interval)> {
    let interval = match at {
        Some(t) => job.interval.containing(t),
        None => job.interval.last_complete(Utc::now()),
    };
    if !interval.representable() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_interval",
            format!(
                "the {} interval at {} cannot be run: hxjobs schedules the years {} to {}",
                job.interval.as_str(),
                interval.start.format("%Y-%m-%dT%H:%M:%SZ"),
                crate::time::EARLIEST,
                crate::time::LATEST
            ),
        ));
    }
    if interval.end > Utc::now() && !allow.unfinished {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "interval_not_ended",
            format!(
                "the interval {} → {} has not ended yet (set allow_unfinished to run it anyway)",
                interval.start, interval.end
            ),
        ));
    }
    if interval.start < job.start_date && !allow.before_start_date {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "before_start_date",
            format!(
                "{} starts on {}: the interval {} is before it (set ignore_start_date to run it anyway)",
                job.name, job.start_date, interval.start
            ),
        ));
    }
    let params = crate::dag::params::check(&job.params, params)
        .map_err(|m| ApiError::bad_request("invalid_params", m))?;
    let trigger = ledger::Trigger {
        by: Some(caller.clone()),
        params,
    };
    let id = ledger::create_manual_run(&state.pools.ledger, &job.name, interval, &trigger).await?;
    let actor = ledger::controls::Actor {
        name: caller,
        reason,
    };
    let detail = json!({ "params": trigger.params, "interval_start": interval.start });
    ledger::controls::record_action(
        &state.pools.ledger,
        &actor,
        "trigger",
        &job.name,
        Some(id),
        Some(detail),
    )
    .await?;
    if let Some(wake) = &state.wake {
        wake.notify_one();
    }
    Ok((id, interval))
}

pub async fn run(
    State(state): State<ApiState>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let id = id_of(id)?;
    let run = ledger::run(&state.pools.data, id)
        .await?
        .ok_or_else(|| ApiError::not_found("unknown_run", format!("no run {id}")))?;
    let tasks = ledger::tasks(&state.pools.data, id).await?;
    // Every attempt of every task, with its try number, outcome and log size.
    let attempts = ledger::logs::attempts(&state.pools.data, id, None).await?;
    // Who changed what on it (clear, mark, cancel, trigger).
    let actions = ledger::controls::run_actions(&state.pools.data, id).await?;
    // What was sent about it, and whether it arrived.
    let notifications = crate::notify::of_run(&state.pools.data, id).await?;
    Ok(Json(json!({
        "run": run, "tasks": tasks, "attempts": attempts, "actions": actions,
        "notifications": notifications,
    })))
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
    body: Result<Json<BackfillBody>, JsonRejection>,
) -> ApiResult<Response> {
    let body = json_body(body)?;
    let job = find_job(&state, &body.job)?;
    let (from, to) = (instant("from", &body.from)?, instant("to", &body.to)?);
    let spec = backfill_spec(
        from,
        to,
        body.reprocess.as_deref(),
        body.parallel,
        Allow {
            before_start_date: body.ignore_start_date,
            unfinished: body.allow_unfinished,
        },
        state.config.api.max_backfill_intervals,
    )?;
    let plan = backfill_plan(&state, &job, &spec).await?;
    let id = start_backfill(&state, job, spec).await?;
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

/// A backfill's settings, checked: `from` before `to`, reprocess `none`,
/// `failed` or `all`, parallel 1 to 64 (default 2).
pub(crate) fn backfill_spec(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    reprocess: Option<&str>,
    parallel: Option<usize>,
    allow: Allow,
    max_intervals: usize,
) -> ApiResult<Spec> {
    if from >= to {
        return Err(ApiError::bad_request(
            "invalid_range",
            "from must be before to",
        ));
    }
    let reprocess = match reprocess.unwrap_or("none") {
        "none" => Reprocess::None,
        "failed" => Reprocess::Failed,
        "all" => Reprocess::All,
        other => {
            return Err(ApiError::bad_request(
                "invalid_reprocess",
                format!("reprocess must be none, failed or all, not {other:?}"),
            ))
        }
    };
    let parallel = parallel.unwrap_or(2);
    if !(1..=64).contains(&parallel) {
        return Err(ApiError::bad_request(
            "invalid_parallel",
            "parallel must be 1 to 64",
        ));
    }
    Ok(Spec {
        from,
        to,
        parallel,
        reprocess,
        ignore_start_date: allow.before_start_date,
        allow_unfinished: allow.unfinished,
        max_intervals,
    })
}

/// What a backfill would do (its dry run).
pub(crate) async fn backfill_plan(
    state: &ApiState,
    job: &Job,
    spec: &Spec,
) -> ApiResult<backfill::Plan> {
    backfill::plan(&state.pools.ledger, job, spec)
        .await
        .map_err(|e| match e {
            backfill::Error::BeforeStartDate { .. } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "before_start_date",
                e.to_string()
                    .replace("--ignore-start-date", "ignore_start_date"),
            ),
            backfill::Error::Unfinished { .. } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "interval_not_ended",
                e.to_string()
                    .replace("--allow-unfinished", "allow_unfinished"),
            ),
            backfill::Error::TooMany { max, grain } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "too_many_intervals",
                format!(
                    "the range holds more than {max} {grain} intervals, the most one backfill may cover (api.max_backfill_intervals); split it"
                ),
            )
            .with("max_intervals", json!(max)),
            backfill::Error::Database(e) => e.into(),
            other => ApiError::bad_request("invalid_range", other.to_string()),
        })
}

/// Starts a backfill in this process (one running per job: 409 with the
/// running one's id otherwise), recorded in `backfills` with a heartbeat
/// and cancellable from there. Returns its id.
pub(crate) async fn start_backfill(state: &ApiState, job: Arc<Job>, spec: Spec) -> ApiResult<i64> {
    let worker = format!("api-backfill-{}", std::process::id());
    let stale = std::time::Duration::from_secs(state.config.scheduler.stale_after_secs);
    let reprocess = match spec.reprocess {
        Reprocess::None => "none",
        Reprocess::Failed => "failed",
        Reprocess::All => "all",
    };
    let new = backfills::New {
        job: &job.name,
        from: spec.from,
        to: spec.to,
        reprocess,
        parallel: spec.parallel as i32,
        worker: &worker,
    };
    let id = match backfills::start(&state.pools.ledger, &new, stale).await? {
        Ok(id) => id,
        Err(running) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "backfill_running",
                format!(
                    "backfill {running} of {} is running; cancel it with DELETE /backfills/{running} or wait",
                    job.name
                ),
            )
            .with("backfill_id", json!(running)))
        }
    };
    let (config, pools, shutdown) = (
        state.config.clone(),
        state.pools.clone(),
        state.stop.clone(),
    );
    let name = job.name.clone();
    let stop = CancellationToken::new();
    // Heartbeat, and the stop flag: shutdown, or the row cancelled (from
    // this API or another).
    let beat = {
        let (pool, stop) = (pools.ledger.clone(), stop.clone());
        let every = std::time::Duration::from_secs(state.config.scheduler.heartbeat_secs.max(1));
        tokio::spawn(async move {
            loop {
                let running = backfills::heartbeat(&pool, id).await;
                if matches!(running, Ok(false)) || shutdown.is_cancelled() {
                    stop.cancel();
                }
                tokio::time::sleep(every.min(std::time::Duration::from_secs(2))).await;
            }
        })
    };
    tokio::spawn(async move {
        let outcome = backfill::run(config, &pools, job, spec, &worker, stop, |_| {}).await;
        beat.abort();
        let (all_ok, ok, failed, error) = match &outcome {
            Ok(s) if s.failed == 0 && s.handed_back == 0 => (true, s.succeeded, 0, None),
            Ok(s) => (
                false,
                s.succeeded,
                s.failed,
                Some(format!(
                    "{} failed, {} handed back",
                    s.failed, s.handed_back
                )),
            ),
            Err(e) => (false, 0, 0, Some(e.to_string())),
        };
        match &outcome {
            Ok(s) => {
                tracing::info!(job = %name, backfill = id, succeeded = s.succeeded, failed = s.failed, "API backfill finished")
            }
            Err(e) => {
                tracing::error!(job = %name, backfill = id, error = %e, "API backfill failed")
            }
        }
        let recorded = backfills::finish(
            &pools.ledger,
            id,
            all_ok,
            ok as i32,
            failed as i32,
            error.as_deref(),
        )
        .await;
        if let Err(e) = recorded {
            tracing::error!(backfill = id, error = %e, "the backfill's end was not recorded");
        }
    });
    Ok(id)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackfillsQuery {
    #[serde(default)]
    job: Option<String>,
}

/// `GET /backfills?job=`: API backfills, newest first.
pub async fn backfills(
    State(state): State<ApiState>,
    q: Result<Query<BackfillsQuery>, QueryRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let q = query(q)?;
    let rows = backfills::list(&state.pools.ledger, q.job.as_deref()).await?;
    Ok(Json(json!({ "backfills": rows })))
}

/// `GET /backfills/{id}`.
pub async fn backfill_get(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<BackfillRow>> {
    let id = backfill_id(&id)?;
    backfills::get(&state.pools.ledger, id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("unknown_backfill", format!("no backfill {id}")))
}

/// `DELETE /backfills/{id}`: cancels a running backfill; its runs in hand
/// are handed back, finished ones stay.
pub async fn backfill_cancel(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<BackfillRow>> {
    let id = backfill_id(&id)?;
    match backfills::cancel(&state.pools.ledger, id).await? {
        Ok(row) => {
            tracing::info!(backfill = id, job = %row.job, "API backfill cancelled");
            Ok(Json(row))
        }
        Err(Some(s)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "backfill_finished",
            format!("backfill {id} is {s}, not running"),
        )),
        Err(None) => Err(ApiError::not_found(
            "unknown_backfill",
            format!("no backfill {id}"),
        )),
    }
}

fn backfill_id(s: &str) -> Result<i64, ApiError> {
    s.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::bad_request("invalid_id", format!("{s:?} is not a backfill id")))
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

fn report_error(e: reports::Error) -> ApiError {
    match e {
        reports::Error::Definition(crate::reports::definition::Error::UnknownType(..)) => {
            ApiError::bad_request("unknown_report_type", e.to_string())
        }
        reports::Error::Definition(crate::reports::definition::Error::Invalid { .. }) => {
            ApiError::internal_as("invalid_report_definition", e)
        }
        reports::Error::PeriodInFuture { .. } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "period_in_future",
            e.to_string(),
        ),
        reports::Error::Incomplete { ref missing } => {
            let hours = serde_json::to_value(missing).unwrap_or_default();
            ApiError::new(StatusCode::CONFLICT, "period_incomplete", e.to_string())
                .with("missing_hours", hours)
        }
        reports::Error::Format(_) => ApiError::bad_request("invalid_format", e.to_string()),
        reports::Error::Database(e) => e.into(),
        other => ApiError::internal(other),
    }
}

pub async fn generate_report(
    State(state): State<ApiState>,
    body: Result<Json<GenerateBody>, JsonRejection>,
) -> ApiResult<Response> {
    let body = json_body(body)?;
    let format = Format::parse(body.format.as_deref().unwrap_or("pdf")).map_err(report_error)?;
    let period_start = body
        .period_start
        .as_deref()
        .map(|s| instant("period_start", s))
        .transpose()?;
    let record = generate(
        &state,
        &body.report_type,
        format,
        period_start,
        body.require_complete,
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

/// Generates a report now (the API's and the console's form).
pub(crate) async fn generate(
    state: &ApiState,
    report_type: &str,
    format: Format,
    period_start: Option<DateTime<Utc>>,
    require_complete: bool,
) -> ApiResult<reports::Record> {
    reports::generate_with(
        &state.config,
        &state.pools.data,
        report_type,
        format,
        period_start,
        Utc::now(),
        reports::Options {
            require_complete,
            ..Default::default()
        },
    )
    .await
    .map_err(report_error)
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
    q: Result<Query<ReportsQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let q = query(q)?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            "limit must be 1 to 1000",
        ));
    }
    let list = reports::list(&state.pools.data, q.report_type.as_deref(), limit)
        .await
        .map_err(report_error)?;
    Ok(Json(json!({ "reports": list })))
}

async fn record(
    state: &ApiState,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<reports::Record> {
    let id = id_of(id)?;
    reports::get(&state.pools.data, id)
        .await
        .map_err(report_error)?
        .ok_or_else(|| ApiError::not_found("unknown_report", format!("no report {id}")))
}

pub async fn report(
    State(state): State<ApiState>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<reports::Record>> {
    Ok(Json(record(&state, id).await?))
}

pub async fn download_report(
    State(state): State<ApiState>,
    id: Result<Path<String>, PathRejection>,
    q: Result<Query<DownloadQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let q = query(q)?;
    let record = record(&state, id).await?;
    if record.status != "done" {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "report_not_ready",
            format!("report {} is {}", record.id, record.status),
        ));
    }
    let gone = || {
        ApiError::new(
            StatusCode::GONE,
            "report_file_missing",
            "the report's file is no longer there",
        )
    };
    let path = reports::file_of(&state.config.reports.output_dir, &record).ok_or_else(gone)?;
    let file = tokio::fs::File::open(&path).await.map_err(|_| gone())?;
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
    Ok(Json(
        crate::capacity::analyse(&state.pools.data, &state.config.capacity, to, Utc::now()).await?,
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionBody {
    #[serde(default)]
    dry_run: bool,
}

pub async fn retention(
    State(state): State<ApiState>,
    body: Result<Json<RetentionBody>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let body = json_body(body)?;
    let cfg = &state.config.retention;
    let plan = crate::retention::plan(&state.pools.data, cfg, Utc::now())
        .await
        .map_err(ApiError::internal)?;
    let days: Vec<Value> = plan
        .event_days
        .iter()
        .map(|(d, n)| json!({"day": d, "rows": n}))
        .collect();
    let classes: Vec<Value> = plan
        .classes
        .iter()
        .map(|c| json!({"class": c.name, "cutoff": c.cutoff, "rows": c.rows}))
        .collect();
    let archived = if body.dry_run {
        Vec::new()
    } else {
        crate::retention::apply(
            &state.pools.data,
            &cfg.archive_dir,
            &state.config.reports.output_dir,
            &plan,
            None,
        )
        .await
        .map_err(ApiError::internal)?
        .into_iter()
        .map(|a| json!({"day": a.day, "rows": a.rows, "bytes": a.bytes, "path": a.path}))
        .collect()
    };
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

#[derive(Debug, Serialize, sqlx::FromRow)]
pub(crate) struct RollupRow {
    pub grain: String,
    pub bucket_start: DateTime<Utc>,
    pub event_type: String,
    pub source: String,
    pub subject: String,
    pub event_count: i64,
    pub error_count: i64,
    pub latency_avg_ms: Option<f64>,
    pub latency_max_ms: Option<f64>,
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost_usd: f64,
    pub rating_avg: Option<f64>,
    pub rating_count: i64,
    pub value_sum: f64,
    pub value_min: Option<f64>,
    pub value_max: Option<f64>,
    pub distinct_users: i64,
}

pub async fn rollups(
    State(state): State<ApiState>,
    q: Result<Query<RollupsQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let q = query(q)?;
    let grain = q.grain.as_deref().unwrap_or("hour");
    if !matches!(grain, "hour" | "day" | "week" | "month") {
        return Err(ApiError::bad_request(
            "invalid_grain",
            "grain must be hour, day, week or month",
        ));
    }
    let now = Utc::now();
    let to =
        q.to.as_deref()
            .map(|s| instant("to", s))
            .transpose()?
            .unwrap_or(now);
    let from = match q.from.as_deref() {
        Some(s) => instant("from", s)?,
        None => to - chrono::TimeDelta::days(1),
    };
    if from > to {
        return Err(ApiError::bad_request(
            "invalid_range",
            "from must not be after to",
        ));
    }
    let limit = q.limit.unwrap_or(1000);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            "limit must be 1 to 10000",
        ));
    }
    let filter = RollupFilter {
        grain,
        from,
        to,
        event_type: q.event_type.as_deref(),
        source: q.source.as_deref(),
        subject: q.subject.as_deref(),
        limit,
    };
    let rows = rollup_rows(&state.pools.data, &filter).await?;
    Ok(Json(json!({
        "grain": grain,
        "from": from,
        "to": to,
        "rows": rows,
    })))
}

/// Which rollup rows to read.
pub(crate) struct RollupFilter<'a> {
    pub grain: &'a str,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub event_type: Option<&'a str>,
    pub source: Option<&'a str>,
    pub subject: Option<&'a str>,
    pub limit: i64,
}

/// Rollup rows, oldest bucket first.
pub(crate) async fn rollup_rows(
    pool: &sqlx::PgPool,
    f: &RollupFilter<'_>,
) -> Result<Vec<RollupRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT grain, bucket_start, event_type, source, subject, event_count, error_count,
                latency_avg_ms, latency_max_ms, latency_p50_ms, latency_p95_ms, latency_p99_ms,
                prompt_tokens, completion_tokens, cost_usd, rating_avg, rating_count, value_sum,
                value_min, value_max, distinct_users
         FROM rollups
         WHERE grain = $1 AND bucket_start >= $2 AND bucket_start < $3
           AND ($4::text IS NULL OR event_type = $4) AND ($5::text IS NULL OR source = $5)
           AND ($6::text IS NULL OR subject = $6)
         ORDER BY bucket_start, event_type, source, subject LIMIT $7",
    )
    .bind(f.grain)
    .bind(f.from)
    .bind(f.to)
    .bind(f.event_type)
    .bind(f.source)
    .bind(f.subject)
    .bind(f.limit)
    .fetch_all(pool)
    .await
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
