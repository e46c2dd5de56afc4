//! Reports rendered from real rollups of 36 days of demo events: the text a
//! PDF reader extracts (pdftotext) carries the rollups' numbers, and JSON
//! and CSV carry the same.

use hxjobs::interval::Grain;
use hxjobs::reports::{self, Format};
use hxjobs::rollup::{self, sketch};
use sha2::Digest;

use crate::common::{ts, TestEnv};

/// 36 days of demo events, rolled up at every grain.
async fn rolled_up(name: &str) -> TestEnv {
    let env = TestEnv::new(name).await;
    let (from, to) = (ts("2026-01-26"), ts("2026-03-03"));
    env.ingest_demo(12_000, from, to, 41).await;
    for start in Grain::Hour.starts(from, to) {
        rollup::aggregate(&env.pool, Grain::Hour, start)
            .await
            .expect("hour");
    }
    for start in Grain::Day.starts(from, to) {
        rollup::aggregate(&env.pool, Grain::Day, start)
            .await
            .expect("day");
    }
    for start in Grain::Week.starts(from, ts("2026-03-02")) {
        rollup::aggregate(&env.pool, Grain::Week, start)
            .await
            .expect("week");
    }
    for month in ["2026-01-01", "2026-02-01"] {
        rollup::aggregate(&env.pool, Grain::Month, ts(month))
            .await
            .expect("month");
    }
    env
}

fn pdftotext(path: &std::path::Path) -> String {
    let out = std::process::Command::new("pdftotext")
        .arg("-layout")
        .arg(path)
        .arg("-")
        .output()
        .expect("pdftotext (poppler-utils) is installed");
    assert!(
        out.status.success(),
        "pdftotext failed on {}",
        path.display()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The line of a table row whose first cell is `label`.
fn row<'a>(text: &'a str, label: &str) -> &'a str {
    text.lines()
        .map(str::trim)
        .find(|l| {
            l.strip_prefix(label).is_some_and(|rest| {
                rest.starts_with("  ")
                    && rest
                        .trim_start()
                        .starts_with(|c: char| c.is_ascii_digit() || c == '-')
            })
        })
        .unwrap_or_else(|| panic!("no row {label:?} in:\n{text}"))
}

/// A figure as the PDF shows it: with thousands separators.
fn g(v: impl ToString) -> String {
    hxjobs::reports::grouped(&v.to_string())
}

/// "page N of M" on every page, M the real page count.
fn pages_numbered(text: &str) {
    let pages = text.split('\x0c').filter(|p| !p.trim().is_empty()).count();
    assert!(pages >= 1);
    for n in 1..=pages {
        assert!(
            text.contains(&format!("page {n} of {pages}")),
            "page {n} of {pages} in:\n{text}"
        );
    }
}

fn cells(line: &str) -> Vec<&str> {
    line.split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect()
}

async fn sum(env: &TestEnv, grain: &str, start: &str, what: &str, filter: &str) -> f64 {
    sqlx::query_scalar::<_, f64>(&format!(
        "SELECT COALESCE(sum({what}), 0)::float8 FROM rollups
         WHERE grain = '{grain}' AND bucket_start = '{start}' {filter}"
    ))
    .fetch_one(&env.pool)
    .await
    .expect("sum")
}

