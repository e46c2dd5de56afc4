//! The web console in a real browser: Debian's Chromium, headless, driven
//! through ChromeDriver on loopback (`scripts/services.sh browser` installs
//! both; `scripts/test.sh` runs it). Against a real daemon: a shell task
//! fails, is found in the grid, its log read, cleared, and succeeds; the
//! overview's live numbers move while events are produced. Each page's
//! screenshot is written to `docs/img/` (shown in the README).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::common::TestEnv;
use crate::http::free_port;

/// A child process stopped when dropped.
pub(crate) struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `hxjobs <command>` (`daemon`, `serve`) with `cfg`, quiet, once its API
/// answers on `port`; stopped when the guard drops.
pub(crate) fn start(env: &TestEnv, cfg: &std::path::Path, command: &str, port: u16) -> Guard {
    let child = env
        .hxjobs(cfg, &[command])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start hxjobs");
    let guard = Guard(child);
    wait_port(port, &format!("hxjobs {command}"));
    guard
}

fn wait_port(port: u16, what: &str) {
    let until = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "{what} did not open port {port}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// ChromeDriver on a loopback port, and a headless Chromium session.
pub(crate) async fn browser() -> (Guard, Client) {
    browser_with(&[]).await
}

/// A browser session with more Chromium arguments.
pub(crate) async fn browser_with(extra: &[&str]) -> (Guard, Client) {
    let port = free_port();
    let driver = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (scripts/services.sh browser installs it)");
    let driver = Guard(driver);
    wait_port(port, "chromedriver");
    // Two TLS back ends are linked: say which one the WebDriver client uses
    // (it talks plain HTTP to ChromeDriver on loopback).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut args = vec![
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        "--no-first-run",
        "--disable-extensions",
    ];
    args.extend_from_slice(extra);
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({ "binary": "/usr/bin/chromium", "args": args }),
    );
    let client = ClientBuilder::rustls()
        .expect("rustls")
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a browser session");
    (driver, client)
}

/// Saves the top of the page the browser shows as `docs/img/console-<name>.png`.
pub(crate) async fn screenshot(c: &Client, name: &str) {
    shoot(c, name, "window.scrollTo(0, 0)").await;
}

/// Saves the page from the element `css` selects down.
pub(crate) async fn screenshot_from(c: &Client, name: &str, css: &str) {
    let scroll = format!("document.querySelector({css:?}).scrollIntoView()");
    shoot(c, name, &scroll).await;
}

async fn shoot(c: &Client, name: &str, scroll: &str) {
    c.execute(scroll, vec![]).await.expect("scroll");
    let png = c.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/img");
    std::fs::create_dir_all(&dir).expect("docs/img");
    std::fs::write(dir.join(format!("console-{name}.png")), png).expect("write screenshot");
}

/// Clicks the element `css` selects.
async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

/// The text of the element `css` selects.
pub(crate) async fn text_of(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .unwrap_or_else(|e| panic!("text of {css}: {e}"))
}

