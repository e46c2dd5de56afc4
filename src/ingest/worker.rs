//! Continuous ingest: the worker each daemon runs (`ingest.mode =
//! "continuous"`).
//!
//! Every `ingest.marks_ms` it records how far its stored positions passed
//! the broker's ends (completeness). At every beat (a fifth of
//! `ingest.stale_after_secs`) the worker renews
//! its leases, gives back what exceeds its share (the partitions divided by
//! the continuous workers present, rounded up) and claims free or lost
//! partitions up to it. Its consumer thread reads the owned partitions from
//! their stored offsets and hands over a batch when it is full,
//! `ingest.max_batch_delay_ms` old, or has reached the broker's ends as
//! last read; the writer commits it under the leases' epochs. A partition
//! given back is first flushed: its last batch commits before the lease is
//! released. Any failure ends the session (nothing half-written survives a
//! transaction) and a new one starts from the stored offsets.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rdkafka::consumer::BaseConsumer;
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::batch::{Batch, PartitionState};
use super::lease::{self, Member, Owned};
use super::writer::Writer;
use super::{take_message, Error, Result, Summary};
use crate::config::{Config, IngestConfig, KafkaConfig};
use crate::kafka;

type Key = (String, i32);

/// What the worker tells its consumer thread.
enum Control {
    /// Newly claimed partitions, to read from their stored offsets.
    Add(Vec<Owned>),
    /// Partitions lost to another worker: stop reading them.
    Drop(Vec<Key>),
    /// Partitions to give back: flush what was read, then say so.
    Release(Vec<Owned>),
    /// The broker's ends as last read.
    Ends(Vec<(Key, i64)>),
    /// Flush and stop.
    Stop,
}

/// What the consumer thread hands to the writer, in order.
enum Item {
    Batch(Box<Batch>),
    /// Everything read of these partitions was handed over before this.
    Released(Vec<(String, i32, i64)>),
}

