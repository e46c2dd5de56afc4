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
    /// Roll one hour of N events up with hxjobs and with one SQL statement.
    Rollup {
        /// Events in the hour.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Keep the bench database instead of removing it.
        #[arg(long)]
        keep: bool,
    },
    /// Backfill hourly runs of a three-task no-op DAG and run the same
    /// statements without the ledger; print the per-task overhead.
    Scheduler {
        /// Hourly runs to backfill.
        #[arg(long, default_value_t = 8760)]
        runs: usize,
        /// Runs in flight at once.
        #[arg(long, default_value_t = 4)]
        parallel: usize,
        /// Keep the bench database instead of removing it.
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
        BenchCommand::Rollup { events, keep } => {
            if events == 0 {
                return Err(super::Failure {
                    code: 2,
                    message: "--events must be at least 1".into(),
                });
            }
            let report = crate::bench::rollup(config, events, keep).await?;
            println!("{report}");
            Ok(())
        }
        BenchCommand::Scheduler {
            runs,
            parallel,
            keep,
        } => {
            if runs == 0 || parallel == 0 {
                return Err(super::Failure {
                    code: 2,
                    message: "--runs and --parallel must be at least 1".into(),
                });
            }
            let report = crate::bench::scheduler(config, runs, parallel, keep).await?;
            println!("{report}");
            Ok(())
        }
    }
}
