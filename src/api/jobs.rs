//! Jobs and their runs: the job list, a job's runs and grid, a manual
//! trigger, one run.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::extract::{id_of, instant, query, ApiResult, OptionalJson};
use super::ApiState;
use crate::ledger::{self};
use crate::ops::runs::{Allow, TriggerRequest};
use crate::ops::{self, Actor};

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
    /// `null`: queued by completeness alone.
    schedule: Option<&'a str>,
    timezone: String,
    interval: &'a str,
    start_date: DateTime<Utc>,
    max_active_runs: u32,
    wait_for: &'a [String],
    /// `schedule`, or `complete`: also queued when its interval's data is.
    trigger: &'static str,
    /// `trigger = "complete"`: when an interval is complete, in words.
    complete_when: Option<String>,
    /// `trigger = "complete"`: what its next run still waits on.
    waiting_on: Option<&'a String>,
    tasks: Vec<Value>,
    /// Its data checks: name, the task they follow, kind, blocking.
    checks: Vec<Value>,
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
    let waiting = crate::dag::trigger::waiting_on(&state.ops.config, pool, &set.jobs, Utc::now())
        .await
        .unwrap_or_default();
    let jobs: Vec<JobView> = set
        .iter()
        .map(|j| JobView {
            name: &j.name,
            description: &j.description,
            version: &j.version,
            file: j.file.display().to_string(),
            loaded_at: set.since.get(&j.name).copied(),
            daemons: loaded_by.iter().filter(|v| v.job == j.name).collect(),
            schedule: j.schedule.as_ref().map(|s| s.text.as_str()),
            timezone: j.timezone.to_string(),
            interval: j.interval.as_str(),
            start_date: j.start_date,
            max_active_runs: j.max_active_runs,
            wait_for: &j.wait_for,
            trigger: match j.trigger {
                crate::dag::job::Trigger::Schedule => "schedule",
                crate::dag::job::Trigger::Complete { .. } => "complete",
            },
            complete_when: crate::dag::trigger::describe(j),
            waiting_on: waiting.get(&j.name),
            tasks: j
                .tasks
                .iter()
                .map(|t| {
                    json!({"id": t.id, "kind": t.kind.name(), "depends_on": t.depends_on,
                           "trigger_rule": t.trigger_rule.as_str(), "pool": t.pool})
                })
                .collect(),
            checks: j
                .checks
                .iter()
                .map(|c| json!({"name": c.name, "after": c.after, "kind": c.kind.name(), "blocking": c.blocking}))
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChecksQuery {
    from: Option<String>,
    to: Option<String>,
    limit: Option<i64>,
}

/// `GET /jobs/{job}/checks?from&to&limit`: the latest result of each data
/// check on the job's intervals starting in `[from, to)` (default: the
/// seven days before now), newest interval first.
pub async fn job_checks(
    State(state): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(job): Path<String>,
    q: Result<Query<ChecksQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let q = query(q)?;
    state.ops.read(&actor, &format!("job:{job}")).await?;
    let job = state.ops.job(&job)?;
    let to = match &q.to {
        Some(s) => instant("to", s)?,
        None => Utc::now(),
    };
    let from = match &q.from {
        Some(s) => instant("from", s)?,
        None => to - chrono::TimeDelta::days(7),
    };
    if from >= to {
        return Err(super::ApiError::bad_request(
            "invalid_range",
            "from must be before to",
        ));
    }
    let limit = q.limit.unwrap_or(500);
    ops::runs::check_limit("limit", limit, 10_000)?;
    let results = ledger::checks::of_job(&state.ops.pools.data, &job.name, from, to, limit).await?;
    Ok(Json(json!({
        "job": job.name,
        "from": from,
        "to": to,
        "results": results,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcrossQuery {
    job: Option<String>,
    state: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<i64>,
}

/// `GET /runs?job=&state=&from=&to=&limit=`: runs of every job, newest
/// first (`from`/`to` bound the interval's start).
pub async fn runs_across(
    State(state): State<ApiState>,
    Extension(actor): Extension<Actor>,
    q: Result<Query<AcrossQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let q = query(q)?;
    let when = |field: &str, v: &Option<String>| match v.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => instant(field, s).map(Some),
        None => Ok(None),
    };
    let across = ops::runs::RunsAcross {
        job: q.job.filter(|j| !j.is_empty()),
        state: q.state.filter(|s| !s.is_empty()),
        from: when("from", &q.from)?,
        to: when("to", &q.to)?,
        limit: q.limit.unwrap_or(100),
    };
    let runs = state.ops.runs(&actor, &across).await?;
    Ok(Json(json!({ "runs": runs })))
}

/// `GET /jobs/{job}/versions`: every version of the job's file seen, the
/// newest first, with how many runs ran with each.
pub async fn job_versions(
    State(state): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(job): Path<String>,
) -> ApiResult<Json<Value>> {
    state.ops.read(&actor, &format!("job:{job}")).await?;
    let job = state.ops.job(&job)?;
    let versions = ledger::versions::of_job(&state.ops.pools.data, &job.name).await?;
    Ok(Json(json!({
        "job": job.name,
        "loaded": job.version,
        "versions": versions,
    })))
}

/// `GET /jobs/{job}/versions/{version}`: one version's text.
pub async fn job_version(
    State(state): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path((job, version)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    state.ops.read(&actor, &format!("job:{job}")).await?;
    let job = state.ops.job(&job)?;
    if version.len() != 12 || !version.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(super::ApiError::bad_request(
            "invalid_version",
            "a version is 12 hex digits",
        ));
    }
    let text = ledger::versions::text(
        &state.ops.pools.data,
        &job.name,
        &version.to_ascii_lowercase(),
    )
    .await?
    .ok_or_else(|| {
        super::ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("job {} has no version {version}", job.name),
        )
    })?;
    Ok(Json(json!({
        "job": job.name,
        "version": version.to_ascii_lowercase(),
        "loaded": version.eq_ignore_ascii_case(&job.version),
        "definition": text,
    })))
}

/// `GET /pools`: every pool's slots, who holds them and who waits.
pub async fn pools(
    State(state): State<ApiState>,
    Extension(actor): Extension<Actor>,
) -> ApiResult<Json<Value>> {
    state.ops.read(&actor, "pools").await?;
    let config = &state.ops.config;
    let holders =
        ledger::pools::holders(&state.ops.pools.data, config.scheduler.stale_after_secs).await?;
    let pools: Vec<Value> = config
        .pools
        .iter()
        .map(|(name, p)| {
            let of: Vec<_> = holders.iter().filter(|h| &h.pool == name).collect();
            json!({
                "name": name,
                "slots": p.slots,
                "description": p.description,
                "used": of.iter().filter(|h| h.granted_at.is_some()).count(),
                "waiting": of.iter().filter(|h| h.granted_at.is_none()).count(),
                "holders": of,
            })
        })
        .collect();
    Ok(Json(json!({ "pools": pools })))
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
