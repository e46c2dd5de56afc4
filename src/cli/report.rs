//! `hxjobs report generate|list|get` and `hxjobs capacity`.

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
    /// Copy a recorded report's file out of the store (any node), checked
    /// against its recorded sha256.
    Get {
        id: i64,
        /// Where to write it.
        #[arg(short = 'o', long)]
        output: PathBuf,
    },
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
            println!(
                "report {} ({}, {} to {}, {} bytes, sha256 {})",
                record.id,
                record.report_type,
                record.period_start.format("%Y-%m-%d"),
                record.period_end.format("%Y-%m-%d"),
                record.size.unwrap_or(0),
                record.sha256.as_deref().unwrap_or("-")
            );
            let files = crate::storage::Store::open(&config.storage).map_err(|e| e.to_string())?;
            println!(
                "{}",
                files.location(record.storage_key.as_deref().unwrap_or_default())
            );
            if let Some(out) = args.output {
                save(&ops, &actor, record.id, &out).await?;
                println!("{}", out.display());
            }
            Ok(())
        }
        ReportCommand::Get { id, output } => {
            let size = save(&ops, &actor, id, &output).await?;
            println!("report {id}: {size} bytes to {}", output.display());
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

/// Streams report `id` into `out` through a partial file, checks its
/// sha256 against the record, then renames it into place.
async fn save(
    ops: &crate::ops::Ops,
    actor: &Actor,
    id: i64,
    out: &std::path::Path,
) -> Result<u64, Failure> {
    use futures::StreamExt;
    use sha2::{Digest, Sha256};
    use tokio::io::AsyncWriteExt;
    let (record, mut stream) = ops.report_file(actor, id).await.map_err(refused)?;
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let partial = out.with_file_name(format!(".{name}.partial"));
    let io = |p: &std::path::Path| {
        let p = p.display().to_string();
        move |e: std::io::Error| Failure::from(format!("{p}: {e}"))
    };
    let mut file = tokio::fs::File::create(&partial)
        .await
        .map_err(io(&partial))?;
    let mut hash = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                let _ = tokio::fs::remove_file(&partial).await;
                return Err(format!("reading report {id} from the store: {e}").into());
            }
        };
        hash.update(&chunk);
        size += chunk.len() as u64;
        file.write_all(&chunk).await.map_err(io(&partial))?;
    }
    file.sync_all().await.map_err(io(&partial))?;
    let got = format!("{:x}", hash.finalize());
    if record.sha256.as_deref().is_some_and(|want| want != got) {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(format!(
            "report {id}: the stored file's sha256 is {got}, the record says {}; nothing written",
            record.sha256.unwrap_or_default()
        )
        .into());
    }
    tokio::fs::rename(&partial, out).await.map_err(io(out))?;
    Ok(size)
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
