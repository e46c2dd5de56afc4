//! `hxjobs produce-demo`.

use chrono::{DateTime, TimeDelta, Utc};
use clap::Args;

use super::{CliResult, Failure};
use crate::config::Config;
use crate::demo::{self, DemoSpec};

#[derive(Debug, Args)]
pub struct ProduceDemoArgs {
    /// How many messages to produce (duplicates and malformed ones included).
    #[arg(long, default_value_t = 100_000)]
    pub events: u64,
    /// Start of the event-time range (date or time, UTC). Default: 7 days before --to.
    #[arg(long, value_parser = crate::time::parse_instant)]
    pub from: Option<DateTime<Utc>>,
    /// End of the event-time range, exclusive. Default: the start of the current hour.
    #[arg(long, value_parser = crate::time::parse_instant)]
    pub to: Option<DateTime<Utc>>,
    /// Share of malformed messages, one of each rejected class in turn (0..1).
    #[arg(long, default_value_t = 0.0)]
    pub bad_ratio: f64,
    /// Share of messages that repeat an earlier event exactly (0..1).
    #[arg(long, default_value_t = 0.0)]
    pub duplicate_ratio: f64,
    /// Seed: the same seed and options give the same messages.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

impl ProduceDemoArgs {
    pub fn spec(&self, config: &Config) -> DemoSpec {
        let now = Utc::now();
        let hour_start =
            DateTime::from_timestamp(now.timestamp() - now.timestamp() % 3600, 0).unwrap_or(now);
        let to = self.to.unwrap_or(hour_start);
        let from = self.from.unwrap_or(to - TimeDelta::days(7));
        DemoSpec {
            events: self.events,
            from,
            to,
            bad_ratio: self.bad_ratio,
            duplicate_ratio: self.duplicate_ratio,
            seed: self.seed,
            max_event_bytes: config.ingest.max_event_bytes,
        }
    }
}

pub async fn run(config: &Config, args: ProduceDemoArgs) -> CliResult {
    let spec = args.spec(config);
    let generator = demo::Generator::new(spec.clone()).map_err(|e| Failure {
        code: 2,
        message: e.to_string(),
    })?;
    crate::kafka::ensure_topics(config).await?;
    let cfg = config.clone();
    let total = spec.events;
    let summary = tokio::task::spawn_blocking(move || {
        demo::produce(&cfg, generator, |n| {
            tracing::info!(sent = n, total, "producing demo events");
        })
    })
    .await??;
    println!(
        "produced {} messages ({} events, {} duplicates, {} malformed) from {} to {} in {:.2} s ({:.0} msg/s)",
        summary.total(),
        summary.events,
        summary.duplicates,
        summary.bad,
        spec.from.to_rfc3339(),
        spec.to.to_rfc3339(),
        summary.elapsed.as_secs_f64(),
        summary.total() as f64 / summary.elapsed.as_secs_f64().max(1e-9)
    );
    Ok(())
}
