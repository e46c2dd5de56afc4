//! `hxjobs bench freshness`: how soon an interval's figures are readable
//! after it ends. Minute intervals stand in for hours (rollups start at
//! hours; a minute job rolls its minute up in SQL), so boundaries pass in
//! minutes: events produced at a steady rate stamped now, continuous
//! ingest and the daemon's scheduler in this process, one job queued by
//! completeness and one by the clock (5 s past each minute, as the hourly
//! job's :05 was). Then a day: the shipped daily job after its hours, from
//! the last hour's success to the daily report.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio_util::sync::CancellationToken;

use super::scaleout::{percentile, start_workers, wait_owned};
use super::Scratch;
use crate::config::Config;
use crate::dag::catalog::Catalog;
use crate::dag::scheduler::Scheduler;
use crate::db::{self, Pools};
use crate::interval::Grain;
use crate::{demo, kafka};

#[derive(Debug, Clone)]
pub struct FreshnessBench {
    pub rate: u64,
    pub minutes: u64,
    pub produced: u64,
    /// Milliseconds from a minute's end to its rollup row, sorted; and how
    /// many of those runs counted every event of their minute.
    pub complete: Vec<f64>,
    pub complete_exact: usize,
    pub clock: Vec<f64>,
    pub clock_exact: usize,
    /// The day: from its last hour's success to the daily report written.
    pub day_report_secs: Option<f64>,
    pub day_events: u64,
}

impl FreshnessBench {
    pub fn p(&self, which: &[f64], p: f64) -> Option<f64> {
        percentile(which, p)
    }

    /// p99 ≤ 5 s for the completeness-queued interval with every event in,
    /// and the day's report ≤ 60 s after its last hour.
    pub fn targets_met(&self) -> bool {
        self.p(&self.complete, 99.0).is_some_and(|ms| ms <= 5000.0)
            && self.complete_exact == self.complete.len()
            && self.day_report_secs.is_some_and(|s| s <= 60.0)
    }
}

impl fmt::Display for FreshnessBench {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |v: Option<f64>| v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.0} ms"));
        writeln!(
            f,
            "{} events at {}/s over {} minutes, continuous ingest (one worker), fresh topics and database",
            self.produced, self.rate, self.minutes
        )?;
        for (name, v, exact) in [
            (
                "trigger = \"complete\" (lateness 1 s)",
                &self.complete,
                self.complete_exact,
            ),
            ("clock (5 s past the minute)", &self.clock, self.clock_exact),
        ] {
            writeln!(
                f,
                "  {name:<38} interval end → rollup readable: p50 {}  p99 {}  max {}  ({} intervals, {} with every event)",
                ms(self.p(v, 50.0)),
                ms(self.p(v, 99.0)),
                ms(self.p(v, 100.0)),
                v.len(),
                exact
            )?;
        }
        write!(
            f,
            "  day ({} events): last hour succeeded → daily rollup and report done: {}",
            self.day_events,
            self.day_report_secs
                .map_or_else(|| "n/a".to_string(), |s| format!("{s:.1} s"))
        )
    }
}

const MINUTE_SQL: &str = "INSERT INTO bench_freshness SELECT '{{ job }}', '{{ interval_start }}', clock_timestamp(), count(*) FROM events WHERE event_time >= '{{ interval_start }}' AND event_time < '{{ interval_end }}'";

fn minute_job(name: &str, start: DateTime<Utc>, queued_by: &str) -> String {
    format!(
        "name = \"{name}\"\ninterval = \"minute\"\nstart_date = \"{}\"\n{queued_by}\n[tasks.rollup]\nkind = \"sql\"\nsql = \"{}\"\n",
        start.to_rfc3339(),
        MINUTE_SQL.replace('"', "\\\"")
    )
}

pub async fn freshness(
    base: &Config,
    rate: u64,
    minutes: u64,
    keep: bool,
) -> anyhow::Result<FreshnessBench> {
    let suffix = Utc::now().format("%Y%m%d%H%M%S").to_string();
    let scratch = Scratch::create(base, "freshness").await?;
    let mut config = scratch.config.clone();
    config.topics.prefix_names(&format!("bench-{suffix}-"));
    config.kafka.group_id = format!("bench-{suffix}-freshness");
    config.ingest.mode = crate::config::IngestMode::Continuous;
    let dir = tempfile::tempdir()?;
    config.storage.url = format!("file://{}", dir.path().join("store").display());
    let outcome = run(&config, rate, minutes, dir.path()).await;
    scratch.finish(keep).await;
    outcome
}

