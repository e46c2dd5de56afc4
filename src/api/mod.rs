//! The REST API (axum), `127.0.0.1:9101` by default. Every error is JSON
//! `{"error": <stable code>, "message": <text>}`; mutating endpoints need
//! `Authorization: Bearer <api.token>`, or, without a token, an API that
//! listens on loopback only.

pub mod guard;
mod handlers;
pub(crate) use handlers::{
    backfill_plan, backfill_spec, generate, rollup_rows, start_backfill, trigger, Allow,
    RollupFilter,
};
pub mod openapi;
#[cfg(test)]
mod router_tests;
mod runs;
pub(crate) use runs::clear_run;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::RwLock;

use crate::config::Config;
use crate::dag::Job;
use crate::db::Pools;
use crate::live::LiveStats;

/// What handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub config: Arc<Config>,
    pub pools: Pools,
    /// The loaded jobs, kept current with `jobs.dir` by daemons and `serve`.
    pub jobs: Arc<crate::dag::catalog::Catalog>,
    pub health: Arc<RwLock<Health>>,
    pub live: Option<Arc<LiveStats>>,
    /// Set on shutdown: backfills started through the API stop.
    pub stop: CancellationToken,
    /// Wakes the scheduler of `hxjobs daemon` when a run was queued; `None`
    /// under `hxjobs serve` (a daemon elsewhere claims it at its next poll).
    pub wake: Option<Arc<tokio::sync::Notify>>,
    /// What bounds clients: open streams, failed logins.
    pub guards: Arc<Guards>,
}

/// The API's bounds on what clients hold.
#[derive(Debug)]
pub struct Guards {
    streams: Arc<tokio::sync::Semaphore>,
    max_streams: usize,
    /// Failed console logins per client address, within the window.
    logins: std::sync::Mutex<std::collections::HashMap<IpAddr, Vec<Instant>>>,
    /// The key anonymous console visitors' CSRF tokens are made with,
    /// shared by every API process through PostgreSQL.
    pub(crate) console_key: tokio::sync::OnceCell<Vec<u8>>,
}

/// How long a failed login counts against its address.
pub const LOGIN_WINDOW: Duration = Duration::from_secs(300);

impl Guards {
    fn new(api: &crate::config::ApiConfig) -> Guards {
        Guards {
            streams: Arc::new(tokio::sync::Semaphore::new(api.max_sse_streams)),
            max_streams: api.max_sse_streams,
            logins: Default::default(),
            console_key: tokio::sync::OnceCell::new(),
        }
    }

    /// A place for one more event stream, held while it is open; 503 when
    /// `api.max_sse_streams` are.
    pub fn stream(&self) -> Result<StreamPermit, ApiError> {
        let permit = self.streams.clone().try_acquire_owned().map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_streams",
                "api.max_sse_streams event streams are open; try again later",
            )
        })?;
        crate::metrics::api_streams(self.max_streams - self.streams.available_permits());
        Ok(StreamPermit {
            _permit: permit,
            streams: self.streams.clone(),
            max: self.max_streams,
        })
    }

    /// Whether `client` may try to log in now; `Err(seconds)` to wait.
    pub fn login_allowed(&self, client: IpAddr, max: u32) -> Result<(), u64> {
        let Ok(mut map) = self.logins.lock() else {
            return Ok(());
        };
        let now = Instant::now();
        // Only addresses that failed have an entry.
        let Some(failures) = map.get_mut(&client) else {
            return Ok(());
        };
        failures.retain(|t| now.duration_since(*t) < LOGIN_WINDOW);
        if failures.len() >= max as usize {
            let oldest = failures.first().copied().unwrap_or(now);
            let wait = LOGIN_WINDOW.saturating_sub(now.duration_since(oldest));
            return Err(wait.as_secs().max(1));
        }
        Ok(())
    }

    /// Counts a failed login of `client`.
    pub fn login_failed(&self, client: IpAddr) {
        if let Ok(mut map) = self.logins.lock() {
            // Bounded: addresses whose failures all aged out go.
            if map.len() > 10_000 {
                let now = Instant::now();
                map.retain(|_, f| f.iter().any(|t| now.duration_since(*t) < LOGIN_WINDOW));
            }
            map.entry(client).or_default().push(Instant::now());
        }
    }
}