/// p95 latency and distinct users of a bucket, merged from its rows' sketches.
async fn merged(env: &TestEnv, grain: &str, start: &str, filter: &str) -> (Option<f64>, i64) {
    type Sketches = (Option<Vec<u8>>, Option<Vec<u8>>);
    let rows: Vec<Sketches> = sqlx::query_as(&format!(
        "SELECT latency_sketch, users_sketch FROM rollups
         WHERE grain = '{grain}' AND bucket_start = '{start}' {filter}"
    ))
    .fetch_all(&env.pool)
    .await
    .expect("sketches");
    let (mut l, mut u) = (sketch::new_latency(), sketch::new_users());
    let mut any_latency = false;
    for (ls, us) in rows {
        if let Some(b) = ls {
            sketch::merge_latency(&mut l, &sketch::decode_latency(&b).expect("latency"))
                .expect("merge");
            any_latency = true;
        }
        if let Some(b) = us {
            sketch::merge_users(&mut u, &sketch::decode_users(&b).expect("users")).expect("merge");
        }
    }
    let p95 = if any_latency {
        sketch::quantile(&l, 0.95)
    } else {
        None
    };
    (p95, sketch::count_users(&mut u))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_report_type_carries_the_rollup_numbers() {
    let env = rolled_up("reports").await;
    let mut config = env.config.clone();
    config.reports.output_dir = env.dir.path().join("out");
    let now = ts("2026-03-10T08:00:00Z");
    let llm = "AND event_type = 'llm_request'";

    // Weekly summary, PDF.
    let week = "2026-02-16T00:00:00Z";
    let record = reports::generate(
        &config,
        &env.pool,
        "weekly_summary",
        Format::Pdf,
        Some(ts("2026-02-18T12:00:00Z")),
        now,
    )
    .await
    .expect("weekly report");
    assert_eq!(record.status, "done");
    let file = env.stored(&record);
    let bytes = std::fs::read(&file).expect("report file");
    assert!(bytes.starts_with(b"%PDF-"), "a PDF");
    assert_eq!(record.size, Some(bytes.len() as i64));
    assert_eq!(
        record.sha256.as_deref(),
        Some(format!("{:x}", sha2::Sha256::digest(&bytes)).as_str())
    );
    let text = pdftotext(&file);
    assert!(text.contains("Weekly summary"), "{text}");
    pages_numbered(&text);
    assert!(
        text.contains("Period: 2026-02-16 00:00 to 2026-02-23 00:00 UTC"),
        "{text}"
    );

    let requests = sum(&env, "week", week, "event_count", llm).await as i64;
    let previous = sum(&env, "week", "2026-02-09T00:00:00Z", "event_count", llm).await as i64;
    assert!(requests > 0 && previous > 0);
    let kpi = cells(row(&text, "Requests"));
    assert_eq!(kpi[1], g(requests), "{kpi:?}");
    assert_eq!(kpi[2], g(previous), "{kpi:?}");
    let change = (requests - previous) as f64 * 100.0 / previous as f64;
    assert_eq!(kpi[3], g(format!("{change:.1}")), "{kpi:?}");
    let cost = sum(&env, "week", week, "cost_usd", "").await;
    assert_eq!(cells(row(&text, "Cost USD"))[1], g(format!("{cost:.4}")));
    let prompt = sum(&env, "week", week, "prompt_tokens", "").await as i64;
    assert_eq!(cells(row(&text, "Prompt tokens"))[1], g(prompt));
    let errors = sum(&env, "week", week, "error_count", llm).await;
    assert_eq!(
        cells(row(&text, "Error rate %"))[1],
        format!("{:.2}", errors * 100.0 / requests as f64)
    );
    let ratings = sum(&env, "week", week, "rating_sum", "").await
        / sum(&env, "week", week, "rating_count", "").await;
    assert_eq!(
        cells(row(&text, "Satisfaction (avg rating)"))[1],
        format!("{ratings:.2} / 10")
    );
    let (p95, _) = merged(&env, "week", week, llm).await;
    let (_, users) = merged(&env, "week", week, "").await;
    assert_eq!(
        cells(row(&text, "Latency p95 ms"))[1],
        g(format!("{:.1}", p95.expect("p95")))
    );
    assert_eq!(cells(row(&text, "Distinct users"))[1], g(users));

    // Per model: requests and cost of each model's rows.
    let models: Vec<(String, i64, f64)> = sqlx::query_as(&format!(
        "SELECT subject, sum(event_count)::int8, sum(cost_usd)::float8 FROM rollups
         WHERE grain = 'week' AND bucket_start = '{week}' {llm} GROUP BY subject"
    ))
    .fetch_all(&env.pool)
    .await
    .expect("models");
    assert!(models.len() >= 2);
    for (model, n, cost) in &models {
        let c = cells(row(&text, model));
        assert_eq!(c[1], g(n), "{model}: {c:?}");
        assert_eq!(c[5], g(format!("{cost:.4}")), "{model}: {c:?}");
    }
    // Per source: failed requests and error events apart, never summed
    // into one "errors" figure (docs/measures.md).
    let sources: Vec<(String, i64, i64, i64)> = sqlx::query_as(&format!(
        "SELECT source,
                COALESCE(sum(event_count) FILTER (WHERE event_type = 'llm_request'), 0)::int8,
                COALESCE(sum(error_count) FILTER (WHERE event_type = 'llm_request'), 0)::int8,
                COALESCE(sum(event_count) FILTER (WHERE event_type = 'error_event'), 0)::int8
         FROM rollups WHERE grain = 'week' AND bucket_start = '{week}' GROUP BY source"
    ))
    .fetch_all(&env.pool)
    .await
    .expect("sources");
    let mut checked = 0;
    for (source, requests, failed, error_events) in &sources {
        if *requests == 0 && *error_events == 0 || models.iter().any(|m| &m.0 == source) {
            continue;
        }
        let c = cells(row(&text, source));
        assert_eq!(c[2], g(requests), "{source}: {c:?}");
        assert_eq!(c[3], g(failed), "{source}: {c:?}");
        assert_eq!(c[5], g(error_events), "{source}: {c:?}");
        checked += 1;
    }
    assert!(checked > 0, "{sources:?}");
    // Errors by type and the charts' axes.
    let types: Vec<(String, i64)> = sqlx::query_as(&format!(
        "SELECT subject, sum(event_count)::int8 FROM rollups
         WHERE grain = 'week' AND bucket_start = '{week}' AND event_type = 'error_event' GROUP BY subject"
    ))
    .fetch_all(&env.pool)
    .await
    .expect("error types");
    for (t, n) in &types {
        assert_eq!(cells(row(&text, t))[1], g(n), "{t}");
    }
    for label in [
        "Requests per day",
        "p95 latency per day (ms)",
        "Cost by model (USD)",
        "02-16",
        "02-22",
    ] {
        assert!(text.contains(label), "{label} in:\n{text}");
    }

    // The same numbers as JSON and CSV.
    let json = reports::generate(
        &config,
        &env.pool,
        "weekly_summary",
        Format::Json,
        Some(ts(week)),
        now,
    )
    .await
    .expect("json report");
    let body: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.stored(&json)).expect("file")).expect("json");
    let kpis = body["sections"]
        .as_array()
        .expect("sections")
        .iter()
        .find(|s| s["title"] == "Key figures")
        .expect("kpis");
    let req_row = kpis["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r[0] == "Requests")
        .expect("requests row");
    assert_eq!(req_row[1], requests);
    assert_eq!(req_row[2], previous);
    let csv = reports::generate(
        &config,
        &env.pool,
        "weekly_summary",
        Format::Csv,
        Some(ts(week)),
        now,
    )
    .await
    .expect("csv report");
    let csv = std::fs::read_to_string(env.stored(&csv)).expect("csv");
    assert!(
        csv.contains(&format!("Key figures,Requests,This week,{requests}\n")),
        "{csv}"
    );
    assert!(
        csv.contains(&format!("Key figures,Cost USD,This week,{cost:.4}\n")),
        "{csv}"
    );

    // Monthly business intelligence for February.
    let month = reports::generate(
        &config,
        &env.pool,
        "monthly_business_intelligence",
        Format::Pdf,
        Some(ts("2026-02-01")),
        now,
    )
    .await
    .expect("monthly report");
    let text = pdftotext(&env.stored(&month));
    let feb = sum(&env, "month", "2026-02-01T00:00:00Z", "event_count", llm).await as i64;
    assert!(text.contains("Monthly business intelligence"));
    assert_eq!(cells(row(&text, "Requests"))[1], g(feb));

    // Daily summary: hours on the axis.
    let day = reports::generate(
        &config,
        &env.pool,
        "daily_summary",
        Format::Pdf,
        Some(ts("2026-02-14")),
        now,
    )
    .await
    .expect("daily report");
    let text = pdftotext(&env.stored(&day));
    let n = sum(&env, "day", "2026-02-14T00:00:00Z", "event_count", llm).await as i64;
    assert_eq!(cells(row(&text, "Requests"))[1], g(n));
    assert!(
        text.contains("Requests per hour") && text.contains("12h"),
        "{text}"
    );

    // Capacity analysis: daily peaks from the hourly rollups.
    let cap = reports::generate(
        &config,
        &env.pool,
        "capacity_analysis",
        Format::Pdf,
        Some(ts("2026-02-01")),
        now,
    )
    .await
    .expect("capacity report");
    let text = pdftotext(&env.stored(&cap));
    assert_eq!(cells(row(&text, "Capacity events/s"))[1], "1,000.0");
    let peak: f64 = sqlx::query_scalar(
        "SELECT max(n)::float8 / 3600 FROM (SELECT sum(event_count) n FROM rollups
         WHERE grain = 'hour' AND bucket_start >= '2026-02-14' AND bucket_start < '2026-02-15'
         GROUP BY bucket_start) h",
    )
    .fetch_one(&env.pool)
    .await
    .expect("peak");
    let c = cells(row(&text, "2026-02-14"));
    assert_eq!(c[2], g(format!("{peak:.3}")), "{c:?}");

    // Unknown types are refused before anything is recorded.
    let before = env.count("SELECT count(*) FROM reports").await;
    assert!(matches!(
        reports::generate(
            &config,
            &env.pool,
            "../weekly_summary",
            Format::Pdf,
            None,
            now
        )
        .await,
        Err(reports::Error::Definition(_))
    ));
    assert_eq!(env.count("SELECT count(*) FROM reports").await, before);
    assert_eq!(
        env.count("SELECT count(*) FROM reports WHERE status = 'done'")
            .await,
        before
    );

    // The job's report task and the CLI twin.
    let cfg = env.config_file(&format!(
        "[reports]\noutput_dir = \"{}\"\n",
        config.reports.output_dir.display()
    ));
    let out = env
        .command()
        .arg("--config")
        .arg(&cfg)
        .args([
            "run",
            "hxp_weekly_aggregation",
            "--interval-start",
            "2026-02-23",
        ])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        env.count("SELECT count(*) FROM reports WHERE report_type = 'weekly_summary' AND period_start = '2026-02-23' AND status = 'done'")
            .await,
        1
    );
    let copy = env.dir.path().join("copy.csv");
    let out = env
        .command()
        .arg("--config")
        .arg(&cfg)
        .args([
            "report",
            "generate",
            "--type",
            "weekly_summary",
            "--period-start",
            week,
            "--format",
            "csv",
            "-o",
        ])
        .arg(&copy)
        .output()
        .expect("report generate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&copy).expect("copy"), csv);
    env.cleanup().await;
}

