//! The views over many runs and a job's versions take only what they
//! declare, bounded, and show a job file's text as text: GET /runs, a
//! job's versions, and the console's jobs list, definition, calendar,
//! durations and runs pages.

use crate::common::TestEnv;
use crate::http::{get_page, request};
use crate::{config, Server};

/// A job file whose comment and description carry markup.
const JOB: &str = r#"# </pre><script>alert('definition')</script>
name = "viewed"
description = "<img src=x onerror=alert(1)>"
schedule = "0 0 1 1 *"
interval = "day"
start_date = "2026-01-01"
[tasks.only]
kind = "shell"
command = "true"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_take_only_bounded_values_and_show_a_job_file_as_text() {
    let env = TestEnv::new("attack_views").await;
    let port = crate::http::free_port();
    let cfg = config(&env, &[("viewed", JOB.to_string())], port, "", "");
    let out = env
        .hxjobs(&cfg, &["run", "viewed", "--interval-start", "2026-03-01"])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = Server::start(&env, &cfg, "serve", port);

    // GET /runs: values are bound, ranges and limits bounded.
    let r = request(port, "GET", "/runs?job=viewed'%20OR%20'1'%3D'1", None, None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["runs"],
        serde_json::json!([]),
        "an injected job matched runs"
    );
    for (query, code) in [
        ("limit=1001", "invalid_limit"),
        ("limit=0", "invalid_limit"),
        ("state=done;DROP", "invalid_state"),
        ("from=yesterday", "invalid_date"),
        ("from=2026-03-02&to=2026-03-01", "invalid_range"),
        ("sql=SELECT", "invalid_query"),
    ] {
        let r = request(port, "GET", &format!("/runs?{query}"), None, None);
        assert_eq!(r.status, 400, "{query}: {}", r.text());
        assert_eq!(r.json()["error"], code, "{query}: {}", r.text());
    }
    // A version is 12 hex digits, of a job that exists.
    let r = request(
        port,
        "GET",
        "/jobs/viewed/versions/..%2F..%2Fetc",
        None,
        None,
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"], "invalid_version");
    let r = request(
        port,
        "GET",
        "/jobs/viewed/versions/0123456789ab",
        None,
        None,
    );
    assert_eq!(r.status, 404, "{}", r.text());
    let listed = request(port, "GET", "/jobs/viewed/versions", None, None).json();
    let version = listed["versions"][0]["version"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let r = request(
        port,
        "GET",
        &format!("/jobs/viewed/versions/{version}"),
        None,
        None,
    );
    assert_eq!(
        r.json()["definition"],
        JOB,
        "the text as it was, as a JSON string"
    );

    // The console: a job file's markup is text on every page that shows it.
    for path in [
        "/ui/jobs/viewed/definition".to_string(),
        format!("/ui/jobs/viewed/definition?version={version}"),
        "/ui/jobs?q=%3Cscript%3Ealert(2)%3C%2Fscript%3E".to_string(),
        "/ui/jobs".to_string(),
    ] {
        let page = get_page(port, &path, None);
        assert_eq!(page.status, 200, "{path}");
        let html = page.text();
        for raw in ["<script>alert", "<img src=x"] {
            assert!(!html.contains(raw), "{raw} reached {path} as markup");
        }
    }
    let definition = get_page(port, "/ui/jobs/viewed/definition", None).text();
    assert!(
        definition.contains("&lt;/pre&gt;&lt;script&gt;"),
        "the file's text is shown escaped"
    );
    // Every parameter is checked before anything is read.
    for path in [
        "/ui/jobs?state=done",
        "/ui/jobs?paused=maybe",
        "/ui/jobs?sort=name",
        "/ui/jobs/viewed/definition?version=zz",
        "/ui/jobs/viewed/definition?from=0123456789ab",
        "/ui/jobs/viewed/calendar?year=99999",
        "/ui/jobs/viewed/calendar?year=x",
        "/ui/jobs/viewed/durations?runs=100000",
        "/ui/runs?limit=100000",
        "/ui/runs?state=x'--",
    ] {
        let page = get_page(port, path, None);
        assert_eq!(page.status, 400, "{path}: {}", page.text());
    }
    let page = get_page(
        port,
        "/ui/jobs/viewed/definition?version=0123456789ab",
        None,
    );
    assert_eq!(page.status, 404);
    drop(server);
    env.cleanup().await;
}