/// One open event stream; dropping it frees its place.
#[derive(Debug)]
pub struct StreamPermit {
    _permit: tokio::sync::OwnedSemaphorePermit,
    streams: Arc<tokio::sync::Semaphore>,
    max: usize,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        // Its own place is freed just after this.
        let open = self.max - self.streams.available_permits();
        crate::metrics::api_streams(open.saturating_sub(1));
    }
}

/// An error as every endpoint reports it.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// More fields of the body, e.g. `missing_hours`.
    pub details: Option<serde_json::Map<String, serde_json::Value>>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: None,
        }
    }

    /// Adds a field to the error's JSON body.
    pub fn with(mut self, key: &str, value: serde_json::Value) -> ApiError {
        self.details
            .get_or_insert_with(Default::default)
            .insert(key.to_string(), value);
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    /// A failure inside hxjobs: the body carries only a stable code and an
    /// error id; the detail (SQL, paths) goes to the log under that id.
    pub fn internal(e: impl std::fmt::Display) -> ApiError {
        ApiError::internal_as("internal", e)
    }

    /// [`ApiError::internal`] with its own stable code.
    pub fn internal_as(code: &'static str, e: impl std::fmt::Display) -> ApiError {
        let id = error_id();
        tracing::error!(error_id = %id, code, error = %e, "API request failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            code,
            format!("internal error {id}; the server's log has the detail"),
        )
        .with("error_id", serde_json::Value::String(id))
    }
}

/// A short id for one failure, unique enough to find it in the log.
fn error_id() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mixed = (nanos as u64) ^ (u64::from(SEQ.fetch_add(1, Ordering::Relaxed)) << 40);
    format!("e-{mixed:016x}")
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body<'a> {
            error: &'a str,
            message: &'a str,
            #[serde(flatten, skip_serializing_if = "Option::is_none")]
            details: Option<serde_json::Map<String, serde_json::Value>>,
        }
        let message = crate::redact::text(&self.message);
        let body = Json(Body {
            error: self.code,
            message: &message,
            details: self.details,
        });
        (self.status, body).into_response()
    }
}

/// A client's value PostgreSQL cannot hold is the client's (422); a lost
/// database is 503; anything else is a 500 with an error id. PostgreSQL's
/// own text goes to the log only.
impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        match crate::db::fault(&e) {
            crate::db::Fault::Input(what) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_value", what)
            }
            crate::db::Fault::Unavailable => {
                tracing::warn!(error = %crate::db::describe(&e), "database unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database_unavailable",
                    "the database cannot be reached; try again shortly",
                )
            }
            crate::db::Fault::Internal => ApiError::internal_as("database_error", e),
        }
    }
}

/// A handler that panicked answers 500 with an error id (the panic goes to
/// the log through the panic hook), never an empty reply.
async fn catch_panics(request: Request, next: Next) -> Response {
    use futures::FutureExt;
    match std::panic::AssertUnwindSafe(next.run(request))
        .catch_unwind()
        .await
    {
        Ok(response) => response,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            ApiError::internal_as("internal", format!("handler panicked: {what}")).into_response()
        }
    }
}

/// Dependency checks, refreshed in the background so `/health` never waits on them.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    pub database: Check,
    pub kafka: Check,
    /// Partition owners, positions and lag; `None` until read.
    pub ingest: Option<IngestCheck>,
    pub checked_at: Option<DateTime<Utc>>,
}

/// Who ingests which partition and how far behind it is.
#[derive(Debug, Clone, Serialize)]
pub struct IngestCheck {
    /// "ok"; "stalled" when a partition has data on the broker past its
    /// stored position and that position has not moved for
    /// `ingest.stalled_after_secs` (the service is then unhealthy);
    /// "unowned" when continuous ingest leaves a partition without a live
    /// owner.
    pub status: &'static str,
    pub mode: crate::config::IngestMode,
    /// Workers holding partitions now.
    pub workers: usize,
    /// Everything the broker held then is stored (`null`: a partition never
    /// caught up).
    pub caught_up_through: Option<DateTime<Utc>>,
    /// `topic/partition` of every stalled partition.
    pub stalled: Vec<String>,
    pub partitions: Vec<crate::ingest::lease::PartitionView>,
}

