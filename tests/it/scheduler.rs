//! The scheduler against real PostgreSQL: daemons sharing one database run
//! every interval once, catch-up after downtime per policy, lost workers,
//! backfills that create each run once and resume, the daemon's shutdown.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Timelike, Utc};
use hxjobs::dag::job::{self, Job};
use hxjobs::dag::scheduler::Scheduler;
use sqlx::PgPool;

use crate::common::{ts, TestEnv};

/// A job whose one task records each run's interval in `ran`.
fn recording_job(env: &TestEnv, name: &str, start: &str, catchup: &str, max_active: u32) -> Job {
    let text = format!(
        r#"
name = "{name}"
schedule = "5 * * * *"
interval = "hour"
start_date = "{start}"
max_active_runs = {max_active}
[catchup]
{catchup}
[tasks.record]
kind = "sql"
sql = "INSERT INTO ran (job, interval_start, run_id) VALUES ('{{{{ job }}}}', '{{{{ interval_start }}}}', {{{{ run_id }}}})"
[tasks.after]
kind = "sql"
sql = "SELECT 1"
depends_on = ["record"]
"#
    );
    job::parse(&env.dir.path().join(format!("{name}.toml")), &text).expect("valid job")
}

async fn ran_table(pool: &PgPool) {
    sqlx::query("CREATE TABLE ran (job text, interval_start timestamptz, run_id bigint)")
        .execute(pool)
        .await
        .expect("table");
}

fn scheduler(env: &TestEnv, pool: PgPool, jobs: Vec<Job>, worker: &str) -> Scheduler {
    let pools = hxjobs::db::Pools::new(pool);
    Scheduler::new(Arc::new(env.config.clone()), pools, jobs, worker.into())
}

async fn ran_starts(pool: &PgPool, job: &str) -> Vec<DateTime<Utc>> {
    sqlx::query_scalar("SELECT interval_start FROM ran WHERE job = $1 ORDER BY interval_start")
        .bind(job)
        .fetch_all(pool)
        .await
        .expect("ran")
}