/// A week under way is compared with the same elapsed span of the week
/// before ("to date"), not with the whole of it, and the day under way is
/// drawn as partial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_week_under_way_is_compared_to_date() {
    let env = TestEnv::new("to_date").await;
    // The same traffic, 1,000 events a day, in the week before and this one
    // up to Thursday 10:00 (3 days 10 hours in).
    env.ingest_demo(7_000, ts("2026-02-23"), ts("2026-03-02"), 51)
        .await;
    env.ingest_demo(3_417, ts("2026-03-02"), ts("2026-03-05T10:00:00Z"), 52)
        .await;
    let mut config = env.config.clone();
    config.reports.output_dir = env.dir.path().join("out");
    let now = ts("2026-03-05T10:30:00Z");
    let record = reports::generate(
        &config,
        &env.pool,
        "weekly_summary",
        Format::Json,
        Some(ts("2026-03-02")),
        now,
    )
    .await
    .expect("weekly report");
    let file = env.stored(&record);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).expect("file")).expect("json");
    assert_eq!(
        json["compared_to_date"],
        serde_json::json!(["2026-03-05T10:00:00Z", "2026-02-26T10:00:00Z"]),
        "{}",
        json["compared_to_date"]
    );
    let kpis = json["sections"]
        .as_array()
        .expect("sections")
        .iter()
        .find(|s| s["columns"][1] == "Week to date")
        .expect("a comparison to date");
    assert_eq!(kpis["columns"][2], "Same span before");
    assert_eq!(kpis["columns"][3], "WoW % to date");
    let events = kpis["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r[0] == "Events")
        .expect("events row");
    let stored = |from: &str, to: &str| {
        let (from, to) = (from.to_string(), to.to_string());
        let pool = env.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM events WHERE event_time >= $1::timestamptz AND event_time < $2::timestamptz",
            )
            .bind(from)
            .bind(to)
            .fetch_one(&pool)
            .await
            .expect("count")
        }
    };
    let this = stored("2026-03-02", "2026-03-05T10:00:00Z").await;
    let before = stored("2026-02-23", "2026-02-26T10:00:00Z").await;
    assert_eq!(events[1], serde_json::json!(this), "{events}");
    assert_eq!(events[2], serde_json::json!(before), "{events}");
    // Like for like: within a few percent, not the -51 % of a whole week.
    let change = events[3].as_f64().expect("change");
    assert!(change.abs() < 10.0, "{events}");
    // The chart's Thursday is partial.
    let chart = json["sections"]
        .as_array()
        .expect("sections")
        .iter()
        .find(|s| s["style"].is_string() && s["partial"].is_number())
        .expect("a chart with a partial bucket");
    let at = chart["partial"].as_u64().expect("index") as usize;
    assert_eq!(chart["labels"][at], "03-05", "{chart}");
    env.cleanup().await;
}
