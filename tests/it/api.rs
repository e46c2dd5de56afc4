//! The REST API against a real running `hxjobs serve`: every endpoint, the
//! error cases and the auth rules; live stats over a produced burst.

use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use hxjobs::demo::{DemoRecord, RecordKind};
use hxjobs::events::EventType;
use serde_json::{json, Value};

use crate::common::{ts, TestEnv};
use crate::http::{free_port, read_prefix, request, Reply};

pub(crate) const TOKEN: &str = "test-token-0f3a";

/// A running hxjobs process serving the API; killed when dropped.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn start(env: &TestEnv, out: &std::path::Path) -> Server {
    let port = free_port();
    let cfg = env.config_file(&format!(
        "[api]\nhost = \"127.0.0.1\"\nport = {port}\nmax_body_bytes = 4096\n[reports]\noutput_dir = \"{}\"\n",
        out.display()
    ));
    let child = env
        .command()
        .arg("--config")
        .arg(cfg)
        .arg("serve")
        .env("HXJOBS_API_TOKEN", TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("hxjobs serve");
    let server = Server { child, port };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            let r = request(port, "GET", "/health", None, None);
            if r.status == 200 {
                return server;
            }
        }
        assert!(Instant::now() < deadline, "the API did not become healthy");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn get(port: u16, path: &str) -> Reply {
    request(port, "GET", path, None, None)
}

fn post(port: u16, path: &str, body: &Value) -> Reply {
    let b = serde_json::to_vec(body).expect("json");
    request(port, "POST", path, Some(TOKEN), Some(&b))
}

