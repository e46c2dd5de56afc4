//! Exactly-once ingest of the event topics into PostgreSQL.
//!
//! Partitions are leased in PostgreSQL ([`lease`]) and assigned to a
//! consumer by hand at the offsets stored in `consumer_offsets` (no
//! consumer-group join; Kafka-side committed offsets are not used). A
//! consumer thread parses and encodes batches while the writer commits the
//! previous one; each batch's events, dead letters, gaps and new offsets go
//! in one transaction ([`writer`]), only under the leases' epochs.
//!
//! [`drain`] takes the free partitions up to the high watermarks read at its
//! start and exits; [`worker`] runs in the daemon, shares the partitions with
//! the other daemons and commits a batch when it is full,
//! `ingest.max_batch_delay_ms` old, or at the broker's ends as last read.

pub mod batch;
pub mod copy;
pub mod dead_letters;
pub mod lease;
pub mod outbox;
pub mod progress;
pub mod worker;
pub mod writer;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use sqlx::PgPool;
use tokio::sync::mpsc;

use crate::config::{Config, OffsetReset};
use crate::kafka;
use batch::{Batch, PartitionState, TopicCounts};
use writer::Writer;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kafka(#[from] kafka::Error),
    #[error("database: {}", crate::db::describe(.0))]
    Database(#[from] sqlx::Error),
    #[error("consumer group {0}: a partition of this batch was taken over by another worker (or its offset moved); nothing of this batch was stored")]
    OffsetConflict(String),
    #[error("no message from {topic}/{partition} for {secs} s while offset {next} is below the high watermark {end}")]
    Stalled {
        topic: String,
        partition: i32,
        next: i64,
        end: i64,
        secs: u64,
    },
    #[error("the consumer thread stopped unexpectedly")]
    ConsumerLost,
    #[error("staging rollup columns: {0}")]
    Stage(#[from] crate::rollup::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a drain did.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub topics: BTreeMap<String, TopicCounts>,
    pub messages: u64,
    pub elapsed: Duration,
    /// Stopped by a signal before reaching the high watermarks.
    pub interrupted: bool,
    /// Dead letters published to the dead-letter topic after the commits,
    /// and those still waiting (the topic did not take them yet).
    pub dead_letters_published: u64,
    pub dead_letters_pending: i64,
    /// Partitions another worker held, so this drain left them: (topic,
    /// partition, owner).
    pub held_elsewhere: Vec<(String, i32, String)>,
}

impl Summary {
    pub fn total(&self) -> TopicCounts {
        let mut t = TopicCounts::default();
        for c in self.topics.values() {
            t.add(c);
        }
        t
    }

    pub fn messages_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.messages as f64 / secs
        } else {
            0.0
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.total();
        write!(
            f,
            "ingest {}: {} events stored, {} duplicates skipped, {} dead letters, {} gaps ({} offsets) in {:.2} s ({:.0} events/s)",
            if self.interrupted { "interrupted" } else { "done" },
            t.stored,
            t.duplicates,
            t.dead_letters,
            t.gaps,
            t.skipped_offsets,
            self.elapsed.as_secs_f64(),
            self.messages_per_sec()
        )?;
        for (topic, c) in &self.topics {
            write!(
                f,
                " | {topic}: {} stored, {} dup, {} dead, {} gaps",
                c.stored, c.duplicates, c.dead_letters, c.gaps
            )?;
        }
        if !self.held_elsewhere.is_empty() {
            let mut owners: Vec<&str> = self.held_elsewhere.iter().map(|h| h.2.as_str()).collect();
            owners.sort_unstable();
            owners.dedup();
            write!(
                f,
                " | {} partitions left to the workers that hold them ({})",
                self.held_elsewhere.len(),
                owners.join(", ")
            )?;
        }
        if self.dead_letters_published > 0 || self.dead_letters_pending > 0 {
            write!(
                f,
                " | dead letters published {}, waiting {}",
                self.dead_letters_published, self.dead_letters_pending
            )?;
        }
        Ok(())
    }
}

/// Drains every free partition of the event topics up to its high
/// watermark at the start; partitions another worker holds are left to it.
/// `stop` ends the drain early after the batch in hand is committed.
pub async fn drain(config: &Config, pool: &PgPool, stop: CancellationToken) -> Result<Summary> {
    let started = Instant::now();
    kafka::ensure_topics(config).await?;

    let group = config.kafka.group_id.clone();
    let worker = format!("drain:{}", crate::ledger::worker_id());
    let topics = config.topics.event_topic_names();

    // Everything in the topics at this moment is stored once the drain ends.
    let ends_read_at = Utc::now();
    let marks = read_marks(config, &topics).await?;
    register_partitions(config, pool, &marks).await?;
    let mut member = lease::Member::join(
        pool,
        &group,
        &worker,
        lease::Mode::Drain,
        topics.clone(),
        config.ingest.stale_after(),
    )
    .await?;
    let claimed = member.claim(usize::MAX).await?;
    let outcome = drain_claimed(config, pool, &worker, &marks, &claimed, ends_read_at, &stop).await;
    let left = member.leave().await;
    let mut summary = outcome?;
    left?;
    summary.held_elsewhere = held_elsewhere(pool, &group, &topics, &worker).await?;
    publish_dead_letters(config, pool, &mut summary).await;
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// Partitions of `topics` held by a worker other than `me`.
async fn held_elsewhere(
    pool: &PgPool,
    group: &str,
    topics: &[String],
    me: &str,
) -> Result<Vec<(String, i32, String)>> {
    Ok(sqlx::query!(
        r#"SELECT topic, partition, owner AS "owner!" FROM consumer_offsets
           WHERE consumer_group = $1 AND topic = ANY($2) AND owner IS NOT NULL AND owner <> $3
           ORDER BY topic, partition"#,
        group,
        topics,
        me,
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|r| (r.topic, r.partition, r.owner))
    .collect())
}

/// Drains the partitions claimed, renewing their leases meanwhile.
async fn drain_claimed(
    config: &Config,
    pool: &PgPool,
    worker: &str,
    marks: &[(String, i32, i64, i64)],
    claimed: &[lease::Owned],
    ends_read_at: DateTime<Utc>,
    stop: &CancellationToken,
) -> Result<Summary> {
    let group = config.kafka.group_id.clone();
    let ends: HashMap<(&str, i32), i64> = marks
        .iter()
        .map(|(t, p, _, high)| ((t.as_str(), *p), *high))
        .collect();
    let parts: Vec<PartitionState> = claimed
        .iter()
        .map(|o| {
            let end = ends
                .get(&(o.topic.as_str(), o.partition))
                .copied()
                .unwrap_or(o.next);
            if o.next > end {
                tracing::warn!(
                    topic = %o.topic, partition = o.partition, stored = o.next, high = end,
                    "the stored offset is past the broker's end (topic re-created or data lost); \
                     this partition waits until the broker passes it"
                );
            }
            PartitionState {
                topic: o.topic.clone(),
                partition: o.partition,
                next: o.next,
                end,
                epoch: o.epoch,
            }
        })
        .collect();

    let mut summary = Summary::default();
    for p in &parts {
        summary.topics.entry(p.topic.clone()).or_default();
    }
    if parts.iter().all(PartitionState::done) {
        record_caught_up(pool, &group, &parts, ends_read_at).await?;
        return Ok(summary);
    }

    let renewal = spawn_renewal(pool.clone(), &group, worker, config, claimed);
    let mut writer = Writer::new(pool.acquire().await?, &group, worker);
    let (tx, mut rx) = mpsc::channel::<Batch>(2);
    let consumer_parts = parts.clone();
    let ingest = config.ingest.clone();
    let consumer_stop = stop.clone();
    let kafka_config = config.kafka.clone();
    let consumer_group = group.clone();
    let consumer_thread = std::thread::Builder::new()
        .name("hxjobs-consume".into())
        .spawn(move || {
            consume(
                &kafka_config,
                &consumer_group,
                consumer_parts,
                &ingest,
                tx,
                consumer_stop,
            )
        })
        .map_err(|_| Error::ConsumerLost)?;

    let written = write_batches(&mut writer, &mut rx, &mut summary).await;
    // Dropping the receiver makes the consumer thread stop at its next send.
    drop(rx);
    let consumed = tokio::task::spawn_blocking(move || consumer_thread.join())
        .await
        .map_err(|_| Error::ConsumerLost)?
        .map_err(|_| Error::ConsumerLost)?;
    renewal.abort();
    written?;
    consumed?;
    summary.interrupted = stop.is_cancelled();
    if !summary.interrupted {
        record_caught_up(pool, &group, &parts, ends_read_at).await?;
    }
    Ok(summary)
}

/// Keeps a drain's leases from expiring while it runs.
fn spawn_renewal(
    pool: PgPool,
    group: &str,
    worker: &str,
    config: &Config,
    claimed: &[lease::Owned],
) -> tokio::task::JoinHandle<()> {
    let (group, worker) = (group.to_string(), worker.to_string());
    let lease = config.ingest.stale_after();
    let every = config.ingest.beat_every();
    let keys: Vec<(String, i32)> = claimed
        .iter()
        .map(|o| (o.topic.clone(), o.partition))
        .collect();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let renewed = sqlx::query!(
                "UPDATE consumer_offsets SET lease_expires_at = now() + make_interval(secs => $3)
                 WHERE consumer_group = $1 AND owner = $2",
                group,
                worker,
                lease.as_secs_f64(),
            )
            .execute(&pool)
            .await;
            match renewed {
                Ok(r) if (r.rows_affected() as usize) < keys.len() => tracing::warn!(
                    held = r.rows_affected(),
                    claimed = keys.len(),
                    "the drain lost partitions to another worker; their batches will be refused"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "renewing the drain's leases failed"),
            }
        }
    })
}

