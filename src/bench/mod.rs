//! `hxjobs bench ingest`: the drain measured against the two ceilings it
//! cannot beat, in the same run on the same data: the broker's (a bare
//! consume that stores nothing) and the database's (a plain `COPY` of the
//! same rows from a file into a table of the same shape and indexes).
//!
//! Each run works in its own topics and databases and removes them after.
//! `hxjobs bench scheduler` and `hxjobs bench rollup` live in [`scheduler`]
//! and [`rollup`].

mod api;
mod archive;
mod freshness;
mod live;
mod logs;
mod reports;
mod rollup;
pub mod scaleout;
mod scheduler;
mod stream;
mod ui;

pub use api::{api, ApiBench};
pub use archive::{archive, ArchiveBench};
pub use freshness::{freshness, FreshnessBench};
pub use live::{live, LiveBench};
pub use logs::{logs, LogsBench};
pub use reports::{reports, ReportsBench};
pub use rollup::{rollup, RollupBench};
pub use scheduler::{scheduler, SchedulerBench};
pub use stream::{stream, StreamBench};
pub use ui::{ui, UiBench};

use std::fmt;
use std::io::Write;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use chrono::{TimeDelta, Utc};
use futures::StreamExt;
use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};
use sqlx::{Connection, PgConnection};

use crate::config::Config;
use crate::demo::{self, DemoSpec};
use crate::{db, ingest, kafka};

#[derive(Debug, Clone)]
pub struct IngestBench {
    pub events: u64,
    pub produce: Duration,
    pub bare_consume: Duration,
    pub drain: Duration,
    pub drain_summary: String,
    pub copy: Duration,
    pub copy_rows: u64,
    /// The same messages fed from memory through parse, encode and the
    /// transactional writer: hxjobs's own ceiling, without the broker.
    pub no_broker: Duration,
    /// Peak resident memory of the process when the drain ended (the
    /// produce and bare-consume steps before it run in the same process).
    pub drain_rss_mb: Option<f64>,
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

impl IngestBench {
    pub fn drain_rate(&self) -> f64 {
        rate(self.events, self.drain)
    }
    pub fn consume_rate(&self) -> f64 {
        rate(self.events, self.bare_consume)
    }
    pub fn copy_rate(&self) -> f64 {
        rate(self.copy_rows, self.copy)
    }
}

impl fmt::Display for IngestBench {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let drain = self.drain_rate();
        let consume = self.consume_rate();
        let copy = self.copy_rate();
        writeln!(f, "hxjobs bench ingest: {} events", self.events)?;
        writeln!(
            f,
            "  produce (demo generator → broker)   {:>9.0} events/s  {:>7.2} s",
            rate(self.events, self.produce),
            self.produce.as_secs_f64()
        )?;
        writeln!(
            f,
            "  bare consume (broker ceiling)       {:>9.0} events/s  {:>7.2} s",
            consume,
            self.bare_consume.as_secs_f64()
        )?;
        writeln!(
            f,
            "  plain COPY from file (db ceiling)   {:>9.0} rows/s    {:>7.2} s",
            copy,
            self.copy.as_secs_f64()
        )?;
        writeln!(
            f,
            "  hxjobs drain → PostgreSQL           {:>9.0} events/s  {:>7.2} s",
            drain,
            self.drain.as_secs_f64()
        )?;
        let no_broker = rate(self.events, self.no_broker);
        writeln!(
            f,
            "  hxjobs pipeline, no broker          {:>9.0} events/s  {:>7.2} s  (parse, encode, COPY, commit; messages from memory)",
            no_broker,
            self.no_broker.as_secs_f64()
        )?;
        writeln!(
            f,
            "  pipeline without broker / COPY  {:.2}",
            no_broker / copy
        )?;
        writeln!(
            f,
            "  drain / COPY          {:.2}  (target >= 0.60)",
            drain / copy
        )?;
        writeln!(
            f,
            "  drain / bare consume  {:.2}  (target >= 0.80 when the broker is the slower ceiling)",
            drain / consume
        )?;
        let target = if consume < copy.min(50_000.0) {
            drain >= 0.8 * consume
        } else {
            drain >= 0.6 * copy && drain >= 50_000.0
        };
        writeln!(f, "  target met: {}", if target { "yes" } else { "no" })?;
        if let Some(rss) = self.drain_rss_mb {
            writeln!(f, "  peak RSS up to the end of the drain: {rss:.0} MiB")?;
        }
        write!(f, "  {}", self.drain_summary)
    }
}

