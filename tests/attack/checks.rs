//! Data checks: what a producer puts in an event reaches the console and
//! the API only as text (a check's message is escaped, never markup); a
//! check cannot write, and cannot run longer than its task's timeout; a
//! `share` check's field is a name from a fixed list, never SQL.

use std::time::Instant;

use hxjobs::demo::{DemoRecord, RecordKind};
use hxjobs::events::EventType;

use crate::common::TestEnv;
use crate::{config, Server};

const MARKUP: &str = "<script>alert('check')</script>";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_shows_event_data_as_text_cannot_write_and_is_bounded() {
    let env = TestEnv::new("attack_checks").await;
    // A producer's hostile source, stored as it was sent.
    let payload = serde_json::json!({
        "event_id": "0b6c1a52-2f7e-4d0e-9a7b-5d9f1c2e3a41",
        "event_type": "system_metric",
        "timestamp": "2026-03-05T09:10:00Z",
        "source": MARKUP,
        "data": {"name": "cpu", "value": 1.0}
    });
    env.produce(vec![DemoRecord {
        event_type: EventType::SystemMetric,
        key: "k".into(),
        payload: Some(payload.to_string().into_bytes()),
        kind: RecordKind::Event,
    }])
    .await;
    hxjobs::ingest::drain(&env.config, &env.pool, Default::default())
        .await
        .expect("drain");
    let job = r#"name = "checked"
schedule = "0 0 1 1 *"
interval = "hour"
start_date = "2026-03-01"
[tasks.rollup]
kind = "aggregate"
grain = "hour"
timeout_secs = 2
[checks.echo]
after = "rollup"
kind = "sql"
sql = "SELECT false, 'source: ' || max(source) FROM events WHERE event_time >= {{ interval_start }} AND event_time < {{ interval_end }}"
blocking = false
[checks.writes]
after = "rollup"
kind = "sql"
sql = "WITH d AS (DELETE FROM events RETURNING 1) SELECT true, count(*) || ' deleted' FROM d"
blocking = false
[checks.sleeps]
after = "rollup"
kind = "sql"
sql = "SELECT pg_sleep(60) IS NOT NULL, 'slept'"
blocking = false
"#
    .to_string();
    let port = crate::http::free_port();
    let cfg = config(&env, &[("checked", job)], port, "", "");
    let started = Instant::now();
    let out = env
        .hxjobs(
            &cfg,
            &["run", "checked", "--interval-start", "2026-03-05T09:00:00Z"],
        )
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "warnings do not fail the run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The sleeping check was cut at its task's timeout (2 s), not 60 s.
    assert!(started.elapsed().as_secs() < 40, "{:?}", started.elapsed());
    let results: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT check_name, outcome, message FROM check_results ORDER BY check_name",
    )
    .fetch_all(&env.pool)
    .await
    .expect("results");
    assert_eq!(results.len(), 3, "{results:?}");
    assert_eq!(
        (results[0].1.as_str(), results[0].2.as_str()),
        ("warn", format!("source: {MARKUP}").as_str())
    );
    assert_eq!(results[1].0, "sleeps");
    assert_eq!(results[1].1, "error");
    assert!(
        results[1].2.contains("statement timeout"),
        "{}",
        results[1].2
    );
    assert_eq!(results[2].0, "writes");
    assert_eq!(results[2].1, "error");
    assert!(
        results[2].2.contains("read-only transaction"),
        "{}",
        results[2].2
    );
    assert_eq!(
        env.count("SELECT count(*) FROM events").await,
        1,
        "nothing deleted"
    );

    // The console and the API show the producer's text as text.
    let run_id: i64 = sqlx::query_scalar("SELECT id FROM job_runs WHERE job = 'checked'")
        .fetch_one(&env.pool)
        .await
        .expect("run");
    let server = Server::start(&env, &cfg, "serve", port);
    let page = crate::http::get_page(port, &format!("/ui/runs/{run_id}"), None);
    assert_eq!(page.status, 200);
    let html = page.text();
    assert!(
        !html.contains(MARKUP),
        "markup from an event reached the page"
    );
    assert!(
        html.contains("source: &lt;script&gt;alert('check')&lt;/script&gt;")
            || html.contains("source: &lt;script&gt;alert(&#39;check&#39;)&lt;/script&gt;"),
        "the message is shown escaped"
    );
    let api = crate::http::request(port, "GET", &format!("/runs/{run_id}"), None, None);
    assert_eq!(api.status, 200);
    let checks = api.json()["checks"].clone();
    assert_eq!(checks[0]["message"], format!("source: {MARKUP}"));
    // Per interval: the same text; the range and limit are bounded, dates
    // are dates, and nothing beyond the declared parameters is taken.
    let range = "from=2026-03-05T09:00:00Z&to=2026-03-05T10:00:00Z";
    let per = crate::http::request(
        port,
        "GET",
        &format!("/jobs/checked/checks?{range}"),
        None,
        None,
    );
    assert_eq!(per.status, 200, "{}", per.text());
    let results = per.json()["results"].clone();
    assert_eq!(results.as_array().map(Vec::len), Some(3), "{results}");
    assert!(
        results.as_array().is_some_and(|r| r
            .iter()
            .any(|c| c["message"] == format!("source: {MARKUP}"))),
        "{results}"
    );
    for (query, status, code) in [
        (format!("{range}&limit=10001"), 400, "invalid_limit"),
        (format!("{range}&limit=0"), 400, "invalid_limit"),
        (
            "from=2026-03-05'%20OR%20'1'%3D'1&to=2026-03-06".to_string(),
            400,
            "invalid_date",
        ),
        (
            "from=2026-03-06&to=2026-03-05".to_string(),
            400,
            "invalid_range",
        ),
        (format!("{range}&sql=SELECT%201"), 400, "invalid_query"),
    ] {
        let r = crate::http::request(
            port,
            "GET",
            &format!("/jobs/checked/checks?{query}"),
            None,
            None,
        );
        assert_eq!(r.status, status, "{query}: {}", r.text());
        assert_eq!(r.json()["error"], code, "{query}: {}", r.text());
    }
    let r = crate::http::request(
        port,
        "GET",
        "/jobs/checked%27%20OR%201%3D1--/checks",
        None,
        None,
    );
    assert_eq!(r.status, 404, "{}", r.text());
    drop(server);

    // A share check's field is a column name from a fixed list: SQL in
    // its place is refused when the file loads, with its line.
    let hostile = "name = \"x\"\nschedule = \"0 0 1 1 *\"\ninterval = \"hour\"\nstart_date = \"2026-03-01\"\n[tasks.rollup]\nkind = \"aggregate\"\ngrain = \"hour\"\n[checks.c]\nafter = \"rollup\"\nkind = \"share\"\nfield = \"status IS NULL OR true; DROP TABLE events; --\"\nis_null = true\nmax_pct = 1\n";
    let e = hxjobs::dag::job::parse(&env.dir.path().join("x.toml"), hostile).expect_err("refused");
    assert_eq!(e.line, Some(8), "{e}");
    assert!(e.message.contains("is not an event column"), "{e}");
    env.cleanup().await;
}