/// `(topic, partition, low, high)` of every partition of `topics`, off the
/// async threads (broker round trips and their retry pauses).
pub async fn read_marks(
    config: &Config,
    topics: &[String],
) -> Result<Vec<(String, i32, i64, i64)>> {
    let (kafka_config, group, topics) = (
        config.kafka.clone(),
        config.kafka.group_id.clone(),
        topics.to_vec(),
    );
    tokio::task::spawn_blocking(move || {
        let consumer = kafka::build_consumer(&kafka_config, &group)?;
        broker_marks(&consumer, &kafka_config, &topics, &HashSet::new())
    })
    .await
    .map_err(|_| Error::ConsumerLost)?
}

/// Gives every partition its row, starting per `auto_offset_reset` when new.
pub async fn register_partitions(
    config: &Config,
    pool: &PgPool,
    marks: &[(String, i32, i64, i64)],
) -> Result<()> {
    let starts: Vec<(String, i32, i64)> = marks
        .iter()
        .map(|(t, p, low, high)| {
            let start = match config.kafka.auto_offset_reset {
                OffsetReset::Earliest => *low,
                OffsetReset::Latest => *high,
            };
            (t.clone(), *p, start)
        })
        .collect();
    lease::register(pool, &config.kafka.group_id, &starts).await
}

