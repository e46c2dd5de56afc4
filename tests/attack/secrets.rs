//! Finding 4: a webhook URL's user, password and path token appeared in a
//! failed delivery's `last_error` (readable through the API), in the log
//! and in `hxjobs config`.

use std::time::Duration;

use crate::common::TestEnv;
use crate::{eventually, raw};

const TOKEN: &str = "TOKSECRET-1a2b3c4d5e";
const HOOK_USER: &str = "HOOKUSER-cafe01";
const HOOK_PASS: &str = "HOOKPASS-9f8e7d6c";
const SLACK_PATH: [&str; 3] = ["T0SECRET01", "B0SECRET02", "XXSECRETTOKEN1234567"];
const QUERY: &str = "QUERYSECRET77";
const SIGNING: &str = "SIGNSECRET-556677";
const MAIL: &str = "MAILSECRET-443322";
const DB: &str = "DBSECRET-778899";

fn secrets() -> Vec<&'static str> {
    let mut all = vec![TOKEN, HOOK_USER, HOOK_PASS, QUERY, SIGNING, MAIL, DB];
    all.extend(SLACK_PATH);
    all
}

fn assert_clean(what: &str, text: &str) {
    for s in secrets() {
        assert!(!text.contains(s), "{what} shows the secret {s}:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_is_ever_printed() {
    let env = TestEnv::new("attack_secrets").await;
    let port = crate::http::free_port();
    let closed = crate::http::free_port();
    let hook = format!(
        "http://{HOOK_USER}:{HOOK_PASS}@127.0.0.1:{closed}/services/{}/{}/{}?token={QUERY}",
        SLACK_PATH[0], SLACK_PATH[1], SLACK_PATH[2]
    );
    let failing = "name = \"boom\"\nschedule = \"0 0 1 1 *\"\ninterval = \"day\"\n\
        start_date = \"2026-01-01\"\n[tasks.t]\nkind = \"sql\"\nsql = \"SELECT 1/0\"\nretries = 0\n"
        .to_string();
    let cfg = env.config_with_jobs(
        "secrets",
        &[("boom", failing)],
        &format!(
            r#"[scheduler]
poll_secs = 1
[api]
host = "127.0.0.1"
port = {port}
[[api.tokens]]
name = "ops"
token = {{ env = "HXJOBS_TEST_TOKEN" }}
role = "admin"
[live_stats]
enabled = false
[notify]
on_failure = ["hook", "mail"]
max_attempts = 1
[[notify.targets]]
name = "hook"
kind = "webhook"
url = "{hook}"
secret = "{SIGNING}"
[[notify.targets]]
name = "mail"
kind = "email"
host = "127.0.0.1"
port = {closed}
security = "none"
username = "mailer"
password = {{ file = "{dir}/mail-password" }}
from = "hxjobs@example.test"
to = ["ops@example.test"]
"#,
            dir = env.dir.path().display()
        ),
    );
    std::fs::write(env.dir.path().join("mail-password"), format!("{MAIL}\n")).expect("secret file");
    let with_env = |mut c: std::process::Command| {
        c.env("HXJOBS_TEST_TOKEN", TOKEN);
        c
    };

    // `hxjobs config` says secrets are hidden: they are.
    let out = with_env(env.hxjobs(&cfg, &["config"]))
        .output()
        .expect("config");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(shown.contains("127.0.0.1"), "{shown}");
    assert_clean("hxjobs config", &shown);
    assert_clean(
        "hxjobs config (stderr)",
        &String::from_utf8_lossy(&out.stderr),
    );

    // A test message to each target fails: the errors name no secret.
    for target in ["hook", "mail"] {
        let out = with_env(env.hxjobs(&cfg, &["notify", "test", target]))
            .output()
            .expect("notify test");
        assert!(!out.status.success());
        assert_clean("hxjobs notify test", &String::from_utf8_lossy(&out.stdout));
        assert_clean("hxjobs notify test", &String::from_utf8_lossy(&out.stderr));
    }

    // A database that cannot be reached, its password in the URL.
    let out = with_env(env.hxjobs(&cfg, &["status"]))
        .env(
            "DATABASE_URL",
            format!("postgres://hxjobs:{DB}@127.0.0.1:1/none"),
        )
        .output()
        .expect("status");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("127.0.0.1:1"), "{err}");
    assert_clean("an unreachable database", &err);

    // A daemon: a run fails, its notifications fail to be delivered.
    let mut cmd = with_env(env.hxjobs(&cfg, &["daemon"]));
    let log = env.dir.path().join("daemon.log");
    let file = std::fs::File::create(&log).expect("log");
    let mut daemon = cmd
        .stdout(std::process::Stdio::null())
        .stderr(file)
        .spawn()
        .expect("daemon");
    let up = eventually(60, || async {
        raw(port, "GET", "/health", &[], b"").is_some()
    })
    .await;
    assert!(up, "the API did not start");
    let auth = format!("Bearer {TOKEN}");
    let r = raw(
        port,
        "POST",
        "/jobs/boom/runs",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        br#"{"interval_start": "2026-02-01"}"#,
    )
    .expect("trigger");
    assert_eq!(r.status, 202, "{}", r.text());
    let run = r.json()["run_id"].as_i64().expect("run id");
    let failed = eventually(90, || async {
        env.count("SELECT count(*) FROM notifications WHERE failed_at IS NOT NULL")
            .await
            >= 2
    })
    .await;
    assert!(failed, "the deliveries did not fail");
    let errors: Vec<String> =
        sqlx::query_scalar("SELECT coalesce(last_error, '') FROM notifications")
            .fetch_all(&env.pool)
            .await
            .expect("errors");
    assert!(errors.iter().any(|e| e.contains("127.0.0.1")), "{errors:?}");
    assert_clean("notifications.last_error", &errors.join("\n"));

    for (path, token) in [
        (format!("/runs/{run}"), None),
        (format!("/runs/{run}"), Some(auth.as_str())),
        (format!("/ui/runs/{run}"), None),
        (format!("/runs/{run}/tasks/t/logs"), None),
        ("/metrics".to_string(), None),
    ] {
        let headers: Vec<(&str, &str)> = token.map(|t| ("Authorization", t)).into_iter().collect();
        let r = raw(port, "GET", &path, &headers, b"").expect("answer");
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_clean(&path, &r.text());
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    std::thread::sleep(Duration::from_millis(100));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!text.is_empty(), "the daemon logged nothing");
    assert_clean("the daemon's log", &text);
    env.cleanup().await;
}
