//! What is stored and how far behind the broker it is: `hxjobs status`.

use std::fmt;

use sqlx::PgPool;

use crate::config::Config;
use crate::kafka;

#[derive(Debug, Clone, Default)]
pub struct Status {
    pub events_by_type: Vec<(String, i64)>,
    pub dead_letters_by_reason: Vec<(String, i64)>,
    pub gaps: i64,
    /// (topic, stored next offset summed over partitions, high watermarks summed).
    pub lag: Vec<(String, i64, Option<i64>)>,
}

pub async fn gather(config: &Config, pool: &PgPool) -> Result<Status, sqlx::Error> {
    let events_by_type = sqlx::query_as(
        "SELECT event_type, count(*) FROM events GROUP BY event_type ORDER BY event_type",
    )
    .fetch_all(pool)
    .await?;
    let dead_letters_by_reason =
        sqlx::query_as("SELECT reason, count(*) FROM dead_letters GROUP BY reason ORDER BY reason")
            .fetch_all(pool)
            .await?;
    let gaps: i64 =
        sqlx::query_scalar("SELECT count(*) FROM ingest_gaps WHERE consumer_group = $1")
            .bind(&config.kafka.group_id)
            .fetch_one(pool)
            .await?;
    let stored: Vec<(String, i32, i64)> = sqlx::query_as(
        "SELECT topic, partition, next_offset FROM consumer_offsets WHERE consumer_group = $1",
    )
    .bind(&config.kafka.group_id)
    .fetch_all(pool)
    .await?;
    let reachable = kafka::ensure_reachable(&config.kafka).await.is_ok();
    let consumer = reachable
        .then(|| kafka::build_consumer(&config.kafka, &config.kafka.group_id).ok())
        .flatten();
    let mut lag = Vec::new();
    for (topic, _) in config.topics.event_topics() {
        let next: i64 = stored
            .iter()
            .filter(|(t, _, _)| t == topic)
            .map(|(_, _, o)| o)
            .sum();
        let high = consumer.as_ref().and_then(|c| {
            let parts = kafka::partitions_of(c, &config.kafka, topic).ok()?;
            let mut sum = 0;
            for p in parts {
                sum += kafka::watermarks(c, &config.kafka, topic, p).ok()?.1;
            }
            Some(sum)
        });
        lag.push((topic.to_string(), next, high));
    }
    Ok(Status {
        events_by_type,
        dead_letters_by_reason,
        gaps,
        lag,
    })
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total: i64 = self.events_by_type.iter().map(|(_, n)| n).sum();
        writeln!(f, "events stored: {total}")?;
        for (t, n) in &self.events_by_type {
            writeln!(f, "  {t:<16} {n:>12}")?;
        }
        let dead: i64 = self.dead_letters_by_reason.iter().map(|(_, n)| n).sum();
        writeln!(f, "dead letters: {dead}")?;
        for (r, n) in &self.dead_letters_by_reason {
            writeln!(f, "  {r:<20} {n:>8}")?;
        }
        writeln!(f, "offset gaps recorded: {}", self.gaps)?;
        writeln!(f, "topics (stored offset / broker end / lag):")?;
        for (topic, next, high) in &self.lag {
            match high {
                Some(h) => writeln!(f, "  {topic:<18} {next:>12} / {h:>12} / {:>10}", h - next)?,
                None => writeln!(f, "  {topic:<18} {next:>12} / broker unreachable")?,
            }
        }
        Ok(())
    }
}
