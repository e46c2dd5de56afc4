//! What a new operator runs into: invalid job files, start dates, a closed
//! terminal, outages of PostgreSQL and the broker, metrics during them,
//! live stats through any message, the capacity rule, docs that hold.

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Timelike, Utc};
use hxjobs::demo::{DemoRecord, RecordKind};
use hxjobs::events::EventType;
use serde_json::Value;

use crate::api::{llm_event, Server};
use crate::common::TestEnv;
use crate::http::{free_port, request};
use crate::proxy::Proxy;
use crate::scheduler::{signal, wait_for, wait_until};

/// A `sql` job that records each interval it ran in `ran`.
fn recording_job(name: &str, interval: &str, start: &str, sql: &str) -> String {
    format!(
        r#"name = "{name}"
schedule = "0 0 1 1 *"
interval = "{interval}"
start_date = "{start}"
[catchup]
policy = "none"
[tasks.record]
kind = "sql"
sql = "{sql}INSERT INTO ran (job, interval_start) VALUES ('{{{{ job }}}}', '{{{{ interval_start }}}}')"
"#
    )
}

async fn ran_table(env: &TestEnv) {
    sqlx::query("CREATE TABLE ran (job text, interval_start timestamptz)")
        .execute(&env.pool)
        .await
        .expect("ran table");
}

/// A jobs directory of `files` and a config file pointing at it (plus `extra`).
fn jobs_config(env: &TestEnv, files: &[(&str, &str)], extra: &str) -> std::path::PathBuf {
    let dir = env.dir.path().join("own-jobs");
    std::fs::create_dir_all(&dir).expect("jobs dir");
    for (name, text) in files {
        std::fs::write(dir.join(name), text).expect("job file");
    }
    env.config_file(&format!(
        "[jobs]\ndir = {:?}\n{extra}",
        dir.display().to_string()
    ))
}

