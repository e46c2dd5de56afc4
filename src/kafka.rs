//! Kafka clients built from [`KafkaConfig`], topic creation, metadata and
//! watermarks, with errors that name the broker address.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::config::{Config, KafkaConfig};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach Kafka at {servers}: {reason}")]
    Unreachable { servers: String, reason: String },
    #[error("Kafka at {servers}: {what}: {reason}")]
    Broker {
        servers: String,
        what: String,
        reason: String,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The settings every hxjobs client shares.
pub fn client_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &kafka.bootstrap_servers)
        .set("client.id", &kafka.client_id)
        .set(
            "socket.timeout.ms",
            kafka.request_timeout_ms.max(10).to_string(),
        )
        .set("log.connection.close", "false");
    c
}

fn timeout(kafka: &KafkaConfig) -> Duration {
    Duration::from_millis(kafka.request_timeout_ms)
}

impl Error {
    /// Classifies a client error: unreachable broker, or a broker answer about `what`.
    pub fn from_kafka(kafka: &KafkaConfig, what: &str, e: KafkaError) -> Error {
        let code = match &e {
            KafkaError::AdminOp(code) | KafkaError::MetadataFetch(code) => Some(*code),
            other => other.rdkafka_error_code(),
        };
        let unreachable = matches!(
            code,
            Some(
                RDKafkaErrorCode::BrokerTransportFailure
                    | RDKafkaErrorCode::AllBrokersDown
                    | RDKafkaErrorCode::OperationTimedOut
                    | RDKafkaErrorCode::Resolve
            )
        );
        if unreachable {
            Error::Unreachable {
                servers: kafka.bootstrap_servers.clone(),
                reason: format!("{what}: {e}"),
            }
        } else {
            Error::Broker {
                servers: kafka.bootstrap_servers.clone(),
                what: what.to_string(),
                reason: e.to_string(),
            }
        }
    }
}

/// The topics the broker lists without an error, from one metadata
/// request; [`Error::Unreachable`] when no broker answers. Blocking.
fn topic_names(kafka: &KafkaConfig) -> Result<std::collections::HashSet<String>> {
    let client: BaseConsumer = client_config(kafka)
        .create()
        .map_err(|e| Error::from_kafka(kafka, "creating a client", e))?;
    let metadata = client
        .fetch_metadata(None, timeout(kafka))
        .map_err(|e| Error::Unreachable {
            servers: kafka.bootstrap_servers.clone(),
            reason: e.to_string(),
        })?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| t.name().to_string())
        .collect())
}

/// Bytes per fetch request in normal operation: measured fastest against
/// the Nisshi broker (BENCHMARKS.md); larger requests make it slower.
pub const FETCH_BYTES: usize = 1 << 20;

/// The most bytes per fetch request hxjobs widens to when a message larger
/// than the request seems to block a partition: some brokers (Nisshi among
/// them) never return a message larger than the request allows, and Nisshi
/// caps requests at 5 MiB.
pub const LARGE_FETCH_BYTES: usize = 5 << 20;

/// One client kept for repeated reachability checks (the API's health
/// checks), instead of a new client, and its threads, per check.
#[derive(Clone)]
pub struct Probe {
    client: std::sync::Arc<BaseConsumer>,
    kafka: KafkaConfig,
}

impl Probe {
    pub fn new(kafka: &KafkaConfig) -> Result<Probe> {
        let client: BaseConsumer = client_config(kafka)
            .create()
            .map_err(|e| Error::from_kafka(kafka, "creating a client", e))?;
        Ok(Probe {
            client: std::sync::Arc::new(client),
            kafka: kafka.clone(),
        })
    }

    /// Fails with [`Error::Unreachable`] unless a broker answers a metadata request.
    pub async fn check(&self) -> Result<()> {
        let probe = self.clone();
        let unreachable = |reason: String| Error::Unreachable {
            servers: self.kafka.bootstrap_servers.clone(),
            reason,
        };
        tokio::task::spawn_blocking(move || {
            probe
                .client
                .fetch_metadata(None, timeout(&probe.kafka))
                .map(|_| ())
        })
        .await
        .map_err(|e| unreachable(e.to_string()))?
        .map_err(|e| unreachable(e.to_string()))
    }
}

impl Probe {
    /// [`partition_ends`] of `topics` through the probe's client.
    pub async fn partition_ends(&self, topics: &[String]) -> Result<HashMap<(String, i32), i64>> {
        let probe = self.clone();
        let topics = topics.to_vec();
        tokio::task::spawn_blocking(move || {
            let names: Vec<&str> = topics.iter().map(String::as_str).collect();
            partition_ends(&probe.client, &probe.kafka, &names)
        })
        .await
        .map_err(|e| Error::Unreachable {
            servers: self.kafka.bootstrap_servers.clone(),
            reason: e.to_string(),
        })?
    }
}

/// Fails with [`Error::Unreachable`] unless a broker answers a metadata request.
pub async fn ensure_reachable(kafka: &KafkaConfig) -> Result<()> {
    existing_topics(kafka).await.map(|_| ())
}

