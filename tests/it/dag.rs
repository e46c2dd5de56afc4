//! Running jobs: dependency order, retries with backoff, upstream failures,
//! timeouts that kill hung commands, all recorded in the run ledger.

use std::path::Path;
use tokio_util::sync::CancellationToken;

use hxjobs::dag::executor;
use hxjobs::dag::job;
use hxjobs::ledger::{self, TaskState};

use crate::common::{ts, TestEnv};

async fn run(env: &TestEnv, text: &str, at: &str) -> (i64, executor::RunReport) {
    let job = job::parse(&env.dir.path().join("job.toml"), text).expect("valid job");
    let interval = job.interval.containing(ts(at));
    let pools = hxjobs::db::Pools::new(env.pool.clone());
    let run = ledger::create_claimed_run(
        &pools.ledger,
        &job.name,
        interval,
        "test-worker",
        &Default::default(),
    )
    .await
    .expect("ledger");
    let report = executor::execute(&env.config, &pools, &job, &run, CancellationToken::new())
        .await
        .expect("execute");
    (run.run_id, report)
}

async fn task_state(env: &TestEnv, run_id: i64, task: &str) -> (String, i32, Option<String>) {
    sqlx::query_as(
        "SELECT state, attempt, error FROM task_instances WHERE run_id = $1 AND task = $2",
    )
    .bind(run_id)
    .bind(task)
    .fetch_one(&env.pool)
    .await
    .expect("task instance")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_run_in_dependency_order_with_the_interval() {
    let env = TestEnv::new("dag_order").await;
    sqlx::query("CREATE TABLE trail (seq serial, task text, interval_start timestamptz, job text)")
        .execute(&env.pool)
        .await
        .expect("table");
    let insert = |t: &str| {
        format!("INSERT INTO trail (task, interval_start, job) VALUES ('{t}', '{{{{ interval_start }}}}', '{{{{ job }}}}')")
    };
    let text = format!(
        r#"
name = "order"
schedule = "5 * * * *"
interval = "hour"
start_date = "2026-01-01"

[tasks.last]
kind = "sql"
sql = "{}"
depends_on = ["middle", "first"]

[tasks.first]
kind = "sql"
sql = "{}"

[tasks.middle]
kind = "sql"
sql = "{}"
depends_on = ["first"]
"#,
        insert("last"),
        insert("first"),
        insert("middle")
    );
    let (run_id, report) = run(&env, &text, "2026-03-04T10:30:00Z").await;
    assert!(report.succeeded(), "{report}");
    let rows: Vec<(String, chrono::DateTime<chrono::Utc>, String)> =
        sqlx::query_as("SELECT task, interval_start, job FROM trail ORDER BY seq")
            .fetch_all(&env.pool)
            .await
            .expect("rows");
    let order: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(order, ["first", "middle", "last"]);
    assert!(rows
        .iter()
        .all(|r| r.1 == ts("2026-03-04T10:00:00Z") && r.2 == "order"));
    let state: String = sqlx::query_scalar("SELECT state FROM job_runs WHERE id = $1")
        .bind(run_id)
        .fetch_one(&env.pool)
        .await
        .expect("run");
    assert_eq!(state, "success");
    for t in ["first", "middle", "last"] {
        assert_eq!(task_state(&env, run_id, t).await.0, "success");
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_task_is_retried_then_fails_its_dependants() {
    let env = TestEnv::new("dag_retry").await;
    let counter = env.dir.path().join("attempts");
    let text = format!(
        r#"
name = "retry"
schedule = "0 * * * *"
interval = "hour"
start_date = "2026-01-01"

[tasks.flaky]
kind = "shell"
command = "echo x >> {counter}; exit 3"
retries = 2
retry_delay_secs = 1
retry_delay_max_secs = 60

[tasks.after]
kind = "sql"
sql = "SELECT 1"
depends_on = ["flaky"]

[tasks.independent]
kind = "sql"
sql = "SELECT 1"
"#,
        counter = counter.display()
    );
    let (run_id, report) = run(&env, &text, "2026-03-04T10:30:00Z").await;
    assert!(!report.succeeded());
    let (state, attempt, error) = task_state(&env, run_id, "flaky").await;
    assert_eq!((state.as_str(), attempt), ("failed", 3));
    assert!(error.unwrap_or_default().contains("exit status: 3"));
    assert_eq!(
        std::fs::read_to_string(&counter)
            .expect("attempt log")
            .lines()
            .count(),
        3
    );
    assert_eq!(task_state(&env, run_id, "after").await.0, "upstream_failed");
    assert_eq!(task_state(&env, run_id, "independent").await.0, "success");
    // Backoff: 1 s after the first failure, 2 s after the second.
    let waited: f64 = sqlx::query_scalar(
        "SELECT EXTRACT(EPOCH FROM finished_at - started_at)::float8 FROM task_instances WHERE run_id = $1 AND task = 'flaky'",
    )
    .bind(run_id)
    .fetch_one(&env.pool)
    .await
    .expect("times");
    assert!(waited >= 3.0, "the two retries waited {waited} s in all");
    let outcome = report
        .tasks
        .iter()
        .find(|t| t.task == "flaky")
        .expect("flaky");
    assert_eq!(outcome.state, TaskState::Failed);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_kills_a_hung_shell_task() {
    let env = TestEnv::new("dag_timeout").await;
    let pidfile = env.dir.path().join("pid");
    let text = format!(
        r#"
name = "hung"
schedule = "0 * * * *"
interval = "hour"
start_date = "2026-01-01"

[tasks.hang]
kind = "shell"
command = "sleep 120 & echo $! > {pid}; wait"
timeout_secs = 1
"#,
        pid = pidfile.display()
    );
    let started = std::time::Instant::now();
    let (run_id, report) = run(&env, &text, "2026-03-04T10:30:00Z").await;
    assert!(
        started.elapsed().as_secs() < 60,
        "the run did not wait for the hung command"
    );
    let (state, attempt, error) = task_state(&env, run_id, "hang").await;
    assert_eq!((state.as_str(), attempt), ("failed", 1));
    assert!(error.unwrap_or_default().contains("timed out"), "{report}");
    let pid = std::fs::read_to_string(&pidfile)
        .expect("pid")
        .trim()
        .to_string();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let alive = Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ");
    assert!(!alive, "the hung command's child {pid} is still running");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_of_an_unknown_type_fails_at_once_and_says_so() {
    let env = TestEnv::new("dag_unknown_report").await;
    let text = r#"
name = "later"
schedule = "0 * * * *"
interval = "day"
start_date = "2026-01-01"

[tasks.report]
kind = "report"
report = "no_such_report"
retries = 5
"#;
    let (run_id, _) = run(&env, text, "2026-03-04T10:30:00Z").await;
    let (state, attempt, error) = task_state(&env, run_id, "report").await;
    assert_eq!(
        (state.as_str(), attempt),
        ("failed", 1),
        "no retries for a report type that is not defined"
    );
    let error = error.unwrap_or_default();
    assert!(
        error.contains("unknown report type \"no_such_report\""),
        "{error}"
    );
    assert!(
        error.contains("weekly_summary"),
        "names the known types: {error}"
    );
    env.cleanup().await;
}