/// Reloads `url` until `css` is on the page, up to `limit`.
async fn reload_until(c: &Client, url: &str, css: &str, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    loop {
        c.goto(url).await.expect("goto");
        if c.find(Locator::Css(css)).await.is_ok() {
            return true;
        }
        if Instant::now() > until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The page's address once it contains `part` (a click's form submission
/// may still be loading when the click returns), up to `limit`; the last
/// address seen otherwise.
async fn url_containing(c: &Client, part: &str, limit: Duration) -> String {
    let until = Instant::now() + limit;
    loop {
        let url = c.current_url().await.expect("url").to_string();
        if url.contains(part) || Instant::now() > until {
            return url;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_finds_a_failed_task_reads_its_log_clears_it_and_sees_it_succeed() {
    let env = TestEnv::new("ui_browser").await;
    let fixed = env.dir.path().join("fixed");
    let job = format!(
        r#"name = "nightly"
description = "Export the day's rollups (a <i>demo</i> of the console)"
schedule = "0 0 1 1 *"
interval = "day"
start_date = "2026-01-01"
[tasks.extract]
kind = "shell"
command = "echo extracting; echo '<script>alert(1)</script>'"
[checks.ready]
after = "extract"
kind = "sql"
sql = "SELECT true, 'the extract is ready for ' || to_char({{{{ interval_start }}}}, 'YYYY-MM-DD')"
[checks.volume]
after = "extract"
kind = "count"
from = "events"
min = 1000000
blocking = false
[tasks.upload]
kind = "shell"
depends_on = ["extract"]
command = "echo 'uploading to the archive'; test -e '{}' || {{ echo 'archive unreachable' >&2; exit 3; }}"
[tasks.notify]
kind = "shell"
depends_on = ["upload"]
command = "echo done"
"#,
        fixed.display()
    );
    let port = free_port();
    // Queued when ingest has stored its hour (not within this test).
    let stored = r#"name = "hourly_export"
description = "Export each hour once ingest has stored it"
trigger = "complete"
schedule = "0 0 1 1 *"
interval = "hour"
start_date = "2026-01-01"
[complete]
lateness_secs = 3600
[tasks.export]
kind = "sql"
sql = "SELECT 1"
"#
    .to_string();
    let cfg = env.config_with_jobs(
        "browser",
        &[("nightly", job), ("hourly_export", stored)],
        &format!("[api]\nhost = \"127.0.0.1\"\nport = {port}\n[scheduler]\npoll_secs = 1\n"),
    );
    // A failed run, recorded before the console opens.
    let out = env.hxjobs(&cfg, &["run", "nightly"]).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    let _daemon = start(&env, &cfg, "daemon", port);
    let (_driver, c) = browser().await;
    let base = format!("http://127.0.0.1:{port}");

    // The overview: the failure, the daemon alive.
    c.goto(&format!("{base}/")).await.expect("goto");
    assert_eq!(c.current_url().await.expect("url").path(), "/ui/");
    let failed = c
        .find(Locator::Id("failed-24h"))
        .await
        .expect("failed count");
    assert_eq!(failed.text().await.expect("text"), "1 failed");
    assert!(
        reload_until(
            &c,
            &format!("{base}/ui/"),
            ".badge.s-alive",
            Duration::from_secs(20)
        )
        .await,
        "the daemon is shown alive"
    );

    // The live numbers move while events are produced.
    let now = chrono::Utc::now();
    let spec = hxjobs::demo::DemoSpec {
        events: 3000,
        from: now - chrono::TimeDelta::seconds(30),
        to: now,
        bad_ratio: 0.0,
        duplicate_ratio: 0.0,
        seed: 7,
        max_event_bytes: 1 << 20,
    };
    let rate = Locator::Css(r#"td[data-live="1m.events_per_sec"]"#);
    let before = c
        .find(rate)
        .await
        .expect("rate")
        .text()
        .await
        .expect("text");
    env.produce(hxjobs::demo::Generator::new(spec).expect("spec").collect())
        .await;
    let until = Instant::now() + Duration::from_secs(30);
    let mut after = before.clone();
    while after == before && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(500)).await;
        after = c
            .find(rate)
            .await
            .expect("rate")
            .text()
            .await
            .expect("text");
    }
    assert_ne!(after, before, "events/s did not change on the page");
    screenshot(&c, "overview").await;

    // The jobs list: the failed run's square.
    c.goto(&format!("{base}/ui/jobs")).await.expect("goto");
    let job_row = c
        .find(Locator::Css(r#"tr[data-job="nightly"]"#))
        .await
        .expect("job row");
    let text = job_row.text().await.expect("text");
    assert!(text.contains("a <i>demo</i> of the console"), "{text}");
    job_row
        .find(Locator::Css(".sq.s-failed"))
        .await
        .expect("a failed square");
    let waiting = c
        .find(Locator::Css(r#"tr[data-job="hourly_export"] .waiting"#))
        .await
        .expect("what the job waits on")
        .text()
        .await
        .expect("text");
    assert!(waiting.starts_with("the hour from "), "{waiting}");
    screenshot(&c, "jobs").await;

    // The grid: the failed cell leads to the task's log.
    c.goto(&format!("{base}/ui/jobs/nightly"))
        .await
        .expect("goto");
    let cell = c
        .find(Locator::Css("a.c.s-failed"))
        .await
        .expect("a failed cell");
    let title = cell.attr("title").await.expect("title").unwrap_or_default();
    assert!(title.starts_with("upload · failed"), "{title}");
    cell.click().await.expect("click");
    let log = c
        .wait()
        .for_element(Locator::Css("pre.log"))
        .await
        .expect("the log");
    let text = log.text().await.expect("log text");
    assert!(text.contains("uploading to the archive"), "{text}");
    assert!(text.contains("archive unreachable"), "{text}");
    assert!(text.contains("failed"), "{text}");

    // A task that printed a script tag: shown as text, never run.
    let mut run_url = c.current_url().await.expect("url");
    run_url.set_query(None);
    run_url.set_fragment(None);
    let run_url = run_url.to_string();
    c.goto(&format!("{run_url}?task=extract#log"))
        .await
        .expect("goto");
    let text = text_of(&c, "pre.log").await;
    assert!(text.contains("<script>alert(1)</script>"), "{text}");
    let alerts = c
        .execute(
            "return document.querySelectorAll('pre.log script').length",
            vec![],
        )
        .await
        .expect("script count");
    assert_eq!(alerts, json!(0));

    // Clear the failed task and what follows; the daemon runs them again.
    std::fs::write(&fixed, "").expect("fix");
    c.goto(&format!("{run_url}?task=upload#log"))
        .await
        .expect("goto");
    screenshot(&c, "run").await;
    // The run's data checks: the blocking one passed, the warning warned.
    let checks = c
        .execute(
            "return [...document.querySelectorAll('table.checks tbody tr')].map(r =>
               [...r.cells].slice(0, 6).map(td => td.innerText.trim()))",
            vec![],
        )
        .await
        .expect("checks table");
    assert_eq!(
        checks.as_array().map(Vec::len),
        Some(2),
        "one row per check: {checks}"
    );
    assert_eq!(checks[0][0], "ready blocking", "{checks}");
    assert_eq!(checks[0][4], "pass", "{checks}");
    assert!(
        checks[0][5]
            .as_str()
            .is_some_and(|m| m.starts_with("the extract is ready for 2026-")),
        "{checks}"
    );
    assert_eq!(checks[1][0], "volume", "{checks}");
    assert_eq!(checks[1][4], "warn", "{checks}");
    assert_eq!(
        checks[1][5], "0 events, fewer than the minimum 1,000,000",
        "{checks}"
    );
    c.find(Locator::Css("table.checks .badge.c-warn"))
        .await
        .expect("the warning's badge");
    screenshot_from(&c, "checks", "#checks").await;
    let clear = c
        .find(Locator::Css(
            r#"#t-upload form input[name="downstream"] ~ button"#,
        ))
        .await
        .expect("clear + downstream");
    clear.click().await.expect("click");
    let succeeded = reload_until(
        &c,
        &run_url,
        r#"dl.facts .badge.s-success"#,
        Duration::from_secs(60),
    )
    .await;
    assert!(succeeded, "the cleared run succeeded");
    for task in ["extract", "upload", "notify"] {
        c.find(Locator::Css(&format!("#t-{task} .badge.s-success")))
            .await
            .unwrap_or_else(|_| panic!("{task} succeeded"));
    }
    let actions = text_of(&c, "main").await;
    assert!(
        actions.contains("ui:loopback"),
        "the clear is recorded with who did it"
    );

    // A backfill from the form: its dry run first, then its runs.
    c.goto(&format!("{base}/ui/jobs/nightly"))
        .await
        .expect("goto");
    c.find(Locator::LinkText("Backfill a range…"))
        .await
        .expect("backfill link")
        .click()
        .await
        .expect("click");
    let form = c
        .wait()
        .for_element(Locator::Css(r#"form input[name="from"]"#))
        .await
        .expect("the backfill form");
    form.send_keys("2026-03-01").await.expect("from");
    c.find(Locator::Css(r#"form input[name="to"]"#))
        .await
        .expect("to")
        .send_keys("2026-03-04")
        .await
        .expect("to");
    click(&c, "form.stack button").await;
    let to_run = c
        .wait()
        .for_element(Locator::Id("to-run"))
        .await
        .expect("the dry run");
    assert_eq!(to_run.text().await.expect("text"), "3");
    let listed = c
        .execute(
            "return document.querySelectorAll('ul.intervals li').length",
            vec![],
        )
        .await
        .expect("intervals");
    assert_eq!(listed, json!(3));
    assert_eq!(
        env.count("SELECT count(*) FROM job_runs WHERE run_type = 'backfill'")
            .await,
        0,
        "a dry run changes nothing"
    );
    screenshot(&c, "backfill").await;
    c.find(Locator::Css(
        r#"input[name="step"][value="start"] ~ button"#,
    ))
    .await
    .expect("start")
    .click()
    .await
    .expect("click");
    let progress = url_containing(&c, "/ui/backfills/", Duration::from_secs(30)).await;
    assert!(progress.contains("/ui/backfills/"), "{progress}");
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        c.goto(&progress).await.expect("goto");
        let done = c
            .find(Locator::Id("bf-success"))
            .await
            .expect("count")
            .text()
            .await
            .expect("text");
        if done == "3" {
            break;
        }
        assert!(
            Instant::now() < until,
            "the backfill's runs did not succeed ({done})"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        env.count(
            "SELECT count(*) FROM job_runs WHERE run_type = 'backfill' AND state = 'success'"
        )
        .await,
        3
    );
    c.goto(&format!("{base}/ui/jobs/nightly"))
        .await
        .expect("goto");
    let columns = c
        .execute(
            "return document.querySelectorAll('table.grid thead a.sq').length",
            vec![],
        )
        .await
        .expect("columns");
    assert_eq!(
        columns,
        json!(4),
        "the grid shows the three backfill runs and the first"
    );
    // Each run's round data-checks cell: the warning is its worst outcome.
    let warned = c
        .execute(
            "return document.querySelectorAll('tr.checks a.c.k.k-warn').length",
            vec![],
        )
        .await
        .expect("check cells");
    assert_eq!(warned, json!(4), "a warned cell per run");
    let metrics = crate::http::request(port, "GET", "/metrics", None, None).text();
    let warned = metrics
        .lines()
        .find(|l| {
            l.starts_with("hxjobs_checks_total{")
                && l.contains(r#"check="volume""#)
                && l.contains(r#"outcome="warn""#)
        })
        .unwrap_or_default();
    assert!(
        warned.ends_with(" 3"),
        "the daemon checked the three backfill runs: {warned:?}"
    );
    // The same results per interval in the API, newest first.
    let api = crate::http::request(
        port,
        "GET",
        "/jobs/nightly/checks?from=2026-03-01&to=2026-03-04",
        None,
        None,
    )
    .json();
    let results = api["results"].as_array().expect("results");
    let seen: Vec<(&str, &str, &str)> = results
        .iter()
        .map(|r| {
            (
                r["interval_start"].as_str().unwrap_or_default(),
                r["check"].as_str().unwrap_or_default(),
                r["outcome"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("2026-03-03T00:00:00Z", "ready", "pass"),
            ("2026-03-03T00:00:00Z", "volume", "warn"),
            ("2026-03-02T00:00:00Z", "ready", "pass"),
            ("2026-03-02T00:00:00Z", "volume", "warn"),
            ("2026-03-01T00:00:00Z", "ready", "pass"),
            ("2026-03-01T00:00:00Z", "volume", "warn"),
        ],
        "{api}"
    );
    let backwards = crate::http::request(
        port,
        "GET",
        "/jobs/nightly/checks?from=2026-03-04&to=2026-03-01",
        None,
        None,
    );
    assert_eq!(backwards.status, 400);
    assert_eq!(backwards.json()["error"], "invalid_range");
    screenshot(&c, "grid").await;

    // A weekly report generated from the form, opened inline.
    c.goto(&format!("{base}/ui/reports")).await.expect("goto");
    c.find(Locator::Css(r#"select[name="report_type"]"#))
        .await
        .expect("type")
        .select_by_value("weekly_summary")
        .await
        .expect("weekly");
    c.find(Locator::Css(
        r#"form[action="/ui/reports/generate"] button"#,
    ))
    .await
    .expect("generate")
    .click()
    .await
    .expect("click");
    let open = c
        .wait()
        .for_element(Locator::Css("table.reports a.open"))
        .await
        .expect("the new report's link");
    let href = open.attr("href").await.expect("href").expect("a link");
    let pdf = crate::http::request(port, "GET", &href, None, None);
    assert_eq!(pdf.status, 200);
    assert!(pdf.body.starts_with(b"%PDF-"), "a PDF");
    assert!(pdf
        .header("content-disposition")
        .is_some_and(|d| d.starts_with("inline")));
    screenshot(&c, "reports").await;

    // A dead letter whose bytes are a script tag: text on the page.
    sqlx::query(
        "INSERT INTO dead_letters (kafka_topic, kafka_partition, kafka_offset, reason, detail, payload)
         VALUES ($1, 0, 41, 'invalid_json', 'expected value at line 1 column 1', $2)",
    )
    .bind(&env.config.topics.llm_requests)
    .bind(b"<script>alert(1)</script>\xff".as_slice())
    .execute(&env.pool)
    .await
    .expect("dead letter");
    c.goto(&format!("{base}/ui/dead-letters"))
        .await
        .expect("goto");
    let raw = text_of(&c, "table.dead code.raw").await;
    assert_eq!(raw, "<script>alert(1)</script>\\xff");
    let scripts = c
        .execute(
            "return document.querySelectorAll('main script').length",
            vec![],
        )
        .await
        .expect("scripts");
    assert_eq!(scripts, json!(0));
    screenshot(&c, "dead-letters").await;

    // Data: three hours of demo events drained and rolled up by the shipped
    // hourly job, then browsed, with capacity and retention.
    let hour =
        chrono::DurationRound::duration_trunc(chrono::Utc::now(), chrono::TimeDelta::hours(1))
            .expect("hour");
    let from = hour - chrono::TimeDelta::hours(3);
    env.ingest_demo(3000, from, hour, 11).await;
    let rolled = env
        .command()
        .args([
            "backfill",
            "hxp_hourly_aggregation",
            "--from",
            &from.to_rfc3339(),
            "--to",
            &hour.to_rfc3339(),
        ])
        .output()
        .expect("backfill");
    assert!(
        rolled.status.success(),
        "{}",
        String::from_utf8_lossy(&rolled.stderr)
    );
    c.goto(&format!("{base}/ui/rollups?grain=hour"))
        .await
        .expect("goto");
    let points = c
        .find(Locator::Css("svg.chart polyline.events"))
        .await
        .expect("the events line")
        .attr("points")
        .await
        .expect("points")
        .unwrap_or_default();
    assert_eq!(points.split(' ').count(), 3, "one point per hour: {points}");
    let events: i64 = c
        .execute(
            "return [...document.querySelectorAll('table.rollups tbody tr')]
                .reduce((n, tr) => n + Number(tr.children[4].textContent), 0)",
            vec![],
        )
        .await
        .expect("sum")
        .as_i64()
        .expect("a number");
    let stored = env
        .count(&format!(
            "SELECT count(*) FROM events WHERE event_time >= '{}' AND event_time < '{}'",
            from.to_rfc3339(),
            hour.to_rfc3339()
        ))
        .await;
    assert!(stored >= 3000, "{stored}");
    assert_eq!(events, stored, "the table adds up to the events stored");
    screenshot(&c, "rollups").await;
    c.goto(&format!("{base}/ui/capacity")).await.expect("goto");
    c.find(Locator::Id("forecast"))
        .await
        .expect("a forecast line");
    c.find(Locator::Css("svg.chart polyline.capacity"))
        .await
        .expect("the capacity line");
    screenshot(&c, "capacity").await;
    c.goto(&format!("{base}/ui/retention")).await.expect("goto");
    let text = text_of(&c, "main").await;
    assert!(text.contains("A dry run"), "{text}");
    screenshot(&c, "retention").await;
    c.goto(&format!("{base}/ui/jobs/nightly/run"))
        .await
        .expect("goto");
    c.find(Locator::Css(r#"form input[name="interval_start"]"#))
        .await
        .expect("the run form");
    c.close().await.expect("close");
    env.cleanup().await;
}

/// The OpenID provider of the tests (`scripts/oidc-provider.mjs`, the npm
/// `oidc-provider` package `scripts/services.sh oidc` installs) on a
/// loopback port, with hxjobs's callback as its client's redirect URI.
fn oidc_provider(api_port: u16) -> (Guard, u16) {
    let port = free_port();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/oidc-provider.mjs");
    let child = Command::new("node")
        .arg(script)
        .env("HXJOBS_OIDC_PORT", port.to_string())
        .env(
            "HXJOBS_OIDC_REDIRECT",
            format!("http://127.0.0.1:{api_port}/ui/login/oidc/callback"),
        )
        .env("HXJOBS_OIDC_SECRET", "oidc-client-secret-0451")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("node (scripts/services.sh oidc installs the provider)");
    let guard = Guard(child);
    wait_port(port, "the OpenID provider");
    (guard, port)
}

/// Logs in through the provider as `login` (any password), from the
/// console's login page; returns the address the browser ends on.
async fn sso_login(c: &Client, base: &str, idp: u16, login: &str) -> String {
    // A new person: the provider forgets the last one's session.
    c.goto(&format!(
        "http://127.0.0.1:{idp}/.well-known/openid-configuration"
    ))
    .await
    .expect("the provider");
    c.delete_all_cookies()
        .await
        .expect("forget the provider's session");
    c.goto(&format!("{base}/ui/login?next=/ui/jobs"))
        .await
        .expect("login page");
    click(c, "#sso").await;
    let at = url_containing(c, "/interaction/", Duration::from_secs(10)).await;
    let source = c.source().await.unwrap_or_default();
    c.find(Locator::Css("input[name=login]"))
        .await
        .unwrap_or_else(|e| panic!("the provider's login form at {at}: {e}\n{source}"))
        .send_keys(login)
        .await
        .expect("type the login");
    c.find(Locator::Css("input[name=password]"))
        .await
        .expect("password")
        .send_keys("any password")
        .await
        .expect("type the password");
    click(c, "button[type=submit]").await;
    // The consent page (first login of each account), then back to hxjobs.
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let url = c.current_url().await.expect("url").to_string();
        if url.starts_with(base) {
            return url;
        }
        assert!(Instant::now() < until, "still at {url}");
        if url.contains("/interaction/") {
            if let Ok(b) = c.find(Locator::Css("button[autofocus]")).await {
                let _ = b.click().await;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_log_in_through_the_identity_provider_and_do_what_their_role_allows() {
    let env = TestEnv::new("ui_oidc").await;
    let port = free_port();
    let (_provider, idp) = oidc_provider(port);
    let job = r#"name = "alpha"
schedule = "0 0 1 1 *"
interval = "day"
start_date = "2026-01-01"
[tasks.t]
kind = "sql"
sql = "SELECT 1"
"#
    .to_string();
    let cfg = env.config_with_jobs(
        "oidc",
        &[("alpha", job)],
        &format!(
            r#"[api]
host = "127.0.0.1"
port = {port}
public_url = "http://127.0.0.1:{port}"
[[api.tokens]]
name = "machine"
token = "machine-token-0001"
role = "admin"
[api.oidc]
issuer = "http://127.0.0.1:{idp}"
client_id = "hxjobs"
client_secret = "oidc-client-secret-0451"
admin = ["hxjobs-admins"]
operator = ["hxjobs-operators"]
viewer = ["hxjobs-viewers"]
"#
        ),
    );
    let _server = start(&env, &cfg, "serve", port);
    let (_driver, c) = browser().await;
    let base = format!("http://127.0.0.1:{port}");

    // An operator: logged in as the person, triggers a run.
    let at = sso_login(&c, &base, idp, "op-alice").await;
    assert!(at.ends_with("/ui/jobs"), "{at}");
    let who = text_of(&c, ".who").await;
    assert!(who.contains("oidc:op-alice@example.test"), "{who}");
    c.goto(&format!("{base}/ui/jobs/alpha/run"))
        .await
        .expect("trigger form");
    click(&c, "form[action='/ui/jobs/alpha/run'] button[type=submit]").await;
    let at = url_containing(&c, "/ui/runs/", Duration::from_secs(10)).await;
    assert!(at.contains("/ui/runs/"), "{at}");
    let triggered: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM run_actions WHERE actor = 'oidc:op-alice@example.test' AND action = 'trigger'",
    )
    .fetch_one(&env.pool)
    .await
    .expect("actions");
    assert_eq!(triggered, 1);
    screenshot(&c, "sso-operator").await;
    click(&c, "form[action='/ui/logout'] button").await;
    url_containing(&c, "/ui/login", Duration::from_secs(10)).await;

    // A viewer: reads, and the same form is refused.
    sso_login(&c, &base, idp, "view-bob").await;
    c.goto(&format!("{base}/ui/jobs/alpha/run"))
        .await
        .expect("trigger form");
    let button = c
        .find(Locator::Css(
            "form[action='/ui/jobs/alpha/run'] button[type=submit]",
        ))
        .await
        .expect("the Run button");
    assert!(
        button.attr("disabled").await.expect("attr").is_some(),
        "a viewer's Run button is disabled"
    );
    // Sent anyway, the form is refused by the server.
    c.execute(
        "document.querySelector(\"form[action='/ui/jobs/alpha/run']\").submit()",
        vec![],
    )
    .await
    .expect("submit");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let page = c.source().await.expect("page");
    assert!(
        page.contains("has the role viewer"),
        "a viewer's trigger is refused: {page}"
    );
    let by_bob: i64 =
        sqlx::query_scalar("SELECT count(*) FROM run_actions WHERE actor LIKE 'oidc:view-bob%'")
            .fetch_one(&env.pool)
            .await
            .expect("actions");
    assert_eq!(by_bob, 0);
    c.goto(&format!("{base}/ui/jobs")).await.expect("jobs");
    click(&c, "form[action='/ui/logout'] button").await;
    url_containing(&c, "/ui/login", Duration::from_secs(10)).await;

    // Someone in none of the groups is refused a session.
    sso_login(&c, &base, idp, "guest-carol").await;
    let page = c.source().await.expect("page");
    assert!(page.contains("has no hxjobs role"), "{page}");

    // The audit log has each login and the refusals, by the person.
    let logins: Vec<(String, String)> =
        sqlx::query_as("SELECT actor, outcome FROM audit WHERE action = 'login' ORDER BY id")
            .fetch_all(&env.pool)
            .await
            .expect("audit");
    for expected in [
        ("oidc:op-alice@example.test", "ok"),
        ("oidc:view-bob@example.test", "ok"),
        ("oidc:guest-carol@example.test", "refused"),
    ] {
        assert!(
            logins
                .iter()
                .any(|(a, o)| a == expected.0 && o == expected.1),
            "{expected:?} in {logins:?}"
        );
    }
    let refused: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit WHERE actor = 'oidc:view-bob@example.test' AND action = 'trigger' AND outcome = 'refused'",
    )
    .fetch_one(&env.pool)
    .await
    .expect("audit");
    assert_eq!(refused, 1);
    env.cleanup().await;
}