/// Starts `hxjobs <command>` with the API on a free port; waits until it answers.
pub(crate) fn start_api(
    env: &TestEnv,
    config: &std::path::Path,
    command: &str,
    log: &std::path::Path,
) -> Server {
    let port = free_port();
    let child = env
        .command()
        .arg("--config")
        .arg(config)
        .arg(command)
        .env("BATCH_PROCESSING_API_PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .expect("spawn hxjobs");
    let daemon = Server { child, port };
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the API did not start: {}",
            read(log)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    daemon
}

pub(crate) fn read(path: &std::path::Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

const API: &str = "[api]\nhost = \"127.0.0.1\"\n";

/// `hxjobs --config CONFIG ARGS…`, run to the end.
fn hxjobs(env: &TestEnv, config: &std::path::Path, args: &[&str]) -> Output {
    env.hxjobs(config, args).output().expect("run hxjobs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_invalid_job_file_stops_nothing() {
    let env = TestEnv::new("invalid_jobs").await;
    ran_table(&env).await;
    let ok = recording_job("ok", "day", "2026-01-01", "");
    let unknown_key = format!(
        "{}\nbogus = 1\n",
        recording_job("bad", "day", "2026-01-01", "")
    );
    let bad_cron =
        recording_job("cron", "day", "2026-01-01", "").replace("0 0 1 1 *", "61 * * * *");
    let config = jobs_config(
        &env,
        &[
            ("ok.toml", &ok),
            ("bad.toml", &unknown_key),
            ("cron.toml", &bad_cron),
        ],
        API,
    );

    // `jobs check` names every invalid file with its line, and exits 1.
    let out = hxjobs(&env, &config, &["jobs", "check"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("bad.toml:"), "{err}");
    assert!(err.contains("cron.toml:2"), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 jobs valid"));

    // The valid job runs; its log lines carry no colour codes in a file.
    let out = hxjobs(
        &env,
        &config,
        &["run", "ok", "--interval-start", "2026-03-01"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains('\u{1b}'), "ANSI codes in a pipe: {err:?}");
    assert!(err.contains("invalid job file"), "{err}");
    assert_eq!(
        env.count("SELECT count(*) FROM ran WHERE job = 'ok' AND interval_start = '2026-03-01'")
            .await,
        1
    );
    // `--color always` colours them anyway.
    let out = hxjobs(
        &env,
        &config,
        &[
            "--color",
            "always",
            "run",
            "ok",
            "--interval-start",
            "2026-03-02",
        ],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains('\u{1b}'));

    // The invalid one is a usage error that shows its own problem.
    let out = hxjobs(&env, &config, &["run", "bad"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("bad.toml") && err.contains("bogus"), "{err}");

    // The daemon starts and says which files are invalid.
    let log = env.dir.path().join("daemon.log");
    let daemon = start_api(&env, &config, "daemon", &log);
    let deadline = Instant::now() + Duration::from_secs(30);
    let health = loop {
        let r = request(daemon.port, "GET", "/health", None, None);
        let v = r.json();
        if v["checks"]["database"]["status"] == "up" {
            break v;
        }
        assert!(Instant::now() < deadline, "{v}");
        std::thread::sleep(Duration::from_millis(300));
    };
    let jobs = &health["checks"]["jobs"];
    assert_eq!(jobs["status"], "invalid_files", "{health}");
    assert_eq!(jobs["loaded"], 1, "{health}");
    assert_eq!(
        jobs["invalid_files"].as_array().map(Vec::len),
        Some(2),
        "{health}"
    );
    let metrics = request(daemon.port, "GET", "/metrics", None, None).text();
    assert!(
        metrics.contains("\nhxjobs_job_files_invalid 2"),
        "{metrics}"
    );
    let listed = request(daemon.port, "GET", "/jobs", None, None).json();
    assert_eq!(listed["jobs"].as_array().map(Vec::len), Some(1), "{listed}");
    drop(daemon);
    let log = read(&log);
    assert!(log.contains("cron.toml:2"), "{log}");
    for noise in ["\u{1b}[", "Uninited", "Job creator created"] {
        assert!(
            !log.contains(noise),
            "{noise:?} in the daemon's log:\n{log}"
        );
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_runs_before_start_date_unless_asked() {
    let env = TestEnv::new("start_date").await;
    ran_table(&env).await;
    let job = recording_job("daily", "day", "2026-01-01", "");
    let config = jobs_config(&env, &[("daily.toml", &job)], "");
    let hxjobs = |args: &[&str]| hxjobs(&env, &config, args);
    let out = hxjobs(&[
        "backfill",
        "daily",
        "--from",
        "2025-12-30",
        "--to",
        "2026-01-02",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("starts on 2026-01-01") && err.contains("--ignore-start-date"),
        "{err}"
    );
    let out = hxjobs(&["run", "daily", "--interval-start", "2025-06-01"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(
        env.count("SELECT count(*) FROM job_runs").await,
        0,
        "nothing queued"
    );
    assert_eq!(env.count("SELECT count(*) FROM ran").await, 0);

    let out = hxjobs(&[
        "backfill",
        "daily",
        "--from",
        "2025-12-30",
        "--to",
        "2026-01-02",
        "--ignore-start-date",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = hxjobs(&[
        "run",
        "daily",
        "--interval-start",
        "2025-06-01",
        "--ignore-start-date",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        env.count("SELECT count(*) FROM ran WHERE interval_start < '2026-01-01'")
            .await,
        3
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_terminal_hands_runs_back_and_unfinished_backfills_fail() {
    let env = TestEnv::new("sighup").await;
    ran_table(&env).await;
    let job = recording_job("slow", "day", "2025-01-01", "SELECT pg_sleep(1.5); ");
    let config = jobs_config(&env, &[("slow.toml", &job)], "");
    let args = [
        "--config",
        &config.display().to_string(),
        "backfill",
        "slow",
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
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("backfill");
    let running = "SELECT count(*) FROM job_runs WHERE state = 'running'";
    assert!(wait_until(&env, running, 1, Duration::from_secs(60)).await >= 1);
    signal(&child, "-HUP");
    let status = wait_for(&mut child, Duration::from_secs(30)).expect("backfill stops on SIGHUP");
    assert_eq!(status.code(), Some(130));
    assert_eq!(env.count(running).await, 0, "runs handed back");

    // Two intervals held by another live process: the backfill does the
    // rest, then says that two are not done and exits non-zero.
    sqlx::query(
        "UPDATE job_runs SET state = 'running', worker = 'elsewhere', heartbeat_at = now() + interval '1 hour'
         WHERE id IN (SELECT id FROM job_runs WHERE state = 'queued' ORDER BY interval_start DESC LIMIT 2)",
    )
    .execute(&env.pool)
    .await
    .expect("hold two");
    let out = env.command().args(&args).output().expect("backfill again");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("2 of 10 intervals have not succeeded"),
        "{err}"
    );
    assert!(err.contains("2 running elsewhere"), "{err}");
    assert_eq!(
        env.count("SELECT count(*) FROM job_runs WHERE state = 'success'")
            .await,
        8
    );
    env.cleanup().await;
}

/// Inserts an hourly rollup row with `events` llm_request events.
async fn hour_row(env: &TestEnv, at: chrono::DateTime<Utc>, events: i64) {
    sqlx::query(
        "INSERT INTO rollups (grain, bucket_start, event_type, source, subject, event_count,
             error_count, latency_count, latency_sum_ms, prompt_tokens, completion_tokens, cost_usd,
             rating_sum, rating_count, value_sum, distinct_users)
         VALUES ('hour', $1, 'llm_request', 'api', 'm', $2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)",
    )
    .bind(at)
    .bind(events)
    .execute(&env.pool)
    .await
    .expect("rollup row");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_leaves_out_the_day_under_way() {
    let env = TestEnv::new("capacity_today").await;
    let now = Utc::now();
    let today = now.date_naive();
    let midnight = today.and_time(chrono::NaiveTime::MIN).and_utc();
    for d in 1..=3i64 {
        for h in 0..24 {
            let at = midnight - TimeDelta::days(d) + TimeDelta::hours(h);
            hour_row(&env, at, 36_000 * (4 - d)).await;
        }
    }
    for h in 0..=i64::from(now.hour()) {
        hour_row(&env, midnight + TimeDelta::hours(h), 10).await;
    }
    let out_dir = env.dir.path().join("reports");
    let config = env.config_file(&format!(
        "[reports]\noutput_dir = {:?}\n",
        out_dir.display().to_string()
    ));
    let hxjobs = |args: &[&str]| {
        let out = hxjobs(&env, &config, args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let cli: Value = serde_json::from_str(&hxjobs(&["capacity"])).expect("capacity JSON");
    let days: Vec<String> = cli["days"]
        .as_array()
        .expect("days")
        .iter()
        .map(|d| d["day"].as_str().unwrap_or_default().to_string())
        .collect();
    let (yesterday, today) = ((today - TimeDelta::days(1)).to_string(), today.to_string());
    assert!(
        days.contains(&yesterday) && !days.contains(&today),
        "{days:?}"
    );

    // The capacity report of the month under way applies the same rule.
    let printed = hxjobs(&[
        "report",
        "generate",
        "--type",
        "capacity_analysis",
        "--format",
        "json",
        "--period-start",
        &today,
    ]);
    let path = printed.lines().last().expect("path").trim().to_string();
    let report: Value =
        serde_json::from_slice(&std::fs::read(&path).expect("report file")).expect("report JSON");
    let first_cells: Vec<String> = report["sections"]
        .as_array()
        .expect("sections")
        .iter()
        .flat_map(|s| s["rows"].as_array().cloned().unwrap_or_default())
        .filter_map(|r| r[0].as_str().map(str::to_string))
        .collect();
    assert!(first_cells.contains(&yesterday), "{first_cells:?}");
    assert!(
        !first_cells.contains(&today),
        "today's partial day counted: {first_cells:?}"
    );
    let forecast = serde_json::to_string(&report).expect("json");
    assert!(!forecast.contains("not growing"), "{forecast}");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_stay_up_while_postgres_and_the_broker_are_down() {
    let env = TestEnv::new("metrics_outage").await;
    let pg_port = free_port();
    let url = env.config.database.url.expose();
    let db = url.replace("@127.0.0.1:5432/", &format!("@127.0.0.1:{pg_port}/"));
    assert_ne!(db, url, "the test database is on 127.0.0.1:5432");
    let proxy = Proxy::open(pg_port, "127.0.0.1:5432".into()).await;
    let config = env.config_file(API);
    let log = env.dir.path().join("serve.log");
    let port = free_port();
    let child = env
        .command()
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .env("DATABASE_URL", &db)
        .env(
            "KAFKA_BOOTSTRAP_SERVERS",
            format!("127.0.0.1:{}", free_port()),
        )
        .env("BATCH_PROCESSING_API_PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("serve");
    let server = Server { child, port };
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{}", read(&log));
        std::thread::sleep(Duration::from_millis(200));
    }
    let scrape = |want: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let asked = Instant::now();
            let r = request(server.port, "GET", "/metrics", None, None);
            // Far inside Prometheus' 10 s scrape timeout (the 50 ms target
            // is measured by `hxjobs bench api`).
            assert!(
                asked.elapsed() < Duration::from_secs(5),
                "{:?}",
                asked.elapsed()
            );
            assert_eq!(r.status, 200);
            let text = r.text();
            if text.contains(want) {
                return text;
            }
            assert!(Instant::now() < deadline, "{want} not in:\n{text}");
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    let text = scrape("hxjobs_dependency_up{dependency=\"kafka\"} 0");
    assert!(
        text.contains("hxjobs_dependency_up{dependency=\"postgresql\"} 1"),
        "{text}"
    );
    // Every metric has a description.
    for line in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let name = line.split_whitespace().next().unwrap_or_default();
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "no HELP for {name}:\n{text}"
        );
    }
    proxy.close().await;
    scrape("hxjobs_dependency_up{dependency=\"postgresql\"} 0");
    drop(server);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_waits_for_an_unreachable_broker_instead_of_failing() {
    let env = TestEnv::new("broker_wait").await;
    let port = free_port();
    let job = r#"name = "drain"
schedule = "0 0 1 1 *"
interval = "hour"
start_date = "2026-01-01"
[tasks.ingest]
kind = "ingest"
retries = 0
retry_delay_secs = 1
timeout_secs = 120
"#;
    let config = jobs_config(&env, &[("drain.toml", job)], "");
    let child = env
        .command()
        .arg("--config")
        .arg(&config)
        .args(["run", "drain"])
        .env("KAFKA_BOOTSTRAP_SERVERS", format!("127.0.0.1:{port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run");
    // The broker "comes back" after the first attempt failed.
    let failed_once = "SELECT count(*) FROM task_instances WHERE state = 'up_for_retry'";
    assert!(wait_until(&env, failed_once, 1, Duration::from_secs(60)).await >= 1);
    let proxy = Proxy::open(port, env.config.kafka.bootstrap_servers.clone()).await;
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("output");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("waiting for it"), "{err}");
    assert_eq!(
        env.count("SELECT count(*) FROM task_instances WHERE state = 'success' AND attempt = 1")
            .await,
        1
    );
    proxy.close().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_stats_count_through_an_oversized_message() {
    let env = TestEnv::new("live_big").await;
    let config = env.config_file(API);
    let log = env.dir.path().join("serve.log");
    let server = start_api(&env, &config, "serve", &log);
    // Live stats start at the ends: wait until the consumer is there.
    let deadline = Instant::now() + Duration::from_secs(30);
    while request(server.port, "GET", "/stats", None, None).status != 200 {
        assert!(Instant::now() < deadline, "{}", read(&log));
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_secs(3));
    // One message over a fetch (1.5 MiB, not an event) on every partition,
    // then good events behind it.
    let mut records: Vec<DemoRecord> = (0..12)
        .map(|i| DemoRecord {
            event_type: EventType::LlmRequest,
            key: format!("big-{i}"),
            payload: Some(vec![b'x'; 3 << 19]),
            kind: RecordKind::Event,
        })
        .collect();
    records.extend((0..300).map(|i| llm_event(i, "m", 10.0, "success")));
    env.produce(records).await;
    // Each stalled partition is re-read with larger fetches after 10 s
    // without progress; with the whole suite loading both cores that can
    // take a while, so this waits generously (it asserts that counting
    // resumes, not how fast).
    let deadline = Instant::now() + Duration::from_secs(240);
    let stats = loop {
        let s = request(server.port, "GET", "/stats", None, None).json();
        if s["total"]["5m"]["events"] == 300 && s["rejected_total"] == 12 {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "live stats stopped counting: {} of 300 events, {} of 12 rejected",
            s["total"]["5m"]["events"],
            s["rejected_total"]
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(stats["consumed_total"], 312, "{stats}");
    // Caught up: the lag is the real distance to the ends.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = request(server.port, "GET", "/stats", None, None).json();
        if s["behind_messages"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{s}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let metrics = request(server.port, "GET", "/metrics", None, None).text();
    assert!(
        metrics.contains("live_stats_rejected_total 12"),
        "{metrics}"
    );
    drop(server);
    env.cleanup().await;
}

/// Every relative link in the README and docs/ points at a file in the
/// repository (a clone has nothing beside it), and no doc describes a
/// capability as missing that the binary has.
#[test]
fn docs_link_inside_the_repository_and_say_what_is_built() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut docs = vec![root.join("README.md"), root.join("reports/README.md")];
    for entry in std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .flatten()
    {
        if entry.path().extension().is_some_and(|e| e == "md") {
            docs.push(entry.path());
        }
    }
    for doc in &docs {
        let text = std::fs::read_to_string(doc).expect("doc");
        let dir = doc.parent().expect("dir");
        for (i, _) in text.match_indices("](") {
            let rest = &text[i + 2..];
            let target = &rest[..rest.find(')').unwrap_or(0)];
            let path = target.split('#').next().unwrap_or_default();
            if path.is_empty() || path.contains("://") || path.starts_with("mailto:") {
                continue;
            }
            let resolved = dir.join(path);
            assert!(resolved.exists(), "{}: broken link {target}", doc.display());
            let inside = resolved
                .canonicalize()
                .is_ok_and(|p| p.starts_with(root.canonicalize().expect("root")));
            assert!(inside, "{}: {target} leaves the repository", doc.display());
        }
        for stale in ["not available in this build", "not built yet"] {
            assert!(!text.contains(stale), "{}: {stale:?}", doc.display());
        }
    }
    assert!(root.join("docs/events.md").exists());
}
