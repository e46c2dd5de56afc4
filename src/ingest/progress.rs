//! How far ingest has got: every partition's stored position, owner and
//! lag, and the time through which everything the broker held is stored.
//! The one reader of ingest progress: `hxjobs status`, `/health`, reports'
//! freshness and the lag metrics all start here.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::lease::{self, PartitionView};
use crate::config::Config;

/// The broker's end offset of each `(topic, partition)`.
pub type Ends = HashMap<(String, i32), i64>;

#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Every partition of the event topics ingest has seen, ordered.
    pub partitions: Vec<PartitionView>,
    /// Everything the broker held then is stored (`None`: a partition
    /// never caught up).
    pub caught_up_through: Option<DateTime<Utc>>,
}

impl Progress {
    /// Reads the ledger of ingest (positions, leases, caught-up times).
    pub async fn read(config: &Config, pool: &PgPool) -> Result<Progress, sqlx::Error> {
        let topics = config.topics.event_topic_names();
        let group = &config.kafka.group_id;
        let partitions =
            lease::partitions(pool, group, &topics, config.ingest.stale_after()).await?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        let caught_up_through = lease::caught_up_through(pool, group, &names).await?;
        Ok(Progress {
            partitions,
            caught_up_through,
        })
    }

    /// Each partition's lag as the broker's `ends` (read at `at`) say.
    pub fn measure(&mut self, ends: &Ends, at: DateTime<Utc>) {
        for p in &mut self.partitions {
            if let Some(high) = ends.get(&(p.topic.clone(), p.partition)) {
                p.lag = Some((high - p.position).max(0));
                p.lag_read_at = Some(at);
            }
        }
    }

    /// Per topic of `topics`: the stored positions summed, and the broker's
    /// ends summed (`None` when the broker did not say).
    pub fn by_topic(
        &self,
        topics: &[String],
        ends: Option<&Ends>,
    ) -> Vec<(String, i64, Option<i64>)> {
        topics
            .iter()
            .map(|topic| {
                let stored = self
                    .partitions
                    .iter()
                    .filter(|p| &p.topic == topic)
                    .map(|p| p.position)
                    .sum();
                let high = ends.and_then(|ends| {
                    ends.iter()
                        .filter(|((t, _), _)| t == topic)
                        .map(|(_, high)| *high)
                        .reduce(|a, b| a + b)
                });
                (topic.clone(), stored, high)
            })
            .collect()
    }

    /// Messages on the broker not stored yet, over every partition the
    /// broker named (`None` without its ends).
    pub fn behind(&self, ends: Option<&Ends>) -> Option<i64> {
        let ends = ends?;
        Some(
            ends.iter()
                .map(|((topic, partition), high)| {
                    let stored = self
                        .partitions
                        .iter()
                        .find(|p| &p.topic == topic && p.partition == *partition)
                        .map_or(0, |p| p.position);
                    (high - stored).max(0)
                })
                .sum(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(topic: &str, partition: i32, position: i64) -> PartitionView {
        PartitionView {
            topic: topic.into(),
            partition,
            owner: None,
            epoch: 0,
            position,
            lag: None,
            lag_read_at: None,
            last_commit_at: None,
            last_commit_age_secs: None,
            caught_up_through: None,
            stalled: false,
        }
    }

    #[test]
    fn lag_is_the_brokers_end_past_the_stored_position() {
        let mut p = Progress {
            partitions: vec![view("a", 0, 10), view("a", 1, 5), view("b", 0, 7)],
            caught_up_through: None,
        };
        let ends: Ends = [
            (("a".to_string(), 0), 12),
            (("a".to_string(), 1), 5),
            (("b".to_string(), 0), 7),
            // A partition ingest has not seen yet: all of it is behind.
            (("b".to_string(), 1), 3),
        ]
        .into();
        assert_eq!(p.behind(Some(&ends)), Some(2 + 3));
        assert_eq!(p.behind(None), None);
        let topics = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        assert_eq!(
            p.by_topic(&topics, Some(&ends)),
            vec![
                ("a".into(), 15, Some(17)),
                ("b".into(), 7, Some(10)),
                ("c".into(), 0, None)
            ]
        );
        p.measure(&ends, Utc::now());
        assert_eq!(p.partitions[0].lag, Some(2));
        assert_eq!(p.partitions[1].lag, Some(0));
    }
}
