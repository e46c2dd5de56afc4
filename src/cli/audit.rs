//! `hxjobs audit`: the audit log, newest first.

use chrono::{DateTime, Utc};
use clap::Args;

use super::{refused, CliResult};
use crate::config::Config;
use crate::ledger::audit::Filter;
use crate::ops::Actor;

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only what this actor did (`api:ci`, `ui:alice`, `cli:root`).
    #[arg(long)]
    pub actor: Option<String>,
    /// Only this action (`trigger`, `clear`, `login`, `backfill`, …).
    #[arg(long)]
    pub action: Option<String>,
    /// Only `ok`, `refused` or `failed`.
    #[arg(long)]
    pub outcome: Option<String>,
    /// Only entries at or after this time.
    #[arg(long, value_parser = crate::time::parse_instant)]
    pub since: Option<DateTime<Utc>>,
    /// How many (1 to 1000).
    #[arg(long, default_value_t = 50)]
    pub limit: i64,
    /// As JSON lines.
    #[arg(long)]
    pub json: bool,
}

pub async fn audit(config: &Config, args: AuditArgs) -> CliResult {
    let ops = super::ops(config).await?;
    let filter = Filter {
        actor: args.actor,
        action: args.action,
        outcome: args.outcome,
        since: args.since,
        before: None,
        limit: args.limit,
    };
    let rows = ops
        .audit_log(&Actor::cli(), &filter)
        .await
        .map_err(refused)?;
    if rows.is_empty() {
        println!("nothing recorded");
    }
    for r in rows {
        if args.json {
            println!("{}", serde_json::to_string(&r)?);
            continue;
        }
        let detail = r
            .detail
            .as_ref()
            .and_then(|d| d.get("message"))
            .and_then(|m| m.as_str())
            .map(|m| format!("  {m}"))
            .unwrap_or_default();
        println!(
            "{}  {:<8} {:<20} {:<9} {:<8} {:<16} {:<16} {}{}",
            r.at.format("%Y-%m-%d %H:%M:%S"),
            r.outcome,
            r.actor,
            r.role.as_deref().unwrap_or("n/a"),
            r.means,
            r.client.as_deref().unwrap_or("n/a"),
            r.action,
            r.target.as_deref().unwrap_or("n/a"),
            crate::redact::text(&detail)
        );
    }
    Ok(())
}