/// A database of its own for one benchmark, next to the configured one.
pub(crate) struct Scratch {
    admin: PgConnection,
    name: String,
    /// The configuration pointing at the scratch database.
    pub config: Config,
}

impl Scratch {
    pub(crate) async fn create(base: &Config, kind: &str) -> anyhow::Result<Scratch> {
        let name = format!("hxjobs_bench_{kind}_{}", Utc::now().format("%Y%m%d%H%M%S"));
        let mut config = base.clone();
        config.database.url = db::with_database(base.database.url.expose(), &name).into();
        let mut admin = PgConnection::connect(base.database.url.expose()).await?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await?;
        Ok(Scratch {
            admin,
            name,
            config,
        })
    }

    /// Drops the database unless `keep`.
    pub(crate) async fn finish(mut self, keep: bool) {
        if !keep {
            let _ = sqlx::query(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut self.admin)
            .await;
        }
    }
}

/// Peak resident memory of this process, from /proc (Linux only).
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

pub async fn ingest(base: &Config, events: u64, keep: bool) -> anyhow::Result<IngestBench> {
    let suffix = format!("{}", Utc::now().format("%Y%m%d%H%M%S"));
    let mut config = base.clone();
    config.topics.prefix_names(&format!("bench-{suffix}-"));
    config.kafka.group_id = format!("bench-{suffix}");
    let drain_db = format!("hxjobs_bench_{suffix}");
    let copy_db = format!("hxjobs_bench_{suffix}_copy");
    let replay_db = format!("hxjobs_bench_{suffix}_replay");
    config.database.url = db::with_database(base.database.url.expose(), &drain_db).into();
    let mut copy_config = config.database.clone();
    copy_config.url = db::with_database(base.database.url.expose(), &copy_db).into();
    let mut replay_config = config.database.clone();
    replay_config.url = db::with_database(base.database.url.expose(), &replay_db).into();

    let mut admin_conn = PgConnection::connect(base.database.url.expose()).await?;
    for name in [&drain_db, &copy_db, &replay_db] {
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin_conn)
            .await?;
    }

    let result = run_ingest(&config, &copy_config, &replay_config, events).await;

    if !keep {
        for name in [&drain_db, &copy_db, &replay_db] {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut admin_conn)
                .await;
        }
    }
    result
}

async fn run_ingest(
    config: &Config,
    copy_db: &crate::config::DatabaseConfig,
    replay_db: &crate::config::DatabaseConfig,
    events: u64,
) -> anyhow::Result<IngestBench> {
    kafka::ensure_topics(config).await?;
    let spec = ingest_spec(config, events);
    eprintln!("producing {events} demo events …");
    let cfg = config.clone();
    let replay_spec = spec.clone();
    let produced = tokio::task::spawn_blocking(move || {
        let generator = demo::Generator::new(spec)?;
        demo::produce(&cfg, generator, |_| {})
    })
    .await??;

    eprintln!("bare consume …");
    let cfg = config.clone();
    let bare_consume = tokio::task::spawn_blocking(move || bare_consume(&cfg, events)).await??;

    eprintln!("drain into PostgreSQL …");
    let pool = db::connect_and_migrate(&config.database).await?;
    let started = Instant::now();
    let summary = ingest::drain(config, &pool, CancellationToken::new()).await?;
    let drain = started.elapsed();
    let drain_rss_mb = peak_rss_mb();
    if summary.total().stored != events {
        anyhow::bail!(
            "the drain stored {} of {events} events",
            summary.total().stored
        );
    }

    eprintln!("plain COPY baseline …");
    let (copy_time, copy_rows) = copy_baseline(&pool, copy_db).await?;
    pool.close().await;

    eprintln!("pipeline without the broker …");
    let no_broker = replay(config, replay_db, replay_spec).await?;

    Ok(IngestBench {
        no_broker,
        events,
        produce: produced.elapsed,
        bare_consume,
        drain,
        drain_summary: summary.to_string(),
        copy: copy_time,
        copy_rows,
        drain_rss_mb,
    })
}

/// Reads every message of the event topics from the start and stores nothing.
pub(crate) fn bare_consume(config: &Config, expected: u64) -> anyhow::Result<Duration> {
    Ok(bare_consume_marked(config, expected)?.total)
}

