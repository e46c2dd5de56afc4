//! Retention: each data class kept for its configured number of days.
//! Raw events go a whole UTC day at a time, and only after the day was
//! archived to a verified Parquet file ([`archive`]); the archive is
//! recorded and the partition dropped in one transaction. A failed archive
//! removes nothing. [`plan`] is what `--dry-run` shows; [`apply`] does
//! exactly that.

pub mod archive;

use std::fmt;
use std::path::Path;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use sqlx::PgPool;

use crate::config::RetentionConfig;
use crate::ledger::Seal;

/// Rows of one class older than its cutoff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Class {
    pub name: &'static str,
    pub cutoff: DateTime<Utc>,
    pub rows: i64,
    /// `FROM … WHERE …` selecting the rows, `$1` the cutoff.
    from: &'static str,
    /// The rows' `path` names a file in the reports directory, removed with them.
    report_files: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Raw event days to archive and drop, oldest first, with their rows.
    pub event_days: Vec<(NaiveDate, i64)>,
    pub classes: Vec<Class>,
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows: i64 = self.event_days.iter().map(|(_, n)| n).sum();
        match (self.event_days.first(), self.event_days.last()) {
            (Some((first, _)), Some((last, _))) => writeln!(
                f,
                "raw events: {} days ({first} .. {last}), {rows} rows: archive to Parquet, then drop",
                self.event_days.len()
            )?,
            _ => writeln!(f, "raw events: nothing past retention")?,
        }
        for c in &self.classes {
            writeln!(
                f,
                "{}: {} rows before {}",
                c.name,
                c.rows,
                c.cutoff.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )?;
        }
        Ok(())
    }
}

/// (class, days kept, `FROM … WHERE …` with `$1` the cutoff, whether the
/// rows carry report files); 0 days keeps forever.
fn classes(config: &RetentionConfig) -> Vec<(&'static str, u32, &'static str, bool)> {
    vec![
        (
            "dead letters",
            config.dead_letters_days,
            "FROM dead_letters WHERE received_at < $1",
            false,
        ),
        (
            "hourly rollups",
            config.hourly_rollups_days,
            "FROM rollups WHERE grain = 'hour' AND bucket_start < $1",
            false,
        ),
        (
            "daily rollups",
            config.daily_rollups_days,
            "FROM rollups WHERE grain = 'day' AND bucket_start < $1",
            false,
        ),
        (
            "weekly rollups",
            config.weekly_rollups_days,
            "FROM rollups WHERE grain = 'week' AND bucket_start < $1",
            false,
        ),
        (
            "monthly rollups",
            config.monthly_rollups_days,
            "FROM rollups WHERE grain = 'month' AND bucket_start < $1",
            false,
        ),
        (
            "run ledger",
            config.run_ledger_days,
            crate::ledger::RETENTION_RUNS,
            false,
        ),
        (
            "generated reports",
            config.reports_days,
            "FROM reports WHERE created_at < $1",
            true,
        ),
        (
            "catch-up skips",
            config.run_ledger_days,
            crate::ledger::RETENTION_SKIPS,
            false,
        ),
        (
            "audit log",
            config.audit_days,
            crate::ledger::audit::RETENTION,
            false,
        ),
        (
            "ingest commit log",
            config.ingest_commits_days,
            "FROM ingest_commits WHERE committed_at < $1",
            false,
        ),
    ]
}

/// `days` before `now`, in whole seconds (as it is printed and stored).
fn cutoff(now: DateTime<Utc>, days: u32) -> DateTime<Utc> {
    use chrono::SubsecRound;
    (now - TimeDelta::days(i64::from(days))).trunc_subsecs(0)
}

/// What retention would remove at `now`; reads only.
pub async fn plan(
    pool: &PgPool,
    config: &RetentionConfig,
    now: DateTime<Utc>,
) -> Result<Plan, archive::Error> {
    // A day goes once all of it is older than the cutoff.
    let last_day = cutoff(now, config.raw_events_days).date_naive();
    let days: Vec<NaiveDate> = sqlx::query_scalar!(
        r#"SELECT to_date(substring(c.relname FROM 9), 'YYYYMMDD') AS "day!"
           FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
           WHERE i.inhparent = 'events'::regclass AND c.relname ~ '^events_p[0-9]{8}$'
           ORDER BY 1"#
    )
    .fetch_all(pool)
    .await?;
    let mut event_days = Vec::new();
    for day in days.into_iter().filter(|d| *d < last_day) {
        let rows: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {}",
            archive::partition_name(day)
        ))
        .fetch_one(pool)
        .await?;
        event_days.push((day, rows));
    }
    let mut out = Vec::new();
    for (name, days, from, report_files) in classes(config) {
        if days == 0 {
            continue; // kept forever
        }
        let at = cutoff(now, days);
        let rows: i64 = sqlx::query_scalar(&format!("SELECT count(*) {from}"))
            .bind(at)
            .fetch_one(pool)
            .await?;
        out.push(Class {
            name,
            cutoff: at,
            rows,
            from,
            report_files,
        });
    }
    Ok(Plan {
        event_days,
        classes: out,
    })
}

