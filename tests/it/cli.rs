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
