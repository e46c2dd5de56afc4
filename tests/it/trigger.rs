//! Completeness triggers against real PostgreSQL: a data-triggered job is
//! queued once ingest has stored its interval (never before), a job that
//! waits for another is queued the moment the runs beneath it succeeded,
//! and daemons sharing the database queue each interval once.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use hxjobs::dag::job::{self, Job};
use hxjobs::dag::scheduler::Scheduler;
use hxjobs::dag::trigger;
use sqlx::PgPool;

use crate::common::{ts, TestEnv};

fn parse(env: &TestEnv, name: &str, text: &str) -> Job {
    job::parse(&env.dir.path().join(format!("{name}.toml")), text).expect("valid job")
}

/// Three daemons' views of one database, each with its own pool.
async fn daemons(env: &TestEnv, jobs: &[Job]) -> Vec<Scheduler> {
    let mut out = Vec::new();
    for worker in ["daemon-a", "daemon-b", "daemon-c"] {
        let pool = hxjobs::db::connect(&env.config.database)
            .await
            .expect("pool");
        out.push(Scheduler::new(
            Arc::new(env.config.clone()),
            hxjobs::db::Pools::new(pool),
            jobs.to_vec(),
            worker.into(),
        ));
    }
    out
}

/// Every daemon enqueues at `now` at the same time.
async fn enqueue_together(daemons: &[Scheduler], now: DateTime<Utc>) {
    let passes = daemons.iter().map(|d| d.enqueue_due(now));
    for r in futures::future::join_all(passes).await {
        r.expect("enqueue");
    }
}

async fn scheduled(pool: &PgPool, job: &str) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    sqlx::query_as(
        "SELECT interval_start, interval_end FROM job_runs
         WHERE job = $1 AND run_type = 'scheduled' ORDER BY interval_start",
    )
    .bind(job)
    .fetch_all(pool)
    .await
    .expect("runs")
}

