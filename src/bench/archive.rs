//! `hxjobs bench archive`: archiving one day of N events (read from
//! PostgreSQL, encode as Parquet, put through a temporary key, read back
//! from the store and verify: exactly what retention does before it drops
//! a day) into the configured store (`[storage] url`), next to the same
//! into a directory on local disk, in alternating rounds of one run.

use std::fmt;
use std::time::{Duration, Instant};

use crate::config::{Config, StorageConfig};
use crate::retention::archive;
use crate::storage::Store;

#[derive(Debug, Clone)]
pub struct ArchiveBench {
    pub events: u64,
    pub store: String,
    pub bytes: i64,
    /// Median of the rounds, each store.
    pub local: Duration,
    pub configured: Duration,
    pub rounds: usize,
}

impl fmt::Display for ArchiveBench {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mb = self.bytes as f64 / 1e6;
        let line = |f: &mut fmt::Formatter<'_>, name: &str, d: Duration| {
            writeln!(
                f,
                "  {name:<44} {:>7.3} s  {:>7.1} MB/s  {:>9.0} events/s",
                d.as_secs_f64(),
                mb / d.as_secs_f64().max(1e-9),
                self.events as f64 / d.as_secs_f64().max(1e-9)
            )
        };
        writeln!(
            f,
            "hxjobs bench archive: one day of {} events, {:.1} MB of Parquet, median of {} rounds",
            self.events, mb, self.rounds
        )?;
        line(f, "local disk (file store in a temp dir)", self.local)?;
        line(
            f,
            &format!("configured store ({})", self.store),
            self.configured,
        )?;
        write!(
            f,
            "  local time / store time  {:.2}",
            self.local.as_secs_f64() / self.configured.as_secs_f64().max(1e-9)
        )
    }
}

pub async fn archive(
    base: &Config,
    events: u64,
    rounds: usize,
    keep: bool,
) -> anyhow::Result<ArchiveBench> {
    let scratch = super::Scratch::create(base, "archive").await?;
    let result = run(&scratch.config, events, rounds).await;
    scratch.finish(keep).await;
    result
}

async fn run(config: &Config, events: u64, rounds: usize) -> anyhow::Result<ArchiveBench> {
    let pool = crate::db::connect_and_migrate(&config.database).await?;
    let start = crate::time::parse_instant("2026-03-02T00:00:00Z").map_err(anyhow::Error::msg)?;
    let day = start.date_naive();
    super::rollup::insert_events(&pool, day, start, 86_400, 0, events).await?;
    sqlx::query("VACUUM ANALYZE events").execute(&pool).await?;

    let dir = tempfile::tempdir()?;
    let local = Store::open(&StorageConfig {
        url: url::Url::from_directory_path(dir.path())
            .map_err(|_| anyhow::anyhow!("temporary directory is not absolute"))?
            .to_string(),
        ..config.storage.clone()
    })?;
    let configured = Store::open(&config.storage)?;
    let (mut on_local, mut on_store) = (Vec::new(), Vec::new());
    let mut bytes = 0;
    for round in 0..rounds.max(1) {
        // Alternate which goes first: PostgreSQL's cache warms for both.
        let order = if round % 2 == 0 {
            [(&local, true), (&configured, false)]
        } else {
            [(&configured, false), (&local, true)]
        };
        for (store, is_local) in order {
            let started = Instant::now();
            let done = archive::write_day(&pool, store, day).await?;
            let took = started.elapsed();
            bytes = done.bytes;
            if is_local {
                on_local.push(took);
            } else {
                on_store.push(took);
            }
        }
    }
    pool.close().await;
    Ok(ArchiveBench {
        events,
        store: configured.url().to_string(),
        bytes,
        local: median(on_local),
        configured: median(on_store),
        rounds: rounds.max(1),
    })
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or_default()
}