/// Where each partition's stored position was last seen to move, so that
/// one owned (or left) without moving while the broker has data for it is
/// found, whatever its owner believes.
#[derive(Debug, Default)]
pub struct StallWatch {
    seen: std::collections::HashMap<(String, i32), (i64, DateTime<Utc>)>,
}

impl StallWatch {
    /// Marks `partitions` stalled where the broker's end (`ends`) is past
    /// the position and the position has not moved for `after`; fills each
    /// partition's lag from `ends`. Returns the stalled ones.
    pub fn observe(
        &mut self,
        partitions: &mut [crate::ingest::lease::PartitionView],
        ends: &std::collections::HashMap<(String, i32), i64>,
        now: DateTime<Utc>,
        after: Duration,
    ) -> Vec<String> {
        let after = chrono::Duration::from_std(after).unwrap_or(chrono::Duration::MAX);
        let mut stalled = Vec::new();
        for p in partitions.iter_mut() {
            let key = (p.topic.clone(), p.partition);
            // Unmoved since its last commit, or since first seen here.
            let since = p.last_commit_at.unwrap_or(now);
            let entry = self.seen.entry(key.clone()).or_insert((p.position, since));
            if entry.0 != p.position {
                *entry = (p.position, now);
            }
            let Some(high) = ends.get(&key) else { continue };
            let behind = (high - p.position).max(0);
            p.lag = Some(behind);
            p.lag_read_at = Some(now);
            p.stalled = behind > 0 && now - entry.1 >= after;
            if p.stalled {
                stalled.push(format!("{}/{}", p.topic, p.partition));
            }
        }
        stalled
    }
}

impl IngestCheck {
    /// Reads the partitions' leases and positions; with the broker's ends,
    /// also their true lag and which are stalled.
    pub async fn read(
        config: &Config,
        pool: &sqlx::PgPool,
        ends: Option<&std::collections::HashMap<(String, i32), i64>>,
        watch: &mut StallWatch,
    ) -> Result<IngestCheck, sqlx::Error> {
        let topics = config.topics.event_topic_names();
        let mut partitions = crate::ingest::lease::partitions(
            pool,
            &config.kafka.group_id,
            &topics,
            config.ingest.stale_after(),
        )
        .await?;
        let stalled = match ends {
            Some(ends) => watch.observe(
                &mut partitions,
                ends,
                Utc::now(),
                Duration::from_secs(config.ingest.stalled_after_secs),
            ),
            None => Vec::new(),
        };
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        let caught_up_through =
            crate::ingest::lease::caught_up_through(pool, &config.kafka.group_id, &names).await?;
        let mut owners: Vec<&str> = partitions
            .iter()
            .filter_map(|p| p.owner.as_deref())
            .collect();
        owners.sort_unstable();
        owners.dedup();
        let mode = config.ingest.mode;
        let unowned = partitions.iter().any(|p| p.owner.is_none());
        crate::metrics::ingest_stalled(stalled.len());
        Ok(IngestCheck {
            status: if !stalled.is_empty() {
                "stalled"
            } else if mode == crate::config::IngestMode::Continuous && unowned {
                "unowned"
            } else {
                "ok"
            },
            mode,
            workers: owners.len(),
            caught_up_through,
            stalled,
            partitions,
        })
    }