/// Gives each partition of `topics` without a row its row. Partitions
/// already known cost one metadata request in all, no watermark reads: a
/// continuous worker's start, while other workers keep the broker busy.
pub async fn register_new_partitions(
    config: &Config,
    pool: &PgPool,
    consumer: std::sync::Arc<BaseConsumer>,
    topics: &[String],
) -> Result<()> {
    // One worker of a group registers at a time; workers started together
    // wait for the first and then find its rows, instead of all reading the
    // watermarks while the first ones' fetches keep the broker busy.
    let mut turn = pool.begin().await?;
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        format!("hxjobs.register:{}", config.kafka.group_id)
    )
    .execute(&mut *turn)
    .await?;
    let known: HashSet<(String, i32)> = sqlx::query!(
        "SELECT topic, partition FROM consumer_offsets WHERE consumer_group = $1 AND topic = ANY($2)",
        config.kafka.group_id,
        topics,
    )
    .fetch_all(&mut *turn)
    .await?
    .into_iter()
    .map(|r| (r.topic, r.partition))
    .collect();
    let (kafka_config, topics) = (config.kafka.clone(), topics.to_vec());
    let marks = tokio::task::spawn_blocking(move || {
        broker_marks(&consumer, &kafka_config, &topics, &known)
    })
    .await
    .map_err(|_| Error::ConsumerLost)??;
    if !marks.is_empty() {
        register_partitions(config, pool, &marks).await?;
    }
    turn.commit().await?;
    Ok(())
}

/// After the drain's commits: publishes the dead letters due (this drain's
/// and any an earlier one could not). A broker that does not take them
/// fails nothing; they stay queued for the next drain.
async fn publish_dead_letters(config: &Config, pool: &PgPool, summary: &mut Summary) {
    if !config.dead_letters.publish {
        return;
    }
    match outbox::publish_pending(config, pool).await {
        Ok(p) => {
            summary.dead_letters_published = p.published;
            summary.dead_letters_pending = p.pending;
        }
        Err(e) => tracing::warn!(error = %e, "publishing dead letters failed; they stay queued"),
    }
}

