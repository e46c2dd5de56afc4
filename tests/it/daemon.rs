//! A daemon as an operator runs it: job files added, edited, broken and
//! removed while it runs, SIGHUP, SIGTERM, and a port already taken.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::api::Server;
use crate::common::TestEnv;
use crate::http::{free_port, request};
use crate::operator::read;
use crate::scheduler::{signal, wait_for};

fn job(name: &str, sql: &str) -> String {
    format!(
        "name = \"{name}\"\nschedule = \"0 0 1 1 *\"\ninterval = \"hour\"\n\
         start_date = \"2026-01-01\"\n[catchup]\npolicy = \"none\"\n\
         [tasks.a]\nkind = \"sql\"\nsql = \"{sql}\"\n"
    )
}

/// Starts `hxjobs <command>` on `port`; waits until the API answers.
fn start(
    env: &TestEnv,
    config: &std::path::Path,
    command: &str,
    port: u16,
) -> (Server, std::path::PathBuf) {
    let log = env.dir.path().join(format!("{command}-{port}.log"));
    let child = env
        .hxjobs(config, &[command])
        .env("BATCH_PROCESSING_API_PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "no API: {}", read(&log));
        std::thread::sleep(Duration::from_millis(100));
    }
    (Server { child, port }, log)
}

/// Polls `GET path` until `ok` holds for its JSON body.
async fn until(port: u16, path: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let body = request(port, "GET", path, None, None).json();
        if ok(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "{what}: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn job_names(body: &Value) -> Vec<String> {
    body["jobs"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|j| j["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_reloads_job_files_on_sighup_and_names_the_signal_it_stops_on() {
    let env = TestEnv::new("reload").await;
    let config = env.config_with_jobs(
        "own",
        &[("first", job("first", "SELECT 1"))],
        "reload_secs = 3600\n[scheduler]\npoll_secs = 1\n[api]\nhost = \"127.0.0.1\"\n\
         [live_stats]\nenabled = false\n",
    );
    let jobs_dir = env.dir.path().join("own-jobs");
    let port = free_port();
    let (mut daemon, log) = start(&env, &config, "daemon", port);
    let body = until(port, "/jobs", "first loaded", |b| job_names(b) == ["first"]).await;
    let v1 = body["jobs"][0]["version"]
        .as_str()
        .expect("version")
        .to_string();
    assert_eq!(v1.len(), 12);

    // A new file: loaded on SIGHUP, without a restart.
    std::fs::write(jobs_dir.join("second.toml"), job("second", "SELECT 2")).expect("write");
    signal(&daemon.child, "-HUP");
    until(port, "/jobs", "second loaded", |b| {
        job_names(b) == ["first", "second"]
    })
    .await;
    // The daemon records which versions it has loaded.
    let deadline = Instant::now() + Duration::from_secs(20);
    while env
        .count("SELECT count(*) FROM daemon_jobs WHERE job = 'second'")
        .await
        != 1
    {
        assert!(
            Instant::now() < deadline,
            "second not recorded in daemon_jobs"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let loaded_by = until(port, "/jobs", "daemons listed", |b| {
        b["jobs"][1]["daemons"]
            .as_array()
            .is_some_and(|d| d.len() == 1)
    })
    .await;
    assert_eq!(
        loaded_by["jobs"][1]["daemons"][0]["version"],
        loaded_by["jobs"][1]["version"]
    );

    // Edited: the new version. Broken: the last valid version keeps running.
    std::fs::write(jobs_dir.join("first.toml"), job("first", "SELECT 11")).expect("write");
    std::fs::write(
        jobs_dir.join("second.toml"),
        "name = \"second\"\nschedule = \"nope\"\n",
    )
    .expect("write");
    signal(&daemon.child, "-HUP");
    let health = until(port, "/health", "the broken file named", |b| {
        b["checks"]["jobs"]["invalid_files"]
            .as_array()
            .is_some_and(|f| !f.is_empty())
    })
    .await;
    let invalid = health["checks"]["jobs"]["invalid_files"][0]
        .as_str()
        .expect("text");
    assert!(
        invalid.contains("second.toml") && invalid.contains("keeps running"),
        "{invalid}"
    );
    let body = request(port, "GET", "/jobs", None, None).json();
    assert_eq!(job_names(&body), ["first", "second"]);
    assert_ne!(body["jobs"][0]["version"], Value::String(v1));

    // Removed: unloaded.
    std::fs::remove_file(jobs_dir.join("second.toml")).expect("remove");
    signal(&daemon.child, "-HUP");
    until(port, "/jobs", "second unloaded", |b| {
        job_names(b) == ["first"]
    })
    .await;

    // A queued run of a job no live daemon has loaded says so.
    sqlx::query(
        "INSERT INTO job_runs (job, run_type, interval_start, interval_end)
         VALUES ('ghost', 'manual', '2026-03-02', '2026-03-02 01:00')",
    )
    .execute(&env.pool)
    .await
    .expect("queue");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let note: Option<String> =
            sqlx::query_scalar("SELECT error FROM job_runs WHERE job = 'ghost'")
                .fetch_one(&env.pool)
                .await
                .expect("note");
        if note.as_deref() == Some("no live daemon has this job loaded") {
            break;
        }
        assert!(Instant::now() < deadline, "{note:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // SIGHUP never stopped it; SIGTERM does, and the log says so, last.
    assert!(daemon.child.try_wait().expect("wait").is_none(), "alive");
    signal(&daemon.child, "-TERM");
    let status = wait_for(&mut daemon.child, Duration::from_secs(30)).expect("stops");
    assert!(status.success(), "{status}");
    let text = read(&log);
    assert!(text.contains("job files reloaded"), "{text}");
    assert!(text.contains("waiting for open API connections"), "{text}");
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    assert!(
        last.contains("daemon stopped") && last.contains("SIGTERM"),
        "{text}"
    );
    // A stopped daemon has nothing loaded any more.
    assert_eq!(env.count("SELECT count(*) FROM daemon_jobs").await, 0);
    drop(daemon);
    env.cleanup().await;
}

/// `hxjobs serve` picks a new file up by itself (`jobs.reload_secs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_picks_up_a_new_job_file_by_itself() {
    let env = TestEnv::new("reload_scan").await;
    let config = env.config_with_jobs(
        "own",
        &[("first", job("first", "SELECT 1"))],
        "reload_secs = 1\n[api]\nhost = \"127.0.0.1\"\n[live_stats]\nenabled = false\n",
    );
    let port = free_port();
    let (server, _) = start(&env, &config, "serve", port);
    until(port, "/jobs", "first", |b| job_names(b) == ["first"]).await;
    std::fs::write(
        env.dir.path().join("own-jobs").join("later.toml"),
        job("later", "SELECT 3"),
    )
    .expect("write");
    until(port, "/jobs", "later loaded", |b| {
        job_names(b) == ["first", "later"]
    })
    .await;
    drop(server);
    env.cleanup().await;
}

/// A second daemon on a port in use says so at once and exits non-zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_on_a_busy_port_exits_at_once() {
    let env = TestEnv::new("busy_port").await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let config = env.config_with_jobs(
        "own",
        &[("first", job("first", "SELECT 1"))],
        "[api]\nhost = \"127.0.0.1\"\n[live_stats]\nenabled = false\n",
    );
    let started = Instant::now();
    let out = env
        .hxjobs(&config, &["daemon"])
        .env("BATCH_PROCESSING_API_PORT", port.to_string())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(started.elapsed() < Duration::from_secs(30));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{err}"
    );
    assert!(
        !err.contains("daemon started"),
        "it scheduled nothing: {err}"
    );
    drop(taken);
    env.cleanup().await;
}