/// A bare consume's time, and when it had read its first message, half
/// and nine tenths of them.
#[derive(Debug, Clone, Copy)]
pub struct BareConsume {
    pub total: Duration,
    pub first: Option<Duration>,
    pub half: Option<Duration>,
    pub ninety: Option<Duration>,
}

/// [`bare_consume`] with its marks.
pub(crate) fn bare_consume_marked(config: &Config, expected: u64) -> anyhow::Result<BareConsume> {
    let consumer = kafka::build_consumer(&config.kafka, &config.kafka.group_id)?;
    let mut tpl = TopicPartitionList::new();
    for (topic, _) in config.topics.event_topics() {
        for p in kafka::partitions_of(&consumer, &config.kafka, topic)? {
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
        }
    }
    let started = Instant::now();
    consumer.assign(&tpl)?;
    let mut seen = 0u64;
    let mut bytes = 0usize;
    let mut last = Instant::now();
    let (mut first, mut half, mut ninety) = (None, None, None);
    while seen < expected {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                seen += 1;
                bytes += rdkafka::Message::payload(&m).map_or(0, <[u8]>::len);
                last = Instant::now();
                if first.is_none() {
                    first = Some(started.elapsed());
                }
                if half.is_none() && seen * 2 >= expected {
                    half = Some(started.elapsed());
                }
                if ninety.is_none() && seen * 10 >= expected * 9 {
                    ninety = Some(started.elapsed());
                }
            }
            Some(Err(e)) => tracing::warn!(error = %e, "consumer error"),
            None if last.elapsed() > Duration::from_secs(60) => {
                anyhow::bail!("bare consume stalled at {seen} of {expected} messages")
            }
            None => {}
        }
    }
    tracing::debug!(bytes, "bare consume done");
    Ok(BareConsume {
        total: started.elapsed(),
        first,
        half,
        ninety,
    })
}

/// Feeds the demo messages from memory through the same batch building and
/// transactional writer the drain uses, into `db`.
/// The ingest benchmarks' messages: clean demo events over the last 7 days.
pub(crate) fn ingest_spec(config: &Config, events: u64) -> DemoSpec {
    let to = Utc::now();
    DemoSpec {
        events,
        from: to - TimeDelta::days(7),
        to,
        bad_ratio: 0.0,
        duplicate_ratio: 0.0,
        seed: 1,
        max_event_bytes: config.ingest.max_event_bytes,
    }
}

/// Exports the events of `from` as CSV and times a plain `COPY` of them
/// into the empty database `copy_db` (same table, partitions and indexes).
async fn copy_baseline(
    from: &sqlx::PgPool,
    copy_db: &crate::config::DatabaseConfig,
) -> anyhow::Result<(Duration, u64)> {
    let file = tempfile::NamedTempFile::new()?;
    {
        let mut conn = from.acquire().await?;
        let mut out = std::io::BufWriter::new(file.reopen()?);
        let mut stream = conn
            .copy_out_raw(&format!(
                "COPY (SELECT {} FROM events) TO STDOUT (FORMAT csv)",
                ingest::copy::EVENT_COLUMNS
            ))
            .await?;
        while let Some(chunk) = stream.next().await {
            out.write_all(&chunk?)?;
        }
        out.flush()?;
    }
    let days: Vec<chrono::NaiveDate> = sqlx::query_scalar("SELECT DISTINCT event_day FROM events")
        .fetch_all(from)
        .await?;
    let copy_pool = db::connect_and_migrate(copy_db).await?;
    for day in &days {
        sqlx::query("SELECT hxjobs_ensure_event_partition($1)")
            .bind(day)
            .execute(&copy_pool)
            .await?;
    }
    let mut conn = copy_pool.acquire().await?;
    let bytes = std::fs::read(file.path())?;
    let started = Instant::now();
    let mut copy = conn
        .copy_in_raw(&format!(
            "COPY events ({}) FROM STDIN (FORMAT csv)",
            ingest::copy::EVENT_COLUMNS
        ))
        .await?;
    for chunk in bytes.chunks(1 << 20) {
        copy.send(chunk).await?;
    }
    let copy_rows = copy.finish().await?;
    let copy_time = started.elapsed();
    drop(conn);
    copy_pool.close().await;
    Ok((copy_time, copy_rows))
}

/// `hxjobs bench ingest --without-broker`: the pipeline fed from memory
/// (parse, encode, stage, COPY, commit) next to a plain `COPY` of the rows
/// it stored, in scratch databases.
#[derive(Debug, Clone)]
pub struct NoBrokerBench {
    pub events: u64,
    pub pipeline: Duration,
    pub copy: Duration,
    pub copy_rows: u64,
}