    /// The ingest mode as configured.
    pub fn mode_name(&self) -> &'static str {
        match self.mode {
            crate::config::IngestMode::Continuous => "continuous",
            crate::config::IngestMode::Drain => "drain",
            crate::config::IngestMode::Off => "off",
        }
    }

    /// Whether ingest makes the service unhealthy.
    pub fn stalled(&self) -> bool {
        !self.stalled.is_empty()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub status: &'static str,
    pub latency_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Check {
    fn unknown() -> Check {
        Check {
            status: "unknown",
            latency_ms: None,
            detail: Some("not checked yet".into()),
        }
    }

    fn of(started: Instant, outcome: Result<(), String>) -> Check {
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        match outcome {
            Ok(()) => Check {
                status: "up",
                latency_ms: Some(crate::round(ms, 2)),
                detail: None,
            },
            Err(e) => Check {
                status: "down",
                latency_ms: None,
                detail: Some(e),
            },
        }
    }

    pub fn up(&self) -> bool {
        self.status == "up"
    }
}

/// Whether `host` only accepts connections from this machine.
pub fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// Refuses mutating requests without the configured bearer token (or,
/// with none configured, unless the API listens on loopback only).
async fn authorize(
    State(state): State<ApiState>,
    headers: HeaderMap,
    mut request: Request,
    next: Next,
) -> Response {
    // The console checks its own sessions and CSRF tokens (`ui`).
    let path = request.uri().path();
    if path == "/ui" || path.starts_with("/ui/") {
        return next.run(request).await;
    }
    let mutating = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let api = &state.config.api;
    let named = given
        .and_then(|g| token_name(api, g))
        .map(|n| format!("api:{n}"));
    let any_token = api.token.is_some() || !api.tokens.is_empty();
    let caller = match named {
        Some(name) => Caller(name),
        None if !any_token && is_loopback(&api.host) => Caller("api:loopback".into()),
        None => {
            if mutating {
                return match any_token {
                    true => ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "unauthorized",
                        "this endpoint needs Authorization: Bearer <HXJOBS_API_TOKEN>",
                    ),
                    false => ApiError::new(
                        StatusCode::FORBIDDEN,
                        "forbidden",
                        format!(
                            "no API token is configured (HXJOBS_API_TOKEN) and the API listens on {}, not on loopback only; mutating endpoints are refused",
                            api.host
                        ),
                    ),
                }
                .into_response();
            }
            Caller("api:anonymous".into())
        }
    };
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// Who made a request, as the ledger records its actions: `api:<token
/// name>`, `api:token`, or `api:loopback` (no token configured, loopback).
#[derive(Debug, Clone)]
pub struct Caller(pub String);

/// The name of the configured API token `given` is (`token` for the
/// single `api.token`), if it is one.
pub fn token_name(api: &crate::config::ApiConfig, given: &str) -> Option<String> {
    api.tokens
        .iter()
        .find(|t| constant_time_eq(given.as_bytes(), t.token.expose().as_bytes()))
        .map(|t| t.name.clone())
        .or_else(|| {
            api.token
                .as_ref()
                .filter(|t| constant_time_eq(given.as_bytes(), t.expose().as_bytes()))
                .map(|_| "token".to_string())
        })
}

/// Compares secrets in time that does not depend on where they differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Counts requests per route and status.
async fn count_requests(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("hxjobs_api_requests_total", "method" => method, "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("hxjobs_api_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Every route, with the checks every request passes (where it comes from,
/// how long it may take, a panic's answer) and authorization.
pub fn router(state: ApiState) -> Router {
    let limit = state.config.api.max_body_bytes;
    routes(state.clone())
        .layer(axum::middleware::from_fn(catch_panics))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            time_limit,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::check,
        ))
        .layer(axum::middleware::from_fn(count_requests))
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// The same routes without the per-request checks [`router`] adds: only
/// `hxjobs bench api` serves it, as the baseline the checks are weighed
/// against.
#[doc(hidden)]
pub fn router_without_checks(state: ApiState) -> Router {
    let limit = state.config.api.max_body_bytes;
    routes(state.clone())
        .layer(axum::middleware::from_fn(count_requests))
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .with_state(state)
}

fn routes(state: ApiState) -> Router<ApiState> {
    Router::new()
        .route("/health", get(handlers::health))
        .route("/jobs", get(handlers::jobs))
        .route(
            "/jobs/{job}/runs",
            get(handlers::job_runs).post(handlers::trigger_run),
        )
        .route("/jobs/{job}/grid", get(handlers::job_grid))
        .route("/backfill", post(handlers::backfill))
        .route("/backfills", get(handlers::backfills))
        .route(
            "/backfills/{id}",
            get(handlers::backfill_get).delete(handlers::backfill_cancel),
        )
        .route("/runs/{id}", get(handlers::run))
        .route("/runs/{id}/clear", post(runs::clear))
        .route("/runs/{id}/mark", post(runs::mark))
        .route("/runs/{id}/cancel", post(runs::cancel))
        .route("/jobs/{job}/clear", post(runs::clear_failed))
        .route("/jobs/{job}/pause", post(runs::pause))
        .route("/jobs/{job}/unpause", post(runs::unpause))
        .route("/runs/{id}/tasks/{task}/logs", get(runs::task_log))
        .route(
            "/runs/{id}/tasks/{task}/logs/stream",
            get(runs::task_log_stream),
        )
        .route("/reports/generate", post(handlers::generate_report))
        .route("/reports", get(handlers::reports))
        .route("/reports/{id}", get(handlers::report))
        .route("/reports/{id}/download", get(handlers::download_report))
        .route("/capacity/analysis", get(handlers::capacity))
        .route("/retention/cleanup", post(handlers::retention))
        .route("/rollups", get(handlers::rollups))
        .route("/stats", get(handlers::stats))
        .route("/stats/stream", get(handlers::stats_stream))
        .route("/metrics", get(handlers::metrics))
        .route("/openapi.json", get(handlers::openapi))
        .route("/", get(crate::ui::root))
        .merge(crate::ui::router(state.clone()))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state, authorize))
}

/// Refreshes the dependency checks every `every` until `stop`.
pub fn spawn_health_checks(state: &ApiState, every: Duration) {
    let (config, pool, health, stop) = (
        state.config.clone(),
        state.pools.data.clone(),
        state.health.clone(),
        state.stop.clone(),
    );
    tokio::spawn(async move {
        let probe = crate::kafka::Probe::new(&config.kafka);
        let mut watch = StallWatch::default();
        let topics = config.topics.event_topic_names();
        while !stop.is_cancelled() {
            let started = Instant::now();
            let db = tokio::time::timeout(
                Duration::from_secs(3),
                sqlx::query("SELECT 1").execute(&pool),
            )
            .await
            .map_err(|_| "no answer within 3 s".to_string())
            .and_then(|r| r.map(|_| ()).map_err(|e| crate::db::describe(&e)));
            let database = Check::of(started, db);
            let started = Instant::now();
            let kafka = match &probe {
                Ok(p) => p.check().await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            let kafka = Check::of(started, kafka);
            crate::metrics::dependency_up("postgresql", database.up());
            crate::metrics::dependency_up("kafka", kafka.up());
            let ends = match (&probe, kafka.up()) {
                (Ok(p), true) => p.partition_ends(&topics).await.ok(),
                _ => None,
            };
            let ingest = if database.up() {
                IngestCheck::read(&config, &pool, ends.as_ref(), &mut watch)
                    .await
                    .ok()
            } else {
                None
            };
            *health.write().await = Health {
                database,
                kafka,
                ingest,
                checked_at: Some(Utc::now()),
            };
            tokio::time::sleep(every).await;
        }
    });
}

impl ApiState {
    pub fn new(
        config: Arc<Config>,
        pools: Pools,
        jobs: Vec<Arc<Job>>,
        live: Option<Arc<LiveStats>>,
        stop: CancellationToken,
    ) -> ApiState {
        let guards = Arc::new(Guards::new(&config.api));
        ApiState {
            config,
            pools,
            jobs: Arc::new(crate::dag::catalog::Catalog::fixed(jobs)),
            health: Arc::new(RwLock::new(Health {
                database: Check::unknown(),
                kafka: Check::unknown(),
                ingest: None,
                checked_at: None,
            })),
            live,
            stop,
            wake: None,
            guards,
        }
    }
}

/// Listens on `api.host:api.port`; fails at once with the address and why.
pub async fn bind(api: &crate::config::ApiConfig) -> anyhow::Result<tokio::net::TcpListener> {
    let addr = format!("{}:{}", api.host, api.port);
    tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
}

/// Serves the API on `listener` until `stop` turns true; connections still
/// open `grace` after that are closed.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    grace: Duration,
) -> anyhow::Result<()> {
    let local: SocketAddr = listener.local_addr()?;
    tracing::info!(address = %local, "API listening");
    if state.config.api.token.is_none() && !is_loopback(&state.config.api.host) {
        tracing::warn!(
            "no API token configured (HXJOBS_API_TOKEN): mutating endpoints are refused"
        );
    }
    crate::metrics::install();
    spawn_health_checks(&state, Duration::from_secs(2));
    crate::metrics::spawn_refresher(
        state.pools.data.clone(),
        state.config.clone(),
        Duration::from_secs(5),
        state.stop.clone(),
    );
    let stop = state.stop.clone();
    let limits = Limits::of(&state.config.api);
    let app = router(state);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let watcher = hyper_util::server::graceful::GracefulShutdown::new();
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: wait, never spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => break,
        };
        let counted = Counted::new(&open);
        if counted.n > limits.max_connections * 2 {
            // Far past the cap: closed unanswered.
            continue;
        }
        let full = counted.n > limits.max_connections;
        let app = app.clone();
        let service = hyper::service::service_fn(
            move |mut request: axum::http::Request<hyper::body::Incoming>| {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                let app = app.clone();
                async move {
                    let path = request.uri().path();
                    if full && path != "/health" && path != "/metrics" {
                        let mut r = ApiError::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "too_many_connections",
                            "the API holds api.max_connections connections; try again shortly",
                        )
                        .into_response();
                        r.headers_mut().insert(
                            header::CONNECTION,
                            header::HeaderValue::from_static("close"),
                        );
                        return Ok::<_, std::convert::Infallible>(r);
                    }
                    tower::ServiceExt::oneshot(app, request.map(axum::body::Body::new)).await
                }
            },
        );
        let conn = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
        let conn = watcher.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(counted);
        });
    }
    tokio::select! {
        _ = watcher.shutdown() => {}
        _ = tokio::time::sleep(grace) => {
            tracing::info!(grace_secs = grace.as_secs(), "API connections still open after the grace; closed");
        }
    }
    Ok(())
}