async fn run(
    config: &Config,
    rate: u64,
    minutes: u64,
    dir: &std::path::Path,
) -> anyhow::Result<FreshnessBench> {
    kafka::ensure_topics(config).await?;
    let pool = db::connect_and_migrate(&config.database).await?;
    sqlx::query(
        "CREATE TABLE bench_freshness (job text, minute timestamptz, at timestamptz, counted bigint)",
    )
    .execute(&pool)
    .await?;
    let stop = CancellationToken::new();
    let workers = start_workers(config, &pool, 1, &stop);
    wait_owned(&pool, config, 1, Duration::from_secs(60)).await?;

    // From the next whole minute.
    let first = Grain::Minute.floor(Utc::now()) + TimeDelta::minutes(1);
    let jobs = [
        minute_job(
            "complete",
            first,
            "trigger = \"complete\"\n[complete]\nlateness_secs = 1",
        ),
        minute_job("clock", first, "schedule = \"5 * * * * *\""),
    ];
    let mut parsed = Vec::new();
    for text in &jobs {
        parsed.push(crate::dag::job::parse(&dir.join("bench.toml"), text)?);
    }
    let scheduler = Scheduler::new(
        Arc::new(config.clone()),
        Pools::new(pool.clone()),
        parsed.clone(),
        "bench-freshness".into(),
    );
    let catalog = Arc::new(Catalog::fixed(parsed.into_iter().map(Arc::new).collect()));
    let daemon = tokio::spawn(crate::dag::daemon::run(
        scheduler,
        catalog,
        Arc::new(tokio::sync::Notify::new()),
        stop.clone(),
    ));

    // Produce until `minutes` whole minutes after `first` have ended, and
    // a little more for the clock job's last one.
    let until = first + TimeDelta::minutes(minutes as i64) + TimeDelta::seconds(8);
    let produced = produce_now(config, rate, until).await?;
    // Every event of the last minute stored before counting it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.cancel();
    let _ = daemon.await;
    for h in workers {
        let _ = h.await;
    }

    let last = first + TimeDelta::minutes(minutes as i64);
    // (job, minute, when its rollup was written, what it counted, stored)
    type Measured = (String, DateTime<Utc>, DateTime<Utc>, i64, i64);
    let rows: Vec<Measured> = sqlx::query_as(
        "SELECT b.job, b.minute, b.at, b.counted,
                (SELECT count(*) FROM events e WHERE e.event_time >= b.minute
                   AND e.event_time < b.minute + interval '1 minute')
         FROM bench_freshness b WHERE b.minute >= $1 AND b.minute < $2",
    )
    .bind(first)
    .bind(last)
    .fetch_all(&pool)
    .await?;
    let (mut complete, mut clock) = (Vec::new(), Vec::new());
    let (mut complete_exact, mut clock_exact) = (0, 0);
    for (job, minute, at, counted, stored) in rows {
        let after = (at - (minute + TimeDelta::minutes(1))).num_milliseconds() as f64;
        let exact = usize::from(counted == stored);
        if job == "complete" {
            complete.push(after);
            complete_exact += exact;
        } else {
            clock.push(after);
            clock_exact += exact;
        }
    }
    complete.sort_by(f64::total_cmp);
    clock.sort_by(f64::total_cmp);

    let (day_report_secs, day_events) = day(config, &pool, dir).await?;
    pool.close().await;
    Ok(FreshnessBench {
        rate,
        minutes,
        produced,
        complete,
        complete_exact,
        clock,
        clock_exact,
        day_report_secs,
        day_events,
    })
}

