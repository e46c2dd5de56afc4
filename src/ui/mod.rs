//! The web console at `/ui/`: pages rendered on the server (maud, which
//! escapes every value it prints), one small script for the live parts
//! (server-sent events) and one style sheet, both compiled into the binary.
//!
//! Who may see and do what:
//! - on an API that listens on loopback only without tokens, pages need no
//!   login; elsewhere a login form takes an API token and starts a
//!   server-side session ([`session`]: a random id in an HttpOnly,
//!   SameSite=Strict cookie, `Secure` when `api.public_url` is https;
//!   revoked at logout);
//! - what a form may change is its actor's role's (checked by `ops`), and
//!   every form carries a CSRF token tied to the session;
//! - every page is sent with a Content-Security-Policy that allows only the
//!   console's own script and style sheet (no inline script or style).

mod actions;
mod dashboards;
mod data;
mod history;
mod insight;
pub mod oidc;
mod pages;
pub mod session;
mod shape;
mod trigger;
mod view;

pub use actions::safe_next;
pub use view::url_encode;

use crate::ops::{Actor, Means, Need};
use crate::web::Access;
use crate::web::{is_loopback, ApiState};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

pub use session::COOKIE;

/// The policy every console response carries.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; frame-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

const APP_JS: &str = include_str!("static/app.js");
const APP_CSS: &str = include_str!("static/app.css");

/// What every console route needs (pages are reads; what a form changes
/// is `ops`'s to check, and is what this says). A test holds it against
/// [`router`] and the roles.
pub const POLICY: &[(&str, &str, Access)] = &[
    ("GET", "/", Access::Public),
    ("GET", "/ui", Access::Public),
    ("GET", "/ui/", Access::Needs(Need::Read)),
    ("GET", "/ui/jobs", Access::Needs(Need::Read)),
    ("GET", "/ui/jobs/{job}", Access::Needs(Need::Read)),
    ("GET", "/ui/runs/{id}", Access::Needs(Need::Read)),
    ("POST", "/ui/runs/{id}/clear", Access::Needs(Need::Operate)),
    ("POST", "/ui/runs/{id}/mark", Access::Needs(Need::Operate)),
    ("POST", "/ui/runs/{id}/cancel", Access::Needs(Need::Operate)),
    ("POST", "/ui/jobs/{job}/pause", Access::Needs(Need::Operate)),
    (
        "POST",
        "/ui/jobs/{job}/unpause",
        Access::Needs(Need::Operate),
    ),
    (
        "GET",
        "/ui/jobs/{job}/definition",
        Access::Needs(Need::Read),
    ),
    ("GET", "/ui/pools", Access::Needs(Need::Read)),
    ("GET", "/ui/dashboards/business", Access::Needs(Need::Read)),
    (
        "GET",
        "/ui/dashboards/performance",
        Access::Needs(Need::Read),
    ),
    ("GET", "/ui/dashboards/live", Access::Needs(Need::Read)),
    ("GET", "/ui/jobs/{job}/calendar", Access::Needs(Need::Read)),
    ("GET", "/ui/jobs/{job}/durations", Access::Needs(Need::Read)),
    ("GET", "/ui/runs", Access::Needs(Need::Read)),
    ("GET", "/ui/jobs/{job}/run", Access::Needs(Need::Read)),
    ("POST", "/ui/jobs/{job}/run", Access::Needs(Need::Operate)),
    ("GET", "/ui/jobs/{job}/backfill", Access::Needs(Need::Read)),
    (
        "POST",
        "/ui/jobs/{job}/backfill",
        Access::Needs(Need::Operate),
    ),
    ("GET", "/ui/backfills/{id}", Access::Needs(Need::Read)),
    (
        "POST",
        "/ui/backfills/{id}/cancel",
        Access::Needs(Need::Operate),
    ),
    ("GET", "/ui/reports", Access::Needs(Need::Read)),
    ("POST", "/ui/reports/generate", Access::Needs(Need::Operate)),
    ("GET", "/ui/dead-letters", Access::Needs(Need::Read)),
    ("GET", "/ui/rollups", Access::Needs(Need::Read)),
    ("GET", "/ui/capacity", Access::Needs(Need::Read)),
    ("GET", "/ui/retention", Access::Needs(Need::Read)),
    ("GET", "/ui/audit", Access::Needs(Need::Admin)),
    ("GET", "/ui/login", Access::Public),
    ("POST", "/ui/login", Access::Public),
    ("GET", "/ui/login/oidc", Access::Public),
    ("GET", "/ui/login/oidc/callback", Access::Public),
    ("POST", "/ui/logout", Access::Public),
    ("GET", "/ui/static/app.js", Access::Public),
    ("GET", "/ui/static/app.css", Access::Public),
    ("GET", "/ui/{*rest}", Access::Needs(Need::Read)),
    ("POST", "/ui/{*rest}", Access::Needs(Need::Read)),
];

