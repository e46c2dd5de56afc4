//! The web console over HTTP against `hxjobs serve` and a real database: a
//! failed task in the grid, its log escaped, cleared from its run's page
//! (CSRF checked), then succeeded.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::TestEnv;
use crate::http::{free_port, get_page, post_form, request};

/// `hxjobs serve`, stopped when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(env: &TestEnv, cfg: &std::path::Path, port: u16) -> Server {
    let child = env
        .hxjobs(cfg, &["serve"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve");
    let server = Server(child);
    let until = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "the API did not start");
        std::thread::sleep(Duration::from_millis(200));
    }
    server
}

fn csrf_of(html: &str) -> String {
    let at = html.find(r#"name="csrf" value=""#).expect("a CSRF field") + 19;
    html[at..].split('"').next().expect("value").to_string()
}

fn page(port: u16, path: &str) -> String {
    let r = request(port, "GET", path, None, None);
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    let csp = r.header("content-security-policy").unwrap_or_default();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{path}: {csp}"
    );
    r.text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_task_is_found_in_the_grid_read_escaped_cleared_and_succeeds() {
    let env = TestEnv::new("ui_console").await;
    let fixed = env.dir.path().join("fixed");
    let job = format!(
        r#"name = "console"
description = "a <b>job</b> for the console"
schedule = "0 0 1 1 *"
interval = "day"
start_date = "2026-01-01"
[tasks.first]
kind = "shell"
command = "echo '<script>alert(1)</script>'"
[tasks.flaky]
kind = "shell"
depends_on = ["first"]
command = "echo trying; test -e '{}'"
[tasks.last]
kind = "shell"
depends_on = ["flaky"]
command = "echo done"
"#,
        fixed.display()
    );
    let port = free_port();
    // A job queued when ingest has stored its hour: what it waits on.
    let stored = r#"name = "stored"
trigger = "complete"
schedule = "0 0 1 1 *"
interval = "hour"
start_date = "2026-01-01"
[tasks.noop]
kind = "sql"
sql = "SELECT 1"
"#
    .to_string();
    let cfg = env.config_with_jobs(
        "ui",
        &[("console", job), ("stored", stored)],
        &format!("[api]\nhost = \"127.0.0.1\"\nport = {port}\n"),
    );
    let out = env.hxjobs(&cfg, &["run", "console"]).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    let id: i64 = sqlx::query_scalar("SELECT max(id) FROM job_runs WHERE job = 'console'")
        .fetch_one(&env.pool)
        .await
        .expect("run");
    let _server = serve(&env, &cfg, port);

    // `/` leads to the console; the overview and the jobs list show it.
    let r = request(port, "GET", "/", None, None);
    assert_eq!((r.status, r.header("location")), (303, Some("/ui/")));
    let overview = page(port, "/ui/");
    assert!(overview.contains("1 failed"), "{overview}");
    // The store where reports and archives go, and whether it answers.
    let store = overview
        .split(r#"id="storage""#)
        .nth(1)
        .expect("a storage card");
    assert!(store.contains(r#"class="badge s-up""#), "{store}");
    assert!(store.contains(&env.config.storage.url), "{store}");
    let jobs = page(port, "/ui/jobs");
    assert!(jobs.contains(r#"data-job="console""#), "{jobs}");
    assert!(jobs.contains(&format!(r#"class="sq s-failed" href="/ui/runs/{id}""#)));
    // Its description is text, not markup.
    assert!(jobs.contains("a &lt;b&gt;job&lt;/b&gt; for the console"));
    let row = jobs
        .split(r#"data-job="stored""#)
        .nth(1)
        .and_then(|r| r.split("</tr>").next())
        .expect("the stored job's row");
    assert!(
        row.contains("When each hour's events are stored, or at the latest:"),
        "{row}"
    );
    assert!(
        row.contains(r#"<div class="waiting">the hour from "#)
            && row.contains("a partition has never caught up"),
        "{row}"
    );
    let out = env
        .hxjobs(&cfg, &["jobs", "list"])
        .output()
        .expect("jobs list");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("queued when each hour's events are stored; waiting on the hour from "),
        "{text}"
    );

    // The grid: the failed task's cell, and what it blocked.
    let grid = page(port, "/ui/jobs/console");
    for (task, state) in [
        ("first", "success"),
        ("flaky", "failed"),
        ("last", "upstream_failed"),
    ] {
        let cell = format!(r#"class="c s-{state}" href="/ui/runs/{id}?task={task}#log""#);
        assert!(grid.contains(&cell), "{cell} in {grid}");
    }
    let filtered = page(port, "/ui/jobs/console?state=success&runs=25");
    assert!(filtered.contains("No runs match."), "{filtered}");
    let bad = request(port, "GET", "/ui/jobs/console?runs=7", None, None);
    assert_eq!(bad.status, 400);

    // The log of a task that printed a script tag shows it as text.
    let run_page = page(port, &format!("/ui/runs/{id}?task=first"));
    assert!(run_page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!run_page.contains("<script>alert(1)"));
    let flaky_page = get_page(port, &format!("/ui/runs/{id}?task=flaky"), None);
    let visitor = flaky_page
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .expect("a visitor cookie")
        .to_string();
    let flaky = flaky_page.text();
    assert!(flaky.contains("trying"), "{flaky}");

    // Clearing needs the page's CSRF token; with it, flaky and what
    // follows run again.
    let form = |csrf: &str| format!("csrf={csrf}&task=flaky&downstream=true&reason=disk+fixed");
    let forged = post_form(
        port,
        &format!("/ui/runs/{id}/clear"),
        Some(&visitor),
        &form("nope"),
    );
    assert_eq!(forged.status, 403, "{}", forged.text());
    assert_eq!(
        env.count(&format!(
            "SELECT count(*) FROM job_runs WHERE id = {id} AND state = 'failed'"
        ))
        .await,
        1
    );
    std::fs::write(&fixed, "").expect("fix");
    let cleared = post_form(
        port,
        &format!("/ui/runs/{id}/clear"),
        Some(&visitor),
        &form(&csrf_of(&flaky)),
    );
    assert_eq!(cleared.status, 303, "{}", cleared.text());
    assert_eq!(
        cleared.header("location"),
        Some(format!("/ui/runs/{id}").as_str())
    );
    let action: (String, String, Option<String>) =
        sqlx::query_as("SELECT actor, action, reason FROM run_actions WHERE run_id = $1")
            .bind(id)
            .fetch_one(&env.pool)
            .await
            .expect("action");
    assert_eq!(
        action,
        (
            "ui:loopback".into(),
            "clear".into(),
            Some("disk fixed".into())
        )
    );
    let once = env
        .hxjobs(&cfg, &["daemon", "--once", "--no-api"])
        .output()
        .expect("daemon");
    assert!(once.status.success());
    let after = page(port, &format!("/ui/runs/{id}"));
    assert!(after.contains(r#"<span class="badge s-success">success</span>"#));
    // After the clear, a task's start is its new try's, and its tries count
    // every attempt of every claim.
    let restarted: bool = sqlx::query_scalar(
        "SELECT t.started_at >= r.cleared_at FROM task_instances t JOIN job_runs r ON r.id = t.run_id
         WHERE t.run_id = $1 AND t.task = 'flaky'",
    )
    .bind(id)
    .fetch_one(&env.pool)
    .await
    .expect("started");
    assert!(restarted, "the cleared task shows its new start");
    let tries = env
        .count(&format!(
            "SELECT count(*) FROM task_attempts WHERE run_id = {id} AND task = 'flaky'"
        ))
        .await;
    assert!(tries >= 2);
    let row_at = after.find(r#"<tr id="t-flaky">"#).expect("flaky row");
    let row = &after[row_at
        ..after[row_at..]
            .find("</tr>")
            .map_or(after.len(), |e| row_at + e)];
    assert!(
        row.contains(&format!(r#"<td class="num">{tries}</td>"#)),
        "{tries} tries in {row}"
    );
    let grid = page(port, "/ui/jobs/console");
    assert!(grid.contains(&format!(
        r#"class="c s-success" href="/ui/runs/{id}?task=last#log""#
    )));
    // The daemon said it was alive.
    let overview = page(port, "/ui/");
    assert!(
        overview.contains("Daemons") && overview.contains("stopped"),
        "{overview}"
    );
    env.cleanup().await;
}
