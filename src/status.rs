//! What is stored and how far behind the broker it is: `hxjobs status`.

use std::fmt;

use sqlx::PgPool;

use crate::config::Config;
use crate::ingest::progress::Progress;
use crate::kafka;

#[derive(Debug, Clone, Default)]
pub struct Status {
    pub events_by_type: Vec<(String, i64)>,
    pub dead_letters_by_reason: Vec<(String, i64)>,
    pub gaps: i64,
    /// (topic, stored next offset summed over partitions, high watermarks summed).
    pub lag: Vec<(String, i64, Option<i64>)>,
    /// Each partition: owner, position, lag (read from the broker now when
    /// it answers), last commit.
    pub partitions: Vec<crate::ingest::lease::PartitionView>,
    /// Everything the broker held then is stored (hourly rollups wait on it).
    pub caught_up_through: Option<chrono::DateTime<chrono::Utc>>,
}

pub async fn gather(config: &Config, pool: &PgPool) -> Result<Status, sqlx::Error> {
    let events_by_type = sqlx::query!(
        r#"SELECT event_type, count(*) AS "events!" FROM events
           GROUP BY event_type ORDER BY event_type"#
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|r| (r.event_type, r.events))
    .collect();
    let dead_letters_by_reason = crate::ingest::dead_letters::reasons(pool).await?;
    let gaps = sqlx::query_scalar!(
        r#"SELECT count(*) AS "gaps!" FROM ingest_gaps WHERE consumer_group = $1"#,
        config.kafka.group_id,
    )
    .fetch_one(pool)
    .await?;
    let reachable = kafka::ensure_reachable(&config.kafka).await.is_ok();
    let consumer = reachable
        .then(|| kafka::build_consumer(&config.kafka, &config.kafka.group_id).ok())
        .flatten();
    let topics = config.topics.event_topic_names();
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let ends = consumer
        .as_ref()
        .and_then(|c| kafka::partition_ends(c, &config.kafka, &names).ok());
    let mut progress = Progress::read(config, pool).await?;
    if let Some(ends) = &ends {
        progress.measure(ends, chrono::Utc::now());
    }
    // None when the broker did not answer or lists no such topic.
    let lag = progress.by_topic(&topics, ends.as_ref());
    let Progress {
        partitions,
        caught_up_through,
    } = progress;
    Ok(Status {
        events_by_type,
        dead_letters_by_reason,
        gaps,
        lag,
        partitions,
        caught_up_through,
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
        writeln!(
            f,
            "stored everything the broker held at: {}",
            self.caught_up_through.map_or_else(
                || "n/a (a partition never caught up)".into(),
                |t| t.to_rfc3339()
            )
        )?;
        writeln!(
            f,
            "partitions (owner / epoch / position / lag / last commit):"
        )?;
        for p in &self.partitions {
            let na = || "n/a".to_string();
            writeln!(
                f,
                "  {:<18} {:>3}  {:<24} {:>5} {:>12} {:>10} {:>10}",
                p.topic,
                p.partition,
                p.owner.as_deref().unwrap_or("(none)"),
                p.epoch,
                p.position,
                p.lag.map_or_else(na, |l| l.to_string()),
                p.last_commit_age_secs
                    .map_or_else(na, |s| format!("{s:.1} s ago")),
            )?;
        }
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
