//! `hxjobs bench …`.

use clap::Subcommand;

use super::CliResult;
use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Produce demo events, then time a bare consume, the drain into
    /// PostgreSQL and a plain COPY of the same rows; print rates and ratios.
    Ingest {
        /// Events to produce and drain.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Keep the bench databases and topics instead of removing them.
        #[arg(long)]
        keep: bool,
    },
}

pub async fn run(config: &Config, command: BenchCommand) -> CliResult {
    match command {
        BenchCommand::Ingest { events, keep } => {
            let report = crate::bench::ingest(config, events, keep).await?;
            println!("{report}");
            Ok(())
        }
    }
}