/// Asserts an error reply: status and stable code.
fn error(r: &Reply, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    let v = r.json();
    assert_eq!(v["error"], code, "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
}

pub(crate) fn llm_event(i: usize, model: &str, latency: f64, status: &str) -> DemoRecord {
    let id = uuid::Uuid::new_v4();
    let payload = json!({
        "event_id": id.to_string(),
        "event_type": "llm_request",
        "timestamp": chrono::Utc::now().to_rfc3339(),
        "source": "burst",
        "data": {"model": model, "latency_ms": latency, "prompt_tokens": 100, "completion_tokens": 20,
                 "cost_usd": 0.01, "status": status},
        "metadata": {"user_id": format!("u{i}")}
    });
    DemoRecord {
        event_type: EventType::LlmRequest,
        key: id.to_string(),
        payload: Some(serde_json::to_vec(&payload).expect("json")),
        kind: RecordKind::Event,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_with_its_errors_and_auth() {
    let env = TestEnv::new("api").await;
    env.ingest_demo(2_000, ts("2026-03-01"), ts("2026-03-03"), 3)
        .await;
    for start in hxjobs::interval::Grain::Hour.starts(ts("2026-03-01"), ts("2026-03-03")) {
        hxjobs::rollup::aggregate(&env.pool, hxjobs::interval::Grain::Hour, start)
            .await
            .expect("hour");
    }
    let out = env.dir.path().join("out");
    let server = start(&env, &out);
    let port = server.port;

    // Health.
    let h = get(port, "/health").json();
    assert_eq!(h["status"], "healthy");
    assert_eq!(h["service"], "batch-processing-api");
    assert!(h["timestamp"].is_string());
    assert_eq!(h["checks"]["database"]["status"], "up");
    assert_eq!(h["checks"]["kafka"]["status"], "up");

    // Jobs and runs.
    let jobs = get(port, "/jobs").json();
    assert!(jobs["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .any(|j| j["name"] == "hxp_weekly_aggregation"));
    // What queues each job's runs, and what the next one waits on.
    let job = |name: &str| {
        jobs["jobs"]
            .as_array()
            .and_then(|a| a.iter().find(|j| j["name"] == name))
            .cloned()
            .expect(name)
    };
    let hourly = job("hxp_hourly_aggregation");
    assert_eq!(hourly["trigger"], "complete");
    assert_eq!(
        hourly["complete_when"],
        "each hour's events are stored 2 s past its end"
    );
    assert!(
        hourly["waiting_on"]
            .as_str()
            .is_some_and(|w| w.starts_with("the hour from ")),
        "{hourly}"
    );
    let weekly = job("hxp_weekly_aggregation");
    assert_eq!(
        weekly["complete_when"],
        "each week's runs of hxp_daily_aggregation have succeeded"
    );
    let retention = job("hxp_retention");
    assert_eq!(retention["trigger"], "schedule");
    assert!(retention["waiting_on"].is_null() && retention["complete_when"].is_null());
    error(&get(port, "/jobs/nope/runs"), 404, "unknown_job");
    error(
        &get(port, "/jobs/ingest/runs?limit=0"),
        400,
        "invalid_limit",
    );
    error(
        &get(port, "/jobs/ingest/runs?state=bogus"),
        400,
        "invalid_state",
    );
    error(&get(port, "/jobs/ingest/runs?limt=3"), 400, "invalid_query");
    let body = json!({"interval_start": "2026-03-01T05:00:00Z"});
    let unauth = request(
        port,
        "POST",
        "/jobs/hxp_hourly_aggregation/runs",
        None,
        Some(b"{}"),
    );
    error(&unauth, 401, "unauthorized");
    let wrong = request(
        port,
        "POST",
        "/jobs/hxp_hourly_aggregation/runs",
        Some("nope"),
        Some(b"{}"),
    );
    error(&wrong, 401, "unauthorized");
    let queued = post(port, "/jobs/hxp_hourly_aggregation/runs", &body);
    assert_eq!(queued.status, 202, "{}", queued.text());
    let run_id = queued.json()["run_id"].as_i64().expect("run id");
    assert_eq!(queued.json()["interval_start"], "2026-03-01T05:00:00Z");
    let run = get(port, &format!("/runs/{run_id}")).json();
    assert_eq!(run["run"]["state"], "queued");
    assert_eq!(run["run"]["job"], "hxp_hourly_aggregation");
    let runs = get(port, "/jobs/hxp_hourly_aggregation/runs?state=queued").json();
    assert_eq!(runs["runs"][0]["id"], run_id);
    error(&get(port, "/runs/abc"), 400, "invalid_id");
    error(&get(port, "/runs/-4"), 400, "invalid_id");
    error(&get(port, "/runs/987654"), 404, "unknown_run");
    error(
        &post(
            port,
            "/jobs/hxp_hourly_aggregation/runs",
            &json!({"interval_start": "yesterday"}),
        ),
        400,
        "invalid_date",
    );

    // Backfill.
    error(
        &post(
            port,
            "/backfill",
            &json!({"job": "hxp_daily_aggregation", "from": "2026-03-02", "to": "2026-03-01"}),
        ),
        400,
        "invalid_range",
    );
    error(
        &post(
            port,
            "/backfill",
            &json!({"job": "hxp_daily_aggregation", "from": "march", "to": "2026-03-01"}),
        ),
        400,
        "invalid_date",
    );
    error(
        &post(
            port,
            "/backfill",
            &json!({"job": "nope", "from": "2026-03-01", "to": "2026-03-02"}),
        ),
        404,
        "unknown_job",
    );
    error(
        &post(
            port,
            "/backfill",
            &json!({"job": "hxp_daily_aggregation", "from": "2026-03-01", "to": "2026-03-03", "reprocess": "some"}),
        ),
        400,
        "invalid_reprocess",
    );
    error(
        &post(port, "/backfill", &json!({"from": "2026-03-01"})),
        400,
        "invalid_json",
    );
    error(
        &post(
            port,
            "/backfill",
            &json!({"job": "hxp_daily_aggregation", "from": "2025-06-01", "to": "2025-06-03"}),
        ),
        422,
        "before_start_date",
    );
    let started = post(
        port,
        "/backfill",
        &json!({"job": "hxp_daily_aggregation", "from": "2026-03-01", "to": "2026-03-03"}),
    );
    assert_eq!(started.status, 202, "{}", started.text());
    assert_eq!(started.json()["intervals"], 2);
    let deadline = Instant::now() + Duration::from_secs(60);
    while env
        .count("SELECT count(*) FROM job_runs WHERE run_type = 'backfill' AND state = 'success'")
        .await
        < 2
    {
        assert!(Instant::now() < deadline, "the API backfill did not finish");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The daily job's report task rendered the daily summaries.
    assert_eq!(
        env.count(
            "SELECT count(*) FROM reports WHERE report_type = 'daily_summary' AND status = 'done'"
        )
        .await,
        2
    );

    // Reports. Errors speak of the request, not of hxjobs's Rust types.
    let list = request(port, "POST", "/reports/generate", Some(TOKEN), Some(b"[]"));
    error(&list, 400, "invalid_json");
    let message = list.json()["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(message.contains("expected a JSON object"), "{message}");
    assert!(
        !message.contains("Body") && !message.contains("struct"),
        "{message}"
    );
    error(
        &request(
            port,
            "POST",
            "/reports/generate",
            Some(TOKEN),
            Some(b"{\"report_type\": "),
        ),
        400,
        "invalid_json",
    );
    error(
        &post(
            port,
            "/reports/generate",
            &json!({"report_type": "quarterly_fantasy"}),
        ),
        400,
        "unknown_report_type",
    );
    error(
        &post(
            port,
            "/reports/generate",
            &json!({"report_type": "../../etc/passwd"}),
        ),
        400,
        "unknown_report_type",
    );
    error(
        &post(
            port,
            "/reports/generate",
            &json!({"report_type": "weekly_summary", "format": "docx"}),
        ),
        400,
        "invalid_format",
    );
    error(
        &post(
            port,
            "/reports/generate",
            &json!({"report_type": "weekly_summary", "period_start": "2026-13-45"}),
        ),
        400,
        "invalid_date",
    );
    let big = format!("{{\"report_type\": \"{}\"}}", "x".repeat(10_000));
    error(
        &request(
            port,
            "POST",
            "/reports/generate",
            Some(TOKEN),
            Some(big.as_bytes()),
        ),
        413,
        "payload_too_large",
    );
    let made = post(
        port,
        "/reports/generate",
        &json!({"report_type": "daily_summary", "format": "json", "period_start": "2026-03-01"}),
    );
    assert_eq!(made.status, 201, "{}", made.text());
    let id = made.json()["report_id"].as_i64().expect("id");
    assert_eq!(made.json()["status"], "done");
    let rec = get(port, &format!("/reports/{id}")).json();
    assert_eq!(rec["report_type"], "daily_summary");
    let listed = get(port, "/reports?type=daily_summary").json();
    assert!(listed["reports"]
        .as_array()
        .expect("list")
        .iter()
        .any(|r| r["id"] == id));
    let dl = get(port, &format!("/reports/{id}/download"));
    assert_eq!(dl.status, 200);
    assert_eq!(dl.header("content-type"), Some("application/json"));
    let key = rec["storage_key"].as_str().expect("key");
    assert_eq!(
        key,
        format!("reports/{}", rec["path"].as_str().expect("name"))
    );
    let file = env.dir.path().join("store").join(key);
    assert_eq!(dl.body, std::fs::read(&file).expect("file"));
    assert!(
        !out.join(rec["path"].as_str().expect("name")).exists(),
        "nothing in the old local directory"
    );
    let requests = env
        .count("SELECT COALESCE(sum(event_count), 0)::int8 FROM rollups WHERE grain = 'day' AND bucket_start = '2026-03-01' AND event_type = 'llm_request'")
        .await;
    let kpis = &dl.json()["sections"][0];
    assert_eq!(kpis["rows"][1][0], "Requests");
    assert_eq!(kpis["rows"][1][1], requests);
    let pdf = post(
        port,
        "/reports/generate",
        &json!({"report_type": "weekly_summary", "period_start": "2026-03-02"}),
    );
    let pdf_id = pdf.json()["report_id"].as_i64().expect("id");
    let dl = get(port, &format!("/reports/{pdf_id}/download"));
    assert_eq!(dl.header("content-type"), Some("application/pdf"));
    assert!(dl.body.starts_with(b"%PDF-"));
    error(&get(port, "/reports/0/download"), 400, "invalid_id");
    error(&get(port, "/reports/99999/download"), 404, "unknown_report");
    // Keys and names that lead outside the store: the attack suite.

    // Capacity, retention, rollups.
    let cap = get(port, "/capacity/analysis?to=2026-03-03").json();
    assert_eq!(cap["capacity_events_per_sec"], 1000.0);
    assert_eq!(cap["days"].as_array().expect("days").len(), 2);
    error(
        &get(port, "/capacity/analysis?to=soon"),
        400,
        "invalid_date",
    );
    let dry = post(port, "/retention/cleanup", &json!({"dry_run": true}));
    assert_eq!(dry.status, 200, "{}", dry.text());
    assert_eq!(dry.json()["dry_run"], true);
    assert_eq!(dry.json()["archived"].as_array().map(Vec::len), Some(0));
    let events = env.count("SELECT count(*) FROM events").await;
    assert!(events > 0);
    error(
        &request(
            port,
            "POST",
            "/retention/cleanup",
            None,
            Some(b"{\"dry_run\": true}"),
        ),
        401,
        "unauthorized",
    );
    let rollups = get(port, "/rollups?grain=hour&from=2026-03-01T05:00:00Z&to=2026-03-01T06:00:00Z&event_type=llm_request").json();
    let rows = rollups["rows"].as_array().expect("rows");
    let n: i64 = rows
        .iter()
        .map(|r| r["event_count"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(
        n,
        env.count("SELECT count(*) FROM events WHERE event_type = 'llm_request' AND event_time >= '2026-03-01T05:00:00Z' AND event_time < '2026-03-01T06:00:00Z'").await
    );
    error(&get(port, "/rollups?grain=minute"), 400, "invalid_grain");
    error(
        &get(port, "/rollups?from=2026-03-02&to=2026-03-01"),
        400,
        "invalid_range",
    );
    error(&get(port, "/rollups?from=notadate"), 400, "invalid_date");

    // Metrics, OpenAPI, unknown routes and methods. Values read from the
    // database are refreshed in the background, every 5 s.
    let deadline = Instant::now() + Duration::from_secs(20);
    let metrics = loop {
        let m = get(port, "/metrics");
        if m.text().contains("batch_processing_success_rate") || Instant::now() > deadline {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.text().contains("hxjobs_api_requests_total"),
        "{}",
        metrics.text()
    );
    assert!(
        metrics.text().contains("batch_processing_success_rate"),
        "{}",
        metrics.text()
    );
    // Live rates are exported from the start, over all topics (0 without traffic).
    assert!(
        metrics
            .text()
            .lines()
            .any(|l| l.starts_with("live_events_per_second{") && l.contains(r#"scope="all""#)),
        "{}",
        metrics.text()
    );
    let api = get(port, "/openapi.json").json();
    for path in [
        "/health",
        "/reports/{id}/download",
        "/stats/stream",
        "/rollups",
    ] {
        assert!(api["paths"][path].is_object(), "{path} in OpenAPI");
    }
    error(&get(port, "/nope"), 404, "not_found");
    error(
        &request(port, "DELETE", "/jobs", Some(TOKEN), None),
        405,
        "method_not_allowed",
    );

    // Live stats: a burst of known events after the server started.
    let models = ["gpt-live-a", "gpt-live-b"];
    let mut burst: Vec<DemoRecord> = (0..400)
        .map(|i| {
            let status = if i % 10 == 0 { "error" } else { "success" };
            llm_event(i, models[i % 2], 100.0 + (i % 100) as f64, status)
        })
        .collect();
    // Error events count on their own, never as failed requests (docs/measures.md).
    burst.extend((0..20).map(|i| {
        let id = uuid::Uuid::new_v4();
        let payload = json!({
            "event_id": id.to_string(),
            "event_type": "error_event",
            "timestamp": chrono::Utc::now().to_rfc3339(),
            "source": "burst",
            "data": {"error_type": "oom", "severity": "high"},
            "metadata": {"user_id": format!("e{i}")}
        });
        DemoRecord {
            event_type: EventType::ErrorEvent,
            key: id.to_string(),
            payload: Some(serde_json::to_vec(&payload).expect("json")),
            kind: RecordKind::Event,
        }
    }));
    env.produce(burst).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let stats = loop {
        let s = get(port, "/stats").json();
        if s["total"]["1m"]["events"] == 420 {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "live stats saw {} of 420",
            s["total"]["1m"]["events"]
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let llm = &stats["topics"][env.config.topics.llm_requests.as_str()]["1m"];
    assert_eq!(llm["events"], 400);
    assert_eq!(llm["errors"], 40);
    assert_eq!(llm["error_rate"], 0.1);
    let total = &stats["total"]["1m"];
    assert_eq!(total["errors"], 40, "{total}");
    assert_eq!(total["error_events"], 20, "{total}");
    assert_eq!(total["requests"], 400, "{total}");
    assert_eq!(total["error_rate"], 0.1, "{total}");
    let errors_topic = &stats["topics"][env.config.topics.error_events.as_str()]["1m"];
    assert!(
        errors_topic["error_rate"].is_null(),
        "no requests there: {errors_topic}"
    );
    let span = llm["span_secs"].as_f64().expect("span");
    let rate = llm["events_per_sec"].as_f64().expect("rate");
    assert!(
        (rate * span - 400.0).abs() < 0.5 + 400.0 * 0.01,
        "{rate} x {span}"
    );
    let tokens = llm["tokens_per_sec"].as_f64().expect("tokens");
    assert!(
        (tokens * span - 48_000.0).abs() < 48_000.0 * 0.01,
        "{tokens} x {span}"
    );
    // Latencies 100..199 ms, each 4 times: p95 = 195 within the sketch's 2%.
    let p95 = llm["latency_p95_ms"].as_f64().expect("p95");
    assert!((p95 - 195.0).abs() / 195.0 <= 0.02, "{p95}");
    for m in models {
        assert_eq!(stats["models"][m]["5m"]["events"], 200, "{m}");
    }
    let sse = read_prefix(port, "/stats/stream", 200);
    assert!(sse.contains("text/event-stream"), "{sse}");
    assert!(sse.contains("event: stats"), "{sse}");
    // The metrics the alert rules and the dashboard use are exported.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let metrics = get(port, "/metrics").text();
    for name in [
        "kafka_events_total",
        "kafka_consumer_lag",
        "batch_processing_success_rate",
        "hxjobs_job_runs_total",
        "hxjobs_task_duration_seconds_bucket",
        "hxjobs_api_request_duration_seconds_bucket",
        "live_events_per_second",
        "live_latency_p95_ms",
        "live_error_rate",
        "live_stats_lag_seconds",
    ] {
        assert!(
            metrics.contains(&format!("\n{name}")),
            "{name} in:\n{metrics}"
        );
    }
    drop(server);
    env.cleanup().await;
}

/// Without a token, every endpoint but /health is refused unless the API listens
/// on loopback only (the router in-process, with the configured host).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_only_loopback_may_mutate() {
    let env = TestEnv::new("api_auth").await;
    for (host, expected) in [("0.0.0.0", 403u16), ("127.0.0.1", 202)] {
        let mut config = env.config.clone();
        config.api.host = host.into();
        config.api.token = None;
        let state = hxjobs::api::ApiState::new(
            Arc::new(config),
            hxjobs::db::Pools::new(env.pool.clone()),
            hxjobs::dag::job::load(&env.config.jobs.dir)
                .and_then(hxjobs::dag::job::Loaded::all_valid)
                .expect("jobs")
                .into_iter()
                .map(Arc::new)
                .collect(),
            None,
            CancellationToken::new(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, hxjobs::server::router(state)).await;
        });
        let r = tokio::task::spawn_blocking(move || {
            request(
                port,
                "POST",
                "/jobs/hxp_hourly_aggregation/runs",
                None,
                Some(b"{}"),
            )
        })
        .await
        .expect("request");
        assert_eq!(r.status, expected, "{host}: {}", r.text());
        if expected == 403 {
            assert_eq!(r.json()["error"], "forbidden");
        }
        let r = tokio::task::spawn_blocking(move || request(port, "GET", "/stats", None, None))
            .await
            .expect("request");
        if expected == 403 {
            // Off loopback without tokens, reads are refused too.
            assert_eq!(r.status, 403, "{}", r.text());
            assert_eq!(r.json()["error"], "forbidden");
        } else {
            // Live stats are off in this state: a JSON 503, not a crash.
            assert_eq!(r.status, 503);
            assert_eq!(r.json()["error"], "live_stats_disabled");
        }
        server.abort();
    }
    env.cleanup().await;
}

/// With the broker unreachable, /health answers 503 and says which check failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_503_with_the_detail_when_the_broker_is_down() {
    let env = TestEnv::new("api_health").await;
    let port = free_port();
    let dead_broker = format!("127.0.0.1:{}", free_port());
    let cfg = env.config_file(&format!(
        "[api]\nhost = \"127.0.0.1\"\nport = {port}\n[kafka]\nrequest_timeout_ms = 2000\n"
    ));
    let child = env
        .command()
        .arg("--config")
        .arg(cfg)
        .arg("serve")
        .env("KAFKA_BOOTSTRAP_SERVERS", &dead_broker)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("hxjobs serve");
    let _server = Server { child, port };
    let deadline = Instant::now() + Duration::from_secs(60);
    let reply = loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            let r = get(port, "/health");
            if !r.json()["checked_at"].is_null() {
                break r;
            }
        }
        assert!(Instant::now() < deadline, "no health check within 60 s");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(reply.status, 503, "{}", reply.text());
    let h = reply.json();
    assert_eq!(h["status"], "unhealthy");
    assert_eq!(h["service"], "batch-processing-api");
    assert_eq!(h["checks"]["database"]["status"], "up");
    assert_eq!(h["checks"]["kafka"]["status"], "down");
    let detail = h["checks"]["kafka"]["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(&dead_broker), "{detail}");
    // Live stats could not start without the broker: a JSON 503, the rest works.
    let stats = get(port, "/stats");
    assert_eq!(stats.status, 503);
    assert_eq!(stats.json()["error"], "live_stats_unavailable");
    assert_eq!(get(port, "/jobs").status, 200);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_internal_failure_answers_with_an_error_id_and_no_detail() {
    let env = TestEnv::new("api_internal").await;
    // Recording a finished report fails inside PostgreSQL.
    sqlx::query(
        "CREATE FUNCTION refuse_done() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'reports table refused at /srv/secret/path'; END $$",
    )
    .execute(&env.pool)
    .await
    .expect("function");
    sqlx::query(
        "CREATE TRIGGER refuse_done BEFORE UPDATE ON reports FOR EACH ROW
         WHEN (NEW.status = 'done') EXECUTE FUNCTION refuse_done()",
    )
    .execute(&env.pool)
    .await
    .expect("trigger");
    let server = start(&env, &env.dir.path().join("out"));
    let r = post(
        server.port,
        "/reports/generate",
        &serde_json::json!({"report_type": "weekly_summary", "format": "json",
                            "period_start": "2026-02-16"}),
    );
    error(&r, 500, "database_error");
    let body = r.json();
    let id = body["error_id"].as_str().expect("error id");
    assert!(id.starts_with("e-") && id.len() > 4, "{body}");
    let text = r.text();
    assert!(text.contains(id));
    assert!(!text.contains("secret"), "no detail in the body: {text}");
    // The report is recorded as failed, with the detail, for the operator,
    // and its file is not left in the store.
    let failed: String = sqlx::query_scalar("SELECT error FROM reports WHERE status = 'failed'")
        .fetch_one(&env.pool)
        .await
        .expect("failed report");
    assert!(failed.contains("/srv/secret/path"), "{failed}");
    let left = std::fs::read_dir(env.dir.path().join("store/reports"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(left, 0, "no file of a failed report");
    drop(server);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_api_backfill_per_job_and_each_can_be_cancelled() {
    let env = TestEnv::new("api_backfills").await;
    let out = env.dir.path().join("out");
    let server = start(&env, &out);
    let port = server.port;
    // A long backfill: two years of hours.
    let body = serde_json::json!({"job": "hxp_hourly_aggregation", "from": "2026-01-01",
                                  "to": "2027-01-01", "parallel": 1, "allow_unfinished": true});
    let first = post(port, "/backfill", &body);
    assert_eq!(first.status, 202, "{}", first.text());
    let id = first.json()["backfill_id"].as_i64().expect("backfill id");
    let again = post(port, "/backfill", &body);
    error(&again, 409, "backfill_running");
    assert_eq!(again.json()["backfill_id"], id);
    let listed = get(port, "/backfills?job=hxp_hourly_aggregation").json();
    assert_eq!(listed["backfills"][0]["id"], id);
    assert_eq!(listed["backfills"][0]["state"], "running");
    // Cancelled: the row says so, the backfill stops, a new one may start.
    let cancel = request(
        port,
        "DELETE",
        &format!("/backfills/{id}"),
        Some(TOKEN),
        None,
    );
    assert_eq!(cancel.status, 200, "{}", cancel.text());
    assert_eq!(cancel.json()["state"], "cancelled");
    error(
        &request(
            port,
            "DELETE",
            &format!("/backfills/{id}"),
            Some(TOKEN),
            None,
        ),
        409,
        "backfill_finished",
    );
    error(
        &request(port, "DELETE", "/backfills/999999", Some(TOKEN), None),
        404,
        "unknown_backfill",
    );
    assert_eq!(
        request(port, "DELETE", &format!("/backfills/{id}"), None, None).status,
        401,
        "cancelling needs the token"
    );
    // The worker sees the cancellation and stops taking intervals.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let row = get(port, &format!("/backfills/{id}")).json();
        if row["succeeded"].is_number() {
            assert_eq!(row["state"], "cancelled");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the backfill did not stop: {row}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let done = env
        .count("SELECT count(*) FROM job_runs WHERE run_type = 'backfill' AND state = 'success'")
        .await;
    assert!(done < 17_500, "stopped long before the end: {done}");
    let next = post(port, "/backfill", &body);
    assert_eq!(next.status, 202, "{}", next.text());
    let next_id = next.json()["backfill_id"].as_i64().expect("id");
    assert!(next_id > id);
    let api = get(port, "/openapi.json").json();
    assert!(
        api["paths"]["/backfills/{id}"]["delete"].is_object(),
        "{}",
        api["paths"]
    );
    assert!(api["paths"]["/backfills/{id}"]["get"].is_object());
    request(
        port,
        "DELETE",
        &format!("/backfills/{next_id}"),
        Some(TOKEN),
        None,
    );
    drop(server);
    env.cleanup().await;
}
