//! Exactly-once drain of the event topics into PostgreSQL.
//!
//! A drain reads the high watermark of every partition when it starts and
//! consumes up to there, from the offsets stored in `consumer_offsets`
//! (partitions are assigned by hand: no consumer-group join). A consumer
//! thread parses and encodes batches while the writer commits the previous
//! one; each batch's events, dead letters, gaps and new offsets go in one
//! transaction ([`writer`]). Kafka-side committed offsets are not used.

pub mod batch;
pub mod copy;
pub mod dead_letters;
pub mod outbox;
pub mod writer;

use std::collections::{BTreeMap, HashMap};
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
    #[error("another ingest for consumer group {0} is still running after 15 s (PostgreSQL advisory lock held)")]
    Busy(String),
    #[error("the stored offsets of consumer group {0} were moved by another writer; nothing of this batch was stored")]
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

/// Drains every event topic up to its high watermark at the start.
/// `stop` ends the drain early after the batch in hand is committed.
pub async fn drain(config: &Config, pool: &PgPool, stop: CancellationToken) -> Result<Summary> {
    let started = Instant::now();
    kafka::ensure_topics(config).await?;

    let group = config.kafka.group_id.clone();
    let mut writer = Writer::new(pool.acquire().await?, &group).await?;

    // Everything in the topics at this moment is stored once the drain ends.
    let ends_read_at = Utc::now();
    let marks = {
        let (kafka_config, group) = (config.kafka.clone(), group.clone());
        let topics: Vec<String> = config
            .topics
            .event_topics()
            .into_iter()
            .map(|(t, _)| t.to_string())
            .collect();
        // Broker round trips (and their retry pauses) off the async threads.
        tokio::task::spawn_blocking(move || broker_marks(&kafka_config, &group, &topics))
            .await
            .map_err(|_| Error::ConsumerLost)??
    };
    let parts = plan(config, pool, marks).await?;

    let mut summary = Summary::default();
    for p in &parts {
        summary.topics.entry(p.topic.clone()).or_default();
    }
    if parts.iter().all(PartitionState::done) {
        record_progress(pool, &group, ends_read_at).await?;
        publish_dead_letters(config, pool, &mut summary).await;
        summary.elapsed = started.elapsed();
        return Ok(summary);
    }

    let (tx, mut rx) = mpsc::channel::<Batch>(2);
    let consumer_parts = parts.clone();
    let ingest = config.ingest.clone();
    let consumer_stop = stop.clone();
    let kafka_config = config.kafka.clone();
    let consumer_thread = std::thread::Builder::new()
        .name("hxjobs-consume".into())
        .spawn(move || {
            consume(
                &kafka_config,
                &group,
                consumer_parts,
                &ingest,
                tx,
                consumer_stop,
            )
        })
        .map_err(|_| Error::ConsumerLost)?;

    let written = write_batches(&mut writer, &mut rx, &parts, &mut summary).await;
    // Dropping the receiver makes the consumer thread stop at its next send.
    drop(rx);
    let consumed = tokio::task::spawn_blocking(move || consumer_thread.join())
        .await
        .map_err(|_| Error::ConsumerLost)?
        .map_err(|_| Error::ConsumerLost)?;
    written?;
    consumed?;
    summary.interrupted = stop.is_cancelled();
    if !summary.interrupted {
        record_progress(pool, &config.kafka.group_id, ends_read_at).await?;
    }
    drop(writer);
    publish_dead_letters(config, pool, &mut summary).await;
    summary.elapsed = started.elapsed();
    Ok(summary)
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

/// Notes that `group` stored every message the broker held at `through`.
async fn record_progress(pool: &PgPool, group: &str, through: DateTime<Utc>) -> Result<()> {
    sqlx::query(
        "INSERT INTO ingest_progress (consumer_group, drained_through) VALUES ($1, $2)
         ON CONFLICT (consumer_group) DO UPDATE
         SET drained_through = GREATEST(ingest_progress.drained_through, EXCLUDED.drained_through),
             updated_at = now()",
    )
    .bind(group)
    .bind(through)
    .execute(pool)
    .await?;
    Ok(())
}

/// Commits batches as they arrive, adding their counts to `summary`, until
/// the sender is done or a write fails.
pub async fn write_batches(
    writer: &mut Writer,
    rx: &mut mpsc::Receiver<Batch>,
    parts: &[PartitionState],
    summary: &mut Summary,
) -> Result<()> {
    while let Some(batch) = rx.recv().await {
        let messages = batch.messages;
        let write_started = Instant::now();
        let outcome = writer.write(batch, parts).await?;
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
    }
    Ok(())
}

/// `(topic, partition, low, high)` of every partition of `topics`. Blocking.
fn broker_marks(
    kafka_config: &crate::config::KafkaConfig,
    group: &str,
    topics: &[String],
) -> Result<Vec<(String, i32, i64, i64)>> {
    let consumer = kafka::build_consumer(kafka_config, group)?;
    let mut out = Vec::new();
    for topic in topics {
        for partition in kafka::partitions_of(&consumer, kafka_config, topic)? {
            let (low, high) = kafka::watermarks(&consumer, kafka_config, topic, partition)?;
            out.push((topic.clone(), partition, low, high));
        }
    }
    Ok(out)
}

/// Every event topic's partitions with their stored offsets and current ends.
/// Partitions seen for the first time get a stored offset per `auto_offset_reset`.
async fn plan(
    config: &Config,
    pool: &PgPool,
    marks: Vec<(String, i32, i64, i64)>,
) -> Result<Vec<PartitionState>> {
    let group = &config.kafka.group_id;
    let stored: Vec<(String, i32, i64)> = sqlx::query_as(
        "SELECT topic, partition, next_offset FROM consumer_offsets WHERE consumer_group = $1",
    )
    .bind(group)
    .fetch_all(pool)
    .await?;
    let stored: HashMap<(String, i32), i64> =
        stored.into_iter().map(|(t, p, o)| ((t, p), o)).collect();

    let mut parts = Vec::new();
    {
        for (topic, partition, low, high) in marks {
            let topic = topic.as_str();
            let next = match stored.get(&(topic.to_string(), partition)) {
                Some(&next) => next,
                None => {
                    let start = match config.kafka.auto_offset_reset {
                        OffsetReset::Earliest => low,
                        OffsetReset::Latest => high,
                    };
                    sqlx::query(
                        "INSERT INTO consumer_offsets (consumer_group, topic, partition, next_offset)
                         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    )
                    .bind(group)
                    .bind(topic)
                    .bind(partition)
                    .bind(start)
                    .execute(pool)
                    .await?;
                    start
                }
            };
            if next > high {
                tracing::warn!(
                    topic,
                    partition,
                    stored = next,
                    high,
                    "the stored offset is past the broker's end (topic re-created or data lost); \
                     this partition waits until the broker passes it"
                );
            }
            parts.push(PartitionState {
                topic: topic.to_string(),
                partition,
                next,
                end: high,
            });
        }
    }
    Ok(parts)
}

/// A consumer assigned to every unfinished partition at its next offset.
fn assigned_consumer(
    kafka_config: &crate::config::KafkaConfig,
    group: &str,
    parts: &[PartitionState],
    fetch_bytes: usize,
) -> Result<BaseConsumer> {
    let consumer = kafka::build_consumer_with(kafka_config, group, fetch_bytes)?;
    let mut tpl = TopicPartitionList::new();
    for p in parts.iter().filter(|p| !p.done()) {
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
    Ok(consumer)
}

/// No message for this long while data is expected: the consumer is
/// rebuilt at the next offsets with twice the fetch size (up to
/// [`kafka::LARGE_FETCH_BYTES`]). Some brokers (Nisshi) never return a
/// message larger than the fetch size, and now and then stop serving a
/// fetch session that a new connection resumes.
const RECONNECT_AFTER: Duration = Duration::from_secs(10);

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
    let mut fetch_bytes = kafka::FETCH_BYTES.max(ingest.max_event_bytes + 4096);
    let mut consumer = assigned_consumer(kafka_config, group, &parts, fetch_bytes)?;
    let mut last_message = Instant::now();
    let mut last_reconnect = Instant::now();
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
                last_message = Instant::now();
                let Some(&idx) = index.get(msg.topic()).and_then(|m| m.get(&msg.partition()))
                else {
                    continue;
                };
                let Some(state) = parts.get_mut(idx) else {
                    continue;
                };
                batch.take(
                    state,
                    idx,
                    msg.offset(),
                    msg.payload(),
                    ingest.max_event_bytes,
                );
                if batch.len() >= ingest.batch_size {
                    let full = std::mem::take(&mut batch);
                    if tx.blocking_send(full).is_err() {
                        return Ok(()); // the writer stopped; it reports why
                    }
                }
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "Kafka consumer error");
            }
            None => {
                if !batch.is_empty() {
                    let part = std::mem::take(&mut batch);
                    if tx.blocking_send(part).is_err() {
                        return Ok(());
                    }
                }
                let idle = last_message.elapsed();
                if idle >= RECONNECT_AFTER && last_reconnect.elapsed() >= RECONNECT_AFTER {
                    fetch_bytes = (fetch_bytes * 2).min(kafka::LARGE_FETCH_BYTES);
                    last_reconnect = Instant::now();
                    tracing::warn!(
                        fetch_bytes,
                        idle_secs = idle.as_secs(),
                        "no message while data is expected; reconnecting with larger fetches"
                    );
                    consumer = assigned_consumer(kafka_config, group, &parts, fetch_bytes)?;
                }
                if idle >= stall {
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
