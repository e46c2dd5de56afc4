//! `hxjobs retention [--dry-run]`, `hxjobs archive list|restore` and
//! `hxjobs storage migrate`.

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
    /// Archived days of raw events, newest first, with where each is.
    List {
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Load an archived day of raw events back into the events table
    /// (from the object store, on any node).
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
    let store = crate::storage::Store::open(&config.storage).map_err(|e| e.to_string())?;
    for a in &done.archived {
        println!(
            "archived {}: {} rows, {} bytes, {}",
            a.day,
            a.rows,
            a.bytes,
            store.location(&a.key)
        );
    }
    Ok(())
}

pub async fn archive(config: &Config, command: ArchiveCommand) -> CliResult {
    let ops = super::ops(config).await?;
    match command {
        ArchiveCommand::List { limit } => {
            let rows = ops.archives(&Actor::cli(), limit).await.map_err(refused)?;
            if rows.is_empty() {
                println!("no day archived yet");
            }
            for a in rows {
                let restored = a
                    .restored_at
                    .map(|t| format!("restored {} UTC", t.format("%Y-%m-%d %H:%M")))
                    .unwrap_or_default();
                let place = if a.storage_key.is_some() {
                    a.path
                } else {
                    format!("{} (local; run `hxjobs storage migrate`)", a.path)
                };
                println!(
                    "{}  {:>10} rows  {:>12} bytes  {}  {}",
                    a.day, a.rows, a.bytes, place, restored
                );
            }
        }
        ArchiveCommand::Restore { day } => {
            let rows = ops
                .restore_archive(&Actor::cli(), day)
                .await
                .map_err(refused)?;
            println!("restored {rows} events of {day}");
        }
    }
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum StorageCommand {
    /// Copy reports and archives from the old local directories
    /// (reports.output_dir, retention.archive_dir) into the store, verify
    /// each and record it there. Running it again changes nothing.
    Migrate,
}

pub async fn storage(config: &Config, command: StorageCommand) -> CliResult {
    let StorageCommand::Migrate = command;
    let ops = super::ops(config).await?;
    let done = ops.migrate_storage(&Actor::cli()).await.map_err(refused)?;
    for (id, key) in &done.reports {
        println!("report {id} -> {key}");
    }
    for (day, key) in &done.archives {
        println!("archive {day} -> {key}");
    }
    for s in &done.skipped {
        println!("skipped: {s}");
    }
    println!(
        "{} reports and {} archives moved to {}; {} skipped",
        done.reports.len(),
        done.archives.len(),
        config.storage.url,
        done.skipped.len()
    );
    Ok(())
}
