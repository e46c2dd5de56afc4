//! How complete the data behind a report is: the newest event stored,
//! how far ingest has stored everything the broker held, and which hours
//! of the period are not stored completely yet.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::{sections, Error};
use crate::config::Config;
use crate::interval::{Grain, Interval};

/// The ingest position a report reflects.
#[derive(Debug, Clone, Serialize)]
pub struct Freshness {
    /// The newest event time stored.
    pub latest_event_time: Option<DateTime<Utc>>,
    /// Ingest had stored everything the broker held at this time.
    pub ingest_drained_through: Option<DateTime<Utc>>,
    /// Whether ingest had caught up with the broker when the report was
    /// built (`None`: the broker could not be asked).
    pub ingest_caught_up: Option<bool>,
    /// Messages on the broker not stored yet, over the event topics.
    pub ingest_lag_messages: Option<i64>,
    /// Whether every hour of the period (up to now) is ready: ingest stored
    /// everything up to its end.
    pub hours_ready: bool,
    /// The hours that are not, as ranges.
    pub hours_not_ready: Vec<HourRange>,
}

/// Consecutive hours `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HourRange {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub hours: i64,
}

impl std::fmt::Display for HourRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} to {} UTC ({} h)",
            sections::when(self.from),
            sections::when(self.to),
            self.hours
        )
    }
}

/// Hour starts → ranges of consecutive hours.
fn hour_ranges(hours: &[DateTime<Utc>]) -> Vec<HourRange> {
    let mut out: Vec<HourRange> = Vec::new();
    for &h in hours {
        let end = Grain::Hour.next(h);
        match out.last_mut() {
            Some(r) if r.to == h => {
                r.to = end;
                r.hours += 1;
            }
            _ => out.push(HourRange {
                from: h,
                to: end,
                hours: 1,
            }),
        }
    }
    out
}

/// The broker's end offsets of the event topics, asked on a blocking
/// thread (started early, so the round trips overlap the report's queries).
pub(super) fn broker_ends(
    config: &Config,
) -> tokio::task::JoinHandle<Option<HashMap<String, i64>>> {
    let kafka = config.kafka.clone();
    let topics: Vec<String> = config
        .topics
        .event_topics()
        .into_iter()
        .map(|(t, _)| t.to_string())
        .collect();
    tokio::task::spawn_blocking(move || {
        let consumer = crate::kafka::build_consumer(&kafka, &kafka.group_id).ok()?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        crate::kafka::end_offsets(&consumer, &kafka, &names).ok()
    })
}

/// How long a report waits for the broker's answer before it says "unknown".
const BROKER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Where ingest stands for `period`, the broker's ends awaited at most
/// [`BROKER_WAIT`].
pub(super) async fn read(
    config: &Config,
    pool: &PgPool,
    period: Interval,
    now: DateTime<Utc>,
    ends: tokio::task::JoinHandle<Option<HashMap<String, i64>>>,
) -> Result<Freshness, Error> {
    let latest: Option<DateTime<Utc>> = sqlx::query_scalar!(
        "SELECT max(event_time) FROM events
         WHERE event_day = (SELECT max(event_day) FROM events)",
    )
    .fetch_one(pool)
    .await?;
    let progress = crate::ingest::progress::Progress::read(config, pool).await?;
    let drained = progress.caught_up_through;
    let stored: Vec<(String, i64)> = progress
        .by_topic(&config.topics.event_topic_names(), None)
        .into_iter()
        .map(|(topic, stored, _)| (topic, stored))
        .collect();
    let ends = tokio::time::timeout(BROKER_WAIT, ends)
        .await
        .ok()
        .and_then(Result::ok)
        .flatten();
    let lag = ends.map(|ends| {
        ends.iter()
            .map(|(topic, end)| {
                let next = stored
                    .iter()
                    .find(|(t, _)| t == topic)
                    .map_or(0, |(_, n)| *n);
                (end - next).max(0)
            })
            .sum::<i64>()
    });
    let through = period.end.min(now);
    let not_ready: Vec<DateTime<Utc>> = Grain::Hour
        .starts(period.start, through)
        .into_iter()
        .filter(|h| drained.is_none_or(|d| Grain::Hour.next(*h) > d))
        .collect();
    Ok(Freshness {
        latest_event_time: latest,
        ingest_drained_through: drained,
        ingest_caught_up: lag.map(|l| l == 0),
        ingest_lag_messages: lag,
        hours_ready: not_ready.is_empty(),
        hours_not_ready: hour_ranges(&not_ready),
    })
}

/// The hours of `period` not stored completely yet: those ingest has not
/// passed, and, for a period under way, the rest of it.
pub fn incomplete_hours(f: &Freshness, period: Interval, now: DateTime<Utc>) -> Vec<HourRange> {
    let mut out = f.hours_not_ready.clone();
    if period.end > now {
        let rest: Vec<DateTime<Utc>> = Grain::Hour
            .starts(Grain::Hour.floor(now), period.end)
            .into_iter()
            .filter(|h| out.last().is_none_or(|r| *h >= r.to))
            .collect();
        let mut all: Vec<DateTime<Utc>> = out
            .iter()
            .flat_map(|r| Grain::Hour.starts(r.from, r.to))
            .collect();
        all.extend(rest);
        all.dedup();
        out = hour_ranges(&all);
    }
    out
}

/// "1 hour", "5 hours": how many hours `missing` holds.
pub(super) fn hours_count(missing: &[HourRange]) -> String {
    let n: i64 = missing.iter().map(|r| r.hours).sum();
    if n == 1 {
        "1 hour".into()
    } else {
        format!("{n} hours")
    }
}
