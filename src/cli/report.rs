//! `hxjobs report generate|list` and `hxjobs capacity`.

use std::path::PathBuf;

use chrono::{NaiveDate, Utc};
use clap::{Args, Subcommand};

use super::{refused, CliResult, Failure};
use crate::config::Config;
use crate::ops::reports::Generate;
use crate::ops::Actor;

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Render a report from the rollups, record it in `reports` and print where it is.
    Generate(GenerateArgs),
    /// Recorded reports, newest first.
    List {
        #[arg(long = "type")]
        report_type: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Report type: a definition in reports.definitions_dir, e.g. weekly_summary.
    #[arg(long = "type")]
    pub report_type: String,
    /// Any instant in the period (e.g. 2026-03-02); default: the last complete period.
    #[arg(long, value_parser = crate::time::parse_instant)]
    pub period_start: Option<chrono::DateTime<Utc>>,
    /// pdf, json or csv.
    #[arg(long, default_value = "pdf")]
    pub format: String,
    /// Also copy the file here.
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    /// Refuse (exit 1, naming the hours) rather than render a period whose
    /// hours are not all stored by ingest, or which has not ended.
    #[arg(long)]
    pub require_complete: bool,
}

#[derive(Debug, Args)]
pub struct CapacityArgs {
    /// The day after the last analysed day (default: today, UTC).
    #[arg(long)]
    pub to: Option<NaiveDate>,
}

pub async fn report(config: &Config, command: ReportCommand) -> CliResult {
    let ops = super::ops(config).await?;
    let actor = Actor::cli();
    match command {
        ReportCommand::Generate(args) => {
            let asked = Generate {
                report_type: &args.report_type,
                format: &args.format,
                period_start: args.period_start,
                require_complete: args.require_complete,
            };
            let record = ops
                .generate_report(&actor, &asked)
                .await
                .map_err(|e| match e.code {
                    // Not the command's mistake: the data is not all in yet.
                    "period_incomplete" => Failure::from(e.message),
                    _ => refused(e),
                })?;
            for note in &record.notes {
                eprintln!("note: {note}");
            }
            if let Some(t) = record.partial_through {
                eprintln!(
                    "note: the period has not ended: partial, through {} UTC",
                    t.format("%Y-%m-%d %H:%M")
                );
            }
            let file = config
                .reports
                .output_dir
                .join(record.path.as_deref().unwrap_or_default());
            println!(
                "report {} ({}, {} to {}, {} bytes, sha256 {})",
                record.id,
                record.report_type,
                record.period_start.format("%Y-%m-%d"),
                record.period_end.format("%Y-%m-%d"),
                record.size.unwrap_or(0),
                record.sha256.as_deref().unwrap_or("-")
            );
            println!("{}", file.display());
            if let Some(out) = args.output {
                std::fs::copy(&file, &out)
                    .map_err(|e| format!("copying to {}: {e}", out.display()))?;
                println!("{}", out.display());
            }
            Ok(())
        }
        ReportCommand::List { report_type, limit } => {
            let list = ops
                .reports(&actor, report_type.as_deref(), limit.clamp(1, 1000))
                .await
                .map_err(refused)?;
            for r in list {
                let status = match (r.superseded_by, r.partial_through) {
                    (Some(by), _) => format!("superseded by {by}"),
                    (None, Some(_)) => format!("{} (partial)", r.status),
                    _ => r.status.clone(),
                };
                println!(
                    "{:>6}  {:<32} {}  {:<4} {:<18} {}",
                    r.id,
                    r.report_type,
                    r.period_start.format("%Y-%m-%d"),
                    r.format,
                    status,
                    r.path.or(r.error).unwrap_or_default()
                );
            }
            Ok(())
        }
    }
}

pub async fn capacity(config: &Config, args: CapacityArgs) -> CliResult {
    let ops = super::ops(config).await?;
    let analysis = ops
        .capacity(&Actor::cli(), args.to)
        .await
        .map_err(refused)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&analysis).map_err(|e| e.to_string())?
    );
    Ok(())
}
