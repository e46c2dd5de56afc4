//! Reports never show a number that is not true: built from whatever grain
//! is complete (hours only, days only), missing data as n/a and gaps, late
//! events carried into every grain and report, coarser runs waiting for
//! the finer ones. Every figure is checked against a computation made here
//! from the events as they were produced, not from hxjobs's rollups.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use hxjobs::dag::job;
use hxjobs::dag::scheduler::Scheduler;
use hxjobs::demo::{self, DemoRecord, DemoSpec};
use hxjobs::interval::Grain;
use hxjobs::reports::{self, Format};
use hxjobs::rollup;
use serde_json::{json, Value};

use crate::api::{start, Server, TOKEN};
use crate::common::{ts, TestEnv};
use crate::http::{free_port, request, Reply};

/// What the events of a period add up to, computed from the produced JSON.
#[derive(Debug, Default)]
struct Expect {
    events: i64,
    requests: i64,
    failed: i64,
    error_events: i64,
    prompt: i64,
    cost: f64,
    ratings: Vec<f64>,
    revenue: f64,
    signups: i64,
    upgrades: i64,
    latencies: Vec<f64>,
    users: HashSet<String>,
}

impl Expect {
    fn of(events: &[Value], from: DateTime<Utc>, to: DateTime<Utc>) -> Expect {
        let mut e = Expect::default();
        for v in events {
            let t = hxjobs::time::parse_instant(v["timestamp"].as_str().expect("timestamp"))
                .expect("time");
            if t < from || t >= to {
                continue;
            }
            let d = &v["data"];
            e.events += 1;
            if let Some(u) = v["metadata"]["user_id"].as_str() {
                e.users.insert(u.to_string());
            }
            e.prompt += d["prompt_tokens"].as_i64().unwrap_or(0);
            e.cost += d["cost_usd"].as_f64().unwrap_or(0.0);
            match v["event_type"].as_str().expect("type") {
                "llm_request" => {
                    e.requests += 1;
                    if matches!(d["status"].as_str(), Some("error" | "timeout")) {
                        e.failed += 1;
                    }
                    if let Some(l) = d["latency_ms"].as_f64() {
                        e.latencies.push(l);
                    }
                }
                "error_event" => e.error_events += 1,
                "user_feedback" => e.ratings.extend(d["rating"].as_f64()),
                "business_event" => match d["name"].as_str() {
                    Some("revenue") => e.revenue += d["value"].as_f64().unwrap_or(0.0),
                    Some("signup") => e.signups += 1,
                    Some("subscription_upgrade") => e.upgrades += 1,
                    _ => {}
                },
                _ => {}
            }
        }
        e
    }

    /// The value at rank floor(0.95 · (n − 1)), as the sketches define it.
    fn p95(&self) -> f64 {
        let mut l = self.latencies.clone();
        l.sort_by(f64::total_cmp);
        l[(0.95 * (l.len() as f64 - 1.0)) as usize]
    }

    fn rating(&self) -> f64 {
        self.ratings.iter().sum::<f64>() / self.ratings.len() as f64
    }

    fn low_pct(&self) -> f64 {
        self.ratings.iter().filter(|r| **r <= 3.0).count() as f64 * 100.0
            / self.ratings.len() as f64
    }
}

/// Demo events over `[from, to)`, leaving out `[skip_from, skip_to)`:
/// the records and their JSON.
fn generate(
    n: u64,
    from: &str,
    to: &str,
    seed: u64,
    skip: Option<(&str, &str)>,
) -> (Vec<DemoRecord>, Vec<Value>) {
    let spec = DemoSpec {
        events: n,
        from: ts(from),
        to: ts(to),
        bad_ratio: 0.0,
        duplicate_ratio: 0.0,
        seed,
        max_event_bytes: 1 << 20,
    };
    let mut records = Vec::new();
    let mut values = Vec::new();
    for r in demo::Generator::new(spec).expect("spec") {
        let v = demo::payload_json(&r).expect("json");
        let t = hxjobs::time::parse_instant(v["timestamp"].as_str().expect("ts")).expect("time");
        if skip.is_some_and(|(a, b)| t >= ts(a) && t < ts(b)) {
            continue;
        }
        records.push(r);
        values.push(v);
    }
    (records, values)
}

async fn ingest(env: &TestEnv, records: Vec<DemoRecord>) {
    env.produce(records).await;
    let stop = tokio_util::sync::CancellationToken::new();
    hxjobs::ingest::drain(&env.config, &env.pool, stop)
        .await
        .expect("drain");
}

async fn hourly(env: &TestEnv, from: &str, to: &str) {
    for h in Grain::Hour.starts(ts(from), ts(to)) {
        rollup::aggregate(&env.pool, Grain::Hour, h)
            .await
            .expect("hour");
    }
}

