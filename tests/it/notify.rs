//! Notifications against real receivers on loopback: an HTTP server that
//! records webhook calls (and checks their HMAC), an SMTP server that
//! records mails. A failed run is told once per target even when the
//! daemon delivering it is killed; a deadline fires with no scheduler.

use std::path::PathBuf;
use std::process::{Child, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::common::TestEnv;
use crate::scheduler::wait_until;

const SECRET: &str = "hook-s3cret";

/// A webhook call as the receiver saw it.
#[derive(Debug, Clone)]
struct Call {
    event: String,
    delivery: String,
    body: Value,
    signed_ok: bool,
    answered: u16,
}

#[derive(Clone, Default)]
struct Hook {
    calls: Arc<Mutex<Vec<Call>>>,
    /// Answer 500 to this many calls first.
    fail_first: Arc<AtomicUsize>,
}

async fn receive(
    State(hook): State<Hook>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let header = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("hmac");
    mac.update(&body);
    let want: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let failing = hook
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let status = if failing { 500 } else { 200 };
    hook.calls.lock().expect("calls").push(Call {
        event: header("x-hxjobs-event"),
        delivery: header("x-hxjobs-delivery"),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        signed_ok: header("x-hxjobs-signature-256") == format!("sha256={want}"),
        answered: status,
    });
    StatusCode::from_u16(status).expect("status")
}

async fn start_hook(hook: Hook) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(hook);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    port
}

/// A minimal SMTP server: accepts every mail and keeps its text.
async fn start_smtp(mails: Arc<Mutex<Vec<String>>>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let mails = mails.clone();
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read);
                let _ = write.write_all(b"220 localhost test SMTP\r\n").await;
                let mut line = String::new();
                loop {
                    line.clear();
                    if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let verb = line.get(..4).unwrap_or_default().to_ascii_uppercase();
                    let reply: &[u8] = match verb.as_str() {
                        "EHLO" | "HELO" => b"250-localhost\r\n250 OK\r\n",
                        "DATA" => {
                            let _ = write.write_all(b"354 go on\r\n").await;
                            let mut mail = String::new();
                            loop {
                                line.clear();
                                if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
                                    return;
                                }
                                if line == ".\r\n" {
                                    break;
                                }
                                mail.push_str(&line);
                            }
                            mails.lock().expect("mails").push(mail);
                            b"250 queued\r\n"
                        }
                        "QUIT" => {
                            let _ = write.write_all(b"221 bye\r\n").await;
                            return;
                        }
                        _ => b"250 OK\r\n",
                    };
                    let _ = write.write_all(reply).await;
                }
            });
        }
    });
    port
}

/// Two targets, `hook` (signed webhook) and `mail`; `[notify]` rules are
/// `on_failure = ["hook"]` and `rules`; `extra` goes last.
fn config(
    env: &TestEnv,
    jobs: &[(&str, String)],
    (hook_port, smtp_port): (u16, u16),
    rules: &str,
    extra: &str,
) -> PathBuf {
    env.config_with_jobs(
        "notify",
        jobs,
        &format!(
            r#"[scheduler]
poll_secs = 1
[api]
host = "127.0.0.1"
public_url = "http://hxjobs.test"
[notify]
on_failure = ["hook"]
{rules}
[[notify.targets]]
name = "hook"
kind = "webhook"
url = "http://127.0.0.1:{hook_port}/hook"
secret = "{SECRET}"
[[notify.targets]]
name = "mail"
kind = "email"
host = "127.0.0.1"
port = {smtp_port}
security = "none"
from = "hxjobs@example.test"
to = ["ops@example.test"]
{extra}"#
        ),
    )
}

fn hxjobs(env: &TestEnv, config: &std::path::Path, args: &[&str]) -> Output {
    env.hxjobs(config, args).output().expect("run hxjobs")
}

