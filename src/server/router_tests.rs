//! The router without a server, a database or a broker: requests go
//! through every middleware (auth, request metrics, body limit) with
//! `oneshot`, and only paths that never reach PostgreSQL are asked, so this
//! tier runs anywhere (`cargo test --lib`).

use std::sync::Arc;
use tokio_util::sync::CancellationToken;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt;

use super::router;
use crate::config::{Config, Secret};
use crate::db::Pools;
use crate::web::ApiState;

const TOKEN: &str = "router-test-token";

/// A state whose database is never reached (a closed port, connected lazily).
fn state(host: &str, token: Option<&str>) -> ApiState {
    let mut config = Config::defaults().expect("defaults");
    config.api.host = host.to_string();
    config.api.token = token.map(Secret::new);
    config.api.max_body_bytes = 256;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(std::time::Duration::from_millis(200))
        .connect_lazy("postgres://nobody:x@127.0.0.1:1/none")
        .expect("lazy pool");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs");
    let jobs = crate::dag::job::load_dir(&dir)
        .expect("jobs")
        .jobs
        .into_iter()
        .filter(|j| j.name == "hxp_hourly_aggregation")
        .map(Arc::new)
        .collect();
    ApiState::new(
        Arc::new(config),
        Pools::new(pool),
        jobs,
        None,
        CancellationToken::new(),
    )
}

async fn call(state: ApiState, request: Request<Body>) -> (StatusCode, Value) {
    let response = router(state).oneshot(request).await.expect("infallible");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, body)
}

fn get(path: &str) -> Request<Body> {
    Request::builder()
        .uri(path)
        .header(header::HOST, "127.0.0.1:9101")
        .body(Body::empty())
        .expect("request")
}

fn post(path: &str, token: Option<&str>, body: &str) -> Request<Body> {
    let mut r = Request::builder()
        .method("POST")
        .uri(path)
        .header(header::HOST, "127.0.0.1:9101")
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        r = r.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    r.body(Body::from(body.to_string())).expect("request")
}

