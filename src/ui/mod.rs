//! The web console at `/ui/`: pages rendered on the server (maud, which
//! escapes every value it prints), one small script for the live parts
//! (server-sent events) and one style sheet, both compiled into the binary.
//!
//! Who may see and do what:
//! - on an API that listens on loopback only, pages need no login; elsewhere
//!   a login form takes an API token and keeps it in an HttpOnly,
//!   SameSite=Strict cookie;
//! - a form that changes something needs what the API's mutating
//!   endpoints need (a token, or a loopback API without one), and carries a
//!   CSRF token tied to the session;
//! - every page is sent with a Content-Security-Policy that allows only the
//!   console's own script and style sheet (no inline script or style).

mod actions;
mod data;
mod insight;
mod pages;
mod trigger;
mod view;

pub use actions::safe_next;
pub use view::url_encode;

use std::sync::LazyLock;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::api::{is_loopback, token_name, ApiState};

/// The session cookie: the API token the person logged in with.
pub const COOKIE: &str = "hxjobs_session";

/// The policy every console response carries.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; frame-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

const APP_JS: &str = include_str!("static/app.js");
const APP_CSS: &str = include_str!("static/app.css");

/// The console's routes (under `/ui/`), to merge into the API's router.
pub fn router(state: ApiState) -> Router<ApiState> {
    Router::new()
        .route("/ui", get(root))
        .route("/ui/", get(pages::overview))
        .route("/ui/jobs", get(pages::jobs))
        .route("/ui/jobs/{job}", get(pages::grid))
        .route("/ui/runs/{id}", get(pages::run))
        .route("/ui/runs/{id}/clear", post(actions::clear))
        .route("/ui/runs/{id}/mark", post(actions::mark))
        .route("/ui/runs/{id}/cancel", post(actions::cancel))
        .route("/ui/jobs/{job}/pause", post(actions::pause))
        .route("/ui/jobs/{job}/unpause", post(actions::unpause))
        .route(
            "/ui/jobs/{job}/run",
            get(trigger::trigger_form).post(trigger::trigger),
        )
        .route(
            "/ui/jobs/{job}/backfill",
            get(trigger::backfill_form).post(trigger::backfill),
        )
        .route("/ui/backfills/{id}", get(trigger::backfill_progress))
        .route("/ui/backfills/{id}/cancel", post(trigger::backfill_cancel))
        .route("/ui/reports", get(data::reports))
        .route("/ui/reports/generate", post(data::generate))
        .route("/ui/dead-letters", get(data::dead_letters))
        .route("/ui/rollups", get(insight::rollups))
        .route("/ui/capacity", get(insight::capacity))
        .route("/ui/retention", get(insight::retention))
        .route("/ui/login", get(pages::login).post(actions::login))
        .route("/ui/logout", post(actions::logout))
        .route("/ui/static/app.js", get(app_js))
        .route("/ui/static/app.css", get(app_css))
        .route("/ui/{*rest}", get(pages::not_found).post(pages::not_found))
        .layer(axum::middleware::from_fn_with_state(state, session))
        .layer(axum::middleware::from_fn(security_headers))
}

async fn app_js() -> Response {
    static_asset("text/javascript; charset=utf-8", APP_JS)
}

async fn app_css() -> Response {
    static_asset("text/css; charset=utf-8", APP_CSS)
}

fn static_asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// Who is looking at the console, as its handlers see it.
#[derive(Debug, Clone)]
pub struct Session {
    /// `ui:<token name>`, `ui:token`, or `ui:loopback`; `None`: nobody
    /// logged in.
    pub actor: Option<String>,
    /// May change things (clear, mark, cancel, pause, trigger).
    pub may_write: bool,
    /// Shown a logout button.
    pub logged_in: bool,
    /// The CSRF token its forms carry.
    pub csrf: String,
}

/// Reads the session cookie; a page (not the login form or the assets)
/// on an API that is not loopback-only needs a valid one.
async fn session(State(state): State<ApiState>, mut request: Request, next: Next) -> Response {
    let api = &state.config.api;
    let cookie = cookie(request.headers(), COOKIE).map(|c| view::url_decode(&c));
    let named = cookie.as_deref().and_then(|c| token_name(api, c));
    let loopback = is_loopback(&api.host);
    let any_token = api.token.is_some() || !api.tokens.is_empty();
    let (actor, may_write) = match &named {
        Some(name) => (Some(format!("ui:{name}")), true),
        None if loopback => ((!any_token).then(|| "ui:loopback".to_string()), !any_token),
        None => (None, false),
    };
    let path = request.uri().path().to_string();
    let open = path == "/ui/login" || path.starts_with("/ui/static/");
    if !loopback && named.is_none() && !open {
        let to = format!("/ui/login?next={}", view::url_encode(&path));
        return Redirect::to(&to).into_response();
    }
    let session = Session {
        actor,
        may_write,
        logged_in: named.is_some(),
        csrf: csrf_token(named.is_some().then_some(cookie.as_deref()).flatten()),
    };
    request.extensions_mut().insert(session);
    next.run(request).await
}

/// A cookie's value from the request's `Cookie` headers.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// This process's key for CSRF tokens (forms of a restarted server are
/// refused once, and say so).
static CSRF_KEY: LazyLock<[u8; 32]> = LazyLock::new(rand::random);

/// The CSRF token of a session: an HMAC of its cookie (or of nothing, for
/// a loopback console without login) under this process's key.
fn csrf_token(session: Option<&str>) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(CSRF_KEY.as_slice()) else {
        return String::new();
    };
    mac.update(b"hxjobs-ui-csrf\0");
    mac.update(session.unwrap_or("").as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every console response: the policy, no sniffing, no framing, no referrer
/// beyond the origin.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// `/` → `/ui/`.
pub async fn root() -> Redirect {
    Redirect::to("/ui/")
}

/// A page that could not be shown, as a page.
#[derive(Debug)]
pub struct UiError {
    pub status: StatusCode,
    pub message: String,
}

impl UiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> UiError {
        UiError {
            status,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> UiError {
        UiError::new(StatusCode::NOT_FOUND, message)
    }
}

impl From<sqlx::Error> for UiError {
    fn from(e: sqlx::Error) -> UiError {
        UiError::new(StatusCode::SERVICE_UNAVAILABLE, crate::db::describe(&e))
    }
}

/// An API function's refusal, as a page (its message is for people).
impl From<crate::api::ApiError> for UiError {
    fn from(e: crate::api::ApiError) -> UiError {
        UiError::new(e.status, e.message)
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("Error");
        let body = view::error_page(title, &self.message);
        (self.status, body).into_response()
    }
}

pub type UiResult<T> = Result<T, UiError>;
