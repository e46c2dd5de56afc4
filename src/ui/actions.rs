//! The console's forms: run controls, pause, login. Each checks the CSRF
//! token and the right to change things, then does what the API's
//! endpoint does (the same ledger calls, recorded as `ui:<token name>`).

use axum::extract::rejection::FormRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;

use super::{Session, UiError, UiResult, COOKIE};
use crate::api::ApiState;
use crate::ledger::controls::{self, Actor, ControlError};
use crate::ledger::RunState;

/// A form's CSRF token is the session's and the caller may change things:
/// who acts, and why (`reason`, when given).
pub(super) fn allowed(session: &Session, csrf: &str, reason: Option<String>) -> UiResult<Actor> {
    if !crate::api::constant_time_eq(csrf.as_bytes(), session.csrf.as_bytes()) {
        return Err(UiError::new(
            StatusCode::FORBIDDEN,
            "This form has expired or did not come from this console (CSRF token). Reload the page and try again.",
        ));
    }
    match (&session.actor, session.may_write) {
        (Some(actor), true) => Ok(Actor {
            name: actor.clone(),
            reason: reason
                .map(|r| r.trim().to_string())
                .filter(|r| !r.is_empty()),
        }),
        _ => Err(UiError::new(
            StatusCode::FORBIDDEN,
            "Changing runs and jobs needs a login with an API token.",
        )),
    }
}

pub(super) fn form<T>(f: Result<Form<T>, FormRejection>) -> UiResult<T> {
    f.map(|Form(t)| t)
        .map_err(|e| UiError::new(StatusCode::BAD_REQUEST, e.body_text()))
}

fn control(e: ControlError) -> UiError {
    match e {
        ControlError::NotFound(m) => UiError::not_found(m),
        ControlError::Conflict(m) => UiError::new(StatusCode::CONFLICT, m),
        ControlError::Database(e) => e.into(),
    }
}

fn run_id(id: &str) -> UiResult<i64> {
    id.parse()
        .map_err(|_| UiError::not_found(format!("{id:?} is not a run id")))
}

#[derive(Debug, Deserialize)]
pub struct ClearForm {
    csrf: String,
    task: String,
    #[serde(default)]
    downstream: Option<String>,
    reason: Option<String>,
}

/// Clears a task of a finished run (and, asked, every task after it).
pub async fn clear(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    f: Result<Form<ClearForm>, FormRejection>,
) -> UiResult<Redirect> {
    let f = form(f)?;
    let actor = allowed(&session, &f.csrf, f.reason)?;
    let id = run_id(&id)?;
    let downstream = f.downstream.as_deref() == Some("true");
    crate::api::clear_run(&state, id, vec![f.task], downstream, &actor).await?;
    Ok(Redirect::to(&format!("/ui/runs/{id}")))
}

#[derive(Debug, Deserialize)]
pub struct MarkForm {
    csrf: String,
    state: String,
    task: Option<String>,
    reason: Option<String>,
}

/// Marks a finished run (or one of its tasks) succeeded or failed.
pub async fn mark(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    f: Result<Form<MarkForm>, FormRejection>,
) -> UiResult<Redirect> {
    let f = form(f)?;
    let actor = allowed(&session, &f.csrf, f.reason)?;
    let id = run_id(&id)?;
    let to = match f.state.as_str() {
        "success" => RunState::Success,
        "failed" => RunState::Failed,
        other => {
            return Err(UiError::new(
                StatusCode::BAD_REQUEST,
                format!("a run is marked success or failed, not {other:?}"),
            ))
        }
    };
    let task = f.task.as_deref().filter(|t| !t.is_empty());
    controls::mark(&state.pools.ledger, id, task, to, &actor)
        .await
        .map_err(control)?;
    Ok(Redirect::to(&format!("/ui/runs/{id}")))
}

#[derive(Debug, Deserialize)]
pub struct ReasonForm {
    csrf: String,
    reason: Option<String>,
}