impl fmt::Display for NoBrokerBench {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (p, c) = (
            rate(self.events, self.pipeline),
            rate(self.copy_rows, self.copy),
        );
        writeln!(
            f,
            "hxjobs bench ingest --without-broker: {} events",
            self.events
        )?;
        writeln!(
            f,
            "  plain COPY from file (db ceiling)   {c:>9.0} rows/s    {:>7.2} s",
            self.copy.as_secs_f64()
        )?;
        writeln!(
            f,
            "  hxjobs pipeline, no broker          {p:>9.0} events/s  {:>7.2} s",
            self.pipeline.as_secs_f64()
        )?;
        write!(
            f,
            "  pipeline / COPY {:.2}  (target >= 0.60 of COPY and >= 50,000 events/s: {})",
            p / c,
            if p >= 0.6 * c && p >= 50_000.0 {
                "met"
            } else {
                "NOT met"
            }
        )
    }
}

pub async fn ingest_without_broker(
    base: &Config,
    events: u64,
    keep: bool,
) -> anyhow::Result<NoBrokerBench> {
    let replay_scratch = Scratch::create(base, "replay").await?;
    let copy_scratch = Scratch::create(base, "copy").await?;
    let result = async {
        let spec = ingest_spec(base, events);
        let config = &replay_scratch.config;
        let pipeline = replay(config, &config.database, spec).await?;
        let pool = db::connect_and_migrate(&config.database).await?;
        let (copy, copy_rows) = copy_baseline(&pool, &copy_scratch.config.database).await?;
        pool.close().await;
        Ok::<_, anyhow::Error>(NoBrokerBench {
            events,
            pipeline,
            copy,
            copy_rows,
        })
    }
    .await;
    replay_scratch.finish(keep).await;
    copy_scratch.finish(keep).await;
    result
}

async fn replay(
    config: &Config,
    db_config: &crate::config::DatabaseConfig,
    spec: DemoSpec,
) -> anyhow::Result<Duration> {
    use crate::ingest::batch::{Batch, PartitionState};
    use crate::ingest::writer::Writer;

    let pool = db::connect_and_migrate(db_config).await?;
    let group = "bench-replay";
    let topics: Vec<(String, crate::events::EventType)> = config
        .topics
        .event_topics()
        .iter()
        .map(|(t, e)| (t.to_string(), *e))
        .collect();
    let mut parts: Vec<PartitionState> = topics
        .iter()
        .map(|(t, _)| PartitionState {
            topic: t.clone(),
            partition: 0,
            next: 0,
            end: i64::MAX,
            epoch: 1,
        })
        .collect();
    for p in &parts {
        // Leased to the replay under epoch 1.
        sqlx::query(
            "INSERT INTO consumer_offsets (consumer_group, topic, partition, next_offset, owner, epoch)
             VALUES ($1, $2, 0, 0, $1, 1)",
        )
        .bind(group)
        .bind(&p.topic)
        .execute(&pool)
        .await?;
    }
    let messages: Vec<(usize, Option<Vec<u8>>)> = demo::Generator::new(spec)?
        .map(|r| {
            let idx = topics
                .iter()
                .position(|(_, e)| *e == r.event_type)
                .unwrap_or(0);
            (idx, r.payload)
        })
        .collect();
    let batch_size = config.ingest.batch_size;
    let max_bytes = config.ingest.max_event_bytes;
    let mut writer = Writer::new(pool.acquire().await?, group, group);
    let started = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Batch>(2);
    let builder = std::thread::spawn(move || {
        let mut batch = Batch::new();
        for (idx, payload) in &messages {
            let Some(state) = parts.get_mut(*idx) else {
                continue;
            };
            let offset = state.next;
            batch.take(state, *idx, offset, payload.as_deref(), max_bytes);
            if batch.len() >= batch_size && tx.blocking_send(std::mem::take(&mut batch)).is_err() {
                return;
            }
        }
        if !batch.is_empty() {
            let _ = tx.blocking_send(batch);
        }
    });
    let mut summary = crate::ingest::Summary::default();
    crate::ingest::write_batches(&mut writer, &mut rx, &mut summary).await?;
    let elapsed = started.elapsed();
    builder
        .join()
        .map_err(|_| anyhow::anyhow!("the batch builder panicked"))?;
    drop(writer);
    pool.close().await;
    Ok(elapsed)
}
