//! Finding 8: the console's cookie held the raw API token, logout did not
//! revoke it, login had no CSRF protection, wrong tokens were never
//! throttled.

use crate::common::TestEnv;
use crate::{config, cookie_of, csrf_of, note_job, raw, Server};

const TOKEN: &str = "console-session-token-0123";

fn form(port: u16, path: &str, cookies: &str, body: &str) -> crate::http::Reply {
    raw(
        port,
        "POST",
        path,
        &[
            ("Cookie", cookies),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        body.as_bytes(),
    )
    .expect("an answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_sessions_are_server_side_revocable_and_throttled() {
    let env = TestEnv::new("attack_sessions").await;
    let port = crate::http::free_port();
    let cfg = config(
        &env,
        &[("note", note_job(env.dir.path()))],
        port,
        &format!(
            "public_url = \"https://hxjobs.example.com\"\nmax_failed_logins = 3\n\
             [[api.tokens]]\nname = \"ops\"\ntoken = \"{TOKEN}\"\nrole = \"operator\""
        ),
        "",
    );
    let server = Server::start(&env, &cfg, "serve", port);
    let login_page = raw(port, "GET", "/ui/login", &[], b"").expect("login page");
    assert_eq!(login_page.status, 200);
    let visitor = cookie_of(&login_page, "hxjobs_visitor").expect("visitor cookie");
    assert!(visitor.contains("Secure"), "{visitor}");
    let visitor = visitor.split(';').next().unwrap_or("").to_string();
    let csrf = csrf_of(&login_page);

    // Login without the form's CSRF token (a page elsewhere posting it).
    let r = form(
        port,
        "/ui/login",
        &visitor,
        &format!("csrf=&token={TOKEN}&next=/ui/"),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    let r = form(
        port,
        "/ui/login",
        "",
        &format!("csrf={csrf}&token={TOKEN}&next=/ui/"),
    );
    assert_eq!(r.status, 403, "{}", r.text());

    // A login: the cookie is a random id, not the token; the session is a row.
    let r = form(
        port,
        "/ui/login",
        &visitor,
        &format!("csrf={csrf}&token={TOKEN}&next=/ui/"),
    );
    assert_eq!(r.status, 303, "{}", r.text());
    let set = cookie_of(&r, "hxjobs_session").expect("session cookie");
    assert!(!set.contains(TOKEN), "the cookie holds the token: {set}");
    for attr in ["HttpOnly", "SameSite=Strict", "Secure"] {
        assert!(set.contains(attr), "{attr}: {set}");
    }
    let session = set.split(';').next().unwrap_or("").to_string();
    assert_eq!(session.len(), "hxjobs_session=".len() + 64, "{session}");
    assert_eq!(
        env.count(
            "SELECT count(*) FROM console_sessions WHERE actor = 'ops' AND revoked_at IS NULL"
        )
        .await,
        1
    );
    let cookies = format!("{session}; {visitor}");
    let page = raw(port, "GET", "/ui/jobs/note", &[("Cookie", &cookies)], b"").expect("page");
    assert_eq!(page.status, 200);
    let csrf = csrf_of(&page);
    let r = form(
        port,
        "/ui/jobs/note/pause",
        &cookies,
        &format!("csrf={csrf}"),
    );
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(
        env.count("SELECT count(*) FROM job_schedule WHERE job = 'note' AND paused")
            .await,
        1
    );

    // Logout revokes it: the same cookie changes nothing afterwards.
    let r = form(port, "/ui/logout", &cookies, &format!("csrf={csrf}"));
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(
        env.count("SELECT count(*) FROM console_sessions WHERE revoked_at IS NOT NULL")
            .await,
        1
    );
    let r = form(
        port,
        "/ui/jobs/note/unpause",
        &cookies,
        &format!("csrf={csrf}"),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(
        env.count("SELECT count(*) FROM job_schedule WHERE job = 'note' AND paused")
            .await,
        1
    );

    // Wrong tokens: refused, then throttled (429 with Retry-After), the
    // right token included, until they age out.
    let page = raw(port, "GET", "/ui/login", &[("Cookie", &visitor)], b"").expect("login");
    let csrf = csrf_of(&page);
    for i in 0..3 {
        let r = form(
            port,
            "/ui/login",
            &visitor,
            &format!("csrf={csrf}&token=wrong-{i}&next=/ui/"),
        );
        assert_eq!(r.status, 303, "{}", r.text());
        assert!(cookie_of(&r, "hxjobs_session").is_none());
    }
    for token in ["wrong-again", TOKEN] {
        let r = form(
            port,
            "/ui/login",
            &visitor,
            &format!("csrf={csrf}&token={token}&next=/ui/"),
        );
        assert_eq!(r.status, 429, "{}", r.text());
        assert!(r.header("retry-after").is_some());
    }
    drop(server);
    env.cleanup().await;
}

/// A login through the identity provider cannot be forced on a victim
/// (login CSRF: a callback without this browser's state cookie), replayed
/// (a state used or unknown) or faked (the provider's error, no code).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_provider_callbacks_need_this_browsers_unused_state() {
    let env = TestEnv::new("attack_oidc").await;
    let port = crate::http::free_port();
    let idp = crate::http::free_port();
    let cfg = config(
        &env,
        &[("note", note_job(env.dir.path()))],
        port,
        &format!(
            "[[api.tokens]]\nname = \"ops\"\ntoken = \"{TOKEN}\"\nrole = \"operator\"\n\
             [api.oidc]\nissuer = \"http://127.0.0.1:{idp}\"\nclient_id = \"hxjobs\"\n\
             operator = [\"ops\"]"
        ),
        "",
    );
    let server = Server::start(&env, &cfg, "serve", port);
    let state = "a".repeat(64);
    for (cookies, query, says) in [
        // Another site sends the victim's browser here with its own code.
        (
            "",
            format!("code=attacker-code&state={state}"),
            "not started in this browser",
        ),
        // The state matches its cookie but no login is in flight with it.
        (
            &*format!("hxjobs_oidc={state}"),
            format!("code=c&state={state}"),
            "expired or was already used",
        ),
        // The provider's refusal.
        (
            "",
            "error=access_denied&error_description=nope".to_string(),
            "refused the login",
        ),
    ] {
        let headers: Vec<(&str, &str)> = if cookies.is_empty() {
            Vec::new()
        } else {
            vec![("Cookie", cookies)]
        };
        let r = raw(
            port,
            "GET",
            &format!("/ui/login/oidc/callback?{query}"),
            &headers,
            b"",
        )
        .expect("an answer");
        assert_eq!(r.status, 403, "{query}: {}", r.text());
        assert!(r.text().contains(says), "{query}: {}", r.text());
        assert!(cookie_of(&r, "hxjobs_session").is_none(), "{query}");
    }
    assert_eq!(env.count("SELECT count(*) FROM console_sessions").await, 0);
    assert_eq!(
        env.count("SELECT count(*) FROM audit WHERE action = 'login' AND outcome = 'refused'")
            .await,
        3
    );
    drop(server);
    env.cleanup().await;
}

/// Every console route, for a session of each role: what `ui::POLICY`
/// declares is what happens (a form a role may not send is 403 and changes
/// nothing; one it may is not refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_console_route_answers_each_role_as_its_policy_says() {
    use hxjobs::ops::Need;
    use hxjobs::web::Access;
    let env = TestEnv::new("attack_console_roles").await;
    let port = crate::http::free_port();
    let cfg = config(
        &env,
        &[("note", note_job(env.dir.path()))],
        port,
        "max_failed_logins = 50\n\
         [[api.tokens]]\nname = \"v\"\ntoken = \"viewer-console-0001\"\n\
         [[api.tokens]]\nname = \"o\"\ntoken = \"operator-console-0001\"\nrole = \"operator\"\n\
         [[api.tokens]]\nname = \"a\"\ntoken = \"admin-console-0001\"\nrole = \"admin\"",
        "",
    );
    let _server = Server::start(&env, &cfg, "serve", port);
    let login = |token: &str| {
        let page = raw(port, "GET", "/ui/login", &[], b"").expect("login page");
        let visitor = cookie_of(&page, "hxjobs_visitor")
            .and_then(|c| c.split(';').next().map(str::to_string))
            .expect("visitor cookie");
        let r = form(
            port,
            "/ui/login",
            &visitor,
            &format!("csrf={}&token={token}&next=/ui/", csrf_of(&page)),
        );
        assert_eq!(r.status, 303, "login: {}", r.text());
        let session = cookie_of(&r, "hxjobs_session")
            .and_then(|c| c.split(';').next().map(str::to_string))
            .expect("session cookie");
        let cookies = format!("{session}; {visitor}");
        let page = raw(port, "GET", "/ui/jobs", &[("Cookie", &cookies)], b"").expect("jobs");
        (cookies, csrf_of(&page))
    };
    let sample = |method: &str, path: &str, csrf: &str| {
        let uri = path
            .replace("{job}", "note")
            .replace("{id}", "1")
            .replace("{*rest}", "nowhere");
        let body = match path {
            "/ui/runs/{id}/clear" => format!("csrf={csrf}&task=store"),
            "/ui/runs/{id}/mark" => format!("csrf={csrf}&state=success"),
            "/ui/jobs/{job}/backfill" => {
                format!("csrf={csrf}&from=2026-01-01&to=2026-01-02&step=start")
            }
            "/ui/reports/generate" => format!("csrf={csrf}&report_type=daily_summary&format=json"),
            _ if method == "POST" => format!("csrf={csrf}"),
            _ => String::new(),
        };
        (uri, body)
    };
    let mut checked = 0;
    for (role, token, has) in [
        ("viewer", "viewer-console-0001", Need::Read),
        ("operator", "operator-console-0001", Need::Operate),
        ("admin", "admin-console-0001", Need::Admin),
    ] {
        let (cookies, csrf) = login(token);
        for (method, path, access) in hxjobs::ui::POLICY {
            let Access::Needs(need) = access else {
                continue; // login, logout, assets: no role
            };
            let (uri, body) = sample(method, path, &csrf);
            let r = if *method == "POST" {
                form(port, &uri, &cookies, &body)
            } else {
                raw(port, "GET", &uri, &[("Cookie", &cookies)], b"").expect("an answer")
            };
            if has >= *need {
                assert!(
                    r.status != 401 && r.status != 403,
                    "{method} {path} as {role}: {} {}",
                    r.status,
                    r.text()
                );
            } else {
                assert_eq!(r.status, 403, "{method} {path} as {role}: {}", r.text());
            }
            checked += 1;
        }
    }
    assert!(checked > 60, "{checked} requests");
    // What the viewer sent changed nothing: every action is the operator's
    // or the admin's.
    assert_eq!(
        env.count("SELECT count(*) FROM run_actions WHERE actor = 'ui:v'")
            .await,
        0
    );
    assert!(
        env.count("SELECT count(*) FROM audit WHERE actor = 'ui:v' AND outcome = 'refused'")
            .await
            >= 8
    );
    env.cleanup().await;
}

/// Anonymous clients cannot grow the logins in flight without end (nor
/// make hxjobs ask the provider for each): past the bound, 503 at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_sign_on_logins_in_flight_are_bounded() {
    let env = TestEnv::new("attack_oidc_flood").await;
    let port = crate::http::free_port();
    let idp = crate::http::free_port();
    let cfg = config(
        &env,
        &[("note", note_job(env.dir.path()))],
        port,
        &format!(
            "[api.oidc]\nissuer = \"http://127.0.0.1:{idp}\"\nclient_id = \"hxjobs\"\nviewer = [\"all\"]"
        ),
        "",
    );
    let server = Server::start(&env, &cfg, "serve", port);
    // Below the bound, a login starts (here the provider is unreachable: 502).
    let r = raw(port, "GET", "/ui/login/oidc", &[], b"").expect("an answer");
    assert_eq!(r.status, 502, "{}", r.text());
    sqlx::query(
        "INSERT INTO oidc_logins (state_sha256, nonce, verifier, next)
         SELECT sha256(i::text::bytea), 'n', 'v', '/ui/' FROM generate_series(1, $1) i",
    )
    .bind(hxjobs::ui::oidc::MAX_IN_FLIGHT)
    .execute(&env.pool)
    .await
    .expect("logins in flight");
    let r = raw(port, "GET", "/ui/login/oidc", &[], b"").expect("an answer");
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(
        env.count("SELECT count(*) FROM oidc_logins").await,
        hxjobs::ui::oidc::MAX_IN_FLIGHT
    );
    drop(server);
    env.cleanup().await;
}