/// Cancels a queued or running run.
pub async fn cancel(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    f: Result<Form<ReasonForm>, FormRejection>,
) -> UiResult<Redirect> {
    let f = form(f)?;
    let actor = allowed(&session, &f.csrf, f.reason)?;
    let id = run_id(&id)?;
    controls::cancel(&state.pools.ledger, id, &actor)
        .await
        .map_err(control)?;
    Ok(Redirect::to(&format!("/ui/runs/{id}")))
}

pub async fn pause(
    state: State<ApiState>,
    session: Extension<Session>,
    job: Path<String>,
    f: Result<Form<ReasonForm>, FormRejection>,
) -> UiResult<Redirect> {
    set_paused(state, session, job, f, true).await
}

pub async fn unpause(
    state: State<ApiState>,
    session: Extension<Session>,
    job: Path<String>,
    f: Result<Form<ReasonForm>, FormRejection>,
) -> UiResult<Redirect> {
    set_paused(state, session, job, f, false).await
}

async fn set_paused(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
    Path(job): Path<String>,
    f: Result<Form<ReasonForm>, FormRejection>,
    paused: bool,
) -> UiResult<Redirect> {
    let f = form(f)?;
    let actor = allowed(&session, &f.csrf, f.reason)?;
    if state.jobs.current().find(&job).is_none() {
        return Err(UiError::not_found(format!("There is no job named {job}.")));
    }
    controls::set_paused(&state.pools.ledger, &job, paused, &actor)
        .await
        .map_err(control)?;
    if !paused {
        wake(&state);
    }
    Ok(Redirect::to("/ui/jobs"))
}

/// Wakes the daemon's scheduler in this process, if there is one.
fn wake(state: &ApiState) {
    if let Some(wake) = &state.wake {
        wake.notify_one();
    }
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    csrf: String,
    token: String,
    next: Option<String>,
}

/// Where to go after logging in: a console path, nothing else.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with("/ui/") && !n.starts_with("//") && !n.contains('\\') => {
            n.to_string()
        }
        _ => "/ui/".to_string(),
    }
}

/// Takes an API token; keeps it in an HttpOnly, SameSite=Strict cookie.
pub async fn login(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
    client: Option<Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    f: Result<Form<LoginForm>, FormRejection>,
) -> UiResult<Response> {
    let api = &state.config.api;
    let address = client.map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| c.0 .0.ip());
    if let Err(wait) = state.guards.login_allowed(address, api.max_failed_logins) {
        let mut response = UiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("Too many failed logins from this address. Try again in {wait} s."),
        )
        .into_response();
        if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return Ok(response);
    }
    let f = form(f)?;
    if !crate::api::constant_time_eq(f.csrf.as_bytes(), session.csrf.as_bytes()) {
        return Err(UiError::new(
            StatusCode::FORBIDDEN,
            "This form has expired (CSRF token). Reload the page and try again.",
        ));
    }
    let next = safe_next(f.next.as_deref());
    let token = f.token.trim();
    let Some(name) = crate::api::token_name(api, token) else {
        state.guards.login_failed(address);
        tracing::warn!(client = %address, "console login refused: not an API token");
        let to = format!("/ui/login?failed=1&next={}", super::view::url_encode(&next));
        return Ok(Redirect::to(&to).into_response());
    };
    let id = super::session::create(
        &state.pools.ledger,
        &name,
        Some(address.to_string()),
        api.session_hours,
    )
    .await?;
    let cookie = format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        api.session_hours.saturating_mul(3600),
        super::secure_attribute(api)
    );
    let mut response = Redirect::to(&next).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(response)
}

#[derive(Debug, Deserialize)]
pub struct LogoutForm {
    csrf: String,
}

pub async fn logout(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
    f: Result<Form<LogoutForm>, FormRejection>,
) -> UiResult<Response> {
    let f = form(f)?;
    if !crate::api::constant_time_eq(f.csrf.as_bytes(), session.csrf.as_bytes()) {
        return Err(UiError::new(
            StatusCode::FORBIDDEN,
            "This form has expired (CSRF token). Reload the page and try again.",
        ));
    }
    if let Some(id) = &session.id {
        super::session::revoke(&state.pools.ledger, id).await?;
    }
    let mut response = Redirect::to("/ui/login").into_response();
    let cookie = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(response)
}