/// [`topic_names`] off the async runtime.
async fn existing_topics(kafka: &KafkaConfig) -> Result<std::collections::HashSet<String>> {
    let probe = kafka.clone();
    tokio::task::spawn_blocking(move || topic_names(&probe))
        .await
        .map_err(|e| Error::Unreachable {
            servers: kafka.bootstrap_servers.clone(),
            reason: e.to_string(),
        })?
}

/// A consumer for manual partition assignment: no group join, no auto commit.
pub fn build_consumer(kafka: &KafkaConfig, group_id: &str) -> Result<BaseConsumer> {
    build_consumer_with(kafka, group_id, FETCH_BYTES)
}

/// [`build_consumer`] with `fetch_bytes` per fetch request and per partition.
pub fn build_consumer_with(
    kafka: &KafkaConfig,
    group_id: &str,
    fetch_bytes: usize,
) -> Result<BaseConsumer> {
    // Nisshi hands back at most one record per storage read once a
    // fetch's wait budget is spent; a generous budget keeps reads large.
    build_consumer_tuned(kafka, group_id, fetch_bytes, 2000)
}

/// [`build_consumer_with`] whose fetches wait at most `fetch_wait_ms` for
/// data (a continuous worker's latency bound).
pub fn build_consumer_tuned(
    kafka: &KafkaConfig,
    group_id: &str,
    fetch_bytes: usize,
    fetch_wait_ms: u64,
) -> Result<BaseConsumer> {
    let fetch_bytes = fetch_bytes.to_string();
    client_config(kafka)
        .set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        // Where a stored offset is out of range: the gap is then recorded.
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", fetch_wait_ms.to_string())
        .set("fetch.max.bytes", &fetch_bytes)
        .set("max.partition.fetch.bytes", &fetch_bytes)
        .set("queued.max.messages.kbytes", "262144")
        .create()
        .map_err(|e| Error::from_kafka(kafka, "creating a consumer", e))
}

/// A producer tuned for throughput; `acks=all` as in the platform's spec.
/// Delivery reports go to `context`.
pub fn build_producer_with<C: ProducerContext + 'static>(
    kafka: &KafkaConfig,
    context: C,
) -> Result<ThreadedProducer<C>> {
    client_config(kafka)
        .set("acks", "all")
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "500000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("message.max.bytes", "4194304")
        .set("message.timeout.ms", "120000")
        .set("enable.idempotence", "false")
        .create_with_context(context)
        .map_err(|e| Error::from_kafka(kafka, "creating a producer", e))
}

/// The producer for the dead-letter topic: each delivery is awaited by the writer.
pub fn build_dead_letter_producer(kafka: &KafkaConfig) -> Result<FutureProducer> {
    client_config(kafka)
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.max.bytes", "4194304")
        // The outbox retries later; an unreachable topic must not hold it.
        .set("message.timeout.ms", "10000")
        .create()
        .map_err(|e| Error::from_kafka(kafka, "creating the dead-letter producer", e))
}

/// The partitions of `topic`, or an error when it does not exist. A topic
/// that was just created may be missing from metadata for a moment, so a
/// topic-level error is retried a few times.
pub fn partitions_of(
    consumer: &BaseConsumer,
    kafka: &KafkaConfig,
    topic: &str,
) -> Result<Vec<i32>> {
    let mut attempt = 0;
    loop {
        match partitions_once(consumer, kafka, topic) {
            Err(Error::Broker { .. }) if attempt < 10 => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(200));
            }
            other => return other,
        }
    }
}

/// The partitions of each of `topics`, from one metadata request; a topic
/// missing from it is asked for alone ([`partitions_of`], with its retries).
pub fn partitions_of_all(
    consumer: &BaseConsumer,
    kafka: &KafkaConfig,
    topics: &[String],
) -> Result<Vec<(String, Vec<i32>)>> {
    let metadata = consumer
        .fetch_metadata(None, timeout(kafka))
        .map_err(|e| Error::from_kafka(kafka, "metadata", e))?;
    topics
        .iter()
        .map(|topic| {
            let listed = metadata
                .topics()
                .iter()
                .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty());
            let partitions = match listed {
                Some(t) => partition_ids(t),
                None => partitions_of(consumer, kafka, topic)?,
            };
            Ok((topic.clone(), partitions))
        })
        .collect()
}

fn partitions_once(consumer: &BaseConsumer, kafka: &KafkaConfig, topic: &str) -> Result<Vec<i32>> {
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout(kafka))
        .map_err(|e| Error::from_kafka(kafka, &format!("metadata of topic {topic}"), e))?;
    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Err(Error::Broker {
            servers: kafka.bootstrap_servers.clone(),
            what: format!("topic {topic}"),
            reason: "not in the broker's metadata".into(),
        });
    };
    if let Some(err) = t.error() {
        return Err(Error::Broker {
            servers: kafka.bootstrap_servers.clone(),
            what: format!("topic {topic}"),
            reason: format!("{:?}", RDKafkaErrorCode::from(err)),
        });
    }
    Ok(partition_ids(t))
}