/// Runs the worker until `stop`; a failed session is followed by a new one.
pub async fn run(config: Arc<Config>, pool: PgPool, worker: String, stop: CancellationToken) {
    let publisher = spawn_dead_letter_publisher(config.clone(), pool.clone(), stop.clone());
    let mut backoff = Duration::from_secs(1);
    while !stop.is_cancelled() {
        let started = Instant::now();
        match session(&config, &pool, &worker, &stop).await {
            Ok(()) => break,
            Err(e) => {
                if started.elapsed() > Duration::from_secs(60) {
                    backoff = Duration::from_secs(1);
                }
                tracing::warn!(error = %e, retry_in_secs = backoff.as_secs(), "ingest worker stopped; starting again");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
    let _ = publisher.await;
    tracing::info!(worker = %worker, "ingest worker stopped");
}

/// The worker's state between beats.
struct Coordinator {
    member: Member,
    owned: BTreeMap<Key, Owned>,
    /// Broker ends read and not yet passed, oldest first: (high, read at).
    marks: HashMap<Key, VecDeque<(i64, DateTime<Utc>)>>,
    control: std::sync::mpsc::Sender<Control>,
    metadata: Arc<BaseConsumer>,
    kafka: KafkaConfig,
    pool: PgPool,
}

async fn session(
    config: &Config,
    pool: &PgPool,
    worker: &str,
    stop: &CancellationToken,
) -> Result<()> {
    let group = config.kafka.group_id.clone();
    let topics = config.topics.event_topic_names();
    let setup = Instant::now();
    // Join before the broker set-up, so that workers started together count
    // each other at their first claim instead of one taking every partition
    // and giving most back (its reads of those would be wasted).
    let member = Member::join(
        pool,
        &group,
        worker,
        lease::Mode::Continuous,
        topics.clone(),
        config.ingest.stale_after(),
    )
    .await?;
    kafka::ensure_topics(config).await?;
    let metadata = Arc::new(kafka::build_consumer(&config.kafka, &group)?);
    super::register_new_partitions(config, pool, metadata.clone(), &topics).await?;
    let mut writer = Writer::new(pool.acquire().await?, &group, worker);

    let (control, control_rx) = std::sync::mpsc::channel::<Control>();
    let (tx, mut rx) = mpsc::channel::<Item>(2);
    let (kafka_config, ingest, consumer_group) =
        (config.kafka.clone(), config.ingest.clone(), group.clone());
    let consumer_thread = std::thread::Builder::new()
        .name("hxjobs-ingest".into())
        .spawn(move || consume(&kafka_config, &consumer_group, &ingest, control_rx, tx))
        .map_err(|_| Error::ConsumerLost)?;

    let mut coordinator = Coordinator {
        member,
        owned: BTreeMap::new(),
        marks: HashMap::new(),
        control,
        metadata,
        kafka: config.kafka.clone(),
        pool: pool.clone(),
    };
    tracing::info!(
        worker,
        group = %group,
        setup_ms = setup.elapsed().as_millis() as u64,
        "ingest worker started"
    );
    let mut summary = Summary::default();
    let mut reported = Instant::now();
    let mut beat = tokio::time::interval(config.ingest.beat_every());
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pulse = tokio::time::interval(PULSE_EVERY);
    pulse.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut marks = tokio::time::interval(config.ingest.marks_every());
    marks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let outcome: Result<()> = loop {
        tokio::select! {
            item = rx.recv() => match item {
                Some(item) => {
                    if let Err(e) = handle(&mut writer, &mut coordinator.member, item, &mut summary).await {
                        break Err(e);
                    }
                }
                None => break Err(Error::ConsumerLost),
            },
            _ = beat.tick() => {
                if let Err(e) = coordinator.beat().await {
                    break Err(e);
                }
                if reported.elapsed() >= Duration::from_secs(60) {
                    report(&summary, &coordinator, reported.elapsed());
                    summary = Summary::default();
                    reported = Instant::now();
                }
            }
            _ = marks.tick() => {
                // Between beats too: an interval is seen complete soon
                // after its last events commit.
                if let Err(e) = coordinator.record_marks().await {
                    break Err(e);
                }
            }
            _ = pulse.tick() => {
                // Between beats: a worker that joined or left, or partitions
                // given back, are acted on at once rather than at the next beat.
                match coordinator.member.pulse().await {
                    Ok(p) if p.unsettled(coordinator.owned.len()) => {
                        if let Err(e) = coordinator.beat().await {
                            break Err(e);
                        }
                        beat.reset();
                    }
                    Ok(_) => {}
                    Err(e) => break Err(e),
                }
            }
            _ = stop.cancelled() => break Ok(()),
        }
    };

    // Wind down: the consumer flushes its batch and stops.
    let _ = coordinator.control.send(Control::Stop);
    let mut outcome = outcome;
    if outcome.is_ok() {
        while let Some(item) = rx.recv().await {
            if let Err(e) = handle(&mut writer, &mut coordinator.member, item, &mut summary).await {
                outcome = Err(e);
                break;
            }
        }
    }
    drop(rx);
    let consumed = tokio::task::spawn_blocking(move || consumer_thread.join())
        .await
        .map_err(|_| Error::ConsumerLost)?
        .map_err(|_| Error::ConsumerLost)?;
    if let (Err(Error::ConsumerLost), Err(e)) = (&outcome, &consumed) {
        tracing::debug!(error = %e, "the consumer thread failed");
    }
    let outcome = match (outcome, consumed) {
        (Err(Error::ConsumerLost), Err(e)) => Err(e),
        (outcome, _) => outcome,
    };
    if outcome.is_ok() {
        // A clean stop gives every partition back at once.
        coordinator.member.leave().await?;
    }
    outcome
}

async fn handle(
    writer: &mut Writer,
    member: &mut Member,
    item: Item,
    summary: &mut Summary,
) -> Result<()> {
    match item {
        Item::Batch(batch) => super::write_one(writer, *batch, summary).await,
        Item::Released(parts) => member.release(&parts).await,
    }
}

fn report(summary: &Summary, coordinator: &Coordinator, over: Duration) {
    let t = summary.total();
    tracing::info!(
        partitions = coordinator.owned.len(),
        stored = t.stored,
        duplicates_skipped = t.duplicates,
        dead_letters = t.dead_letters,
        gaps = t.gaps,
        over_secs = over.as_secs(),
        "ingest worker progress"
    );
}

impl Coordinator {
    /// Renews, rebalances and records how far each owned partition is.
    async fn beat(&mut self) -> Result<()> {
        let beat = self.member.beat().await?;
        let now: HashMap<Key, &Owned> = beat
            .owned
            .iter()
            .map(|o| ((o.topic.clone(), o.partition), o))
            .collect();
        let lost: Vec<Key> = self
            .owned
            .iter()
            .filter(|(k, o)| now.get(*k).map(|n| n.epoch) != Some(o.epoch))
            .map(|(k, _)| k.clone())
            .collect();
        if !lost.is_empty() {
            let names: Vec<String> = lost.iter().map(|(t, p)| format!("{t}/{p}")).collect();
            tracing::warn!(partitions = %names.join(","), "ingest partitions lost to another worker");
            for k in &lost {
                self.owned.remove(k);
                self.marks.remove(k);
            }
            self.send(Control::Drop(lost))?;
        }
        let share = beat.share();
        if self.owned.len() > share {
            let excess: Vec<Owned> = self
                .owned
                .values()
                .rev()
                .take(self.owned.len() - share)
                .cloned()
                .collect();
            for o in &excess {
                let k = (o.topic.clone(), o.partition);
                self.owned.remove(&k);
                self.marks.remove(&k);
            }
            tracing::info!(
                released = excess.len(),
                share,
                workers = beat.workers,
                "giving ingest partitions back"
            );
            self.send(Control::Release(excess))?;
        } else if self.owned.len() < share {
            let claimed = self.member.claim(share - self.owned.len()).await?;
            if !claimed.is_empty() {
                tracing::info!(
                    claimed = claimed.len(),
                    share,
                    workers = beat.workers,
                    "ingest partitions claimed"
                );
                for o in &claimed {
                    self.owned.insert((o.topic.clone(), o.partition), o.clone());
                }
                self.send(Control::Add(claimed))?;
            }
        }
        self.record_marks().await
    }

    /// Reads the broker's ends of the owned partitions, tells the consumer,
    /// and records in PostgreSQL which earlier readings the stored
    /// positions passed (rollup readiness) and the newest one (lag).
    async fn record_marks(&mut self) -> Result<()> {
        if self.owned.is_empty() {
            return Ok(());
        }
        let keys: Vec<Key> = self.owned.keys().cloned().collect();
        let (metadata, kafka) = (self.metadata.clone(), self.kafka.clone());
        let read_at = Utc::now();
        let highs =
            tokio::task::spawn_blocking(move || kafka::high_watermarks(&metadata, &kafka, &keys))
                .await
                .map_err(|_| Error::ConsumerLost)??;
        let mut all = Vec::new();
        for (k, high) in &highs {
            let pending = self.marks.entry(k.clone()).or_default();
            pending.push_back((*high, read_at));
            while pending.len() > 8 {
                pending.pop_front();
            }
            for (h, at) in pending.iter() {
                all.push((k.0.clone(), k.1, *h, *at));
            }
        }
        self.send(Control::Ends(highs))?;
        let group = self.member.group.clone();
        for (topic, partition, through) in lease::record_marks(&self.pool, &group, &all).await? {
            if let (Some(through), Some(pending)) =
                (through, self.marks.get_mut(&(topic, partition)))
            {
                pending.retain(|(_, at)| *at > through);
            }
        }
        Ok(())
    }

    fn send(&self, c: Control) -> Result<()> {
        self.control.send(c).map_err(|_| Error::ConsumerLost)
    }
}

/// Publishes dead letters while the worker runs (they wait in the outbox
/// table until their topic takes them).
fn spawn_dead_letter_publisher(
    config: Arc<Config>,
    pool: PgPool,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if !config.dead_letters.publish {
            return;
        }
        while !stop.is_cancelled() {
            match super::outbox::due(&pool).await {
                Ok(true) => {
                    if let Err(e) = super::outbox::publish_pending(&config, &pool).await {
                        tracing::warn!(error = %e, "publishing dead letters failed; they stay queued");
                    }
                }
                Ok(false) => {}
                Err(e) => tracing::debug!(error = %e, "dead-letter outbox not checked"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = stop.cancelled() => {}
            }
        }
    })
}

/// How often a worker looks between beats whether the partitions need
/// sharing out again.
const PULSE_EVERY: Duration = Duration::from_millis(250);

/// The fetch wait while a worker is more than a batch behind: Nisshi
/// answers a fetch whose wait budget is spent one record per storage read,
/// so a backlog is read fastest with a generous budget (BENCHMARKS.md).
const CATCH_UP_FETCH_WAIT_MS: u64 = 2000;

/// The consumer thread: follows the partitions it is told to, parses and
/// encodes, hands over a batch when full or `max_batch_delay_ms` old.
fn consume(
    kafka_config: &KafkaConfig,
    group: &str,
    ingest: &IngestConfig,
    control: std::sync::mpsc::Receiver<Control>,
    tx: mpsc::Sender<Item>,
) -> Result<()> {
    let mut parts: Vec<PartitionState> = Vec::new();
    let mut index: HashMap<String, HashMap<i32, usize>> = HashMap::new();
    let delay = ingest.max_batch_delay();
    let mut refetch = super::Refetch::new(ingest);
    // Until the first reading of the broker's ends, assume a backlog.
    let mut wait_ms = CATCH_UP_FETCH_WAIT_MS;
    let mut wanted_wait_ms = wait_ms;
    // The last poll found nothing: nothing read ahead is waiting.
    let mut idle = false;
    // Ends were read and the batch has not yet reached them.
    let mut flush_at_ends = false;
    let mut consumer =
        kafka::build_consumer_tuned(kafka_config, group, refetch.fetch_bytes, wait_ms)?;
    let mut batch = Batch::new();
    let mut batch_started = Instant::now();
    let send = |item: Item| tx.blocking_send(item).is_ok();
    loop {
        let mut changed = false;
        loop {
            match control.try_recv() {
                Ok(Control::Add(owned)) => {
                    for o in owned {
                        let idx = parts.len();
                        index
                            .entry(o.topic.clone())
                            .or_default()
                            .insert(o.partition, idx);
                        parts.push(PartitionState {
                            topic: o.topic,
                            partition: o.partition,
                            next: o.next,
                            end: o.next,
                            epoch: o.epoch,
                        });
                    }
                    changed = true;
                }
                Ok(Control::Drop(keys)) => {
                    for (topic, partition) in keys {
                        if let Some(m) = index.get_mut(&topic) {
                            m.remove(&partition);
                        }
                    }
                    changed = true;
                }
                Ok(Control::Release(owned)) => {
                    for o in &owned {
                        if let Some(m) = index.get_mut(&o.topic) {
                            m.remove(&o.partition);
                        }
                    }
                    if !batch.is_empty() && !send(Item::Batch(Box::new(std::mem::take(&mut batch))))
                    {
                        return Ok(());
                    }
                    let released = owned
                        .into_iter()
                        .map(|o| (o.topic, o.partition, o.epoch))
                        .collect();
                    if !send(Item::Released(released)) {
                        return Ok(());
                    }
                    changed = true;
                }
                Ok(Control::Ends(ends)) => {
                    for ((topic, partition), high) in ends {
                        if let Some(&i) = index.get(&topic).and_then(|m| m.get(&partition)) {
                            if let Some(p) = parts.get_mut(i) {
                                p.end = high;
                            }
                        }
                    }
                    // Far behind: long fetches (the broker then answers
                    // with large reads); caught up: short ones (latency).
                    let behind: i64 = followed(&index, &parts)
                        .map(|p| (p.end - p.next).max(0))
                        .sum();
                    flush_at_ends = true;
                    let catch_up = ingest.batch_size as i64;
                    if behind > catch_up {
                        wanted_wait_ms = CATCH_UP_FETCH_WAIT_MS;
                    } else if behind < catch_up / 4 {
                        wanted_wait_ms = ingest.fetch_wait_ms;
                    }
                }
                Ok(Control::Stop) | Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    if !batch.is_empty() {
                        send(Item::Batch(Box::new(batch)));
                    }
                    return Ok(());
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
            }
        }
        // A longer wait at once (a backlog); a shorter one once what was
        // read ahead is taken, since a new consumer reads it all again.
        if wanted_wait_ms != wait_ms && (wanted_wait_ms > wait_ms || idle) {
            wait_ms = wanted_wait_ms;
            tracing::debug!(fetch_wait_ms = wait_ms, "fetch wait changed");
            consumer =
                kafka::build_consumer_tuned(kafka_config, group, refetch.fetch_bytes, wait_ms)?;
            changed = true;
        }
        if changed {
            assign(&consumer, kafka_config, &parts, &index)?;
        }
        let polled = consumer.poll(Duration::from_millis(50));
        idle = polled.is_none();
        let mut reached_ends = false;
        match polled {
            Some(Ok(msg)) => {
                refetch.received();
                let was_empty = batch.is_empty();
                if take_message(&msg, &index, &mut parts, &mut batch, ingest.max_event_bytes)
                    && was_empty
                {
                    batch_started = Instant::now();
                }
            }
            Some(Err(e)) => tracing::warn!(error = %e, "Kafka consumer error"),
            None => {
                let expected = followed(&index, &parts).any(|p| !p.done());
                // Once per reading of the ends, at the first poll that finds
                // nothing after it: everything the broker held then is read,
                // so it commits now rather than after the batch delay (the
                // end of a backlog; readiness passes that reading sooner).
                reached_ends = flush_at_ends && !expected;
                if reached_ends {
                    flush_at_ends = false;
                }
                if expected && refetch.due() {
                    consumer = kafka::build_consumer_tuned(
                        kafka_config,
                        group,
                        refetch.fetch_bytes,
                        wait_ms,
                    )?;
                    assign(&consumer, kafka_config, &parts, &index)?;
                }
            }
        }
        let full = batch.len() >= ingest.batch_size;
        if !batch.is_empty()
            && (full || reached_ends || batch_started.elapsed() >= delay)
            && !send(Item::Batch(Box::new(std::mem::take(&mut batch))))
        {
            return Ok(()); // the writer stopped; it reports why
        }
    }
}

/// Assigns the followed partitions at their next offsets.
fn assign(
    consumer: &BaseConsumer,
    kafka_config: &KafkaConfig,
    parts: &[PartitionState],
    index: &HashMap<String, HashMap<i32, usize>>,
) -> Result<()> {
    super::assign_at_next(consumer, kafka_config, followed(index, parts))
}

/// The states of the partitions followed now.
fn followed<'a>(
    index: &'a HashMap<String, HashMap<i32, usize>>,
    parts: &'a [PartitionState],
) -> impl Iterator<Item = &'a PartitionState> + 'a {
    index
        .values()
        .flat_map(|m| m.values())
        .filter_map(move |&i| parts.get(i))
}
