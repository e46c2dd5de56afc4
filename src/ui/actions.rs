//! The console's forms: run controls, pause, login. Each checks the CSRF
//! token, then calls the operation the API's endpoint calls, as the
//! session's actor (`ui:<token name>`), whose role `ops` checks.

use axum::extract::rejection::FormRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;

use super::{Session, UiError, UiResult, COOKIE};
use crate::ops::Actor;
use crate::web::{constant_time_eq, ApiState};

/// A form's CSRF token is the session's and someone is logged in: who acts
/// (what they may do is `ops`'s to check).
pub(super) fn allowed(session: &Session, csrf: &str) -> UiResult<Actor> {
    if !constant_time_eq(csrf.as_bytes(), session.csrf.as_bytes()) {
        return Err(UiError::new(
            StatusCode::FORBIDDEN,
            "This form has expired or did not come from this console (CSRF token). Reload the page and try again.",
        ));
    }
    session.actor.clone().ok_or_else(|| {
        UiError::new(
            StatusCode::FORBIDDEN,
            "Changing runs and jobs needs a login with an API token.",
        )
    })
}

pub(super) fn form<T>(f: Result<Form<T>, FormRejection>) -> UiResult<T> {
    f.map(|Form(t)| t)
        .map_err(|e| UiError::new(StatusCode::BAD_REQUEST, e.body_text()))
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
    let actor = allowed(&session, &f.csrf)?;
    let id = run_id(&id)?;
    let downstream = f.downstream.as_deref() == Some("true");
    state
        .ops
        .clear(&actor, id, vec![f.task], downstream, f.reason)
        .await?;
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
    let actor = allowed(&session, &f.csrf)?;
    let id = run_id(&id)?;
    let task = f.task.as_deref().filter(|t| !t.is_empty());
    state.ops.mark(&actor, id, task, &f.state, f.reason).await?;
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
    let actor = allowed(&session, &f.csrf)?;
    let id = run_id(&id)?;
    state.ops.cancel(&actor, id, f.reason).await?;
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
    let actor = allowed(&session, &f.csrf)?;
    state.ops.set_paused(&actor, &job, paused, f.reason).await?;
    Ok(Redirect::to("/ui/jobs"))
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
    let api = &state.ops.config.api;
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
    if !constant_time_eq(f.csrf.as_bytes(), session.csrf.as_bytes()) {
        return Err(UiError::new(
            StatusCode::FORBIDDEN,
            "This form has expired (CSRF token). Reload the page and try again.",
        ));
    }
    let next = safe_next(f.next.as_deref());
    let token = f.token.trim();
    let Some(actor) = crate::web::token_actor(api, token, "ui", crate::ops::Means::Session) else {
        state.guards.login_failed(address);
        tracing::warn!(client = %address, "console login refused: not an API token");
        let who = Actor::new(
            "ui:unknown",
            crate::ops::Means::Session,
            crate::ops::Role::Viewer,
        )
        .from(Some(address));
        state
            .ops
            .audit(
                &who,
                "login",
                None,
                "refused",
                Some(serde_json::json!({"error": "wrong_token"})),
            )
            .await;
        let to = format!("/ui/login?failed=1&next={}", super::view::url_encode(&next));
        return Ok(Redirect::to(&to).into_response());
    };
    let name = actor.name.trim_start_matches("ui:").to_string();
    state
        .ops
        .audit(
            &actor.clone().from(Some(address)),
            "login",
            None,
            "ok",
            None,
        )
        .await;
    let id = super::session::create(
        &state.ops.pools.ledger,
        &name,
        None,
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
    if !constant_time_eq(f.csrf.as_bytes(), session.csrf.as_bytes()) {
        return Err(UiError::new(
            StatusCode::FORBIDDEN,
            "This form has expired (CSRF token). Reload the page and try again.",
        ));
    }
    if let Some(id) = &session.id {
        super::session::revoke(&state.ops.pools.ledger, id).await?;
        if let Some(actor) = &session.actor {
            state.ops.audit(actor, "logout", None, "ok", None).await;
        }
    }
    let mut response = Redirect::to("/ui/login").into_response();
    let cookie = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(response)
}
