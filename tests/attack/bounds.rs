//! Findings 3, 5, 6 and 7: one request could take the machine's memory,
//! extreme dates panicked handlers, client mistakes came back as database
//! outages with PostgreSQL's text, and connections were unbounded.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::TestEnv;
use crate::{config, note_job, raw, Server};

fn minute_job() -> String {
    "name = \"tick\"\nschedule = \"* * * * *\"\ninterval = \"minute\"\nstart_date = \"2026-01-01\"\n\
     [tasks.t]\nkind = \"sql\"\nsql = \"SELECT 1\"\n"
        .to_string()
}

fn month_job() -> String {
    "name = \"monthly\"\nschedule = \"0 0 1 * *\"\ninterval = \"month\"\nstart_date = \"1970-01-01\"\n\
     [tasks.t]\nkind = \"sql\"\nsql = \"SELECT 1\"\n"
        .to_string()
}

fn post_json(port: u16, path: &str, body: serde_json::Value) -> crate::http::Reply {
    raw(
        port,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
    .unwrap_or_else(|| panic!("POST {path}: no answer (a panic or a dropped connection)"))
}

fn get(port: u16, path: &str) -> crate::http::Reply {
    raw(port, "GET", path, &[], b"")
        .unwrap_or_else(|| panic!("GET {path}: no answer (a panic or a dropped connection)"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_cannot_exhaust_or_crash_the_server() {
    let env = TestEnv::new("attack_bounds").await;
    let port = crate::http::free_port();
    let jobs = [
        ("note", note_job(env.dir.path())),
        ("tick", minute_job()),
        ("monthly", month_job()),
    ];
    let cfg = config(&env, &jobs, port, "max_backfill_intervals = 5000", "");
    let mut server = Server::start(&env, &cfg, "serve", port);
    let started = Instant::now();

    // Dates at the end of chrono's range, or past the years hxjobs
    // schedules: 400 invalid_date, at once.
    for (from, to) in [
        ("+262142-01-01", "+262143-01-01"),
        ("9999-12-01", "+10000-01-01"),
        ("1000-01-01", "2000-01-01"),
    ] {
        for job in ["monthly", "tick"] {
            let r = post_json(
                port,
                "/backfill",
                json!({"job": job, "from": from, "to": to}),
            );
            assert_eq!(r.status, 400, "{job} {from}: {}", r.text());
            assert_eq!(r.json()["error"], "invalid_date", "{}", r.text());
        }
    }
    // A thousand years of minutes, or a million intervals: refused before
    // any is made.
    for (job, from, to) in [
        ("tick", "1990-01-01", "2990-01-01"),
        ("tick", "2024-01-01", "2026-01-01"),
    ] {
        let r = post_json(
            port,
            "/backfill",
            json!({"job": job, "from": from, "to": to}),
        );
        assert_eq!(r.status, 422, "{}", r.text());
        assert_eq!(r.json()["error"], "too_many_intervals");
        assert_eq!(r.json()["max_intervals"], 5000);
    }
    assert_eq!(env.count("SELECT count(*) FROM job_runs").await, 0);
    assert_eq!(env.count("SELECT count(*) FROM backfills").await, 0);
    // The console's preview, the same.
    let page = get(port, "/ui/jobs/tick/backfill");
    let (csrf, cookie) = (crate::csrf_of(&page), crate::visitor_of(&page));
    for (from, to, status) in [
        ("1026-01-01", "2026-01-01", 400),
        ("1990-01-01", "2990-01-01", 422),
        ("+262142-01-01", "+262143-01-01", 400),
    ] {
        let body = format!("csrf={csrf}&step=preview&from={from}&to={to}");
        let r = raw(
            port,
            "POST",
            "/ui/jobs/tick/backfill",
            &[
                ("Cookie", &cookie),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            body.as_bytes(),
        )
        .expect("an answer");
        assert_eq!(r.status, status, "{from}: {}", r.text());
    }

    // Extreme dates everywhere a date is read: a 4xx JSON (or page), never
    // an empty reply.
    for path in [
        "/rollups?from=%2B262143-12-31&to=%2B262143-12-31",
        "/rollups?from=-262143-01-01",
        "/rollups?from=0001-01-01&to=9999-12-31T23:59:59Z",
        "/capacity/analysis?to=%2B262143-12-31",
        "/capacity/analysis?to=0001-01-01",
        "/ui/rollups?from=%2B262143-12-31",
        "/ui/capacity?to=%2B262143-12-31",
        "/ui/jobs/note?from=%2B262143-12-31",
    ] {
        let r = get(port, path);
        assert!(
            (400..500).contains(&r.status),
            "{path}: {} {}",
            r.status,
            r.text()
        );
    }
    for body in [
        json!({"report_type": "daily", "period_start": "+262143-12-31"}),
        json!({"report_type": "monthly", "period_start": "9999-12-31"}),
    ] {
        let r = post_json(port, "/reports/generate", body.clone());
        assert!(
            (400..500).contains(&r.status),
            "{body}: {} {}",
            r.status,
            r.text()
        );
    }
    for (job, at) in [
        ("monthly", "9999-12-31T23:00:00Z"),
        ("monthly", "+262143-12-31"),
        ("note", "1969-12-31"),
    ] {
        let r = post_json(
            port,
            &format!("/jobs/{job}/runs"),
            json!({"interval_start": at, "ignore_start_date": true}),
        );
        assert!(
            (400..500).contains(&r.status),
            "{job} {at}: {} {}",
            r.status,
            r.text()
        );
    }
    // No run was queued with an empty interval.
    assert_eq!(
        env.count("SELECT count(*) FROM job_runs WHERE interval_start >= interval_end")
            .await,
        0
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );

    // Client mistakes are the client's: 4xx in hxjobs's words, never
    // PostgreSQL's text, never "database unavailable".
    for body in [
        json!({"interval_start": "2026-02-01", "reason": "a\u{0}b"}),
        json!({"interval_start": "2026-02-01", "params": {"note": "nul\u{0}byte"}}),
    ] {
        let r = post_json(port, "/jobs/note/runs", body.clone());
        assert!(
            (400..500).contains(&r.status),
            "{body}: {} {}",
            r.status,
            r.text()
        );
        let text = r.text();
        for pg in [
            "invalid byte sequence",
            "0x00",
            "UTF8",
            "SQLSTATE",
            "database_unavailable",
        ] {
            assert!(!text.contains(pg), "{body}: PostgreSQL's words in {text}");
        }
    }
    // A run no page could show cannot be stored.
    let stored = sqlx::query(
        "INSERT INTO job_runs (job, run_type, interval_start, interval_end, state)
         VALUES ('note', 'manual', '270000-01-01', '270000-01-02', 'failed')",
    )
    .execute(&env.pool)
    .await;
    assert!(stored.is_err(), "a run past chrono's years was stored");
    assert!(server.alive(), "the server died: {}", server.log_text());
    assert!(server.rss_mib() < 400, "resident {} MiB", server.rss_mib());
    let log = server.log_text();
    assert!(!log.contains("panicked"), "a panic: {log}");
    drop(server);
    env.cleanup().await;
}

/// Opens an event stream; returns it and the first bytes of its answer.
fn open_stream(port: u16, path: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .expect("write");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).expect("the stream answers");
    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
    (s, head)
}

/// Opens a connection that sends half a request and stays.
fn slow_client(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.write_all(b"GET /jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .expect("write");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_and_streams_are_bounded() {
    let env = TestEnv::new("attack_conns").await;
    let port = crate::http::free_port();
    let cfg = config(
        &env,
        &[("note", note_job(env.dir.path()))],
        port,
        "max_connections = 4\nheader_timeout_secs = 2\nrequest_timeout_secs = 2\nmax_sse_streams = 1",
        "",
    );
    let server = Server::start(&env, &cfg, "serve", port);

    // A client that never finishes its headers is closed.
    let mut slow = slow_client(port);
    slow.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let started = Instant::now();
    let mut buf = [0u8; 512];
    let n = slow.read(&mut buf).unwrap_or(0);
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(10), "held for {waited:?}");
    let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(n == 0 || answer.starts_with("HTTP/1.1 408"), "{answer}");

    // A client that sends its headers, then its body a byte at a time (or
    // never): answered 503 within the request time limit.
    let mut trickle = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    trickle
        .write_all(
            b"POST /backfill HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"job\": ",
        )
        .expect("write");
    trickle
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let started = Instant::now();
    let n = trickle.read(&mut buf).unwrap_or(0);
    let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "held for {:?}",
        started.elapsed()
    );
    drop(trickle);

    // Past the cap: 503, while /health and /metrics still answer.
    let held: Vec<TcpStream> = (0..5).map(|_| slow_client(port)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let r = get(port, "/jobs");
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"], "too_many_connections");
    for path in ["/health", "/metrics"] {
        let r = get(port, path);
        assert!(
            r.status == 200 || r.status == 503 && r.text().contains("\"database\""),
            "{path}: {}",
            r.status
        );
        if path == "/metrics" {
            assert!(r.text().contains("hxjobs_api_connections"), "{}", r.text());
        }
    }
    drop(held);
    // They age out; the API serves everyone again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(port, "/jobs");
        if r.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "still refused: {}", r.text());
        std::thread::sleep(Duration::from_millis(200));
    }

    // Event streams: one open, the next is 503 until it closes. A running
    // task's log stream stays open.
    let run: i64 = sqlx::query_scalar(
        "INSERT INTO job_runs (job, run_type, interval_start, interval_end, state)
         VALUES ('note', 'manual', '2026-02-01', '2026-02-02', 'running') RETURNING id",
    )
    .fetch_one(&env.pool)
    .await
    .expect("run");
    sqlx::query("INSERT INTO task_attempts (run_id, task, claim, try) VALUES ($1, 'store', 1, 1)")
        .bind(run)
        .execute(&env.pool)
        .await
        .expect("task");
    let stream_path = format!("/runs/{run}/tasks/store/logs/stream");
    let (first, head) = open_stream(port, &stream_path);
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "the log stream did not open: {head}"
    );
    let r = get(port, &stream_path);
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"], "too_many_streams");
    drop(first);
    std::thread::sleep(Duration::from_millis(1500));
    let (_again, head) = open_stream(port, &stream_path);
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "its place was not freed: {head}"
    );
    drop(server);
    env.cleanup().await;
}