/// Notes that `parts`, drained to the ends read at `through`, hold every
/// message the broker held then.
async fn record_caught_up(
    pool: &PgPool,
    group: &str,
    parts: &[PartitionState],
    through: DateTime<Utc>,
) -> Result<()> {
    let marks: Vec<(String, i32, i64, DateTime<Utc>)> = parts
        .iter()
        .map(|p| (p.topic.clone(), p.partition, p.end, through))
        .collect();
    lease::record_marks(pool, group, &marks).await?;
    Ok(())
}

/// Commits batches as they arrive, adding their counts to `summary`, until
/// the sender is done or a write fails.
pub async fn write_batches(
    writer: &mut Writer,
    rx: &mut mpsc::Receiver<Batch>,
    summary: &mut Summary,
) -> Result<()> {
    while let Some(batch) = rx.recv().await {
        write_one(writer, batch, summary).await?;
    }
    Ok(())
}

/// Commits one batch and counts it in `summary` and the metrics.
pub async fn write_one(writer: &mut Writer, batch: Batch, summary: &mut Summary) -> Result<()> {
    let messages = batch.messages;
    let write_started = Instant::now();
    let outcome = writer.write(batch).await?;
    tracing::debug!(
        messages,
        write_ms = write_started.elapsed().as_millis() as u64,
        "batch committed"
    );
    summary.messages += messages;
    let seconds = write_started.elapsed().as_secs_f64();
    metrics::histogram!("event_processing_duration_seconds", "stage" => "batch_write")
        .record(seconds);
    for (topic, counts) in outcome {
        for (outcome, n) in [
            ("stored", counts.stored),
            ("duplicate", counts.duplicates),
            ("dead_letter", counts.dead_letters),
        ] {
            if n > 0 {
                metrics::counter!("event_processing_total", "topic" => topic.clone(), "outcome" => outcome)
                    .increment(n);
            }
        }
        summary.topics.entry(topic).or_default().add(&counts);
    }
    Ok(())
}

/// `(topic, partition, low, high)` of every partition of `topics` but the
/// `known` ones (one metadata request for all). Blocking.
fn broker_marks(
    consumer: &BaseConsumer,
    kafka_config: &crate::config::KafkaConfig,
    topics: &[String],
    known: &HashSet<(String, i32)>,
) -> Result<Vec<(String, i32, i64, i64)>> {
    let mut out = Vec::new();
    for (topic, partitions) in kafka::partitions_of_all(consumer, kafka_config, topics)? {
        for partition in partitions {
            if known.contains(&(topic.clone(), partition)) {
                continue;
            }
            let (low, high) = kafka::watermarks(consumer, kafka_config, &topic, partition)?;
            out.push((topic.clone(), partition, low, high));
        }
    }
    Ok(out)
}

/// A consumer assigned to every unfinished partition at its next offset.
fn assigned_consumer(
    kafka_config: &crate::config::KafkaConfig,
    group: &str,
    parts: &[PartitionState],
    fetch_bytes: usize,
) -> Result<BaseConsumer> {
    let consumer = kafka::build_consumer_with(kafka_config, group, fetch_bytes)?;
    assign_at_next(&consumer, kafka_config, parts.iter().filter(|p| !p.done()))?;
    Ok(consumer)
}

/// Assigns `parts` to `consumer`, each at its next offset to store.
pub(crate) fn assign_at_next<'a>(
    consumer: &BaseConsumer,
    kafka_config: &crate::config::KafkaConfig,
    parts: impl Iterator<Item = &'a PartitionState>,
) -> Result<()> {
    let mut tpl = TopicPartitionList::new();
    for p in parts {
        tpl.add_partition_offset(&p.topic, p.partition, Offset::Offset(p.next))
            .map_err(|e| {
                kafka::Error::from_kafka(
                    kafka_config,
                    &format!("assigning {}/{}", p.topic, p.partition),
                    e,
                )
            })?;
    }
    consumer
        .assign(&tpl)
        .map_err(|e| kafka::Error::from_kafka(kafka_config, "assigning partitions", e))?;
    Ok(())
}

/// No message for this long while data is expected: the consumer is
/// rebuilt at the next offsets with twice the fetch size (up to
/// [`kafka::LARGE_FETCH_BYTES`]). Some brokers (Nisshi) never return a
/// message larger than the fetch size, and now and then stop serving a
/// fetch session that a new connection resumes.
pub(crate) const RECONNECT_AFTER: Duration = Duration::from_secs(10);

