//! `hxjobs retention [--dry-run]` and `hxjobs archive restore --day DATE`.

use chrono::NaiveDate;
use clap::{Args, Subcommand};

use super::{refused, CliResult};
use crate::config::Config;
use crate::ops::Actor;

#[derive(Debug, Args)]
pub struct RetentionArgs {
    /// Print exactly what would be archived and removed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Subcommand)]
pub enum ArchiveCommand {
    /// Load an archived day of raw events back into the events table.
    Restore {
        /// The UTC day, e.g. 2026-03-01.
        #[arg(long)]
        day: NaiveDate,
    },
}

pub async fn retention(config: &Config, args: RetentionArgs) -> CliResult {
    let ops = super::ops(config).await?;
    let done = ops
        .retention(&Actor::cli(), args.dry_run)
        .await
        .map_err(refused)?;
    print!("{}", done.plan);
    if args.dry_run {
        println!("dry run: nothing changed");
        return Ok(());
    }
    for a in &done.archived {
        println!(
            "archived {}: {} rows, {} bytes, {}",
            a.day,
            a.rows,
            a.bytes,
            a.path.display()
        );
    }
    Ok(())
}

pub async fn archive(config: &Config, command: ArchiveCommand) -> CliResult {
    let ArchiveCommand::Restore { day } = command;
    let ops = super::ops(config).await?;
    let rows = ops
        .restore_archive(&Actor::cli(), day)
        .await
        .map_err(super::refused)?;
    println!("restored {rows} events of {day}");
    Ok(())
}