/// `POST /reports/generate` as JSON, then the report's content.
fn generate_json(port: u16, body: Value) -> (Value, Value) {
    let b = serde_json::to_vec(&body).expect("json");
    let r = request(port, "POST", "/reports/generate", Some(TOKEN), Some(&b));
    assert_eq!(r.status, 201, "{}", r.text());
    let created = r.json();
    let path = created["download"].as_str().expect("download").to_string();
    let content = request(port, "GET", &path, None, None);
    assert_eq!(content.status, 200, "{}", content.text());
    (created, content.json())
}

fn section<'a>(report: &'a Value, title: &str) -> &'a Value {
    report["sections"]
        .as_array()
        .expect("sections")
        .iter()
        .find(|s| s["title"] == title)
        .unwrap_or_else(|| panic!("no section {title:?} in {report}"))
}

/// The row of a table section whose first cell is `name`.
fn row<'a>(report: &'a Value, title: &str, name: &str) -> &'a Vec<Value> {
    section(report, title)["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r[0] == name)
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("no row {name:?} in {title:?}: {report}"))
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("a number, not {v}"))
}

fn close(got: f64, want: f64, rel: f64, what: &str) {
    assert!(
        (got - want).abs() <= want.abs() * rel + 1e-9,
        "{what}: {got} vs {want} (tolerance {rel})"
    );
}

fn round(v: f64, d: i32) -> f64 {
    (v * 10f64.powi(d)).round() / 10f64.powi(d)
}

/// The operational KPIs of `report` (section `title`) against `e`, in the
/// column `col` (1 this period, 2 previous).
fn check_kpis(report: &Value, title: &str, col: usize, e: &Expect) {
    let k = |name: &str| row(report, title, name)[col].clone();
    assert_eq!(k("Events"), e.events, "events");
    assert_eq!(k("Requests"), e.requests, "requests");
    assert_eq!(k("Error events"), e.error_events, "error events");
    assert_eq!(k("Prompt tokens"), e.prompt, "prompt tokens");
    close(num(&k("Cost USD")), round(e.cost, 4), 1e-9, "cost");
    close(
        num(&k("Error rate %")),
        round(e.failed as f64 * 100.0 / e.requests as f64, 2),
        1e-9,
        "error rate",
    );
    close(num(&k("Latency p95 ms")), e.p95(), 0.01, "p95");
    close(
        num(&k("Satisfaction (avg rating)")),
        round(e.rating(), 2),
        1e-9,
        "rating",
    );
    close(
        num(&k("Distinct users")),
        e.users.len() as f64,
        0.02,
        "users",
    );
}

/// The change column: (now - before) / before in percent, one decimal.
fn check_change(report: &Value, title: &str, name: &str) {
    let r = row(report, title, name);
    let (now, before) = (num(&r[1]), num(&r[2]));
    close(
        num(&r[3]),
        round((now - before) * 100.0 / before, 1),
        1e-9,
        name,
    );
}

fn check_business(report: &Value, col: usize, e: &Expect) {
    let k = |name: &str| row(report, "Business KPIs", name)[col].clone();
    close(num(&k("Revenue USD")), round(e.revenue, 2), 1e-9, "revenue");
    assert_eq!(k("Signups"), e.signups, "signups");
    assert_eq!(k("Upgrades"), e.upgrades, "upgrades");
    close(num(&k("LLM cost USD")), round(e.cost, 2), 1e-9, "llm cost");
    close(
        num(&k("Gross margin USD")),
        round(e.revenue - e.cost, 2),
        1e-9,
        "margin",
    );
    close(
        num(&k("Cost per 1,000 requests USD")),
        round(e.cost * 1000.0 / e.requests as f64, 4),
        1e-9,
        "cost per 1k",
    );
    assert_eq!(k("Requests"), e.requests);
    close(
        num(&k("Low ratings (<= 3) %")),
        round(e.low_pct(), 2),
        1e-9,
        "low ratings",
    );
    close(
        num(&k("Availability %")),
        round(100.0 - e.failed as f64 * 100.0 / e.requests as f64, 3),
        1e-9,
        "availability",
    );
}

fn source<'a>(report: &'a Value, figures: &str) -> &'a Value {
    report["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .find(|s| s["figures"] == figures)
        .unwrap_or_else(|| panic!("no source {figures:?}: {}", report["sources"]))
}

const FROM: &str = "2026-01-26";
const TO: &str = "2026-03-02";

