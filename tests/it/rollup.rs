//! Rollups against an independent computation from the stored events, at
//! every grain, over 36 days of demo traffic; re-runs change nothing; the
//! month stays right after the raw events are gone.

use std::collections::{HashMap, HashSet};
use tokio_util::sync::CancellationToken;

use chrono::{DateTime, Utc};
use hxjobs::interval::Grain;
use hxjobs::rollup;

use crate::common::{ts, TestEnv};

type Key = (String, String, String);

/// The exact measures of one group, computed here from the events.
#[derive(Default)]
struct Exact {
    events: i64,
    errors: i64,
    latencies: Vec<f64>,
    prompt: i64,
    completion: i64,
    cost: f64,
    ratings: Vec<f64>,
    values: Vec<f64>,
    users: HashSet<String>,
}

async fn exact(env: &TestEnv, from: DateTime<Utc>, to: DateTime<Utc>) -> HashMap<Key, Exact> {
    type Row = (
        String,
        String,
        String,
        bool,
        Option<f64>,
        Option<i64>,
        Option<i64>,
        Option<f64>,
        Option<f64>,
        Option<f64>,
        Option<String>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT event_type, source,
                CASE WHEN event_type IN ('llm_request', 'user_feedback') THEN COALESCE(model, model_id, '')
                     WHEN event_type IN ('system_metric', 'business_event') THEN COALESCE(name, '')
                     WHEN event_type = 'error_event' THEN COALESCE(error_type, '') ELSE '' END,
                event_type = 'error_event' OR (event_type = 'llm_request' AND COALESCE(status IN ('error', 'timeout'), false)),
                CASE WHEN event_type = 'llm_request' THEN latency_ms END,
                prompt_tokens, completion_tokens, cost_usd,
                CASE WHEN event_type = 'user_feedback' THEN rating END,
                CASE WHEN event_type IN ('system_metric', 'business_event') THEN value END,
                user_id
         FROM events WHERE event_time >= $1 AND event_time < $2",
    )
    .bind(from)
    .bind(to)
    .fetch_all(&env.pool)
    .await
    .expect("events");
    let mut out: HashMap<Key, Exact> = HashMap::new();
    for (t, s, subj, err, lat, p, c, cost, rating, value, user) in rows {
        let e = out.entry((t, s, subj)).or_default();
        e.events += 1;
        e.errors += i64::from(err);
        e.latencies.extend(lat);
        e.prompt += p.unwrap_or(0);
        e.completion += c.unwrap_or(0);
        e.cost += cost.unwrap_or(0.0);
        e.ratings.extend(rating);
        e.values.extend(value);
        e.users.extend(user);
    }
    out
}

/// The value at rank floor(q · (n − 1)) of the sorted values.
fn rank_quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[(q * (sorted.len() as f64 - 1.0)) as usize]
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs().max(1e-9)
}

#[derive(Debug, PartialEq, sqlx::FromRow)]
struct Stored {
    event_type: String,
    source: String,
    subject: String,
    event_count: i64,
    error_count: i64,
    latency_count: i64,
    latency_avg_ms: Option<f64>,
    latency_max_ms: Option<f64>,
    latency_p50_ms: Option<f64>,
    latency_p95_ms: Option<f64>,
    latency_p99_ms: Option<f64>,
    prompt_tokens: i64,
    completion_tokens: i64,
    cost_usd: f64,
    rating_avg: Option<f64>,
    rating_count: i64,
    value_sum: f64,
    value_min: Option<f64>,
    value_max: Option<f64>,
    distinct_users: i64,
}

async fn stored(env: &TestEnv, grain: Grain, start: DateTime<Utc>) -> Vec<Stored> {
    sqlx::query_as(
        "SELECT event_type, source, subject, event_count, error_count, latency_count,
                latency_avg_ms, latency_max_ms, latency_p50_ms, latency_p95_ms, latency_p99_ms,
                prompt_tokens, completion_tokens, cost_usd, rating_avg, rating_count,
                value_sum, value_min, value_max, distinct_users
         FROM rollups WHERE grain = $1 AND bucket_start = $2
         ORDER BY event_type, source, subject",
    )
    .bind(grain.as_str())
    .bind(start)
    .fetch_all(&env.pool)
    .await
    .expect("rollups")
}