/// Every event partition ingest knows of, caught up through `through`.
async fn stored_through(env: &TestEnv, through: DateTime<Utc>) {
    for topic in env.config.topics.event_topic_names() {
        sqlx::query(
            "INSERT INTO consumer_offsets (consumer_group, topic, partition, next_offset, caught_up_through)
             VALUES ($1, $2, 0, 0, $3)
             ON CONFLICT (consumer_group, topic, partition) DO UPDATE SET caught_up_through = $3",
        )
        .bind(&env.config.kafka.group_id)
        .bind(&topic)
        .bind(through)
        .execute(&env.pool)
        .await
        .expect("offsets");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_hour_is_queued_once_the_moment_ingest_has_stored_it() {
    let env = TestEnv::new("trigger_data").await;
    // No schedule: only completeness queues runs.
    let hourly = parse(
        &env,
        "data_hourly",
        r#"
name = "data_hourly"
trigger = "complete"
interval = "hour"
start_date = "2026-03-01"
[complete]
lateness_secs = 2
[tasks.noop]
kind = "sql"
sql = "SELECT 1"
"#,
    );
    let shared = vec![Arc::new(hourly.clone())];
    let d = daemons(&env, &[hourly]).await;

    // 10:00:05, ingest caught up only through 09:59:59: the hour 09:00 is
    // not complete, whatever the clock says.
    stored_through(&env, ts("2026-03-01T09:59:59Z")).await;
    enqueue_together(&d, ts("2026-03-01T10:00:05Z")).await;
    assert!(scheduled(&env.pool, "data_hourly").await.is_empty());
    let waiting = trigger::waiting_on(&env.config, &env.pool, &shared, ts("2026-03-01T10:00:05Z"))
        .await
        .expect("waiting");
    let text = waiting.get("data_hourly").expect("a waiting note");
    assert!(
        text.contains("2026-03-01 09:00 UTC")
            && text.contains("needed through 2026-03-01 10:00:02 UTC"),
        "{text}"
    );
    // Stored through the end, but not past the lateness: still waiting.
    stored_through(&env, ts("2026-03-01T10:00:01Z")).await;
    enqueue_together(&d, ts("2026-03-01T10:00:06Z")).await;
    assert!(scheduled(&env.pool, "data_hourly").await.is_empty());
    assert!(
        !trigger::data_due(&env.config, &env.pool, &shared, ts("2026-03-01T10:00:06Z"))
            .await
            .expect("due")
    );

    // Past end + lateness: queued once by three daemons at once.
    stored_through(&env, ts("2026-03-01T10:00:02.5Z")).await;
    assert!(
        trigger::data_due(&env.config, &env.pool, &shared, ts("2026-03-01T10:00:06Z"))
            .await
            .expect("due")
    );
    enqueue_together(&d, ts("2026-03-01T10:00:06Z")).await;
    assert_eq!(
        scheduled(&env.pool, "data_hourly").await,
        vec![(ts("2026-03-01T09:00:00Z"), ts("2026-03-01T10:00:00Z"))]
    );
    assert!(
        !trigger::data_due(&env.config, &env.pool, &shared, ts("2026-03-01T10:00:07Z"))
            .await
            .expect("due")
    );

    // Ingest is past the clock: the hour that ended is queued, the hour
    // still under way is not.
    stored_through(&env, ts("2026-03-01T12:30:00Z")).await;
    enqueue_together(&d, ts("2026-03-01T11:00:03Z")).await;
    assert_eq!(scheduled(&env.pool, "data_hourly").await.len(), 2);
    enqueue_together(&d, ts("2026-03-01T12:10:00Z")).await;
    enqueue_together(&d, ts("2026-03-01T12:10:01Z")).await;
    let starts: Vec<DateTime<Utc>> = scheduled(&env.pool, "data_hourly")
        .await
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(
        starts,
        vec![
            ts("2026-03-01T09:00:00Z"),
            ts("2026-03-01T10:00:00Z"),
            ts("2026-03-01T11:00:00Z")
        ]
    );

    // After a long pause (the cursor far behind) the catch-up policy
    // (`latest`, the default) holds: only the newest complete hour.
    sqlx::query(
        "UPDATE job_schedule SET complete_from = '2026-03-01T00:00:00Z' WHERE job = 'data_hourly'",
    )
    .execute(&env.pool)
    .await
    .expect("cursor");
    enqueue_together(&d, ts("2026-03-01T12:10:01Z")).await;
    assert_eq!(scheduled(&env.pool, "data_hourly").await.len(), 3);

    // The runs it queued run like any scheduled run.
    let reports = d[0].tick(ts("2026-03-01T12:10:02Z")).await.expect("tick");
    assert_eq!(reports.len(), 3);
    let ok: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM job_runs WHERE job = 'data_hourly' AND state = 'success'",
    )
    .fetch_one(&env.pool)
    .await
    .expect("count");
    assert_eq!(ok, 3);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_day_is_queued_once_the_moment_its_hours_have_succeeded() {
    let env = TestEnv::new("trigger_upstream").await;
    let hourly = parse(
        &env,
        "up_hourly",
        r#"
name = "up_hourly"
schedule = "1 * * * *"
interval = "hour"
start_date = "2026-03-01"
[catchup]
policy = "all"
max_intervals = 100
[tasks.noop]
kind = "sql"
sql = "SELECT 1"
"#,
    );
    let daily = parse(
        &env,
        "up_daily",
        r#"
name = "up_daily"
trigger = "complete"
schedule = "0 0 1 1 *"
interval = "day"
start_date = "2026-03-01"
wait_for = "up_hourly"
[tasks.noop]
kind = "sql"
sql = "SELECT 1"
"#,
    );
    let shared = vec![Arc::new(hourly.clone()), Arc::new(daily.clone())];
    let d = daemons(&env, &[hourly, daily]).await;

    // 23 of the day's hours have run: the day waits on the last one.
    let now = ts("2026-03-01T23:30:00Z");
    d[0].tick(now).await.expect("tick");
    enqueue_together(&d, now).await;
    assert!(scheduled(&env.pool, "up_daily").await.is_empty());
    let waiting = trigger::waiting_on(&env.config, &env.pool, &shared, now)
        .await
        .expect("waiting");
    assert!(
        waiting["up_daily"].contains("it ends at 2026-03-02 00:00 UTC"),
        "{}",
        waiting["up_daily"]
    );

    // After midnight the 24th hour is queued by its schedule; until it
    // succeeds the day waits on it, and says so.
    let now = ts("2026-03-02T00:01:30Z");
    enqueue_together(&d, now).await;
    assert!(scheduled(&env.pool, "up_daily").await.is_empty());
    let waiting = trigger::waiting_on(&env.config, &env.pool, &shared, now)
        .await
        .expect("waiting");
    assert!(
        waiting["up_daily"].contains("1 of 24 hour runs of up_hourly"),
        "{}",
        waiting["up_daily"]
    );

    // The hour runs: the next pass of any daemon queues the day, once,
    // long before its schedule would.
    let ran = d[1].tick(now).await.expect("tick");
    assert!(ran.iter().any(|r| r.state() == "success"));
    enqueue_together(&d, now + TimeDelta::seconds(1)).await;
    assert_eq!(
        scheduled(&env.pool, "up_daily").await,
        vec![(ts("2026-03-01T00:00:00Z"), ts("2026-03-02T00:00:00Z"))]
    );
    d[2].tick(now + TimeDelta::seconds(2)).await.expect("tick");
    let state: String =
        sqlx::query_scalar("SELECT state::text FROM job_runs WHERE job = 'up_daily'")
            .fetch_one(&env.pool)
            .await
            .expect("state");
    assert_eq!(state, "success");
    env.cleanup().await;
}

/// Events stamped now, produced at about `per_sec` until `stop` is set.
async fn produce_now(
    config: hxjobs::config::Config,
    per_sec: u64,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> u64 {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = hxjobs::kafka::client_config(&config.kafka)
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let topic_of: std::collections::HashMap<_, String> = config
        .topics
        .event_topics()
        .iter()
        .map(|(t, e)| (*e, t.to_string()))
        .collect();
    let mut sent = 0;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        tick.tick().await;
        let now = Utc::now();
        let records = hxjobs::demo::Generator::new(hxjobs::demo::DemoSpec {
            events: (per_sec / 10).max(1),
            from: now - TimeDelta::milliseconds(100),
            to: now,
            bad_ratio: 0.0,
            duplicate_ratio: 0.0,
            seed: sent,
            max_event_bytes: config.ingest.max_event_bytes,
        })
        .expect("spec");
        for r in records {
            let topic = &topic_of[&r.event_type];
            let mut record = FutureRecord::<str, [u8]>::to(topic).key(&r.key);
            if let Some(p) = r.payload.as_deref() {
                record = record.payload(p);
            }
            producer
                .send(record, std::time::Duration::from_secs(10))
                .await
                .expect("delivered");
            sent += 1;
        }
    }
    sent
}

/// Two daemons ingesting continuously and running a minute job queued by
/// completeness: each minute runs once, after its data is in (what the run
/// counted is every event of its minute), without its schedule firing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn daemons_run_each_minute_once_when_ingest_has_stored_it() {
    use std::time::{Duration, Instant};
    let env = TestEnv::new("trigger_daemons").await;
    sqlx::query(
        "CREATE TABLE minute_runs (interval_start timestamptz, run_id bigint, at timestamptz, seen bigint)",
    )
    .execute(&env.pool)
    .await
    .expect("table");
    // From the minute under way: it and the next one are run.
    let first = DateTime::from_timestamp(Utc::now().timestamp() / 60 * 60, 0).expect("this minute");
    let job = format!(
        r#"
name = "minutely"
trigger = "complete"
schedule = "0 0 1 1 *"
interval = "minute"
start_date = "{}"
[complete]
lateness_secs = 1
[tasks.count]
kind = "sql"
sql = "INSERT INTO minute_runs SELECT '{{{{ interval_start }}}}', {{{{ run_id }}}}, clock_timestamp(), count(*) FROM events WHERE event_time >= '{{{{ interval_start }}}}' AND event_time < '{{{{ interval_end }}}}'"
"#,
        first.to_rfc3339()
    );
    let config = env.config_with_jobs(
        "trigger",
        &[("minutely", job)],
        "[ingest]\nstale_after_secs = 4\nmax_batch_delay_ms = 200\n\
         [scheduler]\ncomplete_poll_ms = 200\n[live_stats]\nenabled = false\n",
    );
    let spawn = |name: &str| {
        let log = env.dir.path().join(format!("{name}.log"));
        env.hxjobs(&config, &["daemon", "--no-api"])
            .env("HXJOBS_INGEST_MODE", "continuous")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(log).expect("log"))
            .spawn()
            .expect("daemon")
    };
    let mut daemons = [spawn("d1"), spawn("d2")];
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producing = tokio::spawn(produce_now(env.config.clone(), 200, stop.clone()));

    // Two minutes after `first` have ended and been run.
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let runs = env.count("SELECT count(*) FROM minute_runs").await;
        if runs >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "two minutes not run in time");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = producing.await.expect("producer");
    assert!(sent > 0);
    // Everything produced is stored before the counts are compared.
    let deadline = Instant::now() + Duration::from_secs(60);
    while env.count("SELECT count(*) FROM events").await < sent as i64 {
        assert!(Instant::now() < deadline, "not everything stored");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for d in &mut daemons {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &d.id().to_string()])
            .status();
        let _ = d.wait();
    }

    let rows: Vec<(DateTime<Utc>, i64, DateTime<Utc>, i64)> = sqlx::query_as(
        "SELECT interval_start, run_id, at, seen FROM minute_runs ORDER BY interval_start, at",
    )
    .fetch_all(&env.pool)
    .await
    .expect("rows");
    let mut starts: Vec<DateTime<Utc>> = rows.iter().map(|r| r.0).collect();
    starts.dedup();
    assert_eq!(starts.len(), rows.len(), "a minute ran twice: {rows:?}");
    assert_eq!(starts[0], first);
    for (i, (interval_start, _, at, seen)) in rows.iter().enumerate() {
        assert_eq!(*interval_start, first + TimeDelta::minutes(i as i64));
        let end = *interval_start + TimeDelta::minutes(1);
        println!(
            "minute {interval_start}: counted {} ms after its end",
            (*at - end).num_milliseconds()
        );
        assert!(
            *at >= end + TimeDelta::seconds(1),
            "ran before its data was in: {at}"
        );
        let stored: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM events WHERE event_time >= $1 AND event_time < $2",
        )
        .bind(interval_start)
        .bind(end)
        .fetch_one(&env.pool)
        .await
        .expect("count");
        assert!(stored > 0);
        assert_eq!(*seen, stored, "the run for {interval_start} missed events");
    }
    let by_trigger = env
        .count("SELECT count(*) FROM job_runs WHERE job = 'minutely' AND run_type = 'scheduled' AND state = 'success'")
        .await;
    assert_eq!(by_trigger as usize, rows.len());
    env.cleanup().await;
}
