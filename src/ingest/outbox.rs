//! The dead-letter outbox. Ingest stores a rejected message in
//! `dead_letters` inside its batch's transaction and never talks to the
//! broker there; this publisher sends unpublished rows to the dead-letter
//! topic afterwards. Rows are leased with `SKIP LOCKED` (several publishers
//! never send one row at the same time), each attempt is recorded, and a
//! failed one is retried later with backoff: at least once, never lost.

use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlx::PgPool;

use crate::config::Config;
use crate::kafka;

/// Rows leased per round.
const ROUND: i64 = 500;
/// How long a leased row stays with its publisher before others may take it.
const LEASE_SECS: f64 = 120.0;
/// Backoff after a failed attempt: 2^attempts seconds, at most this.
const MAX_BACKOFF_SECS: f64 = 300.0;
/// Wait for a round's acknowledgements at most this long.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// What one [`publish_pending`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub published: u64,
    pub failed: u64,
    /// Still unpublished afterwards (waiting for a retry or a later round).
    pub pending: i64,
}

struct Row {
    id: i64,
    kafka_topic: String,
    kafka_partition: i32,
    kafka_offset: i64,
    reason: String,
    detail: String,
    payload: Option<Vec<u8>>,
}

/// Whether a dead letter is waiting to be published now.
pub async fn due(pool: &PgPool) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM dead_letters WHERE published_at IS NULL
                          AND (publish_after IS NULL OR publish_after <= now())) AS "due!""#
    )
    .fetch_one(pool)
    .await
}

/// Publishes every dead letter that is due, round after round, until none
/// is left or a round published nothing.
pub async fn publish_pending(config: &Config, pool: &PgPool) -> Result<Published, sqlx::Error> {
    let mut out = Published::default();
    let producer = match kafka::build_dead_letter_producer(&config.kafka) {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!(error = %e, "dead-letter producer unavailable; dead letters stay queued");
            None
        }
    };
    if let Some(producer) = producer {
        loop {
            let rows: Vec<Row> = sqlx::query_as!(
                Row,
                "UPDATE dead_letters SET publish_after = now() + make_interval(secs => $2),
                        publish_attempts = publish_attempts + 1
                 WHERE id IN (
                     SELECT id FROM dead_letters
                     WHERE published_at IS NULL AND (publish_after IS NULL OR publish_after <= now())
                     ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
                 RETURNING id, kafka_topic, kafka_partition, kafka_offset, reason, detail, payload",
                ROUND,
                LEASE_SECS,
            )
            .fetch_all(pool)
            .await?;
            if rows.is_empty() {
                break;
            }
            let (ok, failed) = send(&producer, &config.topics.dead_letter, &rows).await;
            sqlx::query!(
                "UPDATE dead_letters SET published_at = now(), publish_error = NULL
                 WHERE id = ANY($1)",
                &ok,
            )
            .execute(pool)
            .await?;
            let (ids, errors): (Vec<i64>, Vec<String>) = failed.into_iter().unzip();
            sqlx::query!(
                "UPDATE dead_letters d SET publish_error = f.error,
                        publish_after = now()
                            + make_interval(secs => least(power(2, d.publish_attempts), $3::float8))
                 FROM unnest($1::bigint[], $2::text[]) AS f(id, error) WHERE d.id = f.id",
                &ids,
                &errors,
                MAX_BACKOFF_SECS,
            )
            .execute(pool)
            .await?;
            out.published += ok.len() as u64;
            out.failed += ids.len() as u64;
            if ok.is_empty() {
                break; // the topic is not taking them now; later rounds retry
            }
        }
    }
    out.pending = sqlx::query_scalar!(
        r#"SELECT count(*) AS "pending!" FROM dead_letters WHERE published_at IS NULL"#
    )
    .fetch_one(pool)
    .await?;
    metrics::gauge!("dead_letters_unpublished").set(out.pending as f64);
    if out.failed > 0 {
        tracing::warn!(
            failed = out.failed, pending = out.pending, topic = %config.topics.dead_letter,
            "dead letters not published yet; retried with backoff"
        );
    }
    Ok(out)
}

/// Sends `rows` and waits for each acknowledgement: the ids that were
/// acknowledged, and the others with why.
async fn send(
    producer: &FutureProducer,
    topic: &str,
    rows: &[Row],
) -> (Vec<i64>, Vec<(i64, String)>) {
    let mut pending = Vec::with_capacity(rows.len());
    let mut failed = Vec::new();
    for r in rows {
        let partition = r.kafka_partition.to_string();
        let offset = r.kafka_offset.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "hxjobs-reason",
                value: Some(&r.reason),
            })
            .insert(Header {
                key: "hxjobs-detail",
                value: Some(&r.detail),
            })
            .insert(Header {
                key: "hxjobs-topic",
                value: Some(&r.kafka_topic),
            })
            .insert(Header {
                key: "hxjobs-partition",
                value: Some(&partition),
            })
            .insert(Header {
                key: "hxjobs-offset",
                value: Some(&offset),
            });
        let key = format!("{}/{}/{}", r.kafka_topic, r.kafka_partition, r.kafka_offset);
        let mut record = FutureRecord::to(topic).key(&key).headers(headers);
        if let Some(p) = &r.payload {
            record = record.payload(p);
        }
        match producer.send_result(record) {
            Ok(delivery) => pending.push((r.id, delivery)),
            Err((e, _)) => failed.push((r.id, e.to_string())),
        }
    }
    let mut ok = Vec::new();
    let deadline = tokio::time::Instant::now() + ACK_TIMEOUT;
    for (id, delivery) in pending {
        match tokio::time::timeout_at(deadline, delivery).await {
            Ok(Ok(Ok(_))) => ok.push(id),
            Ok(Ok(Err((e, _)))) => failed.push((id, e.to_string())),
            Ok(Err(_)) => failed.push((id, "delivery cancelled".into())),
            Err(_) => failed.push((id, format!("no acknowledgement within {ACK_TIMEOUT:?}"))),
        }
    }
    (ok, failed)
}
