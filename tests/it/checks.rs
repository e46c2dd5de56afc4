//! Data checks against real PostgreSQL and the broker: a producer that
//! halves its rate for one hour trips the hour's count check, its task
//! fails with `check_failed`, the day above it does not run until the hour
//! is cleared (or marked), and a check's result survives a killed worker.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use hxjobs::dag::job::{self, Job};
use hxjobs::dag::scheduler::Scheduler;
use hxjobs::dag::trigger;

use crate::common::{ts, TestEnv};
use crate::scheduler::wait_until;

const HOURLY: &str = r#"
name = "gate_hourly"
schedule = "1 * * * *"
interval = "hour"
start_date = "2026-03-01"
on_check_failure = ["ops"]
[catchup]
policy = "all"
max_intervals = 100
[tasks.rollup]
kind = "aggregate"
grain = "hour"
[checks.volume]
after = "rollup"
kind = "count"
vs = "day"
within_pct = 30
min_baseline = 50
[checks.reconciled]
after = "rollup"
kind = "reconcile"
[checks.all_errors]
after = "rollup"
kind = "share"
event_type = "llm_request"
field = "status"
value = "error"
min_pct = 99.9
blocking = false
[checks.stored]
after = "rollup"
kind = "sql"
sql = "SELECT count(*) >= 0, 'rows: ' || count(*) FROM events WHERE event_time >= {{ interval_start }} AND event_time < {{ interval_end }}"
"#;

const DAILY: &str = r#"
name = "gate_daily"
trigger = "complete"
schedule = "30 0 * * *"
interval = "day"
start_date = "2026-03-01"
wait_for = "gate_hourly"
# Long past for these days: only a failed check holds them.
wait_timeout_secs = 60
[catchup]
policy = "all"
max_intervals = 10
[tasks.rollup]
kind = "aggregate"
grain = "day"
"#;

fn parse(env: &TestEnv, name: &str, text: &str) -> Job {
    job::parse(&env.dir.path().join(format!("{name}.toml")), text).expect("valid job")
}

fn scheduler(env: &TestEnv, jobs: &[Job]) -> Scheduler {
    Scheduler::new(
        Arc::new(env.config.clone()),
        hxjobs::db::Pools::new(env.pool.clone()),
        jobs.to_vec(),
        "checks-test".into(),
    )
}

/// (outcome, message) of the latest result of `check` on the hour run at `start`.
async fn result(env: &TestEnv, check: &str, start: &str) -> (String, String) {
    sqlx::query_as(
        "SELECT outcome, message FROM check_results
         WHERE job = 'gate_hourly' AND check_name = $1 AND interval_start = $2
         ORDER BY id DESC LIMIT 1",
    )
    .bind(check)
    .bind(ts(start))
    .fetch_one(&env.pool)
    .await
    .expect("a check result")
}

async fn run_of(env: &TestEnv, job: &str, start: &str) -> (i64, String, Option<String>) {
    sqlx::query_as(
        "SELECT id, state, error FROM job_runs WHERE job = $1 AND interval_start = $2
         ORDER BY id DESC LIMIT 1",
    )
    .bind(job)
    .bind(ts(start))
    .fetch_one(&env.pool)
    .await
    .expect("a run")
}