/// The console's routes (`/` and under `/ui/`), to merge with the API's.
pub fn router(state: ApiState) -> Router<ApiState> {
    Router::new()
        .route("/", get(root))
        .route("/ui", get(root))
        .route("/ui/", get(pages::overview))
        .route("/ui/jobs", get(pages::jobs))
        .route("/ui/jobs/{job}", get(pages::grid))
        .route("/ui/jobs/{job}/definition", get(shape::definition))
        .route("/ui/jobs/{job}/calendar", get(history::calendar))
        .route("/ui/jobs/{job}/durations", get(history::durations))
        .route("/ui/runs", get(history::runs))
        .route("/ui/pools", get(shape::pools))
        .route("/ui/dashboards/business", get(dashboards::business))
        .route("/ui/dashboards/performance", get(dashboards::performance))
        .route("/ui/dashboards/live", get(dashboards::live))
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
        .route("/ui/audit", get(insight::audit))
        .route("/ui/login", get(pages::login).post(actions::login))
        .route("/ui/login/oidc", get(oidc::start))
        .route("/ui/login/oidc/callback", get(oidc::callback))
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
    /// `ui:<token name>`, `ui:token`, or `ui:loopback`, with its role;
    /// `None`: nobody logged in.
    pub actor: Option<Actor>,
    /// May change things (clear, mark, cancel, pause, trigger): the
    /// buttons it is shown. `ops` checks each change.
    pub may_write: bool,
    /// Shown a logout button.
    pub logged_in: bool,
    /// The CSRF token its forms carry.
    pub csrf: String,
    /// The login's session id (the cookie), to end it at logout.
    pub id: Option<String>,
}

impl Session {
    /// Who reads a page: every page but the login form has one.
    pub fn reader(&self) -> UiResult<&Actor> {
        self.actor
            .as_ref()
            .ok_or_else(|| UiError::new(StatusCode::UNAUTHORIZED, "Log in to see this page."))
    }
}

/// The key for visitors' CSRF tokens: the database's, shared by every API
/// process; while the database cannot be read, this process's own (its
/// forms then fail once on another process, and say so).
async fn visitor_key(state: &ApiState) -> Vec<u8> {
    static OWN: std::sync::LazyLock<[u8; 32]> = std::sync::LazyLock::new(rand::random);
    if let Some(key) = state.guards.console_key.get() {
        return key.clone();
    }
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        session::key(&state.ops.pools.ledger),
    )
    .await;
    match read {
        Ok(Ok(key)) => {
            let _ = state.guards.console_key.set(key.clone());
            key
        }
        _ => OWN.to_vec(),
    }
}

/// The `; Secure` of a cookie when people reach the console over https.
pub(crate) fn secure_attribute(api: &crate::config::ApiConfig) -> &'static str {
    match api.public_url.as_deref() {
        Some(u) if u.starts_with("https://") => "; Secure",
        _ => "",
    }
}

/// Reads the session cookie; a page (not the login form or the assets)
/// on an API that is not loopback-only needs a valid one.
async fn session(State(state): State<ApiState>, mut request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    if path.starts_with("/ui/static/") {
        return next.run(request).await;
    }
    let api = &state.ops.config.api;
    let pool = &state.ops.pools.ledger;
    let id = session::well_formed(cookie(request.headers(), COOKIE));
    let login = match &id {
        Some(id) => match session::find(pool, id).await {
            // The token it started with is still configured: its role now.
            Ok(login) => login.and_then(|l| match l.role.as_deref() {
                // A person the identity provider vouched for, while it is configured.
                Some(role) => api
                    .oidc
                    .as_ref()
                    .and(crate::ops::Role::parse(role))
                    .map(|role| (l, role, None)),
                None => crate::web::token_role(api, &l.actor).map(|(role, jobs)| (l, role, jobs)),
            }),
            Err(e) => return UiError::from(e).into_response(),
        },
        None => None,
    };
    let any_token = crate::web::any_token(api);
    let loopback = is_loopback(&api.host);
    if !loopback && login.is_none() && !path.starts_with("/ui/login") {
        let to = format!("/ui/login?next={}", view::url_encode(&path));
        return Redirect::to(&to).into_response();
    }
    let (visitor, new_visitor) =
        match session::well_formed(cookie(request.headers(), session::VISITOR)) {
            Some(v) => (v, false),
            None => (session::random_id(), true),
        };
    let csrf = match &login {
        Some((l, _, _)) => l.csrf.clone(),
        None => session::visitor_csrf(&visitor_key(&state).await, &visitor),
    };
    let client = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let actor = match &login {
        Some((l, role, jobs)) => Some(
            Actor::new(
                match l.role {
                    Some(_) => l.actor.clone(),
                    None => format!("ui:{}", l.actor),
                },
                Means::Session,
                *role,
            )
            .only_jobs(jobs.clone())
            .from(client),
        ),
        // A loopback console: every local process may read; with tokens
        // configured, changes need a login.
        None if loopback => {
            let role = if any_token {
                crate::ops::Role::Viewer
            } else {
                crate::ops::Role::Admin
            };
            Some(Actor::new("ui:loopback", Means::Loopback, role).from(client))
        }
        None => None,
    };
    let session = Session {
        may_write: actor
            .as_ref()
            .is_some_and(|a| a.may(crate::ops::Need::Operate, None)),
        actor,
        logged_in: login.is_some(),
        csrf,
        id: login.and(id),
    };
    request.extensions_mut().insert(session);
    let mut response = next.run(request).await;
    if new_visitor {
        let cookie = format!(
            "{}={visitor}; Path=/ui; HttpOnly; SameSite=Strict{}",
            session::VISITOR,
            secure_attribute(api)
        );
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    response
}

/// A cookie's value from the request's `Cookie` headers.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
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
        crate::ops::Error::from(e).into()
    }
}

/// An operation's refusal, as a page (its message is for people).
impl From<crate::ops::Error> for UiError {
    fn from(e: crate::ops::Error) -> UiError {
        let status = crate::web::status_of(&e);
        let mut message = e.message;
        match e.field {
            Some("ignore_start_date") => {
                message.push_str(" (tick “also before the job's start date”)")
            }
            Some("allow_unfinished") => message.push_str(" (tick “also intervals not ended yet”)"),
            _ => {}
        }
        UiError::new(status, message)
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("Error");
        let body = view::error_page(title, &crate::redact::text(&self.message));
        (self.status, body).into_response()
    }
}

pub type UiResult<T> = Result<T, UiError>;
