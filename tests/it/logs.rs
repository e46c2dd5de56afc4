//! Task logs: what every attempt said, through `hxjobs logs` and the API,
//! the cap per attempt, and following a running task.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::TestEnv;
use crate::http::request;

/// A config of its own whose jobs directory holds `jobs`, archives kept
/// in the test's directory.
fn config_with_jobs(env: &TestEnv, jobs: &[(&str, String)]) -> PathBuf {
    let archive = env.dir.path().join("archive").display().to_string();
    env.config_with_jobs(
        "logs",
        jobs,
        &format!("[retention]\narchive_dir = {archive:?}\n"),
    )
}

fn job(name: &str, tasks: &str) -> String {
    format!(
        "name = \"{name}\"\nschedule = \"0 0 1 1 *\"\ninterval = \"day\"\nstart_date = \"2026-01-01\"\n{tasks}"
    )
}

fn hxjobs(env: &TestEnv, config: &std::path::Path, args: &[&str]) -> Output {
    env.hxjobs(config, args).output().expect("run hxjobs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

async fn run_id(env: &TestEnv, job: &str) -> i64 {
    sqlx::query_scalar("SELECT max(id) FROM job_runs WHERE job = $1")
        .bind(job)
        .fetch_one(&env.pool)
        .await
        .expect("run id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attempt_keeps_what_it_said() {
    let env = TestEnv::new("logs_attempts").await;
    // Fails its first try, succeeds its second; says things on both
    // streams, with a byte that is not UTF-8 and a NUL.
    let talk = job(
        "talk",
        r#"[tasks.speak]
kind = "shell"
retries = 1
retry_delay_secs = 1
command = '''echo out-line-$HXJOBS_TRY; printf 'bad \377 byte and nul \000 end\n'; echo err-line >&2; test $HXJOBS_TRY -ge 2'''
[tasks.tidy]
kind = "retention"
depends_on = ["speak"]
"#,
    );
    let config = config_with_jobs(&env, &[("talk", talk)]);
    let out = hxjobs(&env, &config, &["run", "talk"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = run_id(&env, "talk").await;
    let ids = id.to_string();

    let first = hxjobs(&env, &config, &["logs", &ids, "speak", "--try", "1"]);
    assert!(first.status.success());
    let first = stdout(&first);
    assert!(first.contains(" out   out-line-1\n"), "{first}");
    assert!(first.contains(" err   err-line\n"), "{first}");
    assert!(
        first.contains(" out   bad \\xff byte and nul \\0 end\n"),
        "{first}"
    );
    assert!(first.contains("hxjobs attempt failed after"), "{first}");
    assert!(!first.contains("out-line-2"), "{first}");

    // Without --try: the latest.
    let latest = stdout(&hxjobs(&env, &config, &["logs", &ids, "speak"]));
    assert!(latest.contains(" out   out-line-2\n"), "{latest}");
    assert!(
        latest.contains(" hxjobs attempt succeeded after "),
        "{latest}"
    );

    // The whole run: a header per attempt, and the retention task's own
    // log events.
    let all = stdout(&hxjobs(&env, &config, &["logs", &ids]));
    for header in ["==> speak try 1 ", "==> speak try 2 ", "==> tidy try 1 "] {
        assert!(all.contains(header), "{header}: {all}");
    }
    assert!(
        all.contains(" INFO  retention plan: what is past its retention raw_event_days=0"),
        "{all}"
    );

    let outcomes: Vec<String> = sqlx::query_scalar(
        "SELECT outcome FROM task_attempts WHERE run_id = $1 AND task = 'speak' ORDER BY id",
    )
    .bind(id)
    .fetch_all(&env.pool)
    .await
    .expect("attempts");
    assert_eq!(outcomes, ["failed", "success"]);

    // Asking for what is not there.
    let none = hxjobs(&env, &config, &["logs", &ids, "speak", "--try", "3"]);
    assert_eq!(none.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&none.stderr).contains("has no try 3"));
    let unknown = hxjobs(&env, &config, &["logs", &ids, "nope"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("has no task `nope` (its tasks: "));
    let no_run = hxjobs(&env, &config, &["logs", "987654"]);
    assert_eq!(no_run.status.code(), Some(2));

    // The API: the text of one try, its stream to the end, the attempts.
    let out_dir = tempfile::tempdir().expect("tempdir");
    let server = crate::api::start(&env, out_dir.path());
    let p = server.port;
    let text = request(
        p,
        "GET",
        &format!("/runs/{id}/tasks/speak/logs?try=1"),
        None,
        None,
    );
    assert_eq!(text.status, 200);
    assert_eq!(text.header("x-hxjobs-try"), Some("1"));
    assert_eq!(text.header("x-hxjobs-outcome"), Some("failed"));
    assert!(text
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/plain")));
    assert_eq!(text.text(), first);
    let stream = request(
        p,
        "GET",
        &format!("/runs/{id}/tasks/speak/logs/stream"),
        None,
        None,
    );
    assert_eq!(stream.status, 200);
    let body = stream.text();
    assert!(body.contains("event: log\n"), "{body}");
    assert!(body.contains(" out   out-line-2"), "{body}");
    let end = body.split("event: end\ndata: ").nth(1).unwrap_or_default();
    assert!(end.contains("\"outcome\":\"success\""), "{body}");
    assert!(end.contains("\"try\":2"), "{body}");
    for (path, status) in [
        (format!("/runs/{id}/tasks/speak/logs?try=0"), 400),
        (format!("/runs/{id}/tasks/speak/logs?try=9"), 404),
        (format!("/runs/{id}/tasks/nope/logs"), 404),
        ("/runs/987654/tasks/speak/logs".to_string(), 404),
        (format!("/runs/{id}/tasks/speak/logs?tries=1"), 400),
    ] {
        let r = request(p, "GET", &path, None, None);
        assert_eq!(r.status, status, "{path}: {}", r.text());
        assert!(r.json()["error"].is_string());
    }
    let run = request(p, "GET", &format!("/runs/{id}"), None, None).json();
    let tries: Vec<(String, i64, String)> = run["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| {
            (
                a["task"].as_str().unwrap_or_default().to_string(),
                a["try"].as_i64().unwrap_or_default(),
                a["outcome"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        tries,
        [
            ("speak".to_string(), 1, "failed".to_string()),
            ("speak".to_string(), 2, "success".to_string()),
            ("tidy".to_string(), 1, "success".to_string()),
        ]
    );
    drop(server);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10_mib_log_keeps_the_first_4_mib_and_says_what_was_dropped() {
    let env = TestEnv::new("logs_cap").await;
    // 10,240 lines of 1,023 characters: 10 MiB of output with line ends.
    let big = job(
        "big",
        r#"[tasks.talk]
kind = "shell"
command = "yes \"$(printf '%01023d' 0)\" | head -n 10240"
"#,
    );
    let config = config_with_jobs(&env, &[("big", big)]);
    let out = hxjobs(&env, &config, &["run", "big"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = run_id(&env, "big").await;

    // Each kept line is stored as 24 (time) + 1 + 5 (tag) + 1 + 1,023 + 1
    // = 1,055 bytes: 3,975 of them fit in 4 MiB.
    let log = stdout(&hxjobs(&env, &config, &["logs", &id.to_string(), "talk"]));
    let lines: Vec<&str> = log.lines().collect();
    let kept = lines.iter().filter(|l| l.contains(" out   0000")).count();
    assert_eq!(kept, 3975);
    assert_eq!(
        lines.len(),
        3975 + 2,
        "the kept lines, the truncation line, the outcome"
    );
    assert!(
        lines[3975].ends_with(
            " hxjobs log truncated at logs.max_bytes_per_attempt = 4194304 bytes: 6415360 bytes of output in 6265 lines after that were dropped"
        ),
        "{}",
        lines[3975]
    );
    assert!(
        lines[3976].contains(" hxjobs attempt succeeded after "),
        "{}",
        lines[3976]
    );
    let (bytes, dropped): (i64, i64) =
        sqlx::query_as("SELECT log_bytes, log_dropped FROM task_attempts WHERE run_id = $1")
            .bind(id)
            .fetch_one(&env.pool)
            .await
            .expect("attempt");
    assert_eq!(
        bytes as usize,
        log.len() - lines[3975].len() - lines[3976].len() - 2
    );
    assert_eq!(dropped, 6_415_360);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_shows_a_running_task_as_it_speaks() {
    let env = TestEnv::new("logs_follow").await;
    // Says `first`, then waits until the test has read that line through
    // `--follow`; only then says `second` and ends.
    let flag = env.dir.path().join("seen-first");
    let wait = job(
        "wait",
        &format!(
            "[tasks.wait]\nkind = \"shell\"\ncommand = \"echo first; while [ ! -e '{}' ]; do sleep 0.1; done; echo second\"\n",
            flag.display()
        ),
    );
    let config = config_with_jobs(&env, &[("wait", wait)]);
    let mut runner = env
        .hxjobs(&config, &["run", "wait"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("hxjobs run");
    let deadline = Instant::now() + Duration::from_secs(60);
    let id = loop {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM task_attempts a JOIN job_runs r ON r.id = a.run_id WHERE r.job = 'wait'",
        )
        .fetch_one(&env.pool)
        .await
        .expect("attempts");
        if n > 0 {
            break run_id(&env, "wait").await;
        }
        assert!(Instant::now() < deadline, "the task did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut follow = env
        .hxjobs(&config, &["logs", &id.to_string(), "wait", "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("hxjobs logs --follow");
    let reader = BufReader::new(follow.stdout.take().expect("stdout"));
    let flag_for_reader = flag.clone();
    let lines = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for line in reader.lines() {
            let line = line.expect("line");
            if line.ends_with(" out   first") {
                // The task is still running (it waits for this file).
                std::fs::write(&flag_for_reader, "").expect("flag");
            }
            seen.push(line);
        }
        seen
    });
    let status = follow.wait().expect("follow ends when the attempt ends");
    let seen = lines.join().expect("reader");
    assert!(status.success());
    assert!(
        flag.exists(),
        "`first` never came through --follow: {seen:?}"
    );
    assert!(seen[0].starts_with("==> wait try 1 "), "{seen:?}");
    assert!(seen[1].ends_with(" out   first"), "{seen:?}");
    assert!(seen[2].ends_with(" out   second"), "{seen:?}");
    assert!(seen[3].contains("attempt succeeded"), "{seen:?}");
    assert!(runner.wait().expect("run").success());
    env.cleanup().await;
}