fn hours(from: &str, n: i64) -> Vec<DateTime<Utc>> {
    (0..n).map(|h| ts(from) + TimeDelta::hours(h)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_daemons_run_every_interval_exactly_once() {
    let env = TestEnv::new("two_daemons").await;
    ran_table(&env.pool).await;
    let job = recording_job(
        &env,
        "shared",
        "2026-03-01",
        "policy = \"all\"\nmax_intervals = 1000",
        2,
    );
    let other_pool = hxjobs::db::connect(&env.config.database)
        .await
        .expect("pool");
    let a = scheduler(&env, env.pool.clone(), vec![job.clone()], "daemon-a");
    let b = scheduler(&env, other_pool, vec![job], "daemon-b");

    // 60 simulated hours; daemon a is down every 5th tick, b every 7th,
    // both during hours 10-12 and 30-35 (the next tick catches up).
    let both_down = |k: i64| (10..=12).contains(&k) || (30..=35).contains(&k);
    for k in 0..60i64 {
        if both_down(k) {
            continue;
        }
        let now = ts("2026-03-01T00:05:00Z") + TimeDelta::hours(k);
        let ta = async {
            if k % 5 != 0 {
                a.tick(now).await.expect("tick a");
            }
        };
        let tb = async {
            if k % 7 != 0 {
                b.tick(now + TimeDelta::seconds(20)).await.expect("tick b");
            }
        };
        tokio::join!(ta, tb);
    }

    // Fires 01:05 .. 59:05 cover the hours 00 .. 58.
    assert_eq!(
        ran_starts(&env.pool, "shared").await,
        hours("2026-03-01", 59)
    );
    assert_eq!(
        env.count("SELECT count(*) FROM job_runs WHERE job = 'shared' AND run_type = 'scheduled' AND state = 'success'").await,
        59
    );
    assert_eq!(
        env.count("SELECT count(*) FROM job_runs WHERE state <> 'success'")
            .await,
        0
    );
    assert_eq!(
        env.count("SELECT count(DISTINCT worker) FROM job_runs")
            .await,
        2,
        "both daemons ran runs"
    );
    assert_eq!(env.count("SELECT count(*) FROM schedule_skips").await, 0);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_a_gap_catches_up_per_policy() {
    let env = TestEnv::new("catchup").await;
    ran_table(&env.pool).await;
    let start = "2026-03-01T23:00:00Z";
    let jobs = vec![
        recording_job(
            &env,
            "all4",
            start,
            "policy = \"all\"\nmax_intervals = 4",
            1,
        ),
        recording_job(&env, "latest", start, "policy = \"latest\"", 1),
        recording_job(&env, "none_on_time", start, "policy = \"none\"", 1),
    ];
    let late_none = recording_job(&env, "none_late", start, "policy = \"none\"", 1);
    let s = scheduler(&env, env.pool.clone(), jobs, "d");
    let late = scheduler(&env, env.pool.clone(), vec![late_none], "d");

    // Up at 00:05: each job runs the hour 23:00.
    s.tick(ts("2026-03-02T00:05:00Z")).await.expect("tick");
    late.tick(ts("2026-03-02T00:05:00Z")).await.expect("tick");
    // Down until 10:05:30 (late: 10:30, past the 300 s grace): ten occurrences
    // 01:05 .. 10:05 were missed, for the hours 00 .. 09.
    s.tick(ts("2026-03-02T10:05:30Z")).await.expect("tick");
    late.tick(ts("2026-03-02T10:30:00Z")).await.expect("tick");
    // A second look at the same moment changes nothing.
    s.tick(ts("2026-03-02T10:05:40Z")).await.expect("tick");
    late.tick(ts("2026-03-02T10:30:10Z")).await.expect("tick");

    let first = ts("2026-03-01T23:00:00Z");
    let mut all4 = vec![first];
    all4.extend(hours("2026-03-02T06:00:00Z", 4));
    assert_eq!(ran_starts(&env.pool, "all4").await, all4);
    let one_more = vec![first, ts("2026-03-02T09:00:00Z")];
    assert_eq!(ran_starts(&env.pool, "latest").await, one_more);
    assert_eq!(ran_starts(&env.pool, "none_on_time").await, one_more);
    assert_eq!(ran_starts(&env.pool, "none_late").await, vec![first]);

    type Skip = (String, String, DateTime<Utc>, DateTime<Utc>, i64);
    let skips: Vec<Skip> = sqlx::query_as(
        "SELECT job, policy, first_interval_start, last_interval_start, occurrences
         FROM schedule_skips ORDER BY job",
    )
    .fetch_all(&env.pool)
    .await
    .expect("skips");
    let h = |s: &str| ts(&format!("2026-03-02T{s}:00:00Z"));
    assert_eq!(
        skips,
        vec![
            ("all4".into(), "all".into(), h("00"), h("05"), 6),
            ("latest".into(), "latest".into(), h("00"), h("08"), 9),
            ("none_late".into(), "none".into(), h("00"), h("09"), 10),
            ("none_on_time".into(), "none".into(), h("00"), h("08"), 9),
        ]
    );
    // Every missed occurrence either ran or is recorded as skipped.
    assert_eq!(
        env.count("SELECT count(*) FROM job_runs WHERE state <> 'success'")
            .await,
        0
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_of_lost_workers_are_retried_then_failed() {
    let env = TestEnv::new("lost_worker").await;
    ran_table(&env.pool).await;
    let job = recording_job(&env, "lost", "2026-03-02T00:00:00Z", "policy = \"all\"", 2);
    let s = scheduler(&env, env.pool.clone(), vec![job], "survivor");
    // Two runs whose worker died mid-run: one on its first claim, one on its last.
    for (start, attempts) in [("2026-03-02T00:00:00Z", 1), ("2026-03-02T01:00:00Z", 3)] {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO job_runs (job, run_type, interval_start, interval_end, state, worker,
                                   started_at, heartbeat_at, attempts)
             VALUES ('lost', 'scheduled', $1, $1::timestamptz + interval '1 hour', 'running',
                     'dead:1', now() - interval '10 minutes', now() - interval '5 minutes', $2)
             RETURNING id",
        )
        .bind(ts(start))
        .bind(attempts)
        .fetch_one(&env.pool)
        .await
        .expect("run");
        sqlx::query("INSERT INTO task_instances (run_id, task, kind, state, attempt) VALUES ($1, 'record', 'sql', 'running', 1)")
            .bind(id)
            .execute(&env.pool)
            .await
            .expect("task");
    }
    sqlx::query(
        "INSERT INTO job_schedule (job, last_fire) VALUES ('lost', '2026-03-02T02:05:00Z')",
    )
    .execute(&env.pool)
    .await
    .expect("cursor");

    s.tick(ts("2026-03-02T02:05:10Z")).await.expect("tick");

    type Row = (DateTime<Utc>, String, i32, Option<String>, Option<String>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT interval_start, state, attempts, worker, error FROM job_runs ORDER BY interval_start",
    )
    .fetch_all(&env.pool)
    .await
    .expect("runs");
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (rows[0].1.as_str(), rows[0].2, rows[0].3.as_deref()),
        ("success", 2, Some("survivor"))
    );
    assert_eq!((rows[1].1.as_str(), rows[1].2), ("failed", 3));
    let error = rows[1].4.clone().unwrap_or_default();
    assert!(
        error.contains("dead:1 stopped sending heartbeats"),
        "{error}"
    );
    assert_eq!(
        ran_starts(&env.pool, "lost").await,
        vec![ts("2026-03-02T00:00:00Z")]
    );
    env.cleanup().await;
}

/// A three-task no-op DAG whose last task fails for intervals listed in `poison`.
const BACKFILL_JOB: &str = r#"
name = "year"
schedule = "5 * * * *"
interval = "hour"
start_date = "2020-01-01"
[tasks.a]
kind = "sql"
sql = "SELECT 1"
[tasks.b]
kind = "sql"
sql = "SELECT 1"
depends_on = ["a"]
[tasks.c]
kind = "sql"
sql = "SELECT 1 / (1 - (SELECT count(*)::int FROM poison WHERE at = '{{ interval_start }}')); INSERT INTO ran (job, interval_start, run_id) VALUES ('{{ job }}', '{{ interval_start }}', {{ run_id }})"
depends_on = ["b"]
"#;

fn backfill_command(
    env: &TestEnv,
    config: &std::path::Path,
    extra: &[&str],
) -> std::process::Output {
    env.command()
        .arg("--config")
        .arg(config)
        .args([
            "backfill",
            "year",
            "--from",
            "2025-01-01",
            "--to",
            "2026-01-01",
            "--parallel",
            "4",
        ])
        .args(extra)
        .output()
        .expect("run hxjobs backfill")
}

fn jobs_dir(env: &TestEnv, files: &[(&str, &str)], settings: &str) -> std::path::PathBuf {
    let dir = env.dir.path().join("jobs");
    std::fs::create_dir_all(&dir).expect("jobs dir");
    for (name, text) in files {
        std::fs::write(dir.join(name), text).expect("job file");
    }
    env.config_file(&format!("[jobs]\ndir = \"{}\"\n{settings}", dir.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_year_of_hourly_backfill_runs_once() {
    let env = TestEnv::new("backfill_year").await;
    ran_table(&env.pool).await;
    sqlx::query("CREATE TABLE poison (at timestamptz)")
        .execute(&env.pool)
        .await
        .expect("poison");
    let poisoned = [
        "2025-02-03T04:00:00Z",
        "2025-07-01T00:00:00Z",
        "2025-12-31T23:00:00Z",
    ];
    for p in poisoned {
        sqlx::query("INSERT INTO poison VALUES ($1)")
            .bind(ts(p))
            .execute(&env.pool)
            .await
            .expect("poison row");
    }
    let config = jobs_dir(&env, &[("year.toml", BACKFILL_JOB)], "");

    let dry = backfill_command(&env, &config, &["--dry-run"]);
    let out = String::from_utf8_lossy(&dry.stdout);
    assert!(dry.status.success(), "{out}");
    assert!(out.contains("8760 intervals: 8760 new"), "{out}");
    assert_eq!(
        env.count("SELECT count(*) FROM job_runs").await,
        0,
        "dry run writes nothing"
    );

    let first = backfill_command(&env, &config, &[]);
    let out = String::from_utf8_lossy(&first.stdout);
    assert_eq!(first.status.code(), Some(1), "three runs fail: {out}");
    assert!(out.contains("8757 succeeded, 3 failed"), "{out}");
    let runs = "SELECT count(*) FROM job_runs WHERE job = 'year' AND run_type = 'backfill'";
    assert_eq!(env.count(runs).await, 8760);
    assert_eq!(env.count("SELECT count(*) FROM ran").await, 8757);
    assert_eq!(
        env.count("SELECT count(*) FROM task_instances WHERE state = 'success'")
            .await,
        3 * 8757 + 2 * 3
    );
    let failed: Vec<DateTime<Utc>> =
        sqlx::query_scalar("SELECT interval_start FROM job_runs WHERE state = 'failed' ORDER BY 1")
            .fetch_all(&env.pool)
            .await
            .expect("failed runs");
    assert_eq!(failed, poisoned.map(ts).to_vec());

    // Nothing left to run, but three intervals have not succeeded: exit 1, saying so.
    let second = backfill_command(&env, &config, &[]);
    let out = String::from_utf8_lossy(&second.stdout);
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{out}{err}");
    assert!(
        err.contains("3 of 8760 intervals have not succeeded: 3 failed"),
        "{err}"
    );
    assert!(out.contains("0 new"), "{out}");
    assert!(out.contains("0 succeeded, 0 failed"), "{out}");
    assert_eq!(env.count(runs).await, 8760);
    assert_eq!(env.count("SELECT count(*) FROM ran").await, 8757);

    sqlx::query("DELETE FROM poison")
        .execute(&env.pool)
        .await
        .expect("cure");
    let third = backfill_command(&env, &config, &["--reprocess", "failed"]);
    let out = String::from_utf8_lossy(&third.stdout);
    assert!(third.status.success(), "{out}");
    assert!(out.contains("3 succeeded, 0 failed"), "{out}");
    assert_eq!(env.count(runs).await, 8760);
    assert_eq!(env.count("SELECT count(*) FROM ran").await, 8760);
    assert_eq!(
        env.count("SELECT count(DISTINCT interval_start) FROM ran")
            .await,
        8760
    );
    assert_eq!(
        env.count("SELECT count(*) FROM job_runs WHERE state <> 'success'")
            .await,
        0
    );
    env.cleanup().await;
}

pub(crate) fn wait_for(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    None
}

pub(crate) fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(ok.success());
}

pub(crate) async fn wait_until(env: &TestEnv, sql: &str, want: i64, limit: Duration) -> i64 {
    let until = Instant::now() + limit;
    loop {
        let n = env.count(sql).await;
        if n >= want || Instant::now() > until {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_backfill_resumes_where_it_stopped() {
    let env = TestEnv::new("backfill_resume").await;
    ran_table(&env.pool).await;
    sqlx::query("CREATE TABLE poison (at timestamptz)")
        .execute(&env.pool)
        .await
        .expect("poison");
    let slow = BACKFILL_JOB.replacen("sql = \"SELECT 1\"", "sql = \"SELECT pg_sleep(0.05)\"", 1);
    let config = jobs_dir(&env, &[("year.toml", &slow)], "");
    let args = [
        "--config",
        &config.display().to_string(),
        "backfill",
        "year",
        "--from",
        "2025-01-01",
        "--to",
        "2025-01-11",
        "--parallel",
        "2",
    ]
    .map(String::from);
    let mut child = env
        .command()
        .args(&args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let done = "SELECT count(*) FROM job_runs WHERE state = 'success'";
    let before = wait_until(&env, done, 20, Duration::from_secs(60)).await;
    assert!(before >= 20, "backfill made progress");
    signal(&child, "-INT");
    let status = wait_for(&mut child, Duration::from_secs(30)).expect("backfill stops");
    assert_eq!(status.code(), Some(130));
    assert_eq!(
        env.count("SELECT count(*) FROM job_runs WHERE state = 'running'")
            .await,
        0,
        "nothing left claimed"
    );
    let stopped_at = env.count(done).await;
    assert!(stopped_at < 240, "stopped before the end ({stopped_at})");

    let out = env.command().args(&args).output().expect("resume");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("{} succeeded, 0 failed", 240 - stopped_at)),
        "{text}"
    );
    assert_eq!(env.count(done).await, 240);
    assert_eq!(env.count("SELECT count(*) FROM ran").await, 240);
    assert_eq!(
        env.count("SELECT count(DISTINCT interval_start) FROM ran")
            .await,
        240
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_catches_up_runs_and_hands_back_on_sigterm() {
    let env = TestEnv::new("daemon").await;
    ran_table(&env.pool).await;
    if Utc::now().minute() >= 58 {
        // The expected hours below must not change while the test runs.
        tokio::time::sleep(Duration::from_secs(150)).await;
    }
    let hour = hxjobs::interval::Grain::Hour.floor(Utc::now());
    let start = (hour - TimeDelta::hours(3))
        .format("%Y-%m-%dT%H:00:00Z")
        .to_string();
    let catching_up = format!(
        r#"
name = "recent"
schedule = "* * * * *"
interval = "hour"
start_date = "{start}"
[catchup]
policy = "all"
[tasks.record]
kind = "sql"
sql = "INSERT INTO ran (job, interval_start, run_id) VALUES ('{{{{ job }}}}', '{{{{ interval_start }}}}', {{{{ run_id }}}})"
"#
    );
    let hanging = format!(
        r#"
name = "hang"
schedule = "* * * * *"
interval = "hour"
start_date = "{start}"
[catchup]
policy = "latest"
[tasks.first]
kind = "sql"
sql = "SELECT 1"
[tasks.sleep]
kind = "shell"
command = "sleep 41.7"
depends_on = ["first"]
"#
    );
    let api_port = crate::http::free_port();
    let config = jobs_dir(
        &env,
        &[("recent.toml", &catching_up), ("hang.toml", &hanging)],
        &format!(
            "[scheduler]\npoll_secs = 1\nshutdown_grace_secs = 1\n[api]\nhost = \"127.0.0.1\"\nport = {api_port}\n"
        ),
    );
    let mut daemon = env
        .command()
        .arg("--config")
        .arg(&config)
        .arg("daemon")
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn daemon");
    // The three complete hours since start_date are caught up.
    let recent = "SELECT count(*) FROM job_runs WHERE job = 'recent' AND state = 'success'";
    assert_eq!(
        wait_until(&env, recent, 3, Duration::from_secs(60)).await,
        3
    );
    let sleeping = "SELECT count(*) FROM task_instances WHERE task = 'sleep' AND state = 'running'";
    assert_eq!(
        wait_until(&env, sleeping, 1, Duration::from_secs(30)).await,
        1
    );
    assert!(process_running("sleep 41.7"));
    // The daemon serves the API next to the scheduler.
    let jobs = tokio::task::spawn_blocking(move || {
        crate::http::request(api_port, "GET", "/jobs", None, None)
    })
    .await
    .expect("request");
    assert_eq!(jobs.status, 200, "{}", jobs.text());
    let mut names: Vec<String> = jobs.json()["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .filter_map(|j| j["name"].as_str().map(String::from))
        .collect();
    names.sort();
    assert_eq!(names, vec!["hang".to_string(), "recent".to_string()]);

    signal(&daemon, "-TERM");
    let status = wait_for(&mut daemon, Duration::from_secs(20)).expect("daemon stops");
    assert!(status.success(), "clean exit: {status:?}");
    assert_eq!(
        ran_starts(&env.pool, "recent").await,
        (1..=3)
            .rev()
            .map(|h| hour - TimeDelta::hours(h))
            .collect::<Vec<_>>()
    );
    // The hung run is back in the queue, its finished task kept, its child gone.
    let (state, worker): (String, Option<String>) =
        sqlx::query_as("SELECT state, worker FROM job_runs WHERE job = 'hang'")
            .fetch_one(&env.pool)
            .await
            .expect("hang run");
    assert_eq!((state.as_str(), worker), ("queued", None));
    let tasks: Vec<(String, String)> =
        sqlx::query_as("SELECT task, state FROM task_instances WHERE run_id = (SELECT id FROM job_runs WHERE job = 'hang') ORDER BY task")
            .fetch_all(&env.pool)
            .await
            .expect("tasks");
    assert_eq!(
        tasks,
        vec![
            ("first".into(), "success".into()),
            ("sleep".into(), "queued".into())
        ]
    );
    assert!(
        !process_running("sleep 41.7"),
        "the task's process was stopped"
    );
    env.cleanup().await;
}

fn process_running(pattern: &str) -> bool {
    Command::new("pgrep")
        .args(["-f", pattern])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A worker whose claim was taken over (moved in SQL, as a daemon that
/// reaped the run would) stops the task in hand, kills its process group
/// and writes nothing more for the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_claim_was_taken_stops_and_writes_nothing() {
    let mut env = TestEnv::new("fenced").await;
    env.config.scheduler.heartbeat_secs = 1;
    let marker = env.dir.path().join("finished");
    let text = format!(
        r#"
name = "fenced"
schedule = "5 * * * *"
interval = "hour"
start_date = "2026-03-01"
[tasks.slow]
kind = "shell"
command = "sleep 7.31; touch {}"
timeout_secs = 60
[tasks.after]
kind = "sql"
sql = "SELECT 1"
depends_on = ["slow"]
"#,
        marker.display()
    );
    let job = job::parse(&env.dir.path().join("fenced.toml"), &text).expect("job");
    let s = scheduler(&env, env.pool.clone(), vec![job], "w1");
    sqlx::query(
        "INSERT INTO job_runs (job, run_type, interval_start, interval_end)
         VALUES ('fenced', 'manual', '2026-03-02T00:00:00Z', '2026-03-02T01:00:00Z')",
    )
    .execute(&env.pool)
    .await
    .expect("queue");
    let job = s.jobs[0].clone();
    let run = s.claim(&job, 1).await.expect("claim").pop().expect("a run");
    let (config, pools) = (s.config.clone(), s.pools.clone());
    let worker = tokio::spawn(async move {
        let stop = tokio_util::sync::CancellationToken::new();
        hxjobs::dag::executor::execute(&config, &pools, &job, &run, stop).await
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while env
        .count("SELECT count(*) FROM task_instances WHERE task = 'slow' AND state = 'running'")
        .await
        == 0
    {
        assert!(Instant::now() < deadline, "the task did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Another worker takes the claim.
    sqlx::query("UPDATE job_runs SET attempts = attempts + 1, worker = 'w2' WHERE job = 'fenced'")
        .execute(&env.pool)
        .await
        .expect("take the claim");
    let report = tokio::time::timeout(Duration::from_secs(15), worker)
        .await
        .expect("the fenced worker stops within its heartbeat")
        .expect("join")
        .expect("ledger");
    assert!(report.fenced, "{report}");
    // The shell task's process group is gone and never finished.
    let alive = Command::new("pgrep")
        .args(["-f", "sleep 7.31"])
        .status()
        .expect("pgrep");
    assert!(!alive.success(), "the task's process is killed");
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(!marker.exists(), "the killed command never finished");
    // Nothing was written after the claim moved: the new owner's view stands.
    let (state, worker, attempts): (String, String, i32) =
        sqlx::query_as("SELECT state, worker, attempts FROM job_runs WHERE job = 'fenced'")
            .fetch_one(&env.pool)
            .await
            .expect("run");
    assert_eq!(
        (state.as_str(), worker.as_str(), attempts),
        ("running", "w2", 2)
    );
    let tasks: Vec<(String, String)> =
        sqlx::query_as("SELECT task, state FROM task_instances ORDER BY task")
            .fetch_all(&env.pool)
            .await
            .expect("tasks");
    assert_eq!(
        tasks,
        vec![
            ("after".to_string(), "queued".to_string()),
            ("slow".to_string(), "running".to_string())
        ]
    );
    env.cleanup().await;
}
