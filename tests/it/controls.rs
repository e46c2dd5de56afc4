//! Run controls through the CLI and the API: clear (a task and what comes
//! after it; failed runs in bulk), mark, cancel (the task's process group
//! killed), pause and unpause, trigger with parameters; each recorded with
//! who and why, and refused with a clear error where it does not apply.

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::TestEnv;
use crate::http::request;
use crate::scheduler::{wait_for, wait_until};

fn config(env: &TestEnv, jobs: &[(&str, String)], extra: &str) -> PathBuf {
    env.config_with_jobs("controls", jobs, extra)
}

/// Run as the login name `ops-alice`, which the ledger records.
fn hxjobs(env: &TestEnv, config: &std::path::Path, args: &[&str]) -> Output {
    env.run_as(config, "ops-alice", args)
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

async fn ran_table(env: &TestEnv) {
    sqlx::query("CREATE TABLE ran (task text, interval_start timestamptz, note text)")
        .execute(&env.pool)
        .await
        .expect("ran table");
}

async fn last_run(env: &TestEnv, job: &str) -> i64 {
    sqlx::query_scalar("SELECT max(id) FROM job_runs WHERE job = $1")
        .bind(job)
        .fetch_one(&env.pool)
        .await
        .expect("run")
}

async fn state_of(env: &TestEnv, run: i64) -> String {
    sqlx::query_scalar("SELECT state FROM job_runs WHERE id = $1")
        .bind(run)
        .fetch_one(&env.pool)
        .await
        .expect("state")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cleared_task_and_what_follows_it_run_again_alone() {
    let env = TestEnv::new("controls_clear").await;
    ran_table(&env).await;
    let fixed = env.dir.path().join("fixed");
    // `first` succeeds; `flaky` fails until the file `fixed` exists;
    // `last` comes after it.
    let job = format!(
        r#"name = "chain"
schedule = "0 0 1 1 *"
interval = "day"
start_date = "2026-01-01"
[tasks.first]
kind = "sql"
sql = "INSERT INTO ran VALUES ('first', '{{{{ interval_start }}}}')"
[tasks.flaky]
kind = "shell"
depends_on = ["first"]
command = "test -e '{}'"
[tasks.last]
kind = "sql"
depends_on = ["flaky"]
sql = "INSERT INTO ran VALUES ('last', '{{{{ interval_start }}}}')"
"#,
        fixed.display()
    );
    let cfg = config(&env, &[("chain", job)], "");
    let out = hxjobs(&env, &cfg, &["run", "chain"]);
    assert_eq!(out.status.code(), Some(1), "{}", err(&out));
    let id = last_run(&env, "chain").await;
    let ids = id.to_string();
    assert_eq!(state_of(&env, id).await, "failed");

    // Clearing needs a finished run and known tasks.
    let unknown = hxjobs(&env, &cfg, &["clear", &ids, "--task", "nope"]);
    assert_eq!(unknown.status.code(), Some(2), "{}", err(&unknown));
    assert!(
        err(&unknown).contains("no task `nope`"),
        "{}",
        err(&unknown)
    );

    std::fs::write(&fixed, "").expect("fix");
    let cleared = hxjobs(
        &env,
        &cfg,
        &[
            "clear",
            &ids,
            "--task",
            "flaky",
            "--downstream",
            "--reason",
            "disk fixed",
        ],
    );
    assert!(cleared.status.success(), "{}", err(&cleared));
    assert!(String::from_utf8_lossy(&cleared.stdout).contains("these tasks run: flaky, last"));
    assert_eq!(state_of(&env, id).await, "queued");
    let again = hxjobs(&env, &cfg, &["clear", &ids]);
    assert_eq!(again.status.code(), Some(2));
    assert!(err(&again).contains("is queued"), "{}", err(&again));

    let once = hxjobs(&env, &cfg, &["daemon", "--once", "--no-api"]);
    assert!(once.status.success(), "{}", err(&once));
    assert_eq!(state_of(&env, id).await, "success");
    // `first` was not run again; `last` ran once.
    assert_eq!(
        env.count("SELECT count(*) FROM ran WHERE task = 'first'")
            .await,
        1
    );
    assert_eq!(
        env.count("SELECT count(*) FROM ran WHERE task = 'last'")
            .await,
        1
    );
    let tries: Vec<(String, String)> =
        sqlx::query_as("SELECT task, outcome FROM task_attempts WHERE run_id = $1 ORDER BY id")
            .bind(id)
            .fetch_all(&env.pool)
            .await
            .expect("attempts");
    let tries: Vec<(&str, &str)> = tries
        .iter()
        .map(|(t, o)| (t.as_str(), o.as_str()))
        .collect();
    assert_eq!(
        tries,
        [
            ("first", "success"),
            ("flaky", "failed"),
            ("flaky", "success"),
            ("last", "success")
        ]
    );
    let action: (String, String, Option<String>, Value) =
        sqlx::query_as("SELECT actor, action, reason, detail FROM run_actions WHERE run_id = $1")
            .bind(id)
            .fetch_one(&env.pool)
            .await
            .expect("action");
    assert_eq!(action.0, "cli:ops-alice");
    assert_eq!(action.1, "clear");
    assert_eq!(action.2.as_deref(), Some("disk fixed"));
    assert_eq!(action.3["tasks"], json!(["flaky", "last"]));

    // Mark: a whole run, one task; not a running run.
    let marked = hxjobs(
        &env,
        &cfg,
        &["mark", &ids, "failed", "--reason", "bad data"],
    );
    assert!(marked.status.success(), "{}", err(&marked));
    assert_eq!(state_of(&env, id).await, "failed");
    let task = hxjobs(&env, &cfg, &["mark", &ids, "success", "--task", "last"]);
    assert!(task.status.success(), "{}", err(&task));
    let twice = hxjobs(&env, &cfg, &["mark", &ids, "failed"]);
    assert_eq!(twice.status.code(), Some(2));
    assert!(err(&twice).contains("already failed"), "{}", err(&twice));
    let actions = env
        .count(&format!(
            "SELECT count(*) FROM run_actions WHERE run_id = {id} AND action = 'mark'"
        ))
        .await;
    assert_eq!(actions, 2);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_run_stops_its_task_and_is_not_retried() {
    let env = TestEnv::new("controls_cancel").await;
    let pid_file = env.dir.path().join("pid");
    let job = format!(
        "name = \"long\"\nschedule = \"0 0 1 1 *\"\ninterval = \"day\"\nstart_date = \"2026-01-01\"\n[tasks.sleep]\nkind = \"shell\"\nretries = 3\ncommand = \"echo $$ > '{}'; sleep 300\"\n",
        pid_file.display()
    );
    let cfg = config(&env, &[("long", job)], "[scheduler]\nheartbeat_secs = 1\n");
    let mut runner = env
        .hxjobs(&cfg, &["run", "long"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("hxjobs run");
    let started = wait_until(
        &env,
        "SELECT count(*) FROM task_attempts WHERE outcome = 'running'",
        1,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(started, 1);
    while !pid_file.exists() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = std::fs::read_to_string(&pid_file).expect("pid");
    let id = last_run(&env, "long").await;

    let out = hxjobs(
        &env,
        &cfg,
        &["cancel", &id.to_string(), "--reason", "wrong day"],
    );
    assert!(out.status.success(), "{}", err(&out));
    // Its worker finds the claim gone and stops the task.
    let status = wait_for(&mut runner, Duration::from_secs(30));
    assert!(status.is_some(), "the worker did not stop");
    // Gone, or a zombie nobody reaped yet (its parent was killed with it).
    let running = |pid: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit(") ").next().map(|r| !r.starts_with('Z')))
            .unwrap_or(false)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while running(pid.trim()) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !running(pid.trim()),
        "the task's shell {pid} outlived the cancel"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(state_of(&env, id).await, "cancelled");
    let (task, attempts): (String, i64) = sqlx::query_as(
        "SELECT t.state, (SELECT count(*) FROM task_attempts a WHERE a.run_id = t.run_id)
         FROM task_instances t WHERE t.run_id = $1",
    )
    .bind(id)
    .fetch_one(&env.pool)
    .await
    .expect("task");
    assert_eq!((task.as_str(), attempts), ("cancelled", 1), "not retried");
    let again = hxjobs(&env, &cfg, &["cancel", &id.to_string()]);
    assert_eq!(again.status.code(), Some(2));
    assert!(
        err(&again).contains("only a queued or running run"),
        "{}",
        err(&again)
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_job_gets_no_runs_and_catches_up_by_its_policy_on_unpause() {
    let env = TestEnv::new("controls_pause").await;
    ran_table(&env).await;
    let start = (chrono::Utc::now() - chrono::TimeDelta::hours(2)).format("%Y-%m-%dT%H:%M:00Z");
    let job = format!(
        "name = \"minutely\"\nschedule = \"* * * * *\"\ninterval = \"minute\"\nstart_date = \"{start}\"\n[catchup]\npolicy = \"latest\"\n[tasks.t]\nkind = \"sql\"\nsql = \"INSERT INTO ran VALUES ('t', '{{{{ interval_start }}}}')\"\n"
    );
    let cfg = config(&env, &[("minutely", job)], "");
    let paused = hxjobs(
        &env,
        &cfg,
        &["pause", "minutely", "--reason", "maintenance"],
    );
    assert!(paused.status.success(), "{}", err(&paused));
    let twice = hxjobs(&env, &cfg, &["pause", "minutely"]);
    assert_eq!(twice.status.code(), Some(2));
    assert!(err(&twice).contains("already paused"));
    let unknown = hxjobs(&env, &cfg, &["pause", "nope"]);
    assert_eq!(unknown.status.code(), Some(2));

    let once = hxjobs(&env, &cfg, &["daemon", "--once", "--no-api"]);
    assert!(once.status.success(), "{}", err(&once));
    assert_eq!(
        env.count("SELECT count(*) FROM job_runs").await,
        0,
        "paused: no runs"
    );
    assert_eq!(env.count("SELECT count(*) FROM schedule_skips").await, 0);

    let before = chrono::Utc::now();
    let unpaused = hxjobs(&env, &cfg, &["unpause", "minutely"]);
    assert!(unpaused.status.success(), "{}", err(&unpaused));
    let once = hxjobs(&env, &cfg, &["daemon", "--once", "--no-api"]);
    assert!(once.status.success(), "{}", err(&once));
    // `latest`: the newest minute runs, the rest is recorded as skipped now.
    assert_eq!(
        env.count("SELECT count(*) FROM job_runs WHERE state = 'success'")
            .await,
        1
    );
    let recorded: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT recorded_at FROM schedule_skips")
            .fetch_one(&env.pool)
            .await
            .expect("one skip range");
    assert!(recorded >= before);
    let again = hxjobs(&env, &cfg, &["unpause", "minutely"]);
    assert_eq!(again.status.code(), Some(2));
    assert!(err(&again).contains("is not paused"));
    let actions: Vec<(String, String, Option<String>)> =
        sqlx::query_as("SELECT action, actor, reason FROM run_actions ORDER BY id")
            .fetch_all(&env.pool)
            .await
            .expect("actions");
    assert_eq!(
        actions,
        [
            (
                "pause".into(),
                "cli:ops-alice".into(),
                Some("maintenance".into())
            ),
            ("unpause".into(), "cli:ops-alice".into(), None),
        ]
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_take_declared_parameters_and_the_api_records_its_token_name() {
    let env = TestEnv::new("controls_params").await;
    ran_table(&env).await;
    let job = r#"name = "param"
schedule = "0 0 1 1 *"
interval = "day"
start_date = "2026-01-01"
[params.note]
type = "string"
default = "plain"
[params.limit]
type = "int"
default = 10
[tasks.t]
kind = "sql"
sql = "INSERT INTO ran VALUES ('t', '{{ interval_start }}', {{ params.note }} || '/' || {{ params.limit }})"
"#
    .to_string();
    let port = crate::http::free_port();
    let cfg = config(
        &env,
        &[("param", job)],
        &format!(
            "[api]\nhost = \"127.0.0.1\"\nport = {port}\n[[api.tokens]]\nname = \"ops\"\ntoken = \"ops-token-1\"\nrole = \"operator\"\n"
        ),
    );
    // The command line: typed, declared, or refused with nothing run.
    for (arg, says) in [
        ("limit=ten", "`limit` is a int, not \"ten\""),
        ("nope=1", "`nope` is not declared (declared: limit, note)"),
    ] {
        let out = hxjobs(&env, &cfg, &["run", "param", "--param", arg]);
        assert_eq!(out.status.code(), Some(2), "{arg}");
        assert!(err(&out).contains(says), "{}", err(&out));
    }
    assert_eq!(env.count("SELECT count(*) FROM job_runs").await, 0);
    let out = hxjobs(&env, &cfg, &["run", "param", "--param", "limit=25"]);
    assert!(out.status.success(), "{}", err(&out));
    let note: String = sqlx::query_scalar("SELECT note FROM ran")
        .fetch_one(&env.pool)
        .await
        .expect("row");
    assert_eq!(note, "plain/25");

    // The API: params checked, the run queued with them, the token's name kept.
    let mut server = env
        .hxjobs(&cfg, &["daemon"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("daemon");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while request_ok(port).is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the API did not start"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let body = json!({"params": {"limit": "x"}}).to_string();
    let r = request(
        port,
        "POST",
        "/jobs/param/runs",
        Some("ops-token-1"),
        Some(body.as_bytes()),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"], "invalid_params");
    let body = json!({"params": {"note": "api"}, "reason": "rerun for finance"}).to_string();
    let r = request(
        port,
        "POST",
        "/jobs/param/runs",
        Some("wrong"),
        Some(body.as_bytes()),
    );
    assert_eq!(r.status, 401);
    let r = request(
        port,
        "POST",
        "/jobs/param/runs",
        Some("ops-token-1"),
        Some(body.as_bytes()),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["run_id"].as_i64().expect("run id");
    let done = wait_until(
        &env,
        &format!("SELECT count(*) FROM job_runs WHERE id = {id} AND state = 'success'"),
        1,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(done, 1);
    assert_eq!(
        env.count("SELECT count(*) FROM ran WHERE note = 'api/10'")
            .await,
        1
    );
    let run = request(port, "GET", &format!("/runs/{id}"), None, None).json();
    assert_eq!(run["run"]["triggered_by"], "api:ops");
    assert_eq!(run["run"]["params"], json!({"note": "api"}));
    assert_eq!(run["actions"][0]["action"], "trigger");
    assert_eq!(run["actions"][0]["reason"], "rerun for finance");

    // Controls through the API: refused where they do not apply.
    for (path, body, status, code) in [
        (format!("/runs/{id}/cancel"), json!({}), 409, "conflict"),
        (
            format!("/runs/{id}/mark"),
            json!({"state": "queued"}),
            400,
            "invalid_state",
        ),
        (
            "/runs/987654/clear".to_string(),
            json!({}),
            404,
            "unknown_run",
        ),
        (
            format!("/runs/{id}/clear"),
            json!({"tasks": ["nope"]}),
            404,
            "not_found",
        ),
        (
            "/jobs/param/unpause".to_string(),
            json!({}),
            409,
            "conflict",
        ),
        (
            "/jobs/nope/pause".to_string(),
            json!({}),
            404,
            "unknown_job",
        ),
    ] {
        let b = body.to_string();
        let r = request(port, "POST", &path, Some("ops-token-1"), Some(b.as_bytes()));
        assert_eq!(r.status, status, "{path}: {}", r.text());
        assert_eq!(r.json()["error"], code, "{path}");
    }
    let r = request(port, "POST", "/jobs/param/pause", Some("ops-token-1"), None);
    assert_eq!(r.status, 200, "{}", r.text());
    let jobs = request(port, "GET", "/jobs", None, None).json();
    let param = jobs["jobs"]
        .as_array()
        .and_then(|a| a.iter().find(|j| j["name"] == "param"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(param["paused"], true);
    assert_eq!(param["params"][0]["name"], "limit");
    let cleared = request(
        port,
        "POST",
        &format!("/runs/{id}/clear"),
        Some("ops-token-1"),
        Some(json!({"reason": "again"}).to_string().as_bytes()),
    );
    assert_eq!(cleared.status, 200, "{}", cleared.text());
    // Paused: the cleared run waits.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(state_of(&env, id).await, "queued");
    let _ = server.kill();
    let _ = server.wait();
    env.cleanup().await;
}

fn request_ok(port: u16) -> Option<()> {
    std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    (request(port, "GET", "/health", None, None).status == 200).then_some(())
}