fn spawn(env: &TestEnv, config: &std::path::Path, args: &[&str]) -> Child {
    env.hxjobs(config, args)
        .env(
            "BATCH_PROCESSING_API_PORT",
            crate::http::free_port().to_string(),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn hxjobs")
}

fn delivered(calls: &[Call], event: &str) -> Vec<Call> {
    calls
        .iter()
        .filter(|c| c.event == event && c.answered == 200)
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_is_told_once_per_target_across_a_killed_daemon() {
    let env = TestEnv::new("notify_failed").await;
    let hook = Hook::default();
    // The webhook answers 500 until the daemon is killed.
    hook.fail_first.store(usize::MAX, Ordering::SeqCst);
    let hook_port = start_hook(hook.clone()).await;
    let mails = Arc::new(Mutex::new(Vec::new()));
    let smtp_port = start_smtp(mails.clone()).await;
    let job = r#"name = "failing"
schedule = "0 0 1 1 *"
interval = "day"
start_date = "2026-01-01"
on_failure = ["mail"]
on_task_failure = ["hook"]
[tasks.boom]
kind = "shell"
command = "echo about to fail; exit 3"
"#
    .to_string();
    let cfg = config(&env, &[("failing", job)], (hook_port, smtp_port), "", "");

    // The run fails; its notifications are recorded with it (the command
    // line does not deliver them).
    let out = hxjobs(&env, &cfg, &["run", "failing"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(env.count("SELECT count(*) FROM notifications").await, 3);
    assert_eq!(
        env.count("SELECT count(*) FROM notifications WHERE delivered_at IS NOT NULL")
            .await,
        0
    );

    // A daemon tries (the webhook answers 500), then dies by SIGKILL.
    let mut daemon = spawn(&env, &cfg, &["daemon", "--no-api"]);
    let tried = wait_until(
        &env,
        "SELECT count(*) FROM notification_attempts WHERE NOT ok",
        2,
        Duration::from_secs(60),
    )
    .await;
    assert!(tried >= 2, "no failed delivery attempt recorded");
    // The mail went through: killed after its send was recorded, the
    // daemon must not have it sent again (a kill between the send and its
    // record would, by design: at least once).
    let mailed = wait_until(
        &env,
        "SELECT count(*) FROM notifications WHERE target = 'mail' AND delivered_at IS NOT NULL",
        1,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(mailed, 1, "the mail was not delivered by the first daemon");
    let _ = daemon.kill();
    let _ = daemon.wait();
    hook.fail_first.store(0, Ordering::SeqCst);

    // Another daemon delivers what is left.
    let mut daemon = spawn(&env, &cfg, &["daemon", "--no-api"]);
    let done = wait_until(
        &env,
        "SELECT count(*) FROM notifications WHERE delivered_at IS NOT NULL",
        3,
        Duration::from_secs(90),
    )
    .await;
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert_eq!(done, 3);

    let calls = hook.calls.lock().expect("calls").clone();
    assert!(
        calls.iter().all(|c| c.signed_ok),
        "every call carries a valid signature"
    );
    let failed = delivered(&calls, "run_failed");
    let task = delivered(&calls, "task_failed");
    assert_eq!((failed.len(), task.len()), (1, 1), "{calls:?}");
    let text = failed[0].body["text"].as_str().unwrap_or_default();
    assert!(text.contains("failing run"), "{text}");
    assert!(text.contains("failed for [2"), "{text}");
    assert!(
        text.contains("boom: exit status: 3 (about to fail)") || text.contains("boom"),
        "{text}"
    );
    let run_id = failed[0].body["hxjobs"]["run_id"].as_i64().expect("run id");
    assert!(
        text.contains(&format!("http://hxjobs.test/runs/{run_id}")),
        "{text}"
    );
    assert_eq!(task[0].body["hxjobs"]["task"], "boom");
    assert_eq!(task[0].body["hxjobs"]["try"], 1);
    // A repeat would carry the same delivery id.
    assert_ne!(failed[0].delivery, task[0].delivery);
    let mails = mails.lock().expect("mails").clone();
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert!(mails[0].contains("To: ops@example.test"), "{}", mails[0]);
    assert!(mails[0].contains("failing run"), "{}", mails[0]);
    // Every attempt is recorded: the failed ones, then one success each.
    let hook_attempts = env
        .count(
            "SELECT count(*) FROM notification_attempts a JOIN notifications n ON n.id = a.notification_id
             WHERE n.target = 'hook' AND n.event = 'run_failed' AND NOT a.ok",
        )
        .await;
    assert!(hook_attempts >= 1);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_fires_with_no_scheduler_running() {
    let env = TestEnv::new("notify_deadline").await;
    let hook = Hook::default();
    let hook_port = start_hook(hook.clone()).await;
    let smtp_port = start_smtp(Arc::new(Mutex::new(Vec::new()))).await;
    let job = r#"name = "minutely"
schedule = "* * * * *"
interval = "minute"
start_date = "2026-01-01"
deadline = "1s"
on_late = ["hook"]
[tasks.t]
kind = "shell"
command = "true"
"#
    .to_string();
    let cfg = config(&env, &[("minutely", job)], (hook_port, smtp_port), "", "");
    // The API alone: nothing runs the job.
    let mut serve = spawn(&env, &cfg, &["serve"]);
    let deadline = Instant::now() + Duration::from_secs(100);
    let late = loop {
        let calls = hook.calls.lock().expect("calls").clone();
        let late = delivered(&calls, "deadline_missed");
        if !late.is_empty() || Instant::now() > deadline {
            break late;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let _ = serve.kill();
    let _ = serve.wait();
    assert!(!late.is_empty(), "no deadline_missed notification");
    let body = &late[0].body["hxjobs"];
    assert_eq!(body["job"], "minutely");
    assert_eq!(body["status"], "no run yet");
    let start = body["interval_start"].as_str().expect("start").to_string();
    let rows = env
        .count(&format!(
            "SELECT count(*) FROM late_intervals WHERE job = 'minutely' AND interval_start = '{start}'"
        ))
        .await;
    assert_eq!(rows, 1);
    // One notification per late interval and target, not one per check.
    let per = env
        .count(
            "SELECT max(n) FROM (SELECT count(*) AS n FROM notifications
                                 WHERE event = 'deadline_missed' GROUP BY payload->>'interval_start') x",
        )
        .await;
    assert_eq!(per, 1);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_messages_and_bad_targets() {
    let env = TestEnv::new("notify_test").await;
    let hook = Hook::default();
    let hook_port = start_hook(hook.clone()).await;
    let mails = Arc::new(Mutex::new(Vec::new()));
    let smtp_port = start_smtp(mails.clone()).await;
    let cfg = config(&env, &[], (hook_port, smtp_port), "", "");
    let out = hxjobs(&env, &cfg, &["notify", "test", "hook"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("HTTP 200"));
    let out = hxjobs(&env, &cfg, &["notify", "test", "mail"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(hook.calls.lock().expect("calls")[0].event, "test");
    assert_eq!(mails.lock().expect("mails").len(), 1);
    let out = hxjobs(&env, &cfg, &["notify", "test", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("configured: hook, mail"));

    // A receiver that refuses: an error with the answer, exit 1.
    hook.fail_first.store(1, Ordering::SeqCst);
    let out = hxjobs(&env, &cfg, &["notify", "test", "hook"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("HTTP 500"));
    // Each test message is in the audit log with how it ended.
    let outcomes: Vec<String> = sqlx::query_scalar(
        "SELECT target || ':' || outcome FROM audit
         WHERE action = 'notify_test' AND actor LIKE 'cli:%' ORDER BY id",
    )
    .fetch_all(&env.pool)
    .await
    .expect("audit");
    assert_eq!(
        outcomes,
        ["hook:ok", "mail:ok", "nope:failed", "hook:failed"],
        "audit log"
    );

    // Bad targets are configuration errors naming the key.
    for (extra, key) in [
        ("[[notify.targets]]\nname = \"x\"\nkind = \"webhook\"\nurl = \"ftp:/nope\"\n", "notify.targets[2].url"),
        ("[[notify.targets]]\nname = \"y\"\nkind = \"webhook\"\nurl = \"https://h.test/\"\nsecret = \"\"\n", "notify.targets[2].secret"),
    ] {
        let bad = config(&env, &[], (hook_port, smtp_port), "", extra);
        let out = hxjobs(&env, &bad, &["notify", "list"]);
        assert_eq!(out.status.code(), Some(2), "{extra}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(key), "{}", String::from_utf8_lossy(&out.stderr));
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recoveries_and_ingest_alerts_are_recorded_once() {
    let env = TestEnv::new("notify_recovered").await;
    let hook = Hook::default();
    let hook_port = start_hook(hook.clone()).await;
    let smtp_port = start_smtp(Arc::new(Mutex::new(Vec::new()))).await;
    // Fails its first try, succeeds its second: a recovery.
    let job = r#"name = "flaky"
schedule = "0 0 1 1 *"
interval = "day"
start_date = "2026-01-01"
on_recovered = ["hook"]
[tasks.t]
kind = "shell"
retries = 1
retry_delay_secs = 1
command = "test $HXJOBS_TRY -ge 2"
"#
    .to_string();
    let rules = "on_ingest = [\"mail\"]\ndead_letters_per_hour = 2";
    let cfg = config(&env, &[("flaky", job)], (hook_port, smtp_port), rules, "");
    let out = hxjobs(&env, &cfg, &["run", "flaky"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The run succeeded: no failure, one recovery for `hook`.
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT target, event FROM notifications ORDER BY id")
            .fetch_all(&env.pool)
            .await
            .expect("notifications");
    assert_eq!(rows, [("hook".to_string(), "run_recovered".to_string())]);

    // Three dead letters in this hour: over the threshold of two.
    for offset in 0..3i64 {
        sqlx::query(
            "INSERT INTO dead_letters (kafka_topic, kafka_partition, kafka_offset, reason, detail)
             VALUES ('llm-requests', 0, $1, 'invalid_json', 'test')",
        )
        .bind(offset)
        .execute(&env.pool)
        .await
        .expect("dead letter");
    }
    for _ in 0..2 {
        let once = hxjobs(&env, &cfg, &["daemon", "--once", "--no-api"]);
        assert!(
            once.status.success(),
            "{}",
            String::from_utf8_lossy(&once.stderr)
        );
    }
    let alerts: Vec<(String, Value)> =
        sqlx::query_as("SELECT target, payload FROM notifications WHERE event = 'dead_letters'")
            .fetch_all(&env.pool)
            .await
            .expect("alerts");
    assert_eq!(
        alerts.len(),
        1,
        "one per hour and target, not one per check"
    );
    assert_eq!(alerts[0].0, "mail");
    assert_eq!(alerts[0].1["count"], 3);
    assert_eq!(alerts[0].1["threshold"], 2);
    env.cleanup().await;
}