/// `GET /rollups` (API and console): its filters are bound values, never
/// SQL; how many rows it reads is capped; the stored sketches are never
/// sent, whatever a client asks for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollup_filters_are_values_capped_and_never_return_sketches() {
    let env = TestEnv::new("attack_rollups").await;
    let port = crate::http::free_port();
    let cfg = config(&env, &[("note", note_job(env.dir.path()))], port, "", "");
    sqlx::query(
        "INSERT INTO rollups (grain, bucket_start, event_type, source, subject, event_count,
                              error_count, latency_count, latency_sum_ms, prompt_tokens,
                              completion_tokens, cost_usd, rating_sum, rating_count, value_sum,
                              distinct_users, latency_sketch, users_sketch)
         VALUES ('day', '2026-03-01', 'llm_request', 'web-app', 'llama', 7, 1, 7, 70, 10, 20,
                 0.5, 0, 0, 0, 3, '\\x5345435245542d534b45544348', '\\x5345435245542d534b45544348')",
    )
    .execute(&env.pool)
    .await
    .expect("rollup row");
    let server = Server::start(&env, &cfg, "serve", port);
    let range = "grain=day&from=2026-03-01&to=2026-03-02";

    let r = get(port, &format!("/rollups?{range}"));
    assert_eq!(r.status, 200, "{}", r.text());
    let body: serde_json::Value = serde_json::from_str(&r.text()).expect("json");
    assert_eq!(body["rows"].as_array().map(Vec::len), Some(1));
    assert_eq!(body["rows"][0]["event_count"], 7);
    // The sketches' bytes ("SECRET-SKETCH") are neither named nor sent.
    assert!(!r.text().contains("sketch"), "{}", r.text());

    // A filter is a value: an injection matches nothing and changes nothing.
    for filter in [
        "event_type=llm_request'%20OR%20'1'%3D'1",
        "source=x');%20DELETE%20FROM%20rollups;--",
        "subject=%25",
    ] {
        let r = get(port, &format!("/rollups?{range}&{filter}"));
        assert_eq!(r.status, 200, "{filter}: {}", r.text());
        let body: serde_json::Value = serde_json::from_str(&r.text()).expect("json");
        assert_eq!(body["rows"], json!([]), "{filter}");
    }
    assert_eq!(env.count("SELECT count(*) FROM rollups").await, 1);

    // Bounded, and nothing beyond the declared parameters.
    for (query, code) in [
        (format!("{range}&limit=10001"), "invalid_limit"),
        (format!("{range}&limit=0"), "invalid_limit"),
        (
            "grain=hour;DROP&from=2026-03-01".to_string(),
            "invalid_grain",
        ),
        (format!("{range}&sketches=true"), "invalid_query"),
    ] {
        let r = get(port, &format!("/rollups?{query}"));
        assert_eq!(r.status, 400, "{query}: {}", r.text());
        let body: serde_json::Value = serde_json::from_str(&r.text()).expect("json");
        assert_eq!(body["error"], code, "{query}: {}", r.text());
        assert!(!r.text().contains("sqlx"), "{query}: {}", r.text());
    }
    // The console's page reads the same rows, without the sketches either.
    let r = get(port, &format!("/ui/rollups?{range}"));
    assert_eq!(r.status, 200);
    assert!(r.text().contains("llama") && !r.text().contains("SECRET-SKETCH"));
    let r = get(
        port,
        &format!("/ui/rollups?{range}&event_type=x'%20OR%201%3D1--"),
    );
    assert_eq!(r.status, 200);
    assert!(
        !r.text().contains("llama"),
        "an injected filter matched rows"
    );

    drop(server);
    env.cleanup().await;
}
