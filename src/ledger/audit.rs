//! The audit log (`audit`): every state change, login and refused
//! request, with who, by which means and role, from where, and how it
//! ended. Kept for `retention.audit_days`. Its statements are checked
//! against the schema when hxjobs compiles (`scripts/sqlx-prepare.sh`).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

/// One entry to record.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    pub actor: &'a str,
    pub means: &'a str,
    pub role: Option<&'a str>,
    pub client: Option<&'a str>,
    pub action: &'a str,
    pub target: Option<&'a str>,
    /// `ok`, `refused` or `failed`.
    pub outcome: &'a str,
    pub detail: Option<serde_json::Value>,
}

/// A recorded entry.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub means: String,
    pub role: Option<String>,
    pub client: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub outcome: String,
    pub detail: Option<serde_json::Value>,
}

pub async fn record(pool: &PgPool, e: &Entry<'_>) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO audit (actor, means, role, client, action, target, outcome, detail)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        e.actor,
        e.means,
        e.role,
        e.client,
        e.action,
        e.target,
        e.outcome,
        e.detail,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Which entries to read: newest first.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub outcome: Option<String>,
    pub since: Option<DateTime<Utc>>,
    /// Entries older than this id (the next page).
    pub before: Option<i64>,
    pub limit: i64,
}

pub async fn list(pool: &PgPool, f: &Filter) -> Result<Vec<AuditRow>, sqlx::Error> {
    sqlx::query_as!(
        AuditRow,
        "SELECT id, at, actor, means, role, client, action, target, outcome, detail FROM audit
         WHERE ($1::text IS NULL OR actor = $1) AND ($2::text IS NULL OR action = $2)
           AND ($3::text IS NULL OR outcome = $3) AND ($4::timestamptz IS NULL OR at >= $4)
           AND ($5::bigint IS NULL OR id < $5)
         ORDER BY id DESC LIMIT $6",
        f.actor.as_deref(),
        f.action.as_deref(),
        f.outcome.as_deref(),
        f.since,
        f.before,
        f.limit,
    )
    .fetch_all(pool)
    .await
}

/// Retention's class (`$1` the cutoff).
pub const RETENTION: &str = "FROM audit WHERE at < $1";
