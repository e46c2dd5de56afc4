//! The REST API (axum), `127.0.0.1:9101` by default: parses requests,
//! calls [`crate::ops`], presents the answer as JSON. Every error is
//! `{"error": <stable code>, "message": <text>}`. Every endpoint but
//! `/health` needs credentials (`Authorization: Bearer <token>`), except on
//! an API that listens on loopback only without tokens; what each may do is
//! the token's role's ([`crate::ops::Role`]), checked by `ops`.

mod backfills;
mod data;
mod extract;
mod handlers;
mod jobs;
pub mod openapi;
pub mod policy;
mod reports;
mod runs;

pub use crate::web::ApiState;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;

use crate::ops::{self, Actor, Means};
use crate::web::Credentials;

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
        ops::Error::internal(code, e).into()
    }
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

/// PostgreSQL's failures as `ops` words them.
impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ops::Error::from(e).into()
    }
}

/// An operation's refusal as HTTP: its kind is the status, its code and
/// message the body, its field and facts more fields.
impl From<ops::Error> for ApiError {
    fn from(e: ops::Error) -> Self {
        use ops::Kind;
        let status = crate::web::status_of(&e);
        let mut message = e.message;
        if let Some(field) = e.field {
            if e.kind == Kind::Invalid && matches!(field, "ignore_start_date" | "allow_unfinished")
            {
                message.push_str(&format!(" (set {field})"));
            }
        }
        let mut out = ApiError::new(status, e.code, message);
        if !e.details.is_empty() {
            out.details = Some(e.details);
        }
        if let Some(field) = e.field {
            out = out.with("field", serde_json::Value::String(field.to_string()));
        }
        out
    }
}

/// Names who sends each request (an [`Actor`] for `ops`): a configured
/// token, or every local process on a loopback API without tokens.
/// Refuses, before any handler runs, a request without credentials (but
/// to a public route), with a wrong token, or to an undeclared route.
async fn authorize(
    State(state): State<ApiState>,
    headers: HeaderMap,
    mut request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string());
    let method = request.method().as_str().to_string();
    let api = &state.ops.config.api;
    let access = match &route {
        Some(route) => match policy::access(&method, route) {
            Some(access) => access,
            // A method the route does not take.
            None if policy::declared(route) => {
                return handlers::method_not_allowed().await.into_response()
            }
            None => {
                return ApiError::internal_as(
                    "undeclared_route",
                    format!("{method} {route} has no declared policy (api::policy::POLICY)"),
                )
                .into_response()
            }
        },
        // No route: the fallback answers (404/405) without reading anything.
        None => policy::Access::Public,
    };
    let client = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.strip_prefix("Bearer ").unwrap_or("\u{0}"));
    let public = match access {
        policy::Access::Public => true,
        policy::Access::Metrics => api.public_metrics,
        policy::Access::Needs(_) => false,
    };
    let actor = match Credentials::of(api, given, "api", Means::Token) {
        // A local reader without a token, on a route that changes things:
        // the token is what is missing.
        Credentials::Trusted(actor)
            if matches!(access, policy::Access::Needs(need) if !actor.may(need, None)) =>
        {
            return unauthorized("this endpoint needs Authorization: Bearer <token>");
        }
        Credentials::Known(actor) | Credentials::Trusted(actor) => actor,
        Credentials::Missing if public => Actor::new("api:anonymous", Means::Token, ops::Role::Viewer),
        Credentials::Wrong => {
            let anonymous = Actor::new("api:unknown", Means::Token, ops::Role::Viewer).from(client);
            let target = route.unwrap_or_default();
            // Recorded without holding up the answer, a bounded number at once.
            match state.guards.audit_slot() {
                Some(slot) => {
                    let ops = state.ops.clone();
                    tokio::spawn(async move {
                        ops.audit(&anonymous, "authenticate", Some(&target), "refused", Some(serde_json::json!({"error": "wrong_token"}))).await;
                        drop(slot);
                    });
                }
                None => tracing::warn!(client = ?client, route = %target, "wrong API token; too many audit writes in flight to record it"),
            }
            return unauthorized("the bearer token is not one of this API's tokens");
        }
        Credentials::Missing => {
            return match crate::web::any_token(api) {
                true => unauthorized("this endpoint needs Authorization: Bearer <token>"),
                false => ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    format!(
                        "no API token is configured (HXJOBS_API_TOKEN) and the API listens on {}, not on loopback only; only /health answers",
                        api.host
                    ),
                )
                .into_response(),
            }
        }
    };
    request.extensions_mut().insert(actor.from(client));
    next.run(request).await
}

fn unauthorized(message: &str) -> Response {
    let mut response =
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

/// The API's routes (the server adds the console's and the checks).
pub fn routes(state: ApiState) -> Router<ApiState> {
    Router::new()
        .route("/health", get(handlers::health))
        .route("/jobs", get(jobs::jobs))
        .route(
            "/jobs/{job}/runs",
            get(jobs::job_runs).post(jobs::trigger_run),
        )
        .route("/jobs/{job}/grid", get(jobs::job_grid))
        .route("/jobs/{job}/checks", get(jobs::job_checks))
        .route("/jobs/{job}/versions", get(jobs::job_versions))
        .route("/jobs/{job}/versions/{version}", get(jobs::job_version))
        .route("/pools", get(jobs::pools))
        .route("/backfill", post(backfills::backfill))
        .route("/backfills", get(backfills::backfills))
        .route(
            "/backfills/{id}",
            get(backfills::backfill_get).delete(backfills::backfill_cancel),
        )
        .route("/runs", get(jobs::runs_across))
        .route("/runs/{id}", get(jobs::run))
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
        .route("/reports/generate", post(reports::generate_report))
        .route("/reports", get(reports::reports))
        .route("/reports/{id}", get(reports::report))
        .route("/reports/{id}/download", get(reports::download_report))
        .route("/capacity/analysis", get(data::capacity))
        .route("/retention/cleanup", post(data::retention))
        .route("/rollups", get(data::rollups))
        .route("/stats", get(handlers::stats))
        .route("/stats/stream", get(handlers::stats_stream))
        .route("/stats/ws", get(handlers::stats_ws))
        .route("/metrics", get(handlers::metrics))
        .route("/openapi.json", get(handlers::openapi))
        .route("/audit", get(data::audit))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state, authorize))
}
