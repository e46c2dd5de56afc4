//! `hxjobs bench ingest --workers N,…` and `hxjobs bench latency`:
//! continuous ingest workers sharing the partitions, next to a bare consume
//! of the same messages, and the time from produce to visible in PostgreSQL
//! under a steady load.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::Scratch;
use crate::config::Config;
use crate::demo::{self, DemoSpec};
use crate::{db, kafka};

/// One worker count's run.
#[derive(Debug, Clone)]
pub struct WorkersRun {
    pub workers: usize,
    /// Reading the same messages with one consumer, storing nothing, just
    /// before the workers ran and just after (the baseline is their mean,
    /// so a broker that drifts faster or slower meanwhile is accounted for).
    pub bare_before: super::BareConsume,
    pub bare_after: super::BareConsume,
    /// From the workers' start until every message is stored.
    pub stored: Duration,
    /// Where that time went.
    pub phases: Phases,
}

/// Moments of a workers run, from its start.
#[derive(Debug, Clone, Default)]
pub struct Phases {
    /// The first commit.
    pub first_commit: Option<Duration>,
    /// Every worker owned partitions and none more than its share.
    pub spread: Option<Duration>,
    /// Half of the messages stored.
    pub half: Option<Duration>,
    /// Nine tenths stored.
    pub ninety: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct WorkersBench {
    pub events: u64,
    pub partitions: usize,
    pub runs: Vec<WorkersRun>,
}

impl fmt::Display for WorkersBench {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "hxjobs bench ingest --workers: {} events on {} partitions, continuous workers in one process, each with its own consumer and PostgreSQL connections",
            self.events, self.partitions
        )?;
        let rate = |d: Duration| self.events as f64 / d.as_secs_f64().max(1e-9);
        let at = |d: Option<Duration>| {
            d.map_or_else(
                || "n/a".to_string(),
                |d| format!("{:.1} s", d.as_secs_f64()),
            )
        };
        for r in &self.runs {
            writeln!(
                f,
                "  {} worker(s): bare consume {:>7.0} events/s (before {:.1} s, after {:.1} s), workers → PostgreSQL {:>7.0} events/s ({:.1} s), ratio {:.2}",
                r.workers,
                r.bare_rate(self.events),
                r.bare_before.total.as_secs_f64(),
                r.bare_after.total.as_secs_f64(),
                rate(r.stored),
                r.stored.as_secs_f64(),
                r.ratio(self.events)
            )?;
            writeln!(
                f,
                "    bare before: first message {}, half read {}, 90% {}",
                at(r.bare_before.first),
                at(r.bare_before.half),
                at(r.bare_before.ninety)
            )?;
            writeln!(
                f,
                "    workers: shared out {}, first commit {}, half stored {}, 90% {}",
                at(r.phases.spread),
                at(r.phases.first_commit),
                at(r.phases.half),
                at(r.phases.ninety)
            )?;
        }
        let threes: Vec<f64> = self
            .runs
            .iter()
            .filter(|r| r.workers == 3)
            .map(|r| r.ratio(self.events))
            .collect();
        if let Some(worst) = threes.iter().copied().reduce(f64::min) {
            write!(
                f,
                "  target (3 workers >= 0.80 of the bare consume, every run): {} (lowest of {} run(s): {worst:.2})",
                if worst >= 0.8 { "met" } else { "NOT met" },
                threes.len()
            )?;
        }
        Ok(())
    }
}

impl WorkersRun {
    /// The bare consume's rate: the mean of the one before and the one after.
    pub fn bare_rate(&self, events: u64) -> f64 {
        let rate = |d: Duration| events as f64 / d.as_secs_f64().max(1e-9);
        (rate(self.bare_before.total) + rate(self.bare_after.total)) / 2.0
    }

    /// The workers' rate over the bare consume's.
    pub fn ratio(&self, events: u64) -> f64 {
        events as f64 / self.stored.as_secs_f64().max(1e-9) / self.bare_rate(events)
    }
}