/// How much one client, or all of them, may hold.
struct Limits {
    max_connections: usize,
    header_timeout: Duration,
}

impl Limits {
    fn of(api: &crate::config::ApiConfig) -> Limits {
        Limits {
            max_connections: api.max_connections,
            header_timeout: Duration::from_secs(api.header_timeout_secs),
        }
    }
}

/// One open connection, counted while it lives.
struct Counted {
    open: Arc<std::sync::atomic::AtomicUsize>,
    n: usize,
}

impl Counted {
    fn new(open: &Arc<std::sync::atomic::AtomicUsize>) -> Counted {
        let n = open.fetch_add(1, std::sync::atomic::Ordering::AcqRel) + 1;
        crate::metrics::api_connections(n);
        Counted {
            open: open.clone(),
            n,
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let n = self.open.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        crate::metrics::api_connections(n.saturating_sub(1));
    }
}

/// Work a request may start that runs to its end however long it takes
/// (stopping it halfway would only waste what was done): retention and
/// report generation. Their bodies are small and capped.
const RUN_TO_THE_END: [&str; 3] = [
    "/retention/cleanup",
    "/reports/generate",
    "/ui/reports/generate",
];

/// A request that takes longer than `api.request_timeout_secs` to answer
/// (its body read included) is answered 503; a stream, once answered,
/// runs on.
async fn time_limit(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    if RUN_TO_THE_END.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let limit = Duration::from_secs(state.config.api.request_timeout_secs);
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "request_timeout",
            format!(
                "the request was not answered within api.request_timeout_secs ({} s)",
                limit.as_secs()
            ),
        )
        .into_response(),
    }
}
