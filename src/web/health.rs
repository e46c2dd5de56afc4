//! Dependency checks (PostgreSQL, the broker, ingest), refreshed in the
//! background so `/health` and the console never wait on them.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::ApiState;
use crate::config::Config;

/// Dependency checks, refreshed in the background so `/health` never waits on them.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    pub database: Check,
    pub kafka: Check,
    /// The object store for reports and archives (`[storage] url`).
    pub storage: Check,
    /// Partition owners, positions and lag; `None` until read.
    pub ingest: Option<IngestCheck>,
    pub checked_at: Option<DateTime<Utc>>,
}

/// Who ingests which partition and how far behind it is.
#[derive(Debug, Clone, Serialize)]
pub struct IngestCheck {
    /// "ok"; "stalled" when a partition has data on the broker past its
    /// stored position and that position has not moved for
    /// `ingest.stalled_after_secs` (the service is then unhealthy);
    /// "unowned" when continuous ingest leaves a partition without a live
    /// owner.
    pub status: &'static str,
    pub mode: crate::config::IngestMode,
    /// Workers holding partitions now.
    pub workers: usize,
    /// Everything the broker held then is stored (`null`: a partition never
    /// caught up).
    pub caught_up_through: Option<DateTime<Utc>>,
    /// `topic/partition` of every stalled partition.
    pub stalled: Vec<String>,
    pub partitions: Vec<crate::ingest::lease::PartitionView>,
}

/// Where each partition's stored position was last seen to move, so that
/// one owned (or left) without moving while the broker has data for it is
/// found, whatever its owner believes.
#[derive(Debug, Default)]
pub struct StallWatch {
    seen: std::collections::HashMap<(String, i32), (i64, DateTime<Utc>)>,
}

impl StallWatch {
    /// Marks `partitions` stalled where the broker's end (`ends`) is past
    /// the position and the position has not moved for `after`; fills each
    /// partition's lag from `ends`. Returns the stalled ones.
    pub fn observe(
        &mut self,
        partitions: &mut [crate::ingest::lease::PartitionView],
        ends: &std::collections::HashMap<(String, i32), i64>,
        now: DateTime<Utc>,
        after: Duration,
    ) -> Vec<String> {
        let after = chrono::Duration::from_std(after).unwrap_or(chrono::Duration::MAX);
        let mut stalled = Vec::new();
        for p in partitions.iter_mut() {
            let key = (p.topic.clone(), p.partition);
            // Unmoved since its last commit, or since first seen here.
            let since = p.last_commit_at.unwrap_or(now);
            let entry = self.seen.entry(key.clone()).or_insert((p.position, since));
            if entry.0 != p.position {
                *entry = (p.position, now);
            }
            let Some(high) = ends.get(&key) else { continue };
            let behind = (high - p.position).max(0);
            p.lag = Some(behind);
            p.lag_read_at = Some(now);
            p.stalled = behind > 0 && now - entry.1 >= after;
            if p.stalled {
                stalled.push(format!("{}/{}", p.topic, p.partition));
            }
        }
        stalled
    }
}

impl IngestCheck {
    /// Reads the partitions' leases and positions; with the broker's ends,
    /// also their true lag and which are stalled.
    pub async fn read(
        config: &Config,
        pool: &sqlx::PgPool,
        ends: Option<&std::collections::HashMap<(String, i32), i64>>,
        watch: &mut StallWatch,
    ) -> Result<IngestCheck, sqlx::Error> {
        let crate::ingest::progress::Progress {
            mut partitions,
            caught_up_through,
        } = crate::ingest::progress::Progress::read(config, pool).await?;
        let stalled = match ends {
            Some(ends) => watch.observe(
                &mut partitions,
                ends,
                Utc::now(),
                Duration::from_secs(config.ingest.stalled_after_secs),
            ),
            None => Vec::new(),
        };
        let mut owners: Vec<&str> = partitions
            .iter()
            .filter_map(|p| p.owner.as_deref())
            .collect();
        owners.sort_unstable();
        owners.dedup();
        let mode = config.ingest.mode;
        let unowned = partitions.iter().any(|p| p.owner.is_none());
        crate::metrics::ingest_stalled(stalled.len());
        Ok(IngestCheck {
            status: if !stalled.is_empty() {
                "stalled"
            } else if mode == crate::config::IngestMode::Continuous && unowned {
                "unowned"
            } else {
                "ok"
            },
            mode,
            workers: owners.len(),
            caught_up_through,
            stalled,
            partitions,
        })
    }