/// Starts `n` continuous workers in this process, each its own member.
pub fn start_workers(
    config: &Config,
    pool: &PgPool,
    n: usize,
    stop: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let config = Arc::new(config.clone());
    (0..n)
        .map(|i| {
            tokio::spawn(crate::ingest::worker::run(
                config.clone(),
                pool.clone(),
                format!("bench-worker-{i}"),
                stop.clone(),
            ))
        })
        .collect()
}

/// Waits until the stored positions of `group` sum to `total`, noting
/// when the run passed its phases.
async fn wait_stored(
    pool: &PgPool,
    group: &str,
    total: i64,
    workers: usize,
    limit: Duration,
) -> anyhow::Result<Phases> {
    let started = Instant::now();
    let mut phases = Phases::default();
    loop {
        let (stored, partitions, owners, most): (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT COALESCE(sum(next_offset), 0)::int8,
                    count(*),
                    count(DISTINCT owner),
                    COALESCE(max(owned), 0)::int8
               FROM consumer_offsets
               LEFT JOIN (SELECT owner AS o, count(*) AS owned FROM consumer_offsets
                           WHERE consumer_group = $1 AND owner IS NOT NULL GROUP BY owner) c
                 ON c.o = owner
              WHERE consumer_group = $1",
        )
        .bind(group)
        .fetch_one(pool)
        .await?;
        let now = Some(started.elapsed());
        let share = (partitions as usize).div_ceil(workers.max(1)) as i64;
        if phases.first_commit.is_none() && stored > 0 {
            phases.first_commit = now;
        }
        if phases.spread.is_none() && owners as usize == workers && most <= share {
            phases.spread = now;
        }
        if phases.half.is_none() && stored * 2 >= total {
            phases.half = now;
        }
        if phases.ninety.is_none() && stored * 10 >= total * 9 {
            phases.ninety = now;
        }
        if stored >= total {
            return Ok(phases);
        }
        if started.elapsed() > limit {
            anyhow::bail!("workers stored {stored} of {total} messages in {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn ingest_workers(
    base: &Config,
    events: u64,
    counts: &[usize],
    keep: bool,
) -> anyhow::Result<WorkersBench> {
    let suffix = Utc::now().format("%Y%m%d%H%M%S").to_string();
    let mut config = base.clone();
    config.topics.prefix_names(&format!("bench-{suffix}-"));
    kafka::ensure_topics(&config).await?;
    let spec = super::ingest_spec(&config, events);
    eprintln!("producing {events} demo events …");
    let cfg = config.clone();
    tokio::task::spawn_blocking(move || demo::produce(&cfg, demo::Generator::new(spec)?, |_| {}))
        .await??;
    let partitions = config.topics.event_topics().len() * config.topics.partitions.max(1) as usize;

    let bare = || {
        eprintln!("bare consume …");
        let cfg = config.clone();
        async move {
            tokio::task::spawn_blocking(move || super::bare_consume_marked(&cfg, events)).await?
        }
    };
    let mut runs = Vec::new();
    let mut bare_before = bare().await?;
    for &n in counts {
        eprintln!("{n} worker(s) …");
        let scratch = Scratch::create(&config, &format!("workers{n}")).await?;
        let mut run_config = scratch.config.clone();
        run_config.kafka.group_id = format!("bench-{suffix}-workers{n}");
        let outcome = async {
            let pool = db::connect_and_migrate(&run_config.database).await?;
            let stop = CancellationToken::new();
            let started = Instant::now();
            let handles = start_workers(&run_config, &pool, n, &stop);
            let waited = wait_stored(
                &pool,
                &run_config.kafka.group_id,
                events as i64,
                n,
                Duration::from_secs(3600),
            )
            .await;
            let stored = started.elapsed();
            stop.cancel();
            for h in handles {
                let _ = h.await;
            }
            let phases = waited?;
            let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
                .fetch_one(&pool)
                .await?;
            pool.close().await;
            if rows != events as i64 {
                anyhow::bail!("{n} workers stored {rows} of {events} events");
            }
            Ok::<_, anyhow::Error>((stored, phases))
        }
        .await;
        scratch.finish(keep).await;
        let (stored, phases) = outcome?;
        let bare_after = bare().await?;
        runs.push(WorkersRun {
            workers: n,
            bare_before,
            bare_after,
            stored,
            phases,
        });
        bare_before = bare_after;
    }
    Ok(WorkersBench {
        events,
        partitions,
        runs,
    })
}

/// Produce-to-visible latencies of a steady load.
#[derive(Debug, Clone)]
pub struct Latency {
    pub rate: u64,
    pub secs: u64,
    pub produced: usize,
    /// Messages seen in PostgreSQL (the rest never were, within a minute).
    pub visible: usize,
    /// Sorted latencies, milliseconds.
    pub millis: Vec<f64>,
    /// Sorted times from send to the broker's acknowledgement, milliseconds.
    pub ack_millis: Vec<f64>,
    /// How often PostgreSQL was looked at.
    pub poll: Duration,
}

impl Latency {
    pub fn percentile(&self, p: f64) -> Option<f64> {
        percentile(&self.millis, p)
    }
}

/// The `p`-th percentile (nearest rank) of sorted values.
pub(super) fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

impl Latency {
    fn shown(values: &[f64], p: f64) -> String {
        percentile(values, p).map_or_else(|| "n/a".to_string(), |ms| format!("{ms:.0} ms"))
    }
}

impl fmt::Display for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = |p: f64| Latency::shown(&self.millis, p);
        let ack = |p: f64| Latency::shown(&self.ack_millis, p);
        writeln!(
            f,
            "produced {} events at {}/s over {} s; {} visible in PostgreSQL (looked every {} ms)",
            self.produced,
            self.rate,
            self.secs,
            self.visible,
            self.poll.as_millis()
        )?;
        writeln!(
            f,
            "  produce → visible: p50 {}  p95 {}  p99 {}  max {}",
            shown(50.0),
            shown(95.0),
            shown(99.0),
            shown(100.0)
        )?;
        write!(
            f,
            "  of which produce → broker ack: p50 {}  p95 {}  p99 {}  max {}",
            ack(50.0),
            ack(95.0),
            ack(99.0),
            ack(100.0)
        )
    }
}

/// Produces clean demo events at `rate` per second for `secs` and measures,
/// for each, the time from its send to the first look at PostgreSQL that
/// found its partition's stored position past its offset (the position
/// commits with the events). Continuous workers must be running.
pub async fn measure_latency(
    config: &Config,
    pool: &PgPool,
    rate: u64,
    secs: u64,
) -> anyhow::Result<Latency> {
    let poll = Duration::from_millis(50);
    let producer: FutureProducer = kafka::client_config(&config.kafka)
        .set("acks", "all")
        // hxjobs's own producer setting (kafka::build_producer_with).
        .set("linger.ms", "20")
        .create()?;
    let now = Utc::now();
    let records: Vec<demo::DemoRecord> = demo::Generator::new(DemoSpec {
        events: rate * secs,
        from: now - TimeDelta::minutes(5),
        to: now,
        bad_ratio: 0.0,
        duplicate_ratio: 0.0,
        seed: now.timestamp_subsec_nanos() as u64,
        max_event_bytes: config.ingest.max_event_bytes,
    })?
    .collect();
    let topic_of: HashMap<crate::events::EventType, String> = config
        .topics
        .event_topics()
        .iter()
        .map(|(t, e)| (*e, t.to_string()))
        .collect();

    // Positions as seen, per partition: (when, next offset) on each change.
    let watch_stop = CancellationToken::new();
    let watcher = {
        let (pool, group, stop) = (
            pool.clone(),
            config.kafka.group_id.clone(),
            watch_stop.clone(),
        );
        tokio::spawn(async move {
            let mut seen: HashMap<(String, i32), Vec<(Instant, i64)>> = HashMap::new();
            while !stop.is_cancelled() {
                let at = Instant::now();
                let rows: Vec<(String, i32, i64)> = sqlx::query_as(
                    "SELECT topic, partition, next_offset FROM consumer_offsets WHERE consumer_group = $1",
                )
                .bind(&group)
                .fetch_all(&pool)
                .await
                .unwrap_or_default();
                for (t, p, next) in rows {
                    let v = seen.entry((t, p)).or_default();
                    if v.last().is_none_or(|(_, n)| *n != next) {
                        v.push((at, next));
                    }
                }
                tokio::time::sleep(poll).await;
            }
            seen
        })
    };

    let started = Instant::now();
    let per_tick = (rate / 100).max(1) as usize;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut pending = FuturesUnordered::new();
    let mut sent: Vec<(String, i32, i64, Instant)> = Vec::with_capacity(records.len());
    let mut acks: Vec<f64> = Vec::with_capacity(records.len());
    let mut records = records.into_iter();
    let mut done = false;
    while !done {
        tick.tick().await;
        for _ in 0..per_tick {
            let Some(r) = records.next() else {
                done = true;
                break;
            };
            let topic = topic_of.get(&r.event_type).cloned().unwrap_or_default();
            let producer = producer.clone();
            let at = Instant::now();
            pending.push(async move {
                let mut record = FutureRecord::<str, [u8]>::to(&topic).key(&r.key);
                if let Some(p) = r.payload.as_deref() {
                    record = record.payload(p);
                }
                let delivered = producer.send(record, Duration::from_secs(30)).await;
                (topic, delivered.map_err(|(e, _)| e), at, at.elapsed())
            });
        }
        // Collect acknowledgements as they come, without blocking the pace.
        while let Some(Some((topic, delivered, at, ack))) =
            futures::FutureExt::now_or_never(pending.next())
        {
            let d = delivered?;
            sent.push((topic, d.partition, d.offset, at));
            acks.push(ack.as_secs_f64() * 1000.0);
        }
    }
    while let Some((topic, delivered, at, ack)) = pending.next().await {
        let d = delivered?;
        sent.push((topic, d.partition, d.offset, at));
        acks.push(ack.as_secs_f64() * 1000.0);
    }
    acks.sort_by(f64::total_cmp);
    let produced_secs = started.elapsed();
    tracing::debug!(secs = produced_secs.as_secs_f64(), "production done");

    // Let the last ones land, then stop looking.
    let mut needed: HashMap<(String, i32), i64> = HashMap::new();
    for (t, p, o, _) in &sent {
        let e = needed.entry((t.clone(), *p)).or_default();
        *e = (*e).max(o + 1);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let rows: Vec<(String, i32, i64)> = sqlx::query_as(
            "SELECT topic, partition, next_offset FROM consumer_offsets WHERE consumer_group = $1",
        )
        .bind(&config.kafka.group_id)
        .fetch_all(pool)
        .await?;
        let at: HashMap<(String, i32), i64> =
            rows.into_iter().map(|(t, p, n)| ((t, p), n)).collect();
        if needed
            .iter()
            .all(|(k, n)| at.get(k).is_some_and(|s| s >= n))
        {
            break;
        }
        tokio::time::sleep(poll).await;
    }
    tokio::time::sleep(poll * 2).await;
    watch_stop.cancel();
    let seen = watcher.await?;

    let mut millis = Vec::with_capacity(sent.len());
    for (t, p, offset, at) in &sent {
        let Some(changes) = seen.get(&(t.clone(), *p)) else {
            continue;
        };
        let i = changes.partition_point(|(_, next)| *next <= *offset);
        if let Some((visible_at, _)) = changes.get(i) {
            millis.push(visible_at.saturating_duration_since(*at).as_secs_f64() * 1000.0);
        }
    }
    millis.sort_by(f64::total_cmp);
    Ok(Latency {
        rate,
        secs,
        produced: sent.len(),
        visible: millis.len(),
        millis,
        ack_millis: acks,
        poll,
    })
}

/// `hxjobs bench latency`: fresh topics and database, `workers` continuous
/// workers, then [`measure_latency`].
pub async fn latency(
    base: &Config,
    rate: u64,
    secs: u64,
    workers: usize,
    keep: bool,
) -> anyhow::Result<Latency> {
    let suffix = Utc::now().format("%Y%m%d%H%M%S").to_string();
    let scratch = Scratch::create(base, "latency").await?;
    let mut config = scratch.config.clone();
    config.topics.prefix_names(&format!("bench-{suffix}-"));
    config.kafka.group_id = format!("bench-{suffix}-latency");
    let outcome = async {
        kafka::ensure_topics(&config).await?;
        let pool = db::connect_and_migrate(&config.database).await?;
        let stop = CancellationToken::new();
        let handles = start_workers(&config, &pool, workers, &stop);
        wait_owned(&pool, &config, workers, Duration::from_secs(60)).await?;
        let measured = measure_latency(&config, &pool, rate, secs).await;
        stop.cancel();
        for h in handles {
            let _ = h.await;
        }
        pool.close().await;
        measured
    }
    .await;
    scratch.finish(keep).await;
    outcome
}

/// Waits until every partition of the event topics has a live owner and
/// `workers` workers share them.
pub async fn wait_owned(
    pool: &PgPool,
    config: &Config,
    workers: usize,
    limit: Duration,
) -> anyhow::Result<()> {
    let topics = config.topics.event_topic_names();
    let want = topics.len() * config.topics.partitions.max(1) as usize;
    let started = Instant::now();
    loop {
        let parts = crate::ingest::lease::partitions(
            pool,
            &config.kafka.group_id,
            &topics,
            config.ingest.stale_after(),
        )
        .await?;
        let mut owners: Vec<&str> = parts.iter().filter_map(|p| p.owner.as_deref()).collect();
        owners.sort_unstable();
        owners.dedup();
        if parts.len() >= want && parts.iter().all(|p| p.owner.is_some()) && owners.len() >= workers
        {
            return Ok(());
        }
        if started.elapsed() > limit {
            anyhow::bail!("the workers did not take every partition within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How long membership takes with Kafka's consumer-group protocol and with
/// the PostgreSQL leases hxjobs uses, on the same topics.
#[derive(Debug, Clone)]
pub struct MembershipBench {
    pub partitions: usize,
    /// A first group member until it is assigned every partition.
    pub kafka_first: Option<Duration>,
    /// A second member joining until both hold a share.
    pub kafka_second: Option<Duration>,
    pub lease_first: Duration,
    pub lease_second: Duration,
}

impl fmt::Display for MembershipBench {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = |d: Option<Duration>| {
            d.map_or_else(
                || "no assignment within 120 s".into(),
                |d| format!("{:.2} s", d.as_secs_f64()),
            )
        };
        writeln!(f, "hxjobs bench membership: {} partitions", self.partitions)?;
        writeln!(
            f,
            "  Kafka consumer group: first member assigned {}, second member sharing {}",
            shown(self.kafka_first),
            shown(self.kafka_second)
        )?;
        write!(
            f,
            "  PostgreSQL leases:    first worker owning all {:.2} s, second worker sharing {:.2} s",
            self.lease_first.as_secs_f64(),
            self.lease_second.as_secs_f64()
        )
    }
}

/// Polls a subscribed group consumer until `done` says its assignment is
/// enough or `limit` passes; the time it took.
fn group_member(
    config: &Config,
    group: &str,
    topics: &[String],
    shared: Arc<std::sync::atomic::AtomicUsize>,
    want: usize,
    limit: Duration,
) -> anyhow::Result<Option<Duration>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = kafka::client_config(&config.kafka)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let started = Instant::now();
    consumer.subscribe(&names)?;
    let mut mine = 0;
    let mut reached = None;
    while started.elapsed() < limit {
        let _ = consumer.poll(Duration::from_millis(50));
        let now = consumer.assignment().map(|a| a.count()).unwrap_or(0);
        if now != mine {
            shared.fetch_add(now, std::sync::atomic::Ordering::SeqCst);
            shared.fetch_sub(mine, std::sync::atomic::Ordering::SeqCst);
            mine = now;
        }
        if reached.is_none() && mine > 0 && shared.load(std::sync::atomic::Ordering::SeqCst) >= want
        {
            reached = Some(started.elapsed());
        }
        if reached.is_some()
            && started.elapsed() > reached.unwrap_or_default() + Duration::from_secs(1)
        {
            break;
        }
    }
    Ok(reached)
}

pub async fn membership(base: &Config, keep: bool) -> anyhow::Result<MembershipBench> {
    let suffix = Utc::now().format("%Y%m%d%H%M%S").to_string();
    let scratch = Scratch::create(base, "membership").await?;
    let mut config = scratch.config.clone();
    config.topics.prefix_names(&format!("bench-{suffix}-"));
    config.kafka.group_id = format!("bench-{suffix}-membership");
    let outcome = async {
        kafka::ensure_topics(&config).await?;
        let topics = config.topics.event_topic_names();
        let partitions = topics.len() * config.topics.partitions.max(1) as usize;
        let limit = Duration::from_secs(120);

        // Kafka's group protocol: one member, then a second one joins.
        eprintln!("Kafka consumer group …");
        let group = format!("{}-kafka", config.kafka.group_id);
        let first_count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (c, g, t, sc) = (
            config.clone(),
            group.clone(),
            topics.clone(),
            first_count.clone(),
        );
        let kafka_first =
            tokio::task::spawn_blocking(move || group_member(&c, &g, &t, sc, partitions, limit))
                .await??;
        // The first member stays in the group while the second joins.
        let shared = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stay = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (c, g, t, sc, st) = (
            config.clone(),
            group.clone(),
            topics.clone(),
            shared.clone(),
            stay.clone(),
        );
        let first = std::thread::spawn(move || -> anyhow::Result<()> {
            use rdkafka::consumer::{BaseConsumer, Consumer};
            let consumer: BaseConsumer = kafka::client_config(&c.kafka)
                .set("group.id", &g)
                .set("enable.auto.commit", "false")
                .create()?;
            let names: Vec<&str> = t.iter().map(String::as_str).collect();
            consumer.subscribe(&names)?;
            let mut mine = 0;
            while st.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = consumer.poll(Duration::from_millis(50));
                let now = consumer.assignment().map(|a| a.count()).unwrap_or(0);
                if now != mine {
                    sc.fetch_add(now, std::sync::atomic::Ordering::SeqCst);
                    sc.fetch_sub(mine, std::sync::atomic::Ordering::SeqCst);
                    mine = now;
                }
            }
            Ok(())
        });
        // Let the first member settle with everything.
        let settle = Instant::now();
        while shared.load(std::sync::atomic::Ordering::SeqCst) < partitions
            && settle.elapsed() < limit
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (c, g, t, sc) = (
            config.clone(),
            group.clone(),
            topics.clone(),
            shared.clone(),
        );
        let kafka_second = tokio::task::spawn_blocking(move || {
            // Both hold a share: the second member's share is non-zero and
            // the two together hold every partition.
            group_member(&c, &g, &t, sc, partitions, limit)
        })
        .await??;
        stay.store(false, std::sync::atomic::Ordering::SeqCst);
        let _ = first.join();

        // PostgreSQL leases: one worker, then a second one.
        eprintln!("PostgreSQL leases …");
        let pool = db::connect_and_migrate(&config.database).await?;
        let marks = crate::ingest::read_marks(&config, &topics).await?;
        crate::ingest::register_partitions(&config, &pool, &marks).await?;
        let stop = CancellationToken::new();
        let started = Instant::now();
        let mut handles = start_workers(&config, &pool, 1, &stop);
        wait_owned(&pool, &config, 1, limit).await?;
        let lease_first = started.elapsed();
        let started = Instant::now();
        handles.push(tokio::spawn(crate::ingest::worker::run(
            Arc::new(config.clone()),
            pool.clone(),
            "bench-worker-second".into(),
            stop.clone(),
        )));
        wait_owned(&pool, &config, 2, limit).await?;
        let lease_second = started.elapsed();
        stop.cancel();
        for h in handles {
            let _ = h.await;
        }
        pool.close().await;
        Ok::<_, anyhow::Error>(MembershipBench {
            partitions,
            kafka_first,
            kafka_second,
            lease_first,
            lease_second,
        })
    }
    .await;
    scratch.finish(keep).await;
    outcome
}
