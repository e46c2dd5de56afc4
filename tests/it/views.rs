//! The views an Airflow user looks for, in headless Chromium against a
//! real `hxjobs serve`: a job's task graph with its trigger rules and
//! pool, dates on the grid's columns, the definition with its versions and
//! what changed, a run's Gantt, the calendar, durations, every job's runs,
//! the jobs list's search and filters, times in UTC with the local time on
//! hover, and dark mode. Screenshots go to `docs/img/`.

use std::time::Duration;

use fantoccini::{Client, Locator};
use serde_json::json;

use crate::browser::{browser, browser_with, screenshot, screenshot_from, start, text_of};
use crate::common::TestEnv;
use crate::http::free_port;

const JOB: &str = r#"name = "exports"
description = "Export the day, clean up after a failed upload"
schedule = "0 0 1 1 *"
interval = "day"
start_date = "2026-01-01"
[tasks.extract]
kind = "sql"
sql = "SELECT 1"
pool = "db"
[tasks.upload]
kind = "shell"
depends_on = ["extract"]
command = "echo uploading; exit 3"
[tasks.cleanup]
kind = "shell"
depends_on = ["upload"]
trigger_rule = "one_failed"
command = "echo removing the partial upload"
[tasks.publish]
kind = "shell"
depends_on = ["upload"]
command = "echo publishing"
[tasks.report]
kind = "shell"
depends_on = ["cleanup", "publish"]
trigger_rule = "all_done"
command = "echo done either way"
"#;

async fn count(c: &Client, css: &str) -> i64 {
    c.execute(
        &format!("return document.querySelectorAll({css:?}).length"),
        vec![],
    )
    .await
    .expect("count")
    .as_i64()
    .unwrap_or(-1)
}