/// The four report types through the API, every KPI against `events`.
fn check_all_reports(port: u16, events: &[Value]) -> Vec<Value> {
    let e = |a: &str, b: &str| Expect::of(events, ts(a), ts(b));
    // Daily summary.
    let (_, day) = generate_json(
        port,
        json!({"report_type": "daily_summary", "format": "json", "period_start": "2026-02-14"}),
    );
    check_kpis(&day, "Key figures", 1, &e("2026-02-14", "2026-02-15"));
    check_kpis(&day, "Key figures", 2, &e("2026-02-13", "2026-02-14"));
    check_change(&day, "Key figures", "Requests");
    let hours = &section(&day, "Requests per hour")["values"];
    assert_eq!(hours.as_array().map(Vec::len), Some(24));
    // Weekly summary, with its week-over-week column.
    let (_, week) = generate_json(
        port,
        json!({"report_type": "weekly_summary", "format": "json", "period_start": "2026-02-16"}),
    );
    assert_eq!(section(&week, "Key figures")["columns"][3], "WoW %");
    check_kpis(&week, "Key figures", 1, &e("2026-02-16", "2026-02-23"));
    check_kpis(&week, "Key figures", 2, &e("2026-02-09", "2026-02-16"));
    check_change(&week, "Key figures", "Requests");
    check_change(&week, "Key figures", "Cost USD");
    let per_day = section(&week, "Requests per day")["values"]
        .as_array()
        .expect("values")
        .clone();
    for (i, v) in per_day.iter().enumerate() {
        let d = ts("2026-02-16") + TimeDelta::days(i as i64);
        let want = Expect::of(events, d, d + TimeDelta::days(1)).requests;
        assert_eq!(num(v), want as f64, "requests on {d}");
    }
    // Monthly business intelligence, month over month.
    let (_, month) = generate_json(
        port,
        json!({"report_type": "monthly_business_intelligence", "format": "json",
               "period_start": "2026-02-01"}),
    );
    let feb = e("2026-02-01", "2026-03-01");
    let jan = e("2026-01-01", "2026-02-01");
    check_business(&month, 1, &feb);
    check_business(&month, 2, &jan);
    assert_eq!(section(&month, "Business KPIs")["columns"][3], "MoM %");
    for name in ["Revenue USD", "Signups", "Requests", "Availability %"] {
        check_change(&month, "Business KPIs", name);
    }
    check_kpis(&month, "Operations", 1, &feb);
    // Per week, cut at the month's edges.
    let weeks = section(&month, "Per week")["rows"]
        .as_array()
        .expect("weeks")
        .clone();
    assert_eq!(weeks.len(), 5, "{weeks:?}");
    let w = |i: usize, a: &str, b: &str| {
        let x = e(a, b);
        assert_eq!(weeks[i][3], x.signups, "week {i}");
        assert_eq!(weeks[i][5], x.requests, "week {i}");
        close(
            num(&weeks[i][2]),
            round(x.revenue, 2),
            1e-9,
            "weekly revenue",
        );
        close(
            num(&weeks[i][6]),
            x.users.len() as f64,
            0.02,
            "weekly users",
        );
    };
    w(0, "2026-02-01", "2026-02-02");
    w(2, "2026-02-09", "2026-02-16");
    w(4, "2026-02-23", "2026-03-01");
    // Availability against the default objective, and the top sources.
    let avail = section(&month, "Availability and error budget");
    assert_eq!(avail["rows"][0][1], 99.5);
    let allowed = feb.requests as f64 * 0.005;
    close(
        num(&avail["rows"][5][1]),
        round(feb.failed as f64 * 100.0 / allowed, 1),
        1e-9,
        "budget spent",
    );
    let top = section(&month, "Top sources: by requests")["rows"]
        .as_array()
        .expect("top")
        .clone();
    assert!(!top.is_empty() && top.len() <= 5);
    let first = top[0][0].as_str().expect("source");
    let by_source = events
        .iter()
        .filter(|v| {
            v["event_type"] == "llm_request"
                && v["source"] == first
                && (ts("2026-02-01")..ts("2026-03-01")).contains(
                    &hxjobs::time::parse_instant(v["timestamp"].as_str().unwrap_or_default())
                        .unwrap_or_default(),
                )
        })
        .count();
    assert_eq!(top[0][1], by_source as i64);
    // Capacity analysis: its key figures and a day's events.
    let (_, cap) = generate_json(
        port,
        json!({"report_type": "capacity_analysis", "format": "json", "period_start": "2026-02-01"}),
    );
    assert_eq!(row(&cap, "Key figures", "Requests")[1], feb.requests);
    vec![day, week, month, cap]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_from_hourly_rollups_alone_equal_the_events() {
    let env = TestEnv::new("complete_hours").await;
    let (records, events) = generate(9_000, FROM, TO, 17, None);
    ingest(&env, records).await;
    hourly(&env, FROM, TO).await;
    let coarser = "SELECT count(*) FROM rollups WHERE grain <> 'hour'";
    assert_eq!(env.count(coarser).await, 0, "only the hourly job ran");
    let out = env.dir.path().join("out");
    let server: Server = start(&env, &out);
    let reports = check_all_reports(server.port, &events);
    let (week, month, cap) = (&reports[1], &reports[2], &reports[3]);
    // Capacity reads the hours: a day's load is its events.
    assert_eq!(
        row(cap, "Capacity: daily load", "2026-02-14")[1],
        Expect::of(&events, ts("2026-02-14"), ts("2026-02-15")).events
    );
    assert_eq!(
        source(week, "series")["from"],
        "merged from hour rollups: 7"
    );
    assert_eq!(
        source(week, "this period")["from"],
        "merged from day rollups"
    );
    assert!(source(month, "this period")["missing"]
        .as_array()
        .is_some_and(Vec::is_empty));
    assert_eq!(
        week["freshness"]["ingest_caught_up"], true,
        "{}",
        week["freshness"]
    );
    assert_eq!(week["freshness"]["hours_ready"], true);
    assert!(week["partial_through"].is_null());
    // What was merged is stored, as the jobs store it: the next report reads it.
    assert!(env.count(coarser).await > 0);
    let (_, again) = generate_json(
        server.port,
        json!({"report_type": "weekly_summary", "format": "json", "period_start": "2026-02-16"}),
    );
    assert_eq!(source(&again, "this period")["from"], "week rollups");
    assert_eq!(section(&again, "Key figures"), section(week, "Key figures"));
    drop(server);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_from_daily_rollups_alone_equal_the_events() {
    let env = TestEnv::new("complete_days").await;
    let (records, events) = generate(9_000, FROM, TO, 17, None);
    ingest(&env, records).await;
    hourly(&env, FROM, TO).await;
    for d in Grain::Day.starts(ts(FROM), ts(TO)) {
        rollup::aggregate(&env.pool, Grain::Day, d)
            .await
            .expect("day");
    }
    // Only the days are left: no hours, no raw events to fall back on.
    for sql in [
        "DELETE FROM rollups WHERE grain = 'hour'",
        "DELETE FROM rollup_buckets WHERE grain = 'hour'",
        "DELETE FROM events",
        "DELETE FROM rollup_stage",
        "DELETE FROM rollup_inputs",
    ] {
        sqlx::query(sql).execute(&env.pool).await.expect(sql);
    }
    let out = env.dir.path().join("out");
    let server = start(&env, &out);
    let reports = check_all_reports(server.port, &events);
    let (day, week, cap) = (&reports[0], &reports[1], &reports[3]);
    // Without hours there is no hourly peak to state: n/a, not 0.
    assert!(row(cap, "Capacity", "Highest daily peak events/s")[1].is_null());
    assert!(row(cap, "Capacity", "Peak utilization %")[1].is_null());
    assert_eq!(
        source(week, "this period")["from"],
        "merged from day rollups"
    );
    assert_eq!(source(week, "series")["from"], "day rollups: 7");
    assert_eq!(source(day, "this period")["from"], "day rollups");
    // No hour is stored: the hourly chart is all gaps, not zeros.
    let hours = section(day, "Requests per hour")["values"]
        .as_array()
        .expect("values")
        .clone();
    assert!(hours.iter().all(Value::is_null), "{hours:?}");
    assert_eq!(
        source(day, "series")["missing"].as_array().map(Vec::len),
        Some(24)
    );
    drop(server);
    env.cleanup().await;
}

pub(crate) fn pdftotext(path: &Path) -> String {
    let out = Command::new("pdftotext")
        .arg("-layout")
        .arg(path)
        .arg("-")
        .output()
        .expect("pdftotext (poppler-utils) is installed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn post(port: u16, body: Value) -> Reply {
    let b = serde_json::to_vec(&body).expect("json");
    request(port, "POST", "/reports/generate", Some(TOKEN), Some(&b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_day_is_a_gap_and_a_missing_period_is_na() {
    let env = TestEnv::new("complete_missing").await;
    // Data from Monday 2026-02-16 on, without Wednesday the 18th.
    let (records, events) = generate(
        4_000,
        "2026-02-16",
        "2026-02-23",
        23,
        Some(("2026-02-18", "2026-02-19")),
    );
    ingest(&env, records).await;
    hourly(&env, "2026-02-16", "2026-02-23").await;
    let out = env.dir.path().join("out");
    let server = start(&env, &out);
    let port = server.port;

    let (_, week) = generate_json(
        port,
        json!({"report_type": "weekly_summary", "format": "json", "period_start": "2026-02-16"}),
    );
    let per_day = section(&week, "Requests per day")["values"]
        .as_array()
        .expect("values")
        .clone();
    assert_eq!(per_day.len(), 7);
    assert!(per_day[2].is_null(), "the 18th is a gap: {per_day:?}");
    assert!(
        per_day
            .iter()
            .enumerate()
            .all(|(i, v)| i == 2 || v.as_f64().is_some_and(|n| n > 0.0)),
        "{per_day:?}"
    );
    let missing = source(&week, "series")["missing"].clone();
    assert_eq!(missing, json!(["2026-02-18T00:00:00Z"]));
    // This week is right; the week before has no data at all: n/a, no change.
    check_kpis(
        &week,
        "Key figures",
        1,
        &Expect::of(&events, ts("2026-02-16"), ts("2026-02-23")),
    );
    for r in section(&week, "Key figures")["rows"]
        .as_array()
        .expect("rows")
    {
        assert!(
            r[2].is_null() && r[3].is_null(),
            "previous and change n/a: {r:?}"
        );
    }
    assert_eq!(source(&week, "previous period")["from"], "no data");

    // The PDF says n/a (never 0) and names the missing day.
    let (created, _) = generate_json(
        port,
        json!({"report_type": "weekly_summary", "format": "json", "period_start": "2026-02-16"}),
    );
    assert!(created["report_id"].as_i64().is_some());
    let r = post(
        port,
        json!({"report_type": "weekly_summary", "format": "pdf", "period_start": "2026-02-16"}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let key = r.json()["report"]["storage_key"]
        .as_str()
        .expect("key")
        .to_string();
    let text = pdftotext(&env.dir.path().join("store").join(key));
    let requests_line = text
        .lines()
        .find(|l| l.trim_start().starts_with("Requests  "))
        .expect("requests row");
    assert!(requests_line.contains("n/a"), "{requests_line}");
    assert!(
        text.contains("no data for 1 of 7 days (2026-02-18)"),
        "{text}"
    );

    // A day without data: every KPI is n/a, none is 0.
    let (_, day) = generate_json(
        port,
        json!({"report_type": "daily_summary", "format": "json", "period_start": "2026-02-18"}),
    );
    for r in section(&day, "Key figures")["rows"]
        .as_array()
        .expect("rows")
    {
        assert!(r[1].is_null(), "no data is n/a: {r:?}");
    }
    assert!(section(&day, "Requests per hour")["values"]
        .as_array()
        .expect("values")
        .iter()
        .all(Value::is_null));

    // A week under way: partial, through the time it was built, and its
    // chart stops there.
    let def = reports::definition::load(&env.config.reports.definitions_dir, "weekly_summary")
        .expect("definition");
    let now = ts("2026-02-19T12:30:00Z");
    let resolved = reports::period(&def, Some(ts("2026-02-16")), now).expect("period");
    let partial = reports::build(
        &env.config,
        &env.pool,
        "weekly_summary",
        &def,
        &resolved,
        now,
    )
    .await
    .expect("partial week");
    assert_eq!(partial.partial_through, Some(now));
    assert!(partial
        .header_lines()
        .iter()
        .any(|l| l.starts_with("partial: through 2026-02-19 12:30")));
    let csv =
        String::from_utf8(reports::render(&partial, Format::Csv).expect("csv")).expect("utf8");
    assert!(
        csv.contains("report,partial,through,2026-02-19T12:30:00+00:00"),
        "{csv}"
    );
    match partial
        .sections
        .iter()
        .find(|s| matches!(s, reports::Section::Chart { title, .. } if title == "Requests per day"))
    {
        Some(reports::Section::Chart { labels, .. }) => {
            assert_eq!(labels, &["02-16", "02-17", "02-18", "02-19"]);
        }
        other => panic!("chart: {other:?}"),
    }

    // --require-complete refuses a period still under way, naming the hours.
    let today = Utc::now().format("%Y-%m-%d").to_string();
    let r = post(
        port,
        json!({"report_type": "daily_summary", "period_start": today, "require_complete": true}),
    );
    assert_eq!(r.status, 409, "{}", r.text());
    let body = r.json();
    assert_eq!(body["error"], "period_incomplete");
    let ranges = body["missing_hours"].as_array().expect("missing hours");
    let last = ranges.last().expect("a range");
    assert_eq!(
        last["to"].as_str().map(|t| t.starts_with(&format!(
            "{}",
            (Grain::Day.floor(Utc::now()) + TimeDelta::days(1)).format("%Y-%m-%dT00:00:00")
        ))),
        Some(true),
        "{body}"
    );
    // A complete past period passes the same check.
    let r = post(
        port,
        json!({"report_type": "daily_summary", "format": "json", "period_start": "2026-02-17",
               "require_complete": true}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    // A period not begun is refused; a start inside a period is snapped and said.
    let r = post(
        port,
        json!({"report_type": "weekly_summary", "period_start": "2099-01-05"}),
    );
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.json()["error"], "period_in_future");
    let r = post(
        port,
        json!({"report_type": "weekly_summary", "format": "json", "period_start": "2026-02-18T12:00:00Z"}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let created = r.json();
    assert_eq!(created["report"]["period_start"], "2026-02-16T00:00:00Z");
    assert!(
        created["notes"][0]
            .as_str()
            .is_some_and(|n| n.contains("not the start of a week")),
        "{created}"
    );
    // The CLI: exit 1 with the hours for an incomplete period, 2 for the future.
    let out = env
        .command()
        .args([
            "report",
            "generate",
            "--type",
            "daily_summary",
            "--require-complete",
        ])
        .args(["--period-start", &today])
        .output()
        .expect("hxjobs report");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("not stored completely"));
    let out = env
        .command()
        .args([
            "report",
            "generate",
            "--type",
            "daily_summary",
            "--period-start",
            "2099-01-01",
        ])
        .output()
        .expect("hxjobs report");
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(server);
    env.cleanup().await;
}

/// `scripts/services.sh <action>` for a broker of this test's own.
fn services(state: &Path, port: u16, action: &str, database_url: &str) -> Command {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cmd = Command::new(root.join("scripts/services.sh"));
    cmd.arg(action)
        .env("HXJOBS_STATE_DIR", state)
        .env("HXJOBS_BROKER_PORT", port.to_string())
        .env("DATABASE_URL", database_url)
        .env_remove("KAFKA_BOOTSTRAP_SERVERS");
    cmd
}

fn broker(state: &Path, port: u16, action: &str, fresh: bool, database_url: &str) {
    let mut cmd = services(state, port, action, database_url);
    if fresh {
        cmd.env("HXJOBS_BROKER_FRESH", "1");
    }
    let out = cmd.output().expect("services.sh");
    assert!(
        out.status.success(),
        "services.sh {action}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Stops the test's own broker however the test ends.
struct BrokerGuard {
    state: std::path::PathBuf,
    port: u16,
    database_url: String,
}

impl Drop for BrokerGuard {
    fn drop(&mut self) {
        let _ = services(&self.state, self.port, "down", &self.database_url).output();
    }
}

/// Sums of one bucket's rollup rows: events, requests, cost, signups.
async fn bucket(env: &TestEnv, grain: &str, start: DateTime<Utc>) -> (i64, i64, f64, i64) {
    sqlx::query_as(
        "SELECT COALESCE(sum(event_count), 0)::int8,
                COALESCE(sum(event_count) FILTER (WHERE event_type = 'llm_request'), 0)::int8,
                COALESCE(sum(cost_usd), 0)::float8,
                COALESCE(sum(event_count) FILTER (WHERE subject = 'signup'), 0)::int8
         FROM rollups WHERE grain = $1 AND bucket_start = $2",
    )
    .bind(grain)
    .bind(start)
    .fetch_one(&env.pool)
    .await
    .expect("bucket")
}

async fn check_bucket(env: &TestEnv, grain: Grain, start: DateTime<Utc>, events: &[Value]) {
    let e = Expect::of(events, start, grain.next(start));
    let (n, requests, cost, signups) = bucket(env, grain.as_str(), start).await;
    assert_eq!(
        (n, requests, signups),
        (e.events, e.requests, e.signups),
        "{} {start}",
        grain.as_str()
    );
    close(cost, e.cost, 1e-9, "cost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_late_after_a_broker_outage_reach_every_grain_and_report() {
    let mut env = TestEnv::new("complete_late").await;
    // A broker of this test's own, to stop and start.
    let state = env.dir.path().join("broker");
    let port = free_port();
    broker(&state, port, "up", true, env.config.database.url.expose());
    let guard = BrokerGuard {
        state: state.clone(),
        port,
        database_url: env.config.database.url.expose().to_string(),
    };
    env.config.kafka.bootstrap_servers = format!("127.0.0.1:{port}");
    hxjobs::kafka::ensure_topics(&env.config)
        .await
        .expect("topics");

    // A day of events; the broker is down from 10:30 to the hour's end.
    let (day, hour) = (ts("2026-03-10"), ts("2026-03-10T10:00:00Z"));
    let outage = ts("2026-03-10T10:30:00Z");
    let (records, events) = generate(6_000, "2026-03-10", "2026-03-11", 31, None);
    let time_of = |r: &DemoRecord| {
        let v = demo::payload_json(r).expect("json");
        hxjobs::time::parse_instant(v["timestamp"].as_str().expect("ts")).expect("time")
    };
    let (before, after): (Vec<DemoRecord>, Vec<DemoRecord>) =
        records.into_iter().partition(|r| time_of(r) < outage);
    ingest(&env, before).await;

    broker(
        &state,
        port,
        "down",
        false,
        env.config.database.url.expose(),
    );
    // Producers keep their messages while the broker is away.
    let config = env.config.clone();
    let late = std::thread::spawn(move || demo::produce(&config, after.into_iter(), |_| {}));
    // Meanwhile the jobs' tasks run as their schedules fire: the hourly
    // rollup of 10:00 (its grace is over), then the daily rollup (which
    // rolls up the day's other hours itself), the daily report, the week
    // and the month: all short of the late events.
    let out_dir = env.dir.path().join("out");
    let cfg = env.config_file(&format!(
        "[reports]\noutput_dir = \"{}\"\n",
        out_dir.display()
    ));
    let task = |job: &str, task: &str, at: &str| {
        let out = env
            .command()
            .arg("--config")
            .arg(&cfg)
            .args(["tasks", "test", job, task, "--at", at])
            .output()
            .expect("hxjobs tasks test");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{job} {task}: {text}");
        text
    };
    let said = task("hxp_hourly_aggregation", "rollup", "2026-03-10T11:05:00Z");
    assert!(
        said.contains("hour rollup of 2026-03-10T10:00:00+00:00"),
        "{said}"
    );
    task("hxp_daily_aggregation", "rollup", "2026-03-11T00:30:00Z");
    task("hxp_daily_aggregation", "report", "2026-03-11T00:30:00Z");
    task("hxp_weekly_aggregation", "rollup", "2026-03-16T02:00:00Z");
    task("hxp_monthly_aggregation", "rollup", "2026-04-01T03:00:00Z");
    let mut config = env.config.clone();
    config.reports.output_dir = out_dir.clone();
    let early: i64 =
        sqlx::query_scalar("SELECT id FROM reports WHERE report_type = 'daily_summary'")
            .fetch_one(&env.pool)
            .await
            .expect("the early report");
    let short = Expect::of(&events, day, day + TimeDelta::days(1));
    assert!(bucket(&env, "day", day).await.0 < short.events);

    // The broker is back; the late events arrive.
    broker(&state, port, "up", false, env.config.database.url.expose());
    late.join()
        .expect("producer")
        .expect("late events delivered");

    // The next hourly run (ingest, then its hour): the stale hours are
    // rolled up again and the change carried to the day, week and month.
    let out = env
        .command()
        .arg("--config")
        .arg(&cfg)
        .env(
            "KAFKA_BOOTSTRAP_SERVERS",
            &env.config.kafka.bootstrap_servers,
        )
        .args([
            "run",
            "hxp_hourly_aggregation",
            "--interval-start",
            "2026-03-11T00:00:00Z",
        ])
        .output()
        .expect("hxjobs run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("late events"), "{stdout}");
    check_bucket(&env, Grain::Hour, hour, &events).await;
    check_bucket(&env, Grain::Day, day, &events).await;
    check_bucket(&env, Grain::Week, ts("2026-03-09"), &events).await;
    check_bucket(&env, Grain::Month, ts("2026-03-01"), &events).await;
    assert_eq!(
        env.count("SELECT count(*) FROM rollup_buckets b JOIN rollup_inputs i ON i.hour = b.bucket_start WHERE b.grain = 'hour' AND i.version > b.input_mark").await,
        0,
        "no stale hour left"
    );

    // The early report is superseded by one generated again from the
    // complete day, and a report generated now has the right numbers.
    let superseded: Option<i64> =
        sqlx::query_scalar("SELECT superseded_by FROM reports WHERE id = $1")
            .bind(early)
            .fetch_one(&env.pool)
            .await
            .expect("report");
    let newer = superseded.expect("the early report is superseded");
    assert!(newer > early);
    let json = reports::generate(
        &config,
        &env.pool,
        "daily_summary",
        Format::Json,
        Some(day),
        Utc::now(),
    )
    .await
    .expect("report");
    let body: Value =
        serde_json::from_slice(&std::fs::read(env.stored(&json)).expect("file")).expect("json");
    check_kpis(&body, "Key figures", 1, &short);
    // Before the cleanup removes the broker's state directory (its pid file).
    drop(guard);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daily_run_waits_for_the_hours_beneath_it() {
    let env = TestEnv::new("complete_wait").await;
    let parse = |name: &str, text: &str| {
        job::parse(&env.dir.path().join(format!("{name}.toml")), text).expect("job")
    };
    let hourly_job = parse(
        "h",
        "name = \"h\"\nschedule = \"5 * * * *\"\ninterval = \"hour\"\nstart_date = \"2026-03-01\"\n\
         [tasks.a]\nkind = \"sql\"\nsql = \"SELECT 1\"\n",
    );
    let daily_job = parse(
        "d",
        "name = \"d\"\nschedule = \"30 0 * * *\"\ninterval = \"day\"\nstart_date = \"2026-03-01\"\n\
         wait_for = \"h\"\nwait_timeout_secs = 999999999\n\
         [tasks.a]\nkind = \"sql\"\nsql = \"SELECT 1\"\n",
    );
    assert_eq!(daily_job.wait_for, vec!["h".to_string()]);
    let pools = hxjobs::db::Pools::new(env.pool.clone());
    let s = Scheduler::new(
        Arc::new(env.config.clone()),
        pools,
        vec![hourly_job, daily_job],
        "w".into(),
    );
    // A daily run queued for 2026-03-02 before any of its hours ran.
    sqlx::query(
        "INSERT INTO job_runs (job, run_type, interval_start, interval_end)
         VALUES ('d', 'manual', '2026-03-02', '2026-03-03')",
    )
    .execute(&env.pool)
    .await
    .expect("queue");
    let daily = s.jobs[1].clone();
    assert!(
        s.claim(&daily, 1).await.expect("claim").is_empty(),
        "no hour has run"
    );
    let note: Option<String> = sqlx::query_scalar("SELECT error FROM job_runs WHERE job = 'd'")
        .fetch_one(&env.pool)
        .await
        .expect("note");
    assert!(
        note.as_deref()
            .is_some_and(|n| n.contains("waiting for 24 of 24 hour runs of h")),
        "{note:?}"
    );
    // 23 hours succeed: still waiting; the 24th: it starts.
    for h in 0..24 {
        let start = ts("2026-03-02") + TimeDelta::hours(h);
        sqlx::query("INSERT INTO job_runs (job, run_type, interval_start, interval_end, state) VALUES ('h', 'manual', $1, $2, 'success')")
            .bind(start)
            .bind(start + TimeDelta::hours(1))
            .execute(&env.pool)
            .await
            .expect("hour run");
        if h == 22 {
            assert!(s.claim(&daily, 1).await.expect("claim").is_empty());
        }
    }
    let claimed = s.claim(&daily, 1).await.expect("claim");
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].interval.start, ts("2026-03-02"));

    // wait_for must name a loaded job of a finer interval.
    let dir = env.dir.path().join("jobs");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("w.toml"),
        "name = \"w\"\nschedule = \"0 1 * * MON\"\ninterval = \"week\"\nstart_date = \"2026-03-02\"\n\
         wait_for = \"nope\"\n[tasks.a]\nkind = \"sql\"\nsql = \"SELECT 1\"\n",
    )
    .expect("write");
    let loaded = job::load_dir(&dir).expect("load");
    assert!(loaded.jobs.is_empty());
    assert!(
        loaded
            .error_lines()
            .contains("wait_for: no job named `nope`"),
        "{}",
        loaded.error_lines()
    );
    env.cleanup().await;
}

/// A job can wait for a job of the same interval (an operator's daily job
/// after the daily aggregation) or for one whose interval covers its own;
/// one whose interval neither tiles nor covers it, or a circle, is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_waits_for_a_job_of_the_same_interval() {
    let env = TestEnv::new("wait_same").await;
    let dir = env.dir.path().join("own");
    std::fs::create_dir_all(&dir).expect("dir");
    let job = |name: &str, interval: &str, wait: &str| {
        format!(
            "name = \"{name}\"\nschedule = \"30 0 * * *\"\ninterval = \"{interval}\"\n\
             start_date = \"2026-03-01\"\n{wait}wait_timeout_secs = 999999999\n\
             [tasks.a]\nkind = \"sql\"\nsql = \"SELECT 1\"\n"
        )
    };
    for (file, text) in [
        ("d.toml", job("d", "day", "")),
        ("od.toml", job("od", "day", "wait_for = \"d\"\n")),
        ("oh.toml", job("oh", "hour", "wait_for = \"d\"\n")),
        ("m.toml", job("m", "month", "")),
        ("w.toml", job("w", "week", "wait_for = \"m\"\n")),
        ("x.toml", job("x", "day", "wait_for = \"y\"\n")),
        ("y.toml", job("y", "day", "wait_for = \"x\"\n")),
    ] {
        std::fs::write(dir.join(file), text).expect("write");
    }
    let loaded = job::load_dir(&dir).expect("load");
    let errors = loaded.error_lines();
    let names: Vec<&str> = loaded.jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names, ["d", "m", "od", "oh"], "{errors}");
    assert!(
        errors.contains(
            "w.toml: wait_for: `m` runs per month, which neither tiles nor covers this job's week"
        ),
        "{errors}"
    );
    assert!(
        errors.contains("x.toml: wait_for: `x` waits for itself"),
        "{errors}"
    );
    assert!(
        errors.contains("y.toml: wait_for: `y` waits for itself"),
        "{errors}"
    );

    let s = Scheduler::new(
        Arc::new(env.config.clone()),
        hxjobs::db::Pools::new(env.pool.clone()),
        loaded.jobs,
        "w".into(),
    );
    for (job, start, end) in [
        ("od", "2026-03-02", "2026-03-03"),
        ("oh", "2026-03-02T05:00:00Z", "2026-03-02T06:00:00Z"),
    ] {
        sqlx::query(
            "INSERT INTO job_runs (job, run_type, interval_start, interval_end)
             VALUES ($1, 'manual', $2, $3)",
        )
        .bind(job)
        .bind(ts(start))
        .bind(ts(end))
        .execute(&env.pool)
        .await
        .expect("queue");
    }
    let od = s.jobs.iter().find(|j| j.name == "od").expect("od").clone();
    let oh = s.jobs.iter().find(|j| j.name == "oh").expect("oh").clone();
    assert!(s.claim(&od, 1).await.expect("claim").is_empty());
    assert!(s.claim(&oh, 1).await.expect("claim").is_empty());
    let note: Option<String> = sqlx::query_scalar("SELECT error FROM job_runs WHERE job = 'od'")
        .fetch_one(&env.pool)
        .await
        .expect("note");
    assert!(
        note.as_deref()
            .is_some_and(|n| n.contains("waiting for 1 of 1 day runs of d")),
        "{note:?}"
    );
    // The day of d succeeds: both start (the hour's covering day is that day).
    sqlx::query(
        "INSERT INTO job_runs (job, run_type, interval_start, interval_end, state)
         VALUES ('d', 'manual', '2026-03-02', '2026-03-03', 'success')",
    )
    .execute(&env.pool)
    .await
    .expect("day run");
    assert_eq!(s.claim(&od, 1).await.expect("claim").len(), 1);
    assert_eq!(s.claim(&oh, 1).await.expect("claim").len(), 1);
    env.cleanup().await;
}
