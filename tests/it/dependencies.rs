//! Trigger rules, pools and job versions against real PostgreSQL, with the
//! real binary: a cleanup task runs because its upstream failed; a pool of
//! one slot keeps attempts of three processes from overlapping, and frees
//! the slot of a process killed holding it; every run and attempt records
//! the version of the job file it ran with.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::common::TestEnv;

fn job(name: &str, tasks: &str) -> (String, String) {
    (
        name.to_string(),
        format!(
            "name = \"{name}\"\nschedule = \"0 0 1 1 *\"\ninterval = \"day\"\nstart_date = \"2026-01-01\"\n{tasks}"
        ),
    )
}

async fn states(env: &TestEnv, job: &str) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT t.task, t.state FROM task_instances t JOIN job_runs r ON r.id = t.run_id
         WHERE r.job = $1 ORDER BY t.task",
    )
    .bind(job)
    .fetch_all(&env.pool)
    .await
    .expect("task states")
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_rules_run_cleanups_on_failure_and_skip_them_on_success() {
    let env = TestEnv::new("trigger_rules").await;
    let tasks = |first: &str| {
        format!(
            r#"[tasks.work]
kind = "shell"
command = "{first}"
[tasks.cleanup]
kind = "shell"
depends_on = ["work"]
trigger_rule = "one_failed"
command = "echo cleaning up"
[tasks.always]
kind = "shell"
depends_on = ["work"]
trigger_rule = "all_done"
command = "echo done either way"
[tasks.publish]
kind = "shell"
depends_on = ["work"]
command = "echo publishing"
[tasks.after_cleanup]
kind = "shell"
depends_on = ["cleanup"]
command = "echo after the cleanup"
[tasks.unless_failed]
kind = "shell"
depends_on = ["cleanup", "publish"]
trigger_rule = "none_failed"
command = "echo nothing failed"
[tasks.any_ok]
kind = "shell"
depends_on = ["publish", "always"]
trigger_rule = "one_success"
command = "echo one went through"
"#
        )
    };
    let (bad, bad_text) = job("breaks", &tasks("exit 3"));
    let (good, good_text) = job("works", &tasks("echo working"));
    let cfg = env.config_with_jobs("rules", &[(&bad, bad_text), (&good, good_text)], "");

    let out = env.hxjobs(&cfg, &["run", &bad]).output().expect("run");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        states(&env, &bad).await,
        pairs(&[
            ("after_cleanup", "success"),
            ("always", "success"),
            ("any_ok", "success"),
            ("cleanup", "success"),
            ("publish", "upstream_failed"),
            ("unless_failed", "upstream_failed"),
            ("work", "failed"),
        ])
    );
    let run_state: String = sqlx::query_scalar("SELECT state FROM job_runs WHERE job = $1")
        .bind(&bad)
        .fetch_one(&env.pool)
        .await
        .expect("run");
    assert_eq!(
        run_state, "failed",
        "a cleanup does not make the run succeed"
    );

    let out = env.hxjobs(&cfg, &["run", &good]).output().expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        states(&env, &good).await,
        pairs(&[
            ("after_cleanup", "skipped"),
            ("always", "success"),
            ("any_ok", "success"),
            ("cleanup", "skipped"),
            ("publish", "success"),
            ("unless_failed", "success"),
            ("work", "success"),
        ])
    );
    // An unknown rule is refused with its file and line.
    let (odd, odd_text) = job(
        "odd",
        "[tasks.a]\nkind = \"shell\"\ncommand = \"true\"\ntrigger_rule = \"sometimes\"\n",
    );
    let e =
        hxjobs::dag::job::parse(&env.dir.path().join("odd.toml"), &odd_text).expect_err("refused");
    assert!(
        e.message.contains("sometimes") && e.message.contains("one_failed"),
        "{e} ({odd})"
    );
    env.cleanup().await;
}