    /// The ingest mode as configured.
    pub fn mode_name(&self) -> &'static str {
        match self.mode {
            crate::config::IngestMode::Continuous => "continuous",
            crate::config::IngestMode::Drain => "drain",
            crate::config::IngestMode::Off => "off",
        }
    }

    /// Whether ingest makes the service unhealthy.
    pub fn stalled(&self) -> bool {
        !self.stalled.is_empty()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub status: &'static str,
    pub latency_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Health {
    /// Before the first check.
    pub fn unknown() -> Health {
        Health {
            database: Check::unknown(),
            kafka: Check::unknown(),
            storage: Check::unknown(),
            ingest: None,
            checked_at: None,
        }
    }
}

impl Check {
    fn unknown() -> Check {
        Check {
            status: "unknown",
            latency_ms: None,
            detail: Some("not checked yet".into()),
        }
    }

    fn of(started: Instant, outcome: Result<(), String>) -> Check {
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        match outcome {
            Ok(()) => Check {
                status: "up",
                latency_ms: Some(crate::round(ms, 2)),
                detail: None,
            },
            Err(e) => Check {
                status: "down",
                latency_ms: None,
                detail: Some(e),
            },
        }
    }

    pub fn up(&self) -> bool {
        self.status == "up"
    }
}

/// Refreshes the dependency checks every `every` until `stop`.
pub fn spawn_health_checks(state: &ApiState, every: Duration) {
    let (config, pool, health, stop) = (
        state.ops.config.clone(),
        state.ops.pools.data.clone(),
        state.health.clone(),
        state.ops.stop.clone(),
    );
    tokio::spawn(async move {
        let probe = crate::kafka::Probe::new(&config.kafka);
        let mut watch = StallWatch::default();
        let topics = config.topics.event_topic_names();
        while !stop.is_cancelled() {
            let started = Instant::now();
            let db = tokio::time::timeout(
                Duration::from_secs(3),
                sqlx::query!("SELECT 1 AS one").fetch_one(&pool),
            )
            .await
            .map_err(|_| "no answer within 3 s".to_string())
            .and_then(|r| r.map(|_| ()).map_err(|e| crate::db::describe(&e)));
            let database = Check::of(started, db);
            let started = Instant::now();
            let kafka = match &probe {
                Ok(p) => p.check().await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            let kafka = Check::of(started, kafka);
            let storage = match crate::storage::Store::open(&config.storage) {
                Ok(store) => {
                    let p = store.probe().await;
                    Check {
                        status: if p.up { "up" } else { "down" },
                        latency_ms: p.up.then_some(p.latency_ms),
                        detail: p.error,
                    }
                }
                Err(e) => Check {
                    status: "down",
                    latency_ms: None,
                    detail: Some(e.to_string()),
                },
            };
            crate::metrics::dependency_up("postgresql", database.up());
            crate::metrics::dependency_up("kafka", kafka.up());
            let ends = match (&probe, kafka.up()) {
                (Ok(p), true) => p.partition_ends(&topics).await.ok(),
                _ => None,
            };
            let ingest = if database.up() {
                IngestCheck::read(&config, &pool, ends.as_ref(), &mut watch)
                    .await
                    .ok()
            } else {
                None
            };
            *health.write().await = Health {
                database,
                kafka,
                storage,
                ingest,
                checked_at: Some(Utc::now()),
            };
            tokio::time::sleep(every).await;
        }
    });
}
