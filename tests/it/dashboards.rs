//! The platform's dashboards in headless Chromium against a real `hxjobs
//! serve`: the business dashboard shows the weekly report's own numbers,
//! the performance dashboard its latency and models, and the live
//! dashboard redraws from the WebSocket as events are counted, falling
//! back to server-sent events when the WebSockets are full.

use std::time::{Duration, Instant};

use chrono::TimeDelta;
use fantoccini::{Client, Locator};
use serde_json::{json, Value};

use crate::browser::{browser, screenshot, start, text_of};
use crate::common::{ts, TestEnv};
use crate::http::free_port;

/// The rows of the table titled `title` on the page, as text.
async fn table(c: &Client, title: &str) -> Vec<Vec<String>> {
    let rows = c
        .execute(
            &format!(
                "return [...document.querySelectorAll('table[data-title=\"{title}\"] tbody tr')]
                   .map(r => [...r.cells].map(td => td.innerText.trim()))"
            ),
            vec![],
        )
        .await
        .expect("table");
    serde_json::from_value(rows).expect("rows")
}

/// A report cell as the dashboard prints it.
fn same(shown: &str, reported: &Value) -> bool {
    match reported {
        Value::Null => shown == "n/a",
        Value::Number(n) => shown
            .replace(',', "")
            .parse::<f64>()
            .is_ok_and(|v| (v - n.as_f64().unwrap_or(f64::NAN)).abs() < 1e-6),
        Value::String(s) => shown == s,
        _ => false,
    }
}

async fn live_via(c: &Client, want_consumed: i64, limit: Duration) -> (String, i64) {
    let until = Instant::now() + limit;
    loop {
        let state = c
            .execute(
                "const t = document.getElementById('live'); return [t.dataset.via || '', Number(t.dataset.consumed || 0)]",
                vec![],
            )
            .await
            .expect("live state");
        let via = state[0].as_str().unwrap_or_default().to_string();
        let consumed = state[1].as_i64().unwrap_or(0);
        if consumed >= want_consumed || Instant::now() > until {
            return (via, consumed);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboards_show_the_reports_numbers_and_the_live_figures_as_they_change() {
    let env = TestEnv::new("ui_dashboards").await;
    let port = free_port();
    let cfg = env.config_with_jobs(
        "dashboards",
        &[],
        &format!("[api]\nhost = \"127.0.0.1\"\nport = {port}\nmax_websockets = 1\n"),
    );
    // A week of demo events, stored.
    let week = ts("2026-03-02T00:00:00Z");
    env.ingest_demo(4000, week, week + TimeDelta::days(7), 21)
        .await;
    let _server = start(&env, &cfg, "serve", port);
    let (_driver, c) = browser().await;
    let base = format!("http://127.0.0.1:{port}");

    // Business: the monthly business-intelligence report's own numbers.
    c.goto(&format!(
        "{base}/ui/dashboards/business?period=month&start=2026-03-04"
    ))
    .await
    .expect("goto");
    let shown = table(&c, "Business KPIs").await;
    let mut config = env.config.clone();
    config.reports.output_dir = env.dir.path().join("out");
    let report = hxjobs::reports::generate(
        &config,
        &env.pool,
        "monthly_business_intelligence",
        hxjobs::reports::Format::Json,
        Some(ts("2026-03-01T00:00:00Z")),
        chrono::Utc::now(),
    )
    .await
    .expect("report");
    let body: Value =
        serde_json::from_slice(&std::fs::read(env.stored(&report)).expect("file")).expect("json");
    let reported: Vec<Vec<Value>> = body["sections"]
        .as_array()
        .and_then(|s| s.iter().find(|x| x["title"] == "Business KPIs"))
        .and_then(|s| serde_json::from_value(s["rows"].clone()).ok())
        .unwrap_or_default();
    assert!(shown.len() >= 8, "{shown:?}");
    assert_eq!(
        shown.len(),
        reported.len(),
        "{shown:?} against {reported:?}"
    );
    for (row, want) in shown.iter().zip(&reported) {
        assert_eq!(row.len(), want.len(), "{row:?} against {want:?}");
        for (cell, value) in row.iter().zip(want) {
            assert!(
                same(cell, value),
                "{cell:?} shown, {value} reported, in {row:?}"
            );
        }
    }
    let requests = shown.iter().find(|r| r[0] == "Requests").expect("requests");
    assert!(
        requests[1]
            .replace(',', "")
            .parse::<i64>()
            .is_ok_and(|n| n > 0),
        "{requests:?}"
    );
    screenshot(&c, "dashboard-business").await;

    // Performance: the same week's latency and models.
    c.goto(&format!(
        "{base}/ui/dashboards/performance?period=week&start=2026-03-04"
    ))
    .await
    .expect("goto");
    let models = table(&c, "Per model").await;
    assert!(models.len() >= 2, "{models:?}");
    let bars = c
        .execute(
            "return document.querySelectorAll('svg.dashboard[data-title=\"p95 latency (ms)\"] rect.bar').length",
            vec![],
        )
        .await
        .expect("bars");
    assert_eq!(bars, json!(7), "a bar per day");
    screenshot(&c, "dashboard-performance").await;
    // A period that is not one: a clear error.
    c.goto(&format!("{base}/ui/dashboards/business?period=year"))
        .await
        .expect("goto");
    assert!(text_of(&c, "main")
        .await
        .contains("period must be day, week or month"));

    // Live: redrawn from the WebSocket as events are counted.
    c.goto(&format!("{base}/ui/dashboards/live"))
        .await
        .expect("goto");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let now = chrono::Utc::now();
    let spec = hxjobs::demo::DemoSpec {
        events: 600,
        from: now - TimeDelta::seconds(20),
        to: now,
        bad_ratio: 0.0,
        duplicate_ratio: 0.0,
        seed: 22,
        max_event_bytes: 1 << 20,
    };
    env.produce(hxjobs::demo::Generator::new(spec).expect("spec").collect())
        .await;
    let (via, consumed) = live_via(&c, 600, Duration::from_secs(30)).await;
    assert_eq!((via.as_str(), consumed), ("websocket", 600));
    let rate = text_of(&c, r#"td[data-live="1m.events_per_sec"]"#).await;
    assert_ne!(rate, "n/a");
    let model_rows = c
        .execute(
            "return document.querySelectorAll('#live-models tbody tr[data-model]').length",
            vec![],
        )
        .await
        .expect("models");
    assert!(model_rows.as_i64().unwrap_or(0) >= 2, "{model_rows}");
    screenshot(&c, "dashboard-live").await;

    // The one WebSocket allowed is taken: a second viewer follows by
    // server-sent events instead.
    let (_second_driver, second) = browser().await;
    second
        .goto(&format!("{base}/ui/dashboards/live"))
        .await
        .expect("goto");
    let (via, _) = live_via(&second, 600, Duration::from_secs(20)).await;
    assert_eq!(via, "server-sent events");
    second.close().await.expect("close");
    c.find(Locator::Id("live")).await.expect("still there");
    c.close().await.expect("close");
    env.cleanup().await;
}
