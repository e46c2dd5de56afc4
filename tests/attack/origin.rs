//! Finding 1: a web page could queue a run (and so run shell) on the
//! default loopback install without a token.

use crate::common::TestEnv;
use crate::{config, note_job, raw, Server};

fn runs(reply: &crate::http::Reply) -> String {
    format!("{} {}", reply.status, reply.text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_page_cannot_change_anything_on_a_loopback_install() {
    let env = TestEnv::new("attack_origin").await;
    let port = crate::http::free_port();
    let cfg = config(&env, &[("note", note_job(env.dir.path()))], port, "", "");
    let server = Server::start(&env, &cfg, "serve", port);
    let json = br#"{"params": {"note": "x"}}"#;
    let path = "/jobs/note/runs";

    // A cross-site <form>: a form body, never read as empty JSON.
    for kind in [
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "text/plain",
    ] {
        let r = raw(port, "POST", path, &[("Content-Type", kind)], b"").expect("answer");
        assert_eq!(r.status, 415, "{kind}: {}", runs(&r));
    }
    // A page of another site, even sending JSON (a fetch).
    for headers in [
        vec![
            ("Origin", "http://evil.example"),
            ("Content-Type", "application/json"),
        ],
        vec![("Origin", "null"), ("Content-Type", "application/json")],
        vec![
            ("Sec-Fetch-Site", "cross-site"),
            ("Content-Type", "application/json"),
        ],
        vec![
            ("Sec-Fetch-Site", "same-site"),
            ("Content-Type", "application/json"),
        ],
        vec![
            ("Origin", &format!("http://localhost:{}", port + 1)),
            ("Content-Type", "application/json"),
        ],
    ] {
        let r = raw(port, "POST", path, &headers, json).expect("answer");
        assert_eq!(r.status, 403, "{headers:?}: {}", runs(&r));
        assert_eq!(r.json()["error"], "cross_site_request");
    }
    // DNS rebinding: the page's own name, resolved to 127.0.0.1.
    let host = format!("evil.example:{port}");
    for method in ["POST", "GET"] {
        let r = raw(
            port,
            method,
            path,
            &[("Host", &host), ("Content-Type", "application/json")],
            json,
        )
        .expect("answer");
        assert_eq!(r.status, 421, "{method}: {}", runs(&r));
        assert_eq!(r.json()["error"], "unknown_host");
    }
    assert_eq!(env.count("SELECT count(*) FROM job_runs").await, 0);

    // The person at the machine: curl with JSON, or a same-origin page.
    let own = format!("http://127.0.0.1:{port}");
    for headers in [
        vec![("Content-Type", "application/json")],
        vec![
            ("Content-Type", "application/json"),
            ("Origin", own.as_str()),
            ("Sec-Fetch-Site", "same-origin"),
        ],
        vec![("Host", "localhost"), ("Content-Type", "application/json")],
    ] {
        let r = raw(
            port,
            "POST",
            path,
            &headers,
            br#"{"interval_start": "2026-02-01"}"#,
        )
        .expect("answer");
        assert_eq!(r.status, 202, "{headers:?}: {}", runs(&r));
    }
    assert_eq!(env.count("SELECT count(*) FROM job_runs").await, 3);

    // Console: every visitor has a CSRF token of its own, and a form with
    // another visitor's token (or none) is refused.
    let page = |cookie: Option<&str>| {
        let mut headers = vec![];
        if let Some(c) = cookie {
            headers.push(("Cookie", c));
        }
        raw(port, "GET", "/ui/jobs/note/run", &headers, b"").expect("page")
    };
    let (a, b) = (page(None), page(None));
    let (token, visitor) = (crate::csrf_of, crate::visitor_of);
    assert_ne!(token(&a), token(&b), "two visitors share a CSRF token");
    let a_cookie = visitor(&a);
    assert_eq!(
        token(&page(Some(&a_cookie))),
        token(&a),
        "a visitor keeps its token"
    );
    let form = |path: &str, body: &str, origin: Option<&str>| {
        let mut headers = vec![
            ("Cookie", a_cookie.as_str()),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ];
        headers.extend(origin.map(|o| ("Origin", o)));
        raw(port, "POST", path, &headers, body.as_bytes()).expect("answer")
    };
    for csrf in [token(&b), String::new()] {
        let r = form(
            "/ui/jobs/note/run",
            &format!("csrf={csrf}&interval_start=2026-02-02"),
            None,
        );
        assert_eq!(r.status, 403, "{}", runs(&r));
    }
    // The backfill preview checks it too.
    let r = form(
        "/ui/jobs/note/backfill",
        "from=2026-01-01&to=2026-02-01&step=preview",
        None,
    );
    assert_eq!(r.status, 403, "{}", runs(&r));
    // A cross-site console form, even with a valid token.
    let body = format!("csrf={}&interval_start=2026-02-02", token(&a));
    let r = form("/ui/jobs/note/run", &body, Some("http://evil.example"));
    assert_eq!(r.status, 403, "{}", runs(&r));
    assert_eq!(env.count("SELECT count(*) FROM job_runs").await, 3);
    // And with its own token, from its own page, it works.
    let r = form("/ui/jobs/note/run", &body, None);
    assert!(r.status == 303 || r.status == 200, "{}", runs(&r));
    assert_eq!(env.count("SELECT count(*) FROM job_runs").await, 4);
    drop(server);
    env.cleanup().await;
}