/// (start, end) of every attempt of the pooled tasks.
async fn spans(env: &TestEnv) -> Vec<(DateTime<Utc>, DateTime<Utc>, String)> {
    sqlx::query_as(
        "SELECT a.started_at, a.finished_at, r.job FROM task_attempts a JOIN job_runs r ON r.id = a.run_id
         WHERE a.task = 'heavy' AND a.finished_at IS NOT NULL ORDER BY a.started_at",
    )
    .fetch_all(&env.pool)
    .await
    .expect("attempts")
}

fn spawn(env: &TestEnv, cfg: &std::path::Path, job: &str) -> Child {
    env.hxjobs(cfg, &["run", job])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("hxjobs run")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_of_one_slot_runs_one_attempt_at_a_time_across_processes() {
    let env = TestEnv::new("pools").await;
    // Each heavy command writes when its work starts and ends (the
    // ledger's attempt times also cover writing the outcome, after the
    // slot is given back).
    let work = env.dir.path().join("work.log");
    let heavy = |name: &str, secs: &str| {
        job(
            name,
            &format!(
                "[tasks.heavy]\nkind = \"shell\"\npool = \"db\"\ncommand = \"echo start $(date +%s%N) >> '{}'; sleep {secs}; echo end $(date +%s%N) >> '{}'\"\n[tasks.light]\nkind = \"shell\"\ncommand = \"true\"\n",
                work.display(),
                work.display()
            ),
        )
    };
    let jobs: Vec<(String, String)> = vec![
        heavy("p1", "1"),
        heavy("p2", "1"),
        heavy("p3", "1"),
        heavy("stuck", "120"),
        heavy("after", "0.2"),
    ];
    let listed: Vec<(&str, String)> = jobs.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    let cfg = env.config_with_jobs(
        "pools",
        &listed,
        "[pools.db]\nslots = 1\ndescription = \"one heavy statement at a time\"\n[scheduler]\nheartbeat_secs = 1\nstale_after_secs = 3\n",
    );
    // A job naming a pool the configuration does not define does not load.
    let (undefined, text) = heavy("undefined", "0");
    let bad_cfg = env.config_with_jobs("undefined_pool", &[(&undefined, text)], "");
    let out = env
        .hxjobs(&bad_cfg, &["run", &undefined])
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("names pools that the configuration does not define"),
        "{err}"
    );

    // Three processes at once: their heavy attempts take turns.
    let mut children: Vec<Child> = ["p1", "p2", "p3"]
        .iter()
        .map(|j| spawn(&env, &cfg, j))
        .collect();
    // One of them is seen waiting, and says for what.
    let until = Instant::now() + Duration::from_secs(30);
    let mut note = String::new();
    while note.is_empty() && Instant::now() < until {
        note = sqlx::query_scalar(
            "SELECT error FROM task_instances WHERE task = 'heavy' AND state = 'queued'
             AND error LIKE 'waiting for a slot%' LIMIT 1",
        )
        .fetch_optional(&env.pool)
        .await
        .expect("note")
        .unwrap_or_default();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        note.starts_with("waiting for a slot of pool `db` (1 of 1 in use"),
        "{note:?}"
    );
    for c in &mut children {
        let status = c.wait().expect("wait");
        assert!(status.success());
    }
    let done = spans(&env).await;
    assert_eq!(done.len(), 3, "{done:?}");
    // In time order the works alternate: start, end, start, end, …
    let log = std::fs::read_to_string(&work).expect("work log");
    let mut marks: Vec<(u128, String)> = log
        .lines()
        .filter_map(|l| {
            let (what, at) = l.split_once(' ')?;
            Some((at.trim().parse().ok()?, what.to_string()))
        })
        .collect();
    marks.sort();
    let order: Vec<&str> = marks.iter().map(|(_, w)| w.as_str()).collect();
    assert_eq!(
        order,
        ["start", "end", "start", "end", "start", "end"],
        "two attempts held the one slot at once: {log}"
    );
    assert_eq!(
        env.count("SELECT count(*) FROM pool_slots").await,
        0,
        "every slot given back"
    );

    // A process killed while it holds the slot: the slot frees itself once
    // its run's heartbeat is stale, and the next one runs.
    let mut stuck = spawn(&env, &cfg, "stuck");
    let held = crate::scheduler::wait_until(
        &env,
        "SELECT count(*) FROM pool_slots WHERE granted_at IS NOT NULL AND job = 'stuck'",
        1,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(held, 1);
    let mut after = spawn(&env, &cfg, "after");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        after.try_wait().expect("try").is_none(),
        "ran while the slot was held"
    );
    let _ = stuck.kill();
    let _ = stuck.wait();
    let until = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = after.try_wait().expect("try") {
            break s;
        }
        assert!(
            Instant::now() < until,
            "the killed holder's slot was not freed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(status.success());
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_run_and_attempt_records_the_version_it_ran_with() {
    let env = TestEnv::new("versions").await;
    let fixed = env.dir.path().join("fixed");
    let first = format!(
        "name = \"versioned\"\nschedule = \"0 0 1 1 *\"\ninterval = \"day\"\nstart_date = \"2026-01-01\"\n[tasks.step]\nkind = \"shell\"\ncommand = \"test -e '{}'\"\n",
        fixed.display()
    );
    let cfg = env.config_with_jobs("versions", &[("versioned", first.clone())], "");
    let out = env
        .hxjobs(&cfg, &["run", "versioned"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let v1 = hxjobs::dag::job::version_of(&first);
    let (id, version): (i64, Option<String>) =
        sqlx::query_as("SELECT id, job_version FROM job_runs WHERE job = 'versioned'")
            .fetch_one(&env.pool)
            .await
            .expect("run");
    assert_eq!(version.as_deref(), Some(v1.as_str()));
    let kept: String = sqlx::query_scalar(
        "SELECT definition FROM job_versions WHERE job = 'versioned' AND version = $1",
    )
    .bind(&v1)
    .fetch_one(&env.pool)
    .await
    .expect("kept text");
    assert_eq!(kept, first);

    // The file changes; the cleared run runs with the version loaded now,
    // and each attempt keeps the one it ran with.
    std::fs::write(&fixed, "").expect("fix");
    let second = first.replace("[tasks.step]", "description = \"now passes\"\n[tasks.step]");
    let dir = env.dir.path().join("versions-jobs");
    std::fs::write(dir.join("versioned.toml"), &second).expect("edit");
    let v2 = hxjobs::dag::job::version_of(&second);
    let out = env
        .hxjobs(&cfg, &["clear", &id.to_string()])
        .output()
        .expect("clear");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = env
        .hxjobs(&cfg, &["daemon", "--once", "--no-api"])
        .output()
        .expect("daemon");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (state, version): (String, Option<String>) =
        sqlx::query_as("SELECT state, job_version FROM job_runs WHERE id = $1")
            .bind(id)
            .fetch_one(&env.pool)
            .await
            .expect("run");
    assert_eq!(
        (state.as_str(), version.as_deref()),
        ("success", Some(v2.as_str()))
    );
    let attempts: Vec<(i32, Option<String>)> =
        sqlx::query_as("SELECT try, job_version FROM task_attempts WHERE run_id = $1 ORDER BY id")
            .bind(id)
            .fetch_all(&env.pool)
            .await
            .expect("attempts");
    assert_eq!(
        attempts,
        vec![(1, Some(v1.clone())), (1, Some(v2.clone()))],
        "each attempt with its own version"
    );
    let versions = hxjobs::ledger::versions::of_job(&env.pool, "versioned")
        .await
        .expect("versions");
    let seen: Vec<(&str, i64)> = versions
        .iter()
        .map(|v| (v.version.as_str(), v.runs))
        .collect();
    assert_eq!(seen, vec![(v2.as_str(), 1), (v1.as_str(), 0)]);
    env.cleanup().await;
}