async fn attr(c: &Client, css: &str, name: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .attr(name)
        .await
        .expect("attr")
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_airflow_user_finds_the_graph_versions_gantt_calendar_and_durations() {
    let env = TestEnv::new("ui_views").await;
    let port = free_port();
    let cfg = env.config_with_jobs(
        "views",
        &[("exports", JOB.to_string())],
        &format!(
            "[api]\nhost = \"127.0.0.1\"\nport = {port}\n[pools.db]\nslots = 2\ndescription = \"heavy statements\"\n"
        ),
    );
    // The first day fails (its cleanup runs); the file is fixed, and the
    // second day succeeds with the new version (its cleanup is skipped).
    let run = |day: &str| {
        env.hxjobs(&cfg, &["run", "exports", "--interval-start", day])
            .output()
            .expect("run")
    };
    assert_eq!(run("2026-03-01").status.code(), Some(1));
    let v1 = hxjobs::dag::job::version_of(JOB);
    let fixed = JOB.replace("echo uploading; exit 3", "echo uploading");
    let v2 = hxjobs::dag::job::version_of(&fixed);
    std::fs::write(env.dir.path().join("views-jobs/exports.toml"), &fixed).expect("fix");
    assert!(run("2026-03-02").status.success());
    let failed_run: i64 = sqlx::query_scalar(
        "SELECT id FROM job_runs WHERE job = 'exports' AND interval_start = '2026-03-01'",
    )
    .fetch_one(&env.pool)
    .await
    .expect("run");

    let _server = start(&env, &cfg, "serve", port);
    let (_driver, c) = browser().await;
    let base = format!("http://127.0.0.1:{port}");

    // The jobs list: search, filters and the trigger button.
    c.goto(&format!("{base}/ui/jobs?q=clean+up"))
        .await
        .expect("goto");
    assert_eq!(count(&c, "table.jobs tbody tr").await, 1);
    assert_eq!(
        attr(&c, r#"tr[data-job="exports"] a.trigger"#, "href").await,
        "/ui/jobs/exports/run"
    );
    c.goto(&format!("{base}/ui/jobs?q=nothing-like-it"))
        .await
        .expect("goto");
    assert_eq!(count(&c, "table.jobs tbody tr").await, 0);
    c.goto(&format!("{base}/ui/jobs?state=failed"))
        .await
        .expect("goto");
    assert_eq!(
        count(&c, "table.jobs tbody tr").await,
        0,
        "the latest run of exports succeeded"
    );
    c.goto(&format!("{base}/ui/jobs?state=success&paused=no&late=no"))
        .await
        .expect("goto");
    assert_eq!(count(&c, r#"tr[data-job="exports"]"#).await, 1);

    // The job's page: its graph, rules and pool named; dates on the columns.
    c.goto(&format!("{base}/ui/jobs/exports"))
        .await
        .expect("goto");
    assert_eq!(count(&c, "svg.graph g.node").await, 5);
    assert_eq!(count(&c, "svg.graph path.edge").await, 5);
    assert_eq!(
        attr(&c, r#"svg.graph g.node[data-task="cleanup"]"#, "data-rule").await,
        "one_failed"
    );
    let extract = text_of(&c, r#"svg.graph g.node[data-task="extract"] text.kind"#).await;
    assert_eq!(extract, "sql · pool db");
    let dates = c
        .execute(
            "return [...document.querySelectorAll('table.grid th.date')].map(t => t.innerText.trim())",
            vec![],
        )
        .await
        .expect("dates");
    assert_eq!(dates, json!(["2026-03-02", "2026-03-01"]));
    screenshot(&c, "graph").await;

    // The definition: both versions, and what changed between them.
    c.goto(&format!(
        "{base}/ui/jobs/exports/definition?from={v1}&to={v2}"
    ))
    .await
    .expect("goto");
    assert_eq!(count(&c, "table.versions tbody tr").await, 2);
    assert_eq!(
        text_of(&c, "pre.diff span.del").await,
        r#"- command = "echo uploading; exit 3""#
    );
    assert_eq!(
        text_of(&c, "pre.diff span.ins").await,
        r#"+ command = "echo uploading""#
    );
    let shown = text_of(&c, "pre.definition").await;
    assert!(shown.contains(r#"command = "echo uploading""#), "{shown}");
    screenshot_from(&c, "definition", "#diff").await;

    // A run: the graph in its states, its version, and the Gantt of every
    // attempt; times in UTC, the local time on hover.
    c.goto(&format!("{base}/ui/runs/{failed_run}"))
        .await
        .expect("goto");
    for (task, state) in [
        ("extract", "success"),
        ("upload", "failed"),
        ("cleanup", "success"),
        ("publish", "upstream_failed"),
        ("report", "success"),
    ] {
        let class = attr(
            &c,
            &format!(r#"svg.graph g.node[data-task="{task}"] rect"#),
            "class",
        )
        .await;
        assert_eq!(class, format!("s-{state}"), "{task}");
    }
    let version = text_of(&c, "dl.facts").await;
    assert!(
        version.contains(&v1) && version.contains("changes since"),
        "{version}"
    );
    assert_eq!(
        count(&c, "svg.gantt g.attempt").await,
        4,
        "one row per attempt"
    );
    assert_eq!(count(&c, "svg.gantt rect.ran.s-failed").await, 1);
    let started = text_of(&c, "dl.facts time").await;
    assert!(started.ends_with(" UTC"), "{started}");
    let hover = attr(&c, "dl.facts time", "title").await;
    assert!(hover.ends_with("(your local time)"), "{hover}");
    screenshot_from(&c, "gantt", "#gantt").await;

    // The calendar: the failed day and the good one.
    c.goto(&format!("{base}/ui/jobs/exports/calendar?year=2026"))
        .await
        .expect("goto");
    assert_eq!(count(&c, "svg.calendar rect.day").await, 365);
    assert_eq!(
        attr(&c, r#"rect.day[data-day="2026-03-01"]"#, "class").await,
        "day s-failed"
    );
    assert_eq!(
        attr(&c, r#"rect.day[data-day="2026-03-02"]"#, "class").await,
        "day s-success"
    );
    assert_eq!(count(&c, "svg.calendar rect.day.s-none").await, 363);
    screenshot(&c, "calendar").await;

    // Durations and landing times over the runs.
    c.goto(&format!("{base}/ui/jobs/exports/durations"))
        .await
        .expect("goto");
    assert_eq!(
        count(&c, r#"svg.durations [data-series="extract"]"#).await,
        1,
        "one line for extract's two runs"
    );
    assert_eq!(
        count(&c, r#"svg.durations [data-series="landing"]"#).await,
        1,
        "one landing point: only the second run succeeded"
    );
    screenshot(&c, "durations").await;

    // Every job's runs, filtered.
    c.goto(&format!("{base}/ui/runs?job=exports&state=failed"))
        .await
        .expect("goto");
    let rows = c
        .execute(
            "return [...document.querySelectorAll('table.runs tbody tr')].map(r => r.dataset.run)",
            vec![],
        )
        .await
        .expect("rows");
    assert_eq!(rows, json!([failed_run.to_string()]));
    c.goto(&format!("{base}/ui/runs")).await.expect("goto");
    assert_eq!(count(&c, "table.runs tbody tr").await, 2);
    screenshot(&c, "runs").await;
    let api = crate::http::request(port, "GET", "/runs?job=exports&from=2026-03-02", None, None);
    assert_eq!(api.status, 200, "{}", api.text());
    let listed = api.json()["runs"].clone();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["job_version"], json!(v2));

    // Pools.
    c.goto(&format!("{base}/ui/pools")).await.expect("goto");
    let pool = text_of(&c, r#"section.pool[data-pool="db"]"#).await;
    assert!(pool.contains("0 of 2 slots in use"), "{pool}");
    assert!(pool.contains("exports.extract"), "{pool}");
    // And in the metrics, read from PostgreSQL every few seconds.
    let until = std::time::Instant::now() + Duration::from_secs(20);
    let metrics = loop {
        let m = crate::http::request(port, "GET", "/metrics", None, None).text();
        if m.contains("hxjobs_pool_slots{") || std::time::Instant::now() > until {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    for line in [
        r#"hxjobs_pool_slots{pool="db"} 2"#,
        r#"hxjobs_pool_used{pool="db"} 0"#,
        r#"hxjobs_pool_waiting{pool="db"} 0"#,
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in:\n{metrics}"
        );
    }
    c.close().await.expect("close");

    // Dark mode, when the system asks for it.
    let (_dark_driver, dark) = browser_with(&["--blink-settings=preferredColorScheme=0"]).await;
    dark.goto(&format!("{base}/ui/runs/{failed_run}"))
        .await
        .expect("goto");
    let background = dark
        .execute(
            "return getComputedStyle(document.body).backgroundColor",
            vec![],
        )
        .await
        .expect("style");
    assert_eq!(background, json!("rgb(22, 24, 28)"));
    screenshot(&dark, "dark").await;
    dark.close().await.expect("close");
    tokio::time::sleep(Duration::from_millis(100)).await;
    env.cleanup().await;
}