/// Events stamped now at `rate` per second until `until`; how many.
async fn produce_now(config: &Config, rate: u64, until: DateTime<Utc>) -> anyhow::Result<u64> {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = kafka::client_config(&config.kafka)
        .set("linger.ms", "5")
        .create()?;
    let topic_of: std::collections::HashMap<_, String> = config
        .topics
        .event_topics()
        .iter()
        .map(|(t, e)| (*e, t.to_string()))
        .collect();
    let mut sent = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while Utc::now() < until {
        tick.tick().await;
        let now = Utc::now();
        let records = demo::Generator::new(demo::DemoSpec {
            events: (rate / 10).max(1),
            from: now - TimeDelta::milliseconds(100),
            to: now,
            bad_ratio: 0.0,
            duplicate_ratio: 0.0,
            seed: sent,
            max_event_bytes: config.ingest.max_event_bytes,
        })?
        .collect::<Vec<_>>();
        let mut pending = Vec::new();
        for r in &records {
            let Some(topic) = topic_of.get(&r.event_type) else {
                continue;
            };
            let mut record = FutureRecord::<str, [u8]>::to(topic).key(&r.key);
            if let Some(p) = r.payload.as_deref() {
                record = record.payload(p);
            }
            pending.push(producer.send(record, Duration::from_secs(10)));
            sent += 1;
        }
        for d in futures::future::join_all(pending).await {
            d.map_err(|(e, _)| e)?;
        }
    }
    Ok(sent)
}

/// A past day of demo events through the shipped hourly and daily jobs
/// (their checks included; the hourly ingest task left out, ingest already
/// stored the day): 23 hours run, then the last one, then the daily job as
/// the daemon's watch queues it. Seconds from the last hour's success to
/// the daily run's end (its rollup and report), and the day's events.
async fn day(
    config: &Config,
    pool: &sqlx::PgPool,
    dir: &std::path::Path,
) -> anyhow::Result<(Option<f64>, u64)> {
    let day = Grain::Day.floor(Utc::now()) - TimeDelta::days(3);
    let events = 100_000;
    let records: Vec<demo::DemoRecord> = demo::Generator::new(demo::DemoSpec {
        events,
        from: day,
        to: day + TimeDelta::days(1),
        bad_ratio: 0.0,
        duplicate_ratio: 0.0,
        seed: 7,
        max_event_bytes: config.ingest.max_event_bytes,
    })?
    .collect();
    let produce_config = config.clone();
    tokio::task::spawn_blocking(move || {
        demo::produce(&produce_config, records.into_iter(), |_| {})
    })
    .await??;
    crate::ingest::drain(config, pool, CancellationToken::new()).await?;

    let shipped = dir.join("shipped");
    crate::dag::job::write_shipped(&shipped)?;
    let load = |name: &str| -> anyhow::Result<crate::dag::Job> {
        let path = shipped.join(format!("{name}.toml"));
        let mut table: toml::Table = toml::from_str(&std::fs::read_to_string(&path)?)?;
        table.insert("start_date".into(), day.to_rfc3339().into());
        if let Some(toml::Value::Table(tasks)) = table.get_mut("tasks") {
            tasks.remove("ingest");
            if let Some(toml::Value::Table(rollup)) = tasks.get_mut("rollup") {
                rollup.remove("depends_on");
            }
        }
        Ok(crate::dag::job::parse(&path, &toml::to_string(&table)?)?)
    };
    let hourly = load("hxp_hourly_aggregation")?;
    let daily = load("hxp_daily_aggregation")?;
    let s = Scheduler::new(
        Arc::new(config.clone()),
        Pools::new(pool.clone()),
        vec![hourly, daily],
        "bench-freshness-day".into(),
    );
    // Hours 00 to 22, then the last one.
    s.tick(day + TimeDelta::hours(23) + TimeDelta::seconds(30))
        .await?;
    let now = day + TimeDelta::days(1) + TimeDelta::seconds(30);
    s.tick(now).await?;
    // What the daemon's watch does every scheduler.complete_poll_ms.
    s.tick(now).await?;
    let row: Option<(DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT h.finished_at, d.finished_at FROM job_runs h, job_runs d
         WHERE h.job = 'hxp_hourly_aggregation' AND h.interval_start = $1 AND h.state = 'success'
           AND d.job = 'hxp_daily_aggregation' AND d.interval_start = $2 AND d.state = 'success'",
    )
    .bind(day + TimeDelta::hours(23))
    .bind(day)
    .fetch_optional(pool)
    .await?;
    let secs = row.map(|(h, d)| (d - h).num_milliseconds() as f64 / 1000.0);
    Ok((secs, events))
}