/// A listed topic's partition ids, in order.
fn partition_ids(topic: &rdkafka::metadata::MetadataTopic) -> Vec<i32> {
    let mut parts: Vec<i32> = topic.partitions().iter().map(|p| p.id()).collect();
    parts.sort_unstable();
    parts
}

/// The broker's end offset (high watermark) summed over each topic's
/// partitions ([`partition_ends`]). Blocking.
pub fn end_offsets(
    consumer: &BaseConsumer,
    kafka: &KafkaConfig,
    topics: &[&str],
) -> Result<HashMap<String, i64>> {
    let mut out = HashMap::new();
    for ((topic, _), high) in partition_ends(consumer, kafka, topics)? {
        *out.entry(topic).or_insert(0) += high;
    }
    Ok(out)
}

/// The high watermark of every partition of `topics`, from one metadata
/// request and one offsets request; topics the broker does not have are
/// left out. Blocking.
pub fn partition_ends(
    consumer: &BaseConsumer,
    kafka: &KafkaConfig,
    topics: &[&str],
) -> Result<HashMap<(String, i32), i64>> {
    let metadata = consumer
        .fetch_metadata(None, timeout(kafka))
        .map_err(|e| Error::from_kafka(kafka, "metadata", e))?;
    let mut parts = Vec::new();
    for t in metadata.topics() {
        if topics.contains(&t.name()) && t.error().is_none() {
            parts.extend(
                partition_ids(t)
                    .into_iter()
                    .map(|p| (t.name().to_string(), p)),
            );
        }
    }
    Ok(high_watermarks(consumer, kafka, &parts)?
        .into_iter()
        .collect())
}

/// The high watermark (the next offset to be written) of each of `parts`,
/// asked in one ListOffsets request per broker rather than one round trip
/// per partition. Blocking.
pub fn high_watermarks(
    consumer: &BaseConsumer,
    kafka: &KafkaConfig,
    parts: &[(String, i32)],
) -> Result<Vec<((String, i32), i64)>> {
    if parts.is_empty() {
        return Ok(Vec::new());
    }
    let mut asked = TopicPartitionList::new();
    for (topic, partition) in parts {
        asked
            .add_partition_offset(topic, *partition, Offset::End)
            .map_err(|e| Error::from_kafka(kafka, "end offsets", e))?;
    }
    // Timestamp -1 (`Offset::End`) asks for the latest offset.
    let answered = consumer
        .offsets_for_times(asked, timeout(kafka))
        .map_err(|e| Error::from_kafka(kafka, "end offsets", e))?;
    answered
        .elements()
        .iter()
        .map(|e| {
            let what = || format!("end offset of {}/{}", e.topic(), e.partition());
            e.error()
                .map_err(|err| Error::from_kafka(kafka, &what(), err))?;
            match e.offset() {
                Offset::Offset(high) => Ok(((e.topic().to_string(), e.partition()), high)),
                other => Err(Error::Broker {
                    servers: kafka.bootstrap_servers.clone(),
                    what: what(),
                    reason: format!("answered {other:?}"),
                }),
            }
        })
        .collect()
}

/// `(low, high)`: the first offset still held and the next offset to be written.
pub fn watermarks(
    consumer: &BaseConsumer,
    kafka: &KafkaConfig,
    topic: &str,
    partition: i32,
) -> Result<(i64, i64)> {
    consumer
        .fetch_watermarks(topic, partition, timeout(kafka))
        .map_err(|e| Error::from_kafka(kafka, &format!("watermarks of {topic}/{partition}"), e))
}

/// Creates every configured topic that is missing; existing topics are left
/// as they are. One metadata request when none is missing.
pub async fn ensure_topics(config: &Config) -> Result<()> {
    let kafka = &config.kafka;
    let t = &config.topics;
    let mut wanted: Vec<(String, i32)> = t
        .event_topics()
        .iter()
        .map(|(name, _)| (name.to_string(), t.partitions))
        .collect();
    wanted.push((t.dead_letter.clone(), t.dead_letter_partitions));
    let existing = existing_topics(kafka).await?;
    wanted.retain(|(name, _)| !existing.contains(name));
    if wanted.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = client_config(kafka)
        .create()
        .map_err(|e| Error::from_kafka(kafka, "creating an admin client", e))?;
    let retention = t.retention_ms.to_string();
    let new_topics: Vec<NewTopic<'_>> = wanted
        .iter()
        .map(|(name, partitions)| {
            NewTopic::new(
                name,
                *partitions,
                TopicReplication::Fixed(t.replication_factor),
            )
            .set("retention.ms", &retention)
            .set("cleanup.policy", &t.cleanup_policy)
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(timeout(kafka)));
    let results = admin
        .create_topics(new_topics.iter(), &options)
        .await
        .map_err(|e| Error::from_kafka(kafka, "creating topics", e))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(Error::Broker {
                    servers: kafka.bootstrap_servers.clone(),
                    what: format!("creating topic {name}"),
                    reason: code.to_string(),
                })
            }
        }
    }
    Ok(())
}