fn actor() -> hxjobs::ledger::controls::Actor {
    hxjobs::ledger::controls::Actor {
        name: "cli:checks-test".into(),
        reason: Some("test".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_halved_hour_stops_at_its_gate_until_cleared_or_marked() {
    let mut env = TestEnv::new("checks_gate").await;
    env.config.notify.targets = vec![toml::from_str(
        "kind = \"webhook\"\nname = \"ops\"\nurl = \"http://127.0.0.1:9/hook\"",
    )
    .expect("target")];
    // Three hours a day, 200 events each; on the second day the producer
    // sends half for 11:00.
    let hours = [
        ("2026-03-01T10:00:00Z", 200),
        ("2026-03-01T11:00:00Z", 200),
        ("2026-03-01T12:00:00Z", 200),
        ("2026-03-02T10:00:00Z", 200),
        ("2026-03-02T11:00:00Z", 100),
        ("2026-03-02T12:00:00Z", 200),
    ];
    for (seed, (start, n)) in hours.iter().enumerate() {
        let from = ts(start);
        env.ingest_demo(*n, from, from + TimeDelta::hours(1), seed as u64 + 1)
            .await;
    }
    let hourly = parse(&env, "gate_hourly", HOURLY);
    let daily = parse(&env, "gate_daily", DAILY);
    let now = ts("2026-03-03T00:40:00Z");

    // Every hour of both days runs first.
    scheduler(&env, std::slice::from_ref(&hourly))
        .tick(now)
        .await
        .expect("hours");
    let (outcome, message) = result(&env, "volume", "2026-03-02T11:00:00Z").await;
    assert_eq!(outcome, "fail", "{message}");
    assert!(
        message.contains("100 events, 50.0% below 200 a day earlier"),
        "{message}"
    );
    let (_, message) = result(&env, "volume", "2026-03-02T10:00:00Z").await;
    assert!(message.contains("200 events, 0.0% above 200"), "{message}");
    let (outcome, message) = result(&env, "volume", "2026-03-01T10:00:00Z").await;
    assert_eq!(
        (outcome.as_str(), message.contains("no data a day earlier")),
        ("skipped", true),
        "{message}"
    );
    let (outcome, message) = result(&env, "reconciled", "2026-03-02T11:00:00Z").await;
    assert_eq!(outcome, "pass", "{message}");
    assert!(message.contains("equals its 100 raw events"), "{message}");
    let (outcome, message) = result(&env, "all_errors", "2026-03-02T11:00:00Z").await;
    assert_eq!(outcome, "warn", "a failed warning only warns: {message}");
    let (outcome, message) = result(&env, "stored", "2026-03-02T11:00:00Z").await;
    assert_eq!((outcome.as_str(), message.as_str()), ("pass", "rows: 100"));
    assert_eq!(
        env.count("SELECT count(*) FROM check_results WHERE outcome IN ('fail', 'error')")
            .await,
        1,
        "only the halved hour's volume failed"
    );

    // The halved hour's task failed with check_failed, the others succeeded.
    let (bad_run, state, error) = run_of(&env, "gate_hourly", "2026-03-02T11:00:00Z").await;
    assert_eq!(state, "failed");
    let error = error.unwrap_or_default();
    assert!(
        error.contains("rollup: check_failed: volume: 100 events"),
        "{error}"
    );
    assert_eq!(
        env.count("SELECT count(*) FROM job_runs WHERE job = 'gate_hourly' AND state = 'success'")
            .await,
        47
    );
    // Told: the failure, and every warning.
    let told: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT target, payload->>'check', payload->>'outcome' FROM notifications
         WHERE event = 'check_failed' AND payload->>'check' = 'volume'",
    )
    .fetch_all(&env.pool)
    .await
    .expect("notifications");
    assert_eq!(
        told,
        vec![("ops".to_string(), "volume".to_string(), "fail".to_string())]
    );
    assert!(
        env.count(
            "SELECT count(*) FROM notifications WHERE event = 'check_failed'
             AND payload->>'outcome' = 'warn'"
        )
        .await
            >= 3
    );

    // The first day runs; the second is held, long past its wait timeout.
    let both = [hourly.clone(), daily.clone()];
    let d = scheduler(&env, &both);
    d.tick(now).await.expect("days");
    assert_eq!(
        run_of(&env, "gate_daily", "2026-03-01T00:00:00Z").await.1,
        "success"
    );
    let (_, state, note) = run_of(&env, "gate_daily", "2026-03-02T00:00:00Z").await;
    assert_eq!(state, "queued");
    let note = note.unwrap_or_default();
    assert!(
        note.contains(
            "gate_hourly hour from 2026-03-02 11:00 UTC held by a failed check (volume: 100 events"
        ),
        "{note}"
    );
    // The day's report says so in its data-quality line.
    let day_report = |format| {
        hxjobs::reports::generate(
            &env.config,
            &env.pool,
            "daily_summary",
            format,
            Some(ts("2026-03-02T00:00:00Z")),
            now,
        )
    };
    let json = day_report(hxjobs::reports::Format::Json)
        .await
        .expect("json report");
    let body: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.stored(&json)).expect("file")).expect("json");
    let quality = &body["data_quality"];
    assert_eq!(quality["failed"], 1, "{quality}");
    assert_eq!(
        quality["warned"], 3,
        "each stored hour's warning: {quality}"
    );
    assert!(
        quality["problems"]
            .as_array()
            .expect("problems")
            .contains(&serde_json::json!(
                "gate_hourly volume fail (2026-03-02 11:00 UTC)"
            )),
        "{quality}"
    );
    let pdf = day_report(hxjobs::reports::Format::Pdf)
        .await
        .expect("pdf report");
    let text = crate::complete::pdftotext(&env.stored(&pdf));
    let line = text
        .lines()
        .find(|l| l.contains("Data quality:"))
        .unwrap_or_default();
    assert!(line.contains("1 failed, 3 warned"), "{text}");

    let shared: Vec<Arc<Job>> = both.iter().cloned().map(Arc::new).collect();

    // Clearing runs the checks again: the data is still halved.
    let rollup = vec!["rollup".to_string()];
    hxjobs::ledger::controls::clear(&env.pool, bad_run, &rollup, &actor())
        .await
        .expect("clear");
    d.tick(now).await.expect("again");
    assert_eq!(
        run_of(&env, "gate_hourly", "2026-03-02T11:00:00Z").await.1,
        "failed"
    );
    let volume_results = "SELECT count(*) FROM check_results WHERE check_name = 'volume'
                          AND interval_start = '2026-03-02T11:00:00Z'";
    assert_eq!(env.count(volume_results).await, 2, "one result per try");
    assert_eq!(
        run_of(&env, "gate_daily", "2026-03-02T00:00:00Z").await.1,
        "queued"
    );

    // Marked succeeded, the hour no longer holds the day; marked failed
    // again, it does.
    let mut conn = env.pool.acquire().await.expect("conn");
    let day = hxjobs::interval::Grain::Day.containing(ts("2026-03-02T00:00:00Z"));
    let who = actor();
    let mark = |to| hxjobs::ledger::controls::mark(&env.pool, bad_run, None, to, &who);
    mark(hxjobs::ledger::RunState::Success).await.expect("mark");
    let holds = trigger::upstream_holds(&mut conn, &shared, &daily, day)
        .await
        .expect("holds");
    assert!(holds.is_empty(), "{holds:?}");
    mark(hxjobs::ledger::RunState::Failed).await.expect("mark");
    let holds = trigger::upstream_holds(&mut conn, &shared, &daily, day)
        .await
        .expect("holds");
    assert_eq!(holds.len(), 1, "{holds:?}");
    drop(conn);

    // The missing half arrives late; a clear passes the check and the day
    // runs at the next pass.
    let from = ts("2026-03-02T11:00:00Z");
    env.ingest_demo(100, from, from + TimeDelta::hours(1), 99)
        .await;
    hxjobs::ledger::controls::clear(&env.pool, bad_run, &rollup, &actor())
        .await
        .expect("clear");
    d.tick(now).await.expect("cleared");
    let (outcome, message) = result(&env, "volume", "2026-03-02T11:00:00Z").await;
    assert_eq!(outcome, "pass", "{message}");
    assert_eq!(
        run_of(&env, "gate_hourly", "2026-03-02T11:00:00Z").await.1,
        "success"
    );
    d.tick(now).await.expect("day");
    assert_eq!(
        run_of(&env, "gate_daily", "2026-03-02T00:00:00Z").await.1,
        "success"
    );
    let day_events: i64 = sqlx::query_scalar(
        "SELECT sum(event_count)::int8 FROM rollups WHERE grain = 'day' AND bucket_start = '2026-03-02T00:00:00Z'",
    )
    .fetch_one(&env.pool)
    .await
    .expect("day rollup");
    assert_eq!(day_events, 600);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_result_survives_a_killed_worker() {
    let env = TestEnv::new("checks_kill").await;
    let start: DateTime<Utc> = ts("2026-03-05T09:00:00Z");
    env.ingest_demo(80, start, start + TimeDelta::hours(1), 5)
        .await;
    let marker = env.dir.path().join("slept-once");
    let job = format!(
        r#"name = "gate_kill"
schedule = "0 0 1 1 *"
interval = "hour"
start_date = "2026-03-01"
[tasks.rollup]
kind = "aggregate"
grain = "hour"
[tasks.after]
kind = "shell"
depends_on = ["rollup"]
# The first claim sleeps here until it is killed; the next one goes on.
command = "if [ -e {m} ]; then exit 0; fi; touch {m}; sleep 120"
[checks.enough]
after = "rollup"
kind = "count"
min = 80
max = 80
[checks.reconciled]
after = "rollup"
kind = "reconcile"
"#,
        m = marker.display()
    );
    let cfg = env.config_with_jobs(
        "kill",
        &[("gate_kill", job.clone())],
        "[scheduler]\nheartbeat_secs = 1\nstale_after_secs = 3\n",
    );
    let mut worker = env
        .hxjobs(
            &cfg,
            &[
                "run",
                "gate_kill",
                "--interval-start",
                "2026-03-05T09:00:00Z",
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn hxjobs run");
    let sleeping = wait_until(
        &env,
        "SELECT count(*) FROM task_instances WHERE task = 'after' AND state = 'running'",
        1,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(sleeping, 1, "the run reached its last task");
    worker.kill().expect("SIGKILL");
    let _ = worker.wait();
    let before: Vec<(i64, String, String)> =
        sqlx::query_as("SELECT id, check_name, outcome FROM check_results ORDER BY id")
            .fetch_all(&env.pool)
            .await
            .expect("results");
    assert_eq!(before.len(), 2, "{before:?}");
    assert!(before.iter().all(|(_, _, o)| o == "pass"), "{before:?}");

    // Another worker takes the run over once its heartbeat is stale: the
    // rollup and its checks stand as recorded, the rest runs.
    let mut config = env.config.clone();
    config.scheduler.heartbeat_secs = 1;
    config.scheduler.stale_after_secs = 3;
    let parsed = parse(&env, "gate_kill", &job);
    let d = Scheduler::new(
        Arc::new(config),
        hxjobs::db::Pools::new(env.pool.clone()),
        vec![parsed],
        "checks-survivor".into(),
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    let reports = d.tick(Utc::now()).await.expect("tick");
    assert!(
        reports.iter().any(|r| r.state() == "success"),
        "{}",
        reports.iter().map(ToString::to_string).collect::<String>()
    );
    let after: Vec<(i64, String, String)> =
        sqlx::query_as("SELECT id, check_name, outcome FROM check_results ORDER BY id")
            .fetch_all(&env.pool)
            .await
            .expect("results");
    assert_eq!(after, before, "the results stand, not run again");
    let (state, claims): (String, i32) =
        sqlx::query_as("SELECT state, attempts FROM job_runs WHERE job = 'gate_kill'")
            .fetch_one(&env.pool)
            .await
            .expect("run");
    assert_eq!((state.as_str(), claims), ("success", 2));
    env.cleanup().await;
}
