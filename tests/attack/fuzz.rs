//! Generated requests to every route (the API's from its OpenAPI document,
//! the console's), with hostile values everywhere a value goes, against a
//! daemon that runs what gets queued: no 5xx but documented outages, no
//! panic, bounded memory, nothing executed.

use std::time::Duration;

use rand::{Rng, SeedableRng};

use crate::common::TestEnv;
use crate::{config, eventually, note_job, raw, Server};

const CONSOLE: [&str; 20] = [
    "/ui/",
    "/ui/jobs",
    "/ui/jobs/{job}",
    "/ui/runs/{id}",
    "/ui/runs/{id}/clear",
    "/ui/runs/{id}/mark",
    "/ui/runs/{id}/cancel",
    "/ui/jobs/{job}/pause",
    "/ui/jobs/{job}/unpause",
    "/ui/jobs/{job}/run",
    "/ui/jobs/{job}/backfill",
    "/ui/backfills/{id}",
    "/ui/backfills/{id}/cancel",
    "/ui/reports",
    "/ui/reports/generate",
    "/ui/dead-letters",
    "/ui/rollups",
    "/ui/capacity",
    "/ui/retention",
    "/ui/login",
];

/// Values that have broken servers: paths, quotes, commands, NULs,
/// extreme numbers and dates, markup, templates, huge strings.
fn hostile(marker: &str) -> Vec<String> {
    vec![
        "../../../../etc/passwd".into(),
        "'; DROP TABLE job_runs; --".into(),
        format!("$(touch {marker})"),
        format!("`touch {marker}`"),
        format!("'; touch {marker}; '"),
        "\u{0}".into(),
        "%00".into(),
        "%ff%fe%c0%af".into(),
        "99999999999999999999999".into(),
        "-1".into(),
        "0".into(),
        "1e308".into(),
        "NaN".into(),
        "+262143-12-31".into(),
        "-262143-01-01".into(),
        "1969-12-31T23:59:59Z".into(),
        "9999-12-31T23:59:59Z".into(),
        "<script>alert(1)</script>".into(),
        "{{ interval_start }}".into(),
        "null".into(),
        "[]".into(),
        "é\u{202e}".into(),
        "a".repeat(10_000),
        "note".into(),
        "2026-02-01".into(),
    ]
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_hostile_requests_to_every_route() {
    let env = TestEnv::new("attack_fuzz").await;
    let dir = env.dir.path().to_path_buf();
    let marker = dir.join("executed").display().to_string();
    let port = crate::http::free_port();
    let cfg = config(
        &env,
        &[("note", note_job(&dir))],
        port,
        "max_backfill_intervals = 2000",
        "[scheduler]\npoll_secs = 1\n",
    );
    let mut server = Server::start(&env, &cfg, "daemon", port);
    let spec = raw(port, "GET", "/openapi.json", &[], b"").expect("openapi");
    let spec = spec.json();
    let mut routes: Vec<(String, String)> = Vec::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("methods").keys() {
            routes.push((method.to_uppercase(), path.clone()));
        }
    }
    assert!(routes.len() >= 20, "{routes:?}");
    for path in CONSOLE {
        routes.push(("GET".into(), path.into()));
        routes.push(("POST".into(), path.into()));
    }
    let values = hostile(&marker);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(27);
    let keys = [
        "job",
        "from",
        "to",
        "interval_start",
        "params",
        "note",
        "limit",
        "reason",
        "grain",
        "event_type",
        "limit",
        "task",
        "state",
        "report_type",
        "period_start",
        "format",
        "dry_run",
        "csrf",
        "token",
        "next",
        "reprocess",
        "parallel",
        "downstream",
        "try",
    ];
    let mut failures = Vec::new();
    for i in 0..600 {
        let (method, template) = &routes[rng.random_range(0..routes.len())];
        let mut pick = || values[rng.random_range(0..values.len())].clone();
        let path = template
            .replace("{job}", &encode(&pick()))
            .replace("{id}", &encode(&pick()))
            .replace("{task}", &encode(&pick()));
        let query: Vec<String> = (0..rng.random_range(0..4))
            .map(|_| {
                format!(
                    "{}={}",
                    keys[rng.random_range(0..keys.len())],
                    encode(&values[rng.random_range(0..values.len())])
                )
            })
            .collect();
        let target = if query.is_empty() {
            path.clone()
        } else {
            format!("{path}?{}", query.join("&"))
        };
        let (content_type, body) = match rng.random_range(0..4) {
            0 => ("", Vec::new()),
            1 => {
                let mut obj = serde_json::Map::new();
                for _ in 0..rng.random_range(0..5) {
                    let k = keys[rng.random_range(0..keys.len())];
                    let v = values[rng.random_range(0..values.len())].clone();
                    let v = if k == "params" {
                        serde_json::json!({"note": v, "limit": rng.random_range(-5..2000)})
                    } else {
                        serde_json::Value::String(v)
                    };
                    obj.insert(k.to_string(), v);
                }
                (
                    "application/json",
                    serde_json::Value::Object(obj).to_string().into_bytes(),
                )
            }
            2 => (
                "application/x-www-form-urlencoded",
                query.join("&").into_bytes(),
            ),
            _ => (
                "application/json",
                values[rng.random_range(0..values.len())]
                    .clone()
                    .into_bytes(),
            ),
        };
        let mut headers = vec![];
        if !content_type.is_empty() {
            headers.push(("Content-Type", content_type));
        }
        let Some(r) = raw(port, method, &target, &headers, &body) else {
            failures.push(format!("#{i} {method} {target}: no answer"));
            continue;
        };
        let documented = r.status == 503
            && [
                "live_stats_disabled",
                "live_stats_unavailable",
                "too_many_streams",
                "broker_unavailable",
            ]
            .iter()
            .any(|c| r.text().contains(c));
        if r.status >= 500 && !documented {
            failures.push(format!("#{i} {method} {target}: {} {}", r.status, r.text()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // What got queued ran (or is running); none of it executed a value.
    let _ = eventually(20, || async {
        env.count("SELECT count(*) FROM job_runs WHERE state IN ('queued', 'running')")
            .await
            == 0
    })
    .await;
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !std::path::Path::new(&marker).exists(),
        "a value was executed"
    );
    assert!(server.alive(), "the daemon died: {}", server.log_text());
    assert!(server.rss_mib() < 600, "resident {} MiB", server.rss_mib());
    let log = server.log_text();
    assert!(!log.contains("panicked"), "a panic: {log}");
    drop(server);
    env.cleanup().await;
}
