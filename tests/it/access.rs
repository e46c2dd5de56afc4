//! Team access against a real daemon: token roles and jobs, reads behind
//! credentials, a CLI backfill recorded where the API and console see it,
//! and the audit log of all of it.

use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::TestEnv;
use crate::http::{free_port, request};

fn hxjobs(env: &TestEnv, config: &std::path::Path, args: &[&str]) -> Output {
    env.run_as(config, "ops-bob", args)
}

fn job(name: &str) -> String {
    format!(
        r#"name = "{name}"
schedule = "0 0 1 1 *"
interval = "day"
start_date = "2026-01-01"
[tasks.t]
kind = "sql"
sql = "SELECT 1"
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_decide_what_a_token_may_do_and_the_audit_log_keeps_it() {
    let env = TestEnv::new("access_roles").await;
    let port = free_port();
    let cfg = env.config_with_jobs(
        "access",
        &[("alpha", job("alpha")), ("beta", job("beta"))],
        &format!(
            r#"[api]
host = "127.0.0.1"
port = {port}
[[api.tokens]]
name = "viewer"
token = "viewer-token-0001"
[[api.tokens]]
name = "oncall"
token = "oncall-token-0001"
role = "operator"
jobs = ["al*"]
[[api.tokens]]
name = "boss"
token = "boss-token-0001"
role = "admin"
"#
        ),
    );

    // A backfill from the command line is recorded like the API's.
    let out = hxjobs(
        &env,
        &cfg,
        &[
            "backfill",
            "alpha",
            "--from",
            "2026-01-01",
            "--to",
            "2026-01-03",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (state, by): (String, Option<String>) =
        sqlx::query_as("SELECT state, started_by FROM backfills WHERE job = 'alpha'")
            .fetch_one(&env.pool)
            .await
            .expect("the CLI's backfill is recorded");
    assert_eq!(state, "succeeded");
    assert_eq!(by.as_deref(), Some("cli:ops-bob"));

    let mut daemon = env
        .hxjobs(&cfg, &["daemon"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("daemon");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the API did not start"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let call = |method: &str, path: &str, token: Option<&str>| {
        let body = (method == "POST").then_some(&b"{}"[..]);
        request(port, method, path, token, body)
    };

    // On loopback, a local process reads without a token but changes
    // nothing (off loopback it reads nothing either: the router's tests).
    assert_eq!(call("GET", "/jobs", None).status, 200);
    assert_eq!(call("POST", "/jobs/alpha/runs", None).status, 401);
    let r = call("GET", "/backfills", Some("viewer-token-0001"));
    assert_eq!(r.status, 200, "{}", r.text());
    let rows = r.json()["backfills"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        rows.iter()
            .any(|b| b["job"] == "alpha" && b["started_by"] == "cli:ops-bob"),
        "{rows:?}"
    );

    // A viewer changes nothing.
    let runs_before = env.count("SELECT count(*) FROM job_runs").await;
    for (method, path) in [
        ("POST", "/jobs/alpha/runs"),
        ("POST", "/jobs/alpha/pause"),
        ("POST", "/runs/1/cancel"),
        ("POST", "/retention/cleanup"),
    ] {
        let r = call(method, path, Some("viewer-token-0001"));
        assert_eq!(r.status, 403, "{method} {path}: {}", r.text());
        assert_eq!(r.json()["error"], "forbidden");
    }
    assert_eq!(
        env.count("SELECT count(*) FROM job_runs").await,
        runs_before
    );
    assert_eq!(
        env.count("SELECT count(*) FROM job_schedule WHERE paused")
            .await,
        0
    );

    // An operator acts on its jobs only, and not on retention.
    let r = call("POST", "/jobs/beta/pause", Some("oncall-token-0001"));
    assert_eq!(r.status, 403, "{}", r.text());
    let r = call("POST", "/jobs/alpha/pause", Some("oncall-token-0001"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        env.count("SELECT count(*) FROM job_schedule WHERE job = 'alpha' AND paused")
            .await,
        1
    );
    let r = call("POST", "/retention/cleanup", Some("oncall-token-0001"));
    assert_eq!(r.status, 403, "{}", r.text());

    // The audit log: admins only, with every change and refusal.
    assert_eq!(call("GET", "/audit", Some("oncall-token-0001")).status, 403);
    let r = call("GET", "/audit?limit=100", Some("boss-token-0001"));
    assert_eq!(r.status, 200, "{}", r.text());
    let entries = r.json()["audit"].as_array().cloned().unwrap_or_default();
    let has = |actor: &str, action: &str, outcome: &str, target: &str| {
        entries.iter().any(|e: &Value| {
            e["actor"] == actor
                && e["action"] == action
                && e["outcome"] == outcome
                && e["target"] == target
        })
    };
    assert!(
        has("api:viewer", "trigger", "refused", "job:alpha"),
        "{entries:?}"
    );
    assert!(
        has("api:oncall", "pause", "refused", "job:beta"),
        "{entries:?}"
    );
    assert!(has("api:oncall", "pause", "ok", "job:alpha"), "{entries:?}");
    assert!(
        has("cli:ops-bob", "backfill", "ok", "job:alpha"),
        "{entries:?}"
    );
    assert!(
        entries.iter().any(|e| e["actor"] == "api:oncall"
            && e["client"] == "127.0.0.1"
            && e["role"] == "operator"),
        "{entries:?}"
    );
    // A wrong token is recorded too (after the answer).
    assert_eq!(call("GET", "/jobs", Some("nope")).status, 401);
    let mut recorded = 0;
    for _ in 0..50 {
        recorded = env
            .count(
                "SELECT count(*) FROM audit WHERE action = 'authenticate' AND outcome = 'refused'",
            )
            .await;
        if recorded > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(recorded, 1);
    // The same from the command line.
    let out = hxjobs(&env, &cfg, &["audit", "--actor", "api:viewer", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        lines.lines().count() >= 4 && lines.lines().all(|l| l.contains("\"api:viewer\"")),
        "{lines}"
    );

    let _ = daemon.kill();
    let _ = daemon.wait();
    env.cleanup().await;
}