/// Carries out `plan`: archives and drops each raw day (stopping at the
/// first that fails), then deletes the other classes' old rows in one
/// transaction. A `retention` task's `seal` is checked in each day's
/// transaction and commits with the deletions.
pub async fn apply(
    pool: &PgPool,
    store: &crate::storage::Store,
    reports_dir: &Path,
    plan: &Plan,
    seal: Option<&Seal>,
) -> Result<Vec<archive::Archived>, archive::Error> {
    let mut archived = Vec::new();
    for (day, _) in &plan.event_days {
        let file = archive::write_day(pool, store, *day).await?;
        let mut tx = pool.begin().await?;
        if let Some(seal) = seal {
            seal.check(&mut tx).await?;
        }
        sqlx::query!(
            "INSERT INTO event_archives (day, path, storage_key, rows, checksum, bytes)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (day) DO UPDATE SET path = EXCLUDED.path,
                 storage_key = EXCLUDED.storage_key, rows = EXCLUDED.rows,
                 checksum = EXCLUDED.checksum, bytes = EXCLUDED.bytes,
                 archived_at = now(), restored_at = NULL",
            file.day,
            store.location(&file.key),
            file.key,
            file.rows,
            file.checksum,
            file.bytes,
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query(&format!("DROP TABLE {}", archive::partition_name(*day)))
            .execute(&mut *tx)
            .await?;
        sqlx::query!("DELETE FROM rollup_stage WHERE event_day = $1", day)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(day = %file.day, rows = file.rows, key = %file.key, "raw events archived and removed");
        archived.push(file);
    }
    let mut tx = pool.begin().await?;
    let mut files = Vec::new();
    let mut removed = Vec::new();
    for class in &plan.classes {
        // Reports take their files along (once the deletion commits).
        let gone = if class.report_files {
            let gone: Vec<(Option<String>, Option<String>)> = sqlx::query_as(&format!(
                "DELETE {} RETURNING path, storage_key",
                class.from
            ))
            .bind(class.cutoff)
            .fetch_all(&mut *tx)
            .await?;
            files.extend(gone.iter().cloned());
            gone.len() as u64
        } else {
            sqlx::query(&format!("DELETE {}", class.from))
                .bind(class.cutoff)
                .execute(&mut *tx)
                .await?
                .rows_affected()
        };
        removed.push((class.name, gone));
    }
    if let Some(seal) = seal {
        seal.apply(&mut tx).await?;
    }
    tx.commit().await?;
    for (name, key) in &files {
        if let Some(key) = key {
            if let Err(e) = store.delete(key).await {
                tracing::warn!(error = %e, "a removed report's file stays in the store");
            }
        } else if let Some(file) = name
            .as_deref()
            .and_then(|n| crate::reports::file_in(reports_dir, n))
        {
            let _ = std::fs::remove_file(file);
        }
    }
    for (class, rows) in removed {
        tracing::info!(class, rows, "removed past retention");
    }
    Ok(archived)
}

/// An archived day of raw events (`event_archives`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ArchiveRow {
    pub day: NaiveDate,
    /// Where it is, for people (the store's URL with the key, or the local
    /// file of a day archived before the store).
    pub path: String,
    /// Its key in the store; `None` until `hxjobs storage migrate`.
    pub storage_key: Option<String>,
    pub rows: i64,
    pub bytes: i64,
    pub archived_at: DateTime<Utc>,
    pub restored_at: Option<DateTime<Utc>>,
}

/// Archived days, newest first.
pub async fn archives(pool: &PgPool, limit: i64) -> Result<Vec<ArchiveRow>, sqlx::Error> {
    sqlx::query_as!(
        ArchiveRow,
        "SELECT day, path, storage_key, rows, bytes, archived_at, restored_at FROM event_archives
         ORDER BY day DESC LIMIT $1",
        limit,
    )
    .fetch_all(pool)
    .await
}