/// Rebuilds a consumer that expects data but receives none for
/// [`RECONNECT_AFTER`], each time with twice the fetch size (up to
/// [`kafka::LARGE_FETCH_BYTES`]).
pub(crate) struct Refetch {
    pub fetch_bytes: usize,
    last_message: Instant,
    last_reconnect: Instant,
}

impl Refetch {
    pub(crate) fn new(ingest: &crate::config::IngestConfig) -> Refetch {
        Refetch {
            fetch_bytes: kafka::FETCH_BYTES.max(ingest.max_event_bytes + 4096),
            last_message: Instant::now(),
            last_reconnect: Instant::now(),
        }
    }

    pub(crate) fn received(&mut self) {
        self.last_message = Instant::now();
    }

    /// How long since the last message.
    pub(crate) fn idle(&self) -> Duration {
        self.last_message.elapsed()
    }

    /// Whether to rebuild the consumer now, with `fetch_bytes` raised.
    pub(crate) fn due(&mut self) -> bool {
        let idle = self.idle();
        if idle < RECONNECT_AFTER || self.last_reconnect.elapsed() < RECONNECT_AFTER {
            return false;
        }
        self.fetch_bytes = (self.fetch_bytes * 2).min(kafka::LARGE_FETCH_BYTES);
        self.last_reconnect = Instant::now();
        tracing::warn!(
            fetch_bytes = self.fetch_bytes,
            idle_secs = idle.as_secs(),
            "no message while data is expected; reconnecting with larger fetches"
        );
        true
    }
}

/// Adds `msg` to `batch` if it is of a followed partition (`index`: topic →
/// partition → position in `parts`). Whether it was.
pub(crate) fn take_message(
    msg: &rdkafka::message::BorrowedMessage<'_>,
    index: &HashMap<String, HashMap<i32, usize>>,
    parts: &mut [PartitionState],
    batch: &mut Batch,
    max_event_bytes: usize,
) -> bool {
    let Some(&idx) = index.get(msg.topic()).and_then(|m| m.get(&msg.partition())) else {
        return false;
    };
    let Some(state) = parts.get_mut(idx) else {
        return false;
    };
    batch.take(state, idx, msg.offset(), msg.payload(), max_event_bytes);
    true
}

/// The consumer thread: poll, parse, encode, hand over full batches.
fn consume(
    kafka_config: &crate::config::KafkaConfig,
    group: &str,
    mut parts: Vec<PartitionState>,
    ingest: &crate::config::IngestConfig,
    tx: mpsc::Sender<Batch>,
    stop: CancellationToken,
) -> Result<()> {
    let mut index: HashMap<String, HashMap<i32, usize>> = HashMap::new();
    for (i, p) in parts.iter().enumerate() {
        index
            .entry(p.topic.clone())
            .or_default()
            .insert(p.partition, i);
    }
    let stall = Duration::from_secs(ingest.stall_timeout_secs);
    let mut refetch = Refetch::new(ingest);
    let mut consumer = assigned_consumer(kafka_config, group, &parts, refetch.fetch_bytes)?;
    let mut batch = Batch::new();
    loop {
        let all_done = parts.iter().all(PartitionState::done);
        let stopping = stop.is_cancelled();
        if all_done || stopping {
            if !batch.is_empty() {
                let _ = tx.blocking_send(batch);
            }
            return Ok(());
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(msg)) => {
                refetch.received();
                if !take_message(&msg, &index, &mut parts, &mut batch, ingest.max_event_bytes) {
                    continue;
                }
                if batch.len() >= ingest.batch_size {
                    let full = std::mem::take(&mut batch);
                    if tx.blocking_send(full).is_err() {
                        return Ok(()); // the writer stopped; it reports why
                    }
                }
            }
            // An error is no progress: a partition the broker keeps
            // answering with errors stalls the drain like a silent one.
            polled => {
                if let Some(Err(e)) = polled {
                    tracing::warn!(error = %e, "Kafka consumer error");
                }
                if !batch.is_empty() {
                    let part = std::mem::take(&mut batch);
                    if tx.blocking_send(part).is_err() {
                        return Ok(());
                    }
                }
                if refetch.due() {
                    consumer = assigned_consumer(kafka_config, group, &parts, refetch.fetch_bytes)?;
                }
                if refetch.idle() >= stall {
                    if let Some(p) = parts.iter().find(|p| !p.done()) {
                        return Err(Error::Stalled {
                            topic: p.topic.clone(),
                            partition: p.partition,
                            next: p.next,
                            end: p.end,
                            secs: stall.as_secs(),
                        });
                    }
                }
            }
        }
    }
}