/// Every stored row of the bucket against the exact computation.
async fn check(env: &TestEnv, grain: Grain, start: DateTime<Utc>) {
    let end = grain.next(start);
    let mut want = exact(env, start, end).await;
    let rows = stored(env, grain, start).await;
    assert_eq!(rows.len(), want.len(), "{grain:?} {start}: groups");
    for r in rows {
        let key = (r.event_type.clone(), r.source.clone(), r.subject.clone());
        let e = want.remove(&key).expect("a group the events have");
        let at = format!("{grain:?} {start} {key:?}");
        assert_eq!(
            (r.event_count, r.error_count),
            (e.events, e.errors),
            "{at}: counts"
        );
        assert_eq!(r.latency_count, e.latencies.len() as i64, "{at}");
        assert_eq!(
            (r.prompt_tokens, r.completion_tokens),
            (e.prompt, e.completion),
            "{at}: tokens"
        );
        assert!(
            close(r.cost_usd, e.cost, 1e-9),
            "{at}: cost {} vs {}",
            r.cost_usd,
            e.cost
        );
        assert_eq!(r.rating_count, e.ratings.len() as i64, "{at}");
        let mut lat = e.latencies.clone();
        lat.sort_by(f64::total_cmp);
        if lat.is_empty() {
            assert_eq!((r.latency_avg_ms, r.latency_p50_ms), (None, None), "{at}");
        } else {
            let avg = lat.iter().sum::<f64>() / lat.len() as f64;
            assert!(
                close(r.latency_avg_ms.expect("avg"), avg, 1e-9),
                "{at}: avg"
            );
            assert_eq!(r.latency_max_ms, lat.last().copied(), "{at}: max");
            for (got, q) in [
                (r.latency_p50_ms, 0.50),
                (r.latency_p95_ms, 0.95),
                (r.latency_p99_ms, 0.99),
            ] {
                let want = rank_quantile(&lat, q);
                let got = got.expect("percentile");
                assert!(close(got, want, 0.01), "{at}: p{q} {got} vs {want}");
            }
        }
        if !e.ratings.is_empty() {
            let avg = e.ratings.iter().sum::<f64>() / e.ratings.len() as f64;
            assert!(
                close(r.rating_avg.expect("rating"), avg, 1e-9),
                "{at}: rating"
            );
        }
        if !e.values.is_empty() {
            let sum: f64 = e.values.iter().sum();
            assert!(close(r.value_sum, sum, 1e-9), "{at}: value sum");
            let min = e.values.iter().copied().fold(f64::INFINITY, f64::min);
            let max = e.values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            assert_eq!(
                (r.value_min, r.value_max),
                (Some(min), Some(max)),
                "{at}: value range"
            );
        }
        let users = e.users.len() as f64;
        assert!(
            close(r.distinct_users as f64, users, 0.02),
            "{at}: users {} vs {users}",
            r.distinct_users
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollups_match_an_exact_computation_at_every_grain() {
    let env = TestEnv::new("rollups").await;
    // 36 days: a Monday in January to the first days of March.
    let (from, to) = (ts("2026-01-26"), ts("2026-03-03"));
    env.ingest_demo(40_000, from, to, 35).await;
    // Ingest staged every stored event's rollup columns.
    assert_eq!(
        env.count("SELECT sum(rows)::int8 FROM rollup_stage").await,
        env.count("SELECT count(*) FROM events").await
    );

    for start in Grain::Hour.starts(from, to) {
        let summary = rollup::aggregate(&env.pool, Grain::Hour, start)
            .await
            .expect("hour");
        assert!(summary.staged, "{summary}");
    }
    for start in Grain::Day.starts(from, to) {
        rollup::aggregate(&env.pool, Grain::Day, start)
            .await
            .expect("day");
    }
    let weeks = Grain::Week.starts(from, ts("2026-03-02"));
    for &start in &weeks {
        rollup::aggregate(&env.pool, Grain::Week, start)
            .await
            .expect("week");
    }
    let february = ts("2026-02-01");
    rollup::aggregate(&env.pool, Grain::Month, february)
        .await
        .expect("month");

    for hour in [
        "2026-01-26T00:00:00Z",
        "2026-02-14T13:00:00Z",
        "2026-03-02T23:00:00Z",
    ] {
        check(&env, Grain::Hour, ts(hour)).await;
    }
    for day in ["2026-01-26", "2026-02-14", "2026-03-02"] {
        check(&env, Grain::Day, ts(day)).await;
    }
    assert_eq!(weeks.len(), 5);
    for &week in &weeks {
        check(&env, Grain::Week, week).await;
    }
    check(&env, Grain::Month, february).await;

    // A re-run of the same interval changes nothing.
    let before = stored(&env, Grain::Hour, ts("2026-02-14T13:00:00Z")).await;
    rollup::aggregate(&env.pool, Grain::Hour, ts("2026-02-14T13:00:00Z"))
        .await
        .expect("again");
    assert_eq!(
        stored(&env, Grain::Hour, ts("2026-02-14T13:00:00Z")).await,
        before
    );

    // Without its staged columns the hour is read from the raw events, and
    // still matches the exact computation.
    sqlx::query("DELETE FROM rollup_stage WHERE hour = '2026-02-14T13:00:00Z'")
        .execute(&env.pool)
        .await
        .expect("unstage");
    let summary = rollup::aggregate(&env.pool, Grain::Hour, ts("2026-02-14T13:00:00Z"))
        .await
        .expect("from raw events");
    assert!(!summary.staged, "{summary}");
    assert!(summary.inputs > 0, "{summary}");
    check(&env, Grain::Hour, ts("2026-02-14T13:00:00Z")).await;

    // After retention archived and removed every raw day, the month built
    // again from its days is unchanged.
    let month = stored(&env, Grain::Month, february).await;
    let policy = env.config.retention.clone();
    let plan = hxjobs::retention::plan(&env.pool, &policy, ts("2026-04-01"))
        .await
        .expect("plan");
    assert_eq!(plan.event_days.len(), 36);
    hxjobs::retention::apply(
        &env.pool,
        &hxjobs::storage::Store::open(&env.config.storage).expect("store"),
        &env.dir.path().join("reports"),
        &plan,
        None,
    )
    .await
    .expect("retention");
    assert_eq!(env.count("SELECT count(*) FROM events").await, 0);
    assert_eq!(env.count("SELECT count(*) FROM rollup_stage").await, 0);
    rollup::aggregate(&env.pool, Grain::Month, february)
        .await
        .expect("month again");
    assert_eq!(stored(&env, Grain::Month, february).await, month);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hourly_rollup_waits_until_ingest_stored_the_hour() {
    use hxjobs::dag::executor;
    use hxjobs::ledger::{self, TaskState};
    use hxjobs::rollup::Readiness;

    let env = TestEnv::new("readiness").await;
    let text = r#"
name = "hourly"
schedule = "5 * * * *"
interval = "hour"
start_date = "2026-01-01"
[tasks.rollup]
kind = "aggregate"
grain = "hour"
"#;
    let job = hxjobs::dag::job::parse(&env.dir.path().join("hourly.toml"), text).expect("job");
    let pools = hxjobs::db::Pools::new(env.pool.clone());
    let hour = Grain::Hour.last_complete(Utc::now());
    let run_once = || async {
        let run =
            ledger::create_claimed_run(&pools.ledger, &job.name, hour, "test", &Default::default())
                .await
                .expect("run");
        executor::execute(&env.config, &pools, &job, &run, CancellationToken::new())
            .await
            .expect("execute")
    };

    // No drain has reached the topics' ends since the hour ended.
    let early = run_once().await;
    assert_eq!(early.tasks[0].state, TaskState::Failed);
    assert!(
        early.tasks[0].message.contains("not ready"),
        "{}",
        early.tasks[0].message
    );
    assert_eq!(env.count("SELECT count(*) FROM rollups").await, 0);

    hxjobs::ingest::drain(&env.config, &env.pool, CancellationToken::new())
        .await
        .expect("drain");
    let ready = run_once().await;
    assert_eq!(
        ready.tasks[0].state,
        TaskState::Success,
        "{}",
        ready.tasks[0].message
    );

    // Another consumer group that never drained: an hour long past its
    // grace period runs anyway, a recent one waits.
    let grace = chrono::TimeDelta::hours(1);
    let old_end = ts("2026-01-01T01:00:00Z");
    let topics = env.config.topics.event_topic_names();
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    assert_eq!(
        rollup::readiness(&env.pool, "elsewhere", &topics, old_end, grace, Utc::now())
            .await
            .expect("readiness"),
        Readiness::GraceOver(None)
    );
    assert_eq!(
        rollup::readiness(&env.pool, "elsewhere", &topics, hour.end, grace, hour.end)
            .await
            .expect("readiness"),
        Readiness::NotYet(None)
    );
    env.cleanup().await;
}