fn is_error(body: &Value, code: &str) {
    assert_eq!(body["error"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn unknown_paths_and_methods_are_json_errors() {
    let (status, body) = call(state("127.0.0.1", None), get("/nope")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    is_error(&body, "not_found");
    let delete = Request::builder()
        .method("DELETE")
        .uri("/jobs")
        .header(header::HOST, "127.0.0.1:9101")
        .body(Body::empty())
        .expect("request");
    let (status, body) = call(state("127.0.0.1", None), delete).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    is_error(&body, "method_not_allowed");
}

#[tokio::test]
async fn the_openapi_document_lists_the_endpoints() {
    let (status, body) = call(state("127.0.0.1", None), get("/openapi.json")).await;
    assert_eq!(status, StatusCode::OK);
    for path in ["/reports/generate", "/backfills/{id}", "/stats/stream"] {
        assert!(body["paths"][path].is_object(), "{path}");
    }
    assert!(body["paths"]["/backfills/{id}"]["delete"].is_object());
}

#[tokio::test]
async fn mutations_need_the_token() {
    let body = r#"{"job":"hxp_hourly_aggregation","from":"2026-01-01","to":"2026-01-02"}"#;
    for token in [None, Some("wrong")] {
        let (status, reply) = call(
            state("127.0.0.1", Some(TOKEN)),
            post("/backfill", token, body),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}");
        assert_eq!(reply["error"], "unauthorized", "{reply}");
    }
    // Without a token, only an API on loopback may mutate.
    let (status, reply) = call(
        state("0.0.0.0", None),
        post(
            "/reports/generate",
            None,
            r#"{"report_type":"weekly_summary"}"#,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{reply}");
}

#[tokio::test]
async fn bad_requests_name_the_problem_without_rust_types() {
    let s = || state("127.0.0.1", Some(TOKEN));
    let (status, body) = call(s(), post("/reports/generate", Some(TOKEN), "{not json")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    is_error(&body, "invalid_json");
    let (status, body) = call(
        s(),
        post(
            "/reports/generate",
            Some(TOKEN),
            r#"{"report_type":"weekly_summary","format":7}"#,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        !body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Option<"),
        "{body}"
    );
    let (status, body) = call(
        s(),
        post(
            "/jobs/nope/runs",
            Some(TOKEN),
            r#"{"interval_start":"2026-01-01"}"#,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    is_error(&body, "unknown_job");
    assert!(body["message"]
        .as_str()
        .is_some_and(|m| m.contains("hxp_hourly_aggregation")));
    let (status, body) = call(
        s(),
        post(
            "/backfill",
            Some(TOKEN),
            r#"{"job":"hxp_hourly_aggregation","from":"2026-01-02","to":"2026-01-01"}"#,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    is_error(&body, "invalid_range");
    // Bodies over api.max_body_bytes are refused before any handler.
    let big = format!(r#"{{"report_type":"{}"}}"#, "x".repeat(1000));
    let (status, _) = call(s(), post("/reports/generate", Some(TOKEN), &big)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn live_stats_off_is_a_json_503() {
    let (status, body) = call(state("127.0.0.1", None), get("/stats")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    is_error(&body, "live_stats_disabled");
}

/// A console request: its status, headers and body as text.
async fn page(state: ApiState, request: Request<Body>) -> (StatusCode, header::HeaderMap, String) {
    let response = router(state).oneshot(request).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    (
        status,
        headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

fn form(path: &str, cookie: Option<&str>, body: &str) -> Request<Body> {
    let mut r = Request::builder()
        .method("POST")
        .uri(path)
        .header(header::HOST, "127.0.0.1:9101")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        r = r.header(header::COOKIE, c);
    }
    r.body(Body::from(body.to_string())).expect("request")
}

/// The value of `name="csrf"`'s field in a page.
fn csrf_of(html: &str) -> String {
    let at = html.find(r#"name="csrf" value=""#).expect("a CSRF field") + 19;
    html[at..].split('"').next().expect("value").to_string()
}

#[tokio::test]
async fn the_console_asks_for_a_login_off_loopback_and_checks_its_csrf_token() {
    let s = || state("0.0.0.0", Some(TOKEN));
    // `/` and the console's pages lead to the login form.
    let (status, headers, _) = page(s(), get("/")).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/ui/login?next=/");
    let (status, headers, _) = page(s(), get("/ui/jobs")).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/ui/login?next=/ui/jobs");
    // The login form, with the policy and without any inline script.
    let (status, headers, html) = page(s(), get("/ui/login?next=/ui/jobs")).await;
    assert_eq!(status, StatusCode::OK);
    let csp = headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .expect("csp");
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(!html.contains("<script>") && html.contains(r#"<script src="/ui/static/app.js""#));
    let csrf = csrf_of(&html);
    // A form without the right CSRF token is refused (sessions, with the
    // database, are the attack suite's: tests/attack/sessions.rs).
    let (status, _, _) = page(
        s(),
        form("/ui/login", None, &format!("csrf={csrf}&token={TOKEN}")),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(crate::ui::safe_next(Some("//evil.example/ui/")), "/ui/");
    // The assets are served to anyone, typed.
    let (status, headers, js) = page(s(), get("/ui/static/app.js")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE]
        .to_str()
        .expect("type")
        .starts_with("text/javascript"));
    assert!(js.contains("EventSource"));
}

/// A body the endpoint cannot read (no JSON content type, a form, bad
/// JSON) is refused; it is never taken for the default action.
#[tokio::test]
async fn a_body_that_is_not_json_is_refused_not_defaulted() {
    let paths = [
        "/runs/881/clear",
        "/runs/881/cancel",
        "/jobs/hxp_hourly_aggregation/runs",
        "/jobs/hxp_hourly_aggregation/pause",
        "/jobs/hxp_hourly_aggregation/unpause",
    ];
    for path in paths {
        for content_type in [
            None,
            Some("application/x-www-form-urlencoded"),
            Some("text/plain"),
        ] {
            let mut r = Request::builder()
                .method("POST")
                .uri(path)
                .header(header::HOST, "127.0.0.1:9101");
            if let Some(t) = content_type {
                r = r.header(header::CONTENT_TYPE, t);
            }
            let request = r
                .body(Body::from(r#"{"tasks":["export"]}"#))
                .expect("request");
            let (status, body) = call(state("127.0.0.1", None), request).await;
            assert_eq!(
                status,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{path} {content_type:?}: {body}"
            );
            is_error(&body, "unsupported_media_type");
        }
        let (status, body) =
            call(state("127.0.0.1", None), post(path, None, "{\"tasks\": [")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        is_error(&body, "invalid_json");
    }
}

/// A run or backfill of an interval that has not ended is refused (422)
/// unless asked for, before anything is queued.
#[tokio::test]
async fn intervals_that_have_not_ended_are_refused() {
    let ahead = (chrono::Utc::now() + chrono::TimeDelta::days(2))
        .format("%Y-%m-%dT00:00:00Z")
        .to_string();
    let later = (chrono::Utc::now() + chrono::TimeDelta::days(3))
        .format("%Y-%m-%dT00:00:00Z")
        .to_string();
    let (status, body) = call(
        state("127.0.0.1", None),
        post(
            "/jobs/hxp_hourly_aggregation/runs",
            None,
            &format!(r#"{{"interval_start":"{ahead}"}}"#),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    is_error(&body, "interval_not_ended");
    let (status, body) = call(
        state("127.0.0.1", None),
        post(
            "/backfill",
            None,
            &format!(r#"{{"job":"hxp_hourly_aggregation","from":"{ahead}","to":"{later}"}}"#),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    is_error(&body, "interval_not_ended");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("allow_unfinished")),
        "{body}"
    );
}

/// A handler that panics answers a 500 with an error id, never an empty
/// reply.
#[tokio::test]
async fn a_panic_in_a_handler_is_a_500_with_an_error_id() {
    async fn boom() -> &'static str {
        let v: Vec<u8> = Vec::new();
        let i = v.len() + 3;
        if v.get(i).is_none() {
            panic!("index {i} out of range");
        }
        "unreachable"
    }
    let app = axum::Router::new()
        .route("/boom", axum::routing::get(boom))
        .layer(axum::middleware::from_fn_with_state(
            state("127.0.0.1", None),
            super::checks,
        ));
    let response = app.oneshot(get("/boom")).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    let body: Value = serde_json::from_slice(&bytes).expect("json");
    is_error(&body, "internal");
    assert!(
        body["error_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("e-")),
        "{body}"
    );
    assert!(!body.to_string().contains("out of range"), "{body}");
}

/// Requests naming another host are refused before anything reads them.
#[tokio::test]
async fn requests_for_another_host_are_refused() {
    let request = Request::builder()
        .uri("/jobs")
        .header(header::HOST, "rebound.example:9101")
        .body(Body::empty())
        .expect("request");
    let (status, body) = call(state("127.0.0.1", None), request).await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
    is_error(&body, "unknown_host");
}

/// A state off loopback with one token per role.
fn state_with_roles(public_metrics: bool) -> ApiState {
    use crate::config::NamedToken;
    use crate::ops::Role;
    let mut state = state("0.0.0.0", None);
    // The database is never there: fail at once.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(std::time::Duration::from_millis(5))
        .connect_lazy("postgres://nobody:x@127.0.0.1:1/none")
        .expect("lazy pool");
    state.edit().ops.pools = Pools::new(pool);
    let mut config = (*state.ops.config).clone();
    config.api.public_metrics = public_metrics;
    config.api.tokens = [
        ("v", Role::Viewer),
        ("o", Role::Operator),
        ("a", Role::Admin),
    ]
    .into_iter()
    .map(|(name, role)| NamedToken {
        name: name.into(),
        token: Secret::new(format!("{name}-token-0123456789")),
        role,
        jobs: None,
    })
    .collect();
    state.edit().ops.config = Arc::new(config);
    state
}

/// A request to `path` (its parameters filled in) with a body its
/// handler accepts, so that only who asks decides between refused and not.
fn sample(method: &str, path: &str, token: Option<&str>) -> Request<Body> {
    let uri = path
        .replace("{job}", "hxp_hourly_aggregation")
        .replace("{id}", "1")
        .replace("{task}", "aggregate")
        .replace("{version}", "0123456789ab");
    let body = match (method, path) {
        ("POST", "/jobs/{job}/clear") => r#"{"from": "2026-01-01", "to": "2026-01-02"}"#,
        ("POST", "/backfill") => {
            r#"{"job": "hxp_hourly_aggregation", "from": "2026-01-01", "to": "2026-01-02"}"#
        }
        ("POST", "/runs/{id}/mark") => r#"{"state": "success"}"#,
        ("POST", "/reports/generate") => r#"{"report_type": "daily_summary"}"#,
        ("POST", "/retention/cleanup") => r#"{"dry_run": false}"#,
        _ => "",
    };
    let mut r = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, "127.0.0.1:9101");
    if !body.is_empty() {
        r = r.header(header::CONTENT_TYPE, "application/json");
    }
    if let Some(t) = token {
        r = r.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    r.body(Body::from(body)).expect("request")
}

/// Every route the API's and the console's routers mount, as (method,
/// path), read from their source: what the policy tables must cover.
fn mounted(source: &str) -> Vec<(String, String)> {
    let method = regex::Regex::new(r"\b(get|post|delete|put|patch)\(").expect("regex");
    let mut out = Vec::new();
    for (at, _) in source.match_indices(".route(") {
        // The call's arguments: up to its closing parenthesis.
        let rest = &source[at + ".route(".len()..];
        let mut depth = 1;
        let end = rest
            .char_indices()
            .find(|(_, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                depth == 0
            })
            .map_or(rest.len(), |(i, _)| i);
        let args = &rest[..end];
        let Some(path) = args.split('"').nth(1) else {
            continue;
        };
        for m in method.captures_iter(args) {
            out.push((m[1].to_uppercase(), path.to_string()));
        }
    }
    out.sort();
    out.dedup();
    out
}

#[test]
fn every_mounted_route_has_a_declared_policy_and_nothing_else_does() {
    let api = mounted(include_str!("../api/mod.rs"));
    let mut declared: Vec<(String, String)> = crate::api::policy::POLICY
        .iter()
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .collect();
    declared.sort();
    assert!(api.len() > 25, "the routes were read: {api:?}");
    assert_eq!(api, declared, "api::policy::POLICY against api::routes");
    let ui = mounted(include_str!("../ui/mod.rs"));
    let mut declared: Vec<(String, String)> = crate::ui::POLICY
        .iter()
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .collect();
    declared.sort();
    assert!(ui.len() > 20, "the console's routes were read: {ui:?}");
    assert_eq!(ui, declared, "ui::POLICY against ui::router");
}

#[tokio::test]
async fn every_route_answers_each_role_as_its_policy_says() {
    use crate::api::policy::{Access, POLICY};
    use crate::ops::Need;
    let tokens = [
        ("viewer", "v-token-0123456789", Need::Read),
        ("operator", "o-token-0123456789", Need::Operate),
        ("admin", "a-token-0123456789", Need::Admin),
    ];
    for public_metrics in [false, true] {
        for (method, path, access) in POLICY {
            let s = || state_with_roles(public_metrics);
            let public = match access {
                Access::Public => true,
                Access::Metrics => public_metrics,
                Access::Needs(_) => false,
            };
            // No credentials: only public routes answer.
            let (status, body) = call(s(), sample(method, path, None)).await;
            if public {
                assert!(
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                    "{method} {path} without credentials: {status} {body}"
                );
            } else {
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}: {body}");
                is_error(&body, "unauthorized");
            }
            // A wrong token never passes, public route or not.
            let (status, _) = call(s(), sample(method, path, Some("not-a-token"))).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with a wrong token"
            );
            for (role, token, has) in tokens {
                let (status, body) = call(s(), sample(method, path, Some(token))).await;
                let allowed = match access {
                    Access::Needs(need) => has >= *need,
                    _ => true,
                };
                if allowed {
                    assert!(
                        status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                        "{method} {path} as {role}: {status} {body}"
                    );
                } else {
                    assert_eq!(
                        status,
                        StatusCode::FORBIDDEN,
                        "{method} {path} as {role}: {body}"
                    );
                    is_error(&body, "forbidden");
                }
            }
        }
    }
}

#[tokio::test]
async fn an_operator_limited_to_some_jobs_is_refused_the_others() {
    let state = state_with_roles(false);
    let mut config = (*state.ops.config).clone();
    config.api.tokens[1].jobs = Some(vec!["daily_*".into()]);
    let mut state = state;
    state.edit().ops.config = Arc::new(config);
    let (status, body) = call(
        state.clone(),
        sample("POST", "/jobs/{job}/pause", Some("o-token-0123456789")),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("daily_*")),
        "{body}"
    );
    // Reads are not limited.
    let (status, body) = call(
        state,
        sample("GET", "/jobs/{job}/grid", Some("o-token-0123456789")),
    )
    .await;
    assert_ne!(status, StatusCode::FORBIDDEN, "{body}");
}

#[tokio::test]
async fn on_loopback_with_tokens_local_processes_read_but_change_nothing() {
    let s = || state("127.0.0.1", Some(TOKEN));
    let (status, body) = call(s(), get("/runs/1")).await;
    assert_ne!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_ne!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = call(s(), post("/runs/1/cancel", None, "")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}
