//! The binary's contract: clear one-line errors and exit codes.

use crate::common::TestEnv;

fn hxjobs() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_hxjobs"));
    cmd.env_remove("HXJOBS_CONFIG");
    cmd
}

#[test]
fn postgres_down_names_the_address() {
    let out = hxjobs()
        .env(
            "DATABASE_URL",
            "postgres://hxjobs:secret@127.0.0.1:1/hxjobs",
        )
        .args(["run", "ingest"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach PostgreSQL at postgres://hxjobs:***@127.0.0.1:1/hxjobs: Connection refused"),
        "{err}"
    );
    assert!(!err.contains("secret"), "password leaked: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_down_names_the_address() {
    let env = TestEnv::new("kafka_down").await;
    // A single operation fails with one line.
    let out = env
        .command()
        .env("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
        .args(["topics", "create"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach Kafka at 127.0.0.1:1"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");

    // A job's ingest task waits for the broker up to its timeout (not its
    // retries), then says the same in its outcome.
    let jobs = env.dir.path().join("jobs");
    std::fs::create_dir_all(&jobs).expect("jobs dir");
    std::fs::write(
        jobs.join("ingest.toml"),
        "name = \"ingest\"\nschedule = \"* * * * *\"\ninterval = \"hour\"\nstart_date = \"2026-01-01\"\n[tasks.ingest]\nkind = \"ingest\"\nretry_delay_secs = 1\ntimeout_secs = 25\n",
    )
    .expect("job file");
    let config = env.config_file(&format!("[jobs]\ndir = \"{}\"\n", jobs.display()));
    let out = env
        .command()
        .env("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
        .arg("--config")
        .arg(&config)
        .args(["run", "ingest"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("failed") && stdout.contains("cannot reach Kafka at 127.0.0.1:1"),
        "{stdout}"
    );
    assert!(stdout.contains("the task's timeout"), "{stdout}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim().lines().last(),
        Some("hxjobs: error: job ingest failed for this interval")
    );
    env.cleanup().await;
}

/// Runs `hxjobs [--config FILE] config` with extra environment; returns (exit code, stderr).
fn show_config(file: Option<&std::path::Path>, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = hxjobs();
    if let Some(f) = file {
        cmd.arg("--config").arg(f);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.arg("config").output().expect("run");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_config_names_key_and_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("broken.toml");
    for (toml, key) in [
        ("[ingest]\nbatch_size = \"lots\"\n", "ingest.batch_size"),
        ("[kafka]\nbootstrap = \"x\"\n", "bootstrap"),
        ("[ingest]\nbatch_size = 0\n", "ingest.batch_size"),
    ] {
        std::fs::write(&path, toml).expect("write");
        let (code, err) = show_config(Some(&path), &[]);
        assert_eq!(code, Some(2), "{toml}");
        assert!(
            err.contains(key) && err.contains("broken.toml"),
            "{toml}: {err}"
        );
    }

    let (code, err) = show_config(None, &[("BATCH_PROCESSING_API_PORT", "http")]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("api.port") && err.contains("BATCH_PROCESSING_API_PORT"),
        "{err}"
    );

    let (code, err) = show_config(None, &[("KAFKA_TOPIC_PARTITIONS", "0")]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("topics.partitions") && err.contains("KAFKA_TOPIC_PARTITIONS"),
        "{err}"
    );

    let (code, _) = show_config(Some(&dir.path().join("missing.toml")), &[]);
    assert_eq!(code, Some(2));
}

#[test]
fn environment_overrides_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[kafka]\nclient_id = \"from-file\"\ngroup_id = \"g-file\"\n",
    )
    .expect("write");
    let out = hxjobs()
        .arg("--config")
        .arg(&path)
        .env("KAFKA_GROUP_ID", "g-env")
        .env("KAFKA_TOPIC_LLM_REQUESTS", "my-requests")
        .env("DATABASE_URL", "postgres://u:pw@127.0.0.1:5432/d")
        .arg("config")
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(shown["kafka"]["client_id"], "from-file");
    assert_eq!(shown["kafka"]["group_id"], "g-env");
    assert_eq!(shown["topics"]["llm_requests"], "my-requests");
    assert_eq!(
        shown["database"]["url"],
        "postgres://u:***@127.0.0.1:5432/d"
    );
    assert_eq!(shown["api"]["port"], 9101);
}

#[test]
fn unknown_job_is_a_usage_error() {
    let out = hxjobs().args(["run", "nope"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown job `nope`"));
}

/// A sql job recording each interval it ran, in a jobs directory of its own.
fn recording_config(env: &TestEnv, extra_task: &str) -> std::path::PathBuf {
    env.config_with_jobs(
        "cli_jobs",
        &[(
            "rec",
            format!(
                "name = \"rec\"\nschedule = \"0 0 1 1 *\"\ninterval = \"hour\"\n\
                 start_date = \"2026-01-01\"\n[tasks.rec]\nkind = \"sql\"\n\
                 sql = \"CREATE TABLE IF NOT EXISTS rec (at timestamptz); INSERT INTO rec VALUES ('{{{{ interval_start }}}}')\"\n{extra_task}"
            ),
        )],
        "",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intervals_that_have_not_ended_are_refused_unless_asked_for() {
    let env = TestEnv::new("unfinished").await;
    let config = recording_config(&env, "");
    let tomorrow = (chrono::Utc::now() + chrono::TimeDelta::days(1))
        .format("%Y-%m-%d")
        .to_string();
    let after = (chrono::Utc::now() + chrono::TimeDelta::days(2))
        .format("%Y-%m-%d")
        .to_string();
    let out = env
        .hxjobs(
            &config,
            &["backfill", "rec", "--from", &tomorrow, "--to", &after],
        )
        .output()
        .expect("backfill");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("still to come") && err.contains("--allow-unfinished"),
        "{err}"
    );
    let this_hour = chrono::Utc::now().format("%Y-%m-%dT%H:00:00Z").to_string();
    let out = env
        .hxjobs(&config, &["run", "rec", "--interval-start", &this_hour])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("has not ended yet"));
    assert_eq!(env.count("SELECT count(*) FROM job_runs").await, 0);
    // Asked for explicitly, it runs.
    let out = env
        .hxjobs(
            &config,
            &[
                "run",
                "rec",
                "--interval-start",
                &this_hour,
                "--allow-unfinished",
            ],
        )
        .output()
        .expect("run");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(env.count("SELECT count(*) FROM rec").await, 1);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_logs_warnings_only_unless_asked() {
    let env = TestEnv::new("quiet").await;
    env.ingest_demo(
        300,
        crate::common::ts("2026-03-01"),
        crate::common::ts("2026-03-01T03:00:00Z"),
        61,
    )
    .await;
    let args = [
        "backfill",
        "hxp_hourly_aggregation",
        "--from",
        "2026-03-01",
        "--to",
        "2026-03-01T03:00:00Z",
    ];
    let out = env.command().args(args).output().expect("backfill");
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains(" INFO "), "no info lines by default: {err}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("3 succeeded"),
        "{out:?}"
    );
    // Asked for (-v), the rollups' own lines show.
    let mut verbose = args.to_vec();
    verbose.extend(["--reprocess", "all", "-v"]);
    let out = env.command().args(verbose).output().expect("backfill");
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(" INFO ") && err.contains("rolling up"),
        "{err}"
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_into_a_closed_pipe_ends_quietly() {
    let env = TestEnv::new("pipe").await;
    let mut child = env
        .command()
        .args(["runs"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("runs");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(101), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("Broken pipe"),
        "{err}"
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_test_prints_a_shell_tasks_output_and_the_database_url_is_opt_in() {
    let env = TestEnv::new("task_output").await;
    let shell = |name: &str, pass: bool| {
        format!(
            "name = \"{name}\"\nschedule = \"0 0 1 1 *\"\ninterval = \"hour\"\n\
             start_date = \"2026-01-01\"\n[tasks.say]\nkind = \"shell\"\n\
             command = 'echo \"hello from {{{{ job }}}}\"; echo \"url=[$DATABASE_URL]\"; echo oops >&2'\n\
             pass_database_url = {pass}\n"
        )
    };
    let dir = env.dir.path().join("task-jobs");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("with.toml"), shell("with", true)).expect("write");
    std::fs::write(dir.join("without.toml"), shell("without", false)).expect("write");
    // The database URL comes from the configuration file, not the environment.
    let url = env.config.database.url.expose().to_string();
    let config = env.dir.path().join("task.toml");
    std::fs::write(
        &config,
        format!(
            "[jobs]\ndir = {:?}\n[database]\nurl = {url:?}\n",
            dir.display().to_string()
        ),
    )
    .expect("config");
    let run = |job: &str| {
        env.command()
            .env_remove("DATABASE_URL")
            .args(["--config"])
            .arg(&config)
            .args(["tasks", "test", job, "say"])
            .output()
            .expect("tasks test")
    };
    let out = run("without");
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("hello from without"), "{stdout}");
    assert!(stdout.contains("url=[]"), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("oops"));
    let out = run("with");
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("url=[{url}]")), "{stdout}");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_user_variables_the_os_account_is_recorded() {
    let env = TestEnv::new("os_account").await;
    let config = recording_config(&env, "");
    let out = env
        .hxjobs(
            &config,
            &["run", "rec", "--interval-start", "2026-03-01T00:00:00Z"],
        )
        .env_remove("USER")
        .env_remove("LOGNAME")
        .output()
        .expect("run");
    assert!(out.status.success(), "{out:?}");
    let whoami = std::process::Command::new("id")
        .arg("-un")
        .output()
        .expect("id");
    let account = String::from_utf8_lossy(&whoami.stdout).trim().to_string();
    let by: Option<String> = sqlx::query_scalar("SELECT triggered_by FROM job_runs")
        .fetch_one(&env.pool)
        .await
        .expect("run");
    assert_eq!(by, Some(format!("cli:{account}")));
    // Retention cut-offs are printed to the second.
    let out = env
        .hxjobs(&config, &["retention", "--dry-run"])
        .output()
        .expect("retention");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let befores: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" rows before "))
        .collect();
    assert!(!befores.is_empty(), "{text}");
    for l in befores {
        let at = l.rsplit(' ').next().unwrap_or_default();
        assert_eq!(at.len(), "2026-03-01T00:00:00Z".len(), "{l}");
        assert!(at.ends_with('Z') && !at.contains('.'), "{l}");
    }
    env.cleanup().await;
}
