//! Where generated reports are kept: their rows in `reports` and their
//! files in the object store (`crate::storage`, key `reports/<name>`). Its statements are checked against the
//! schema when hxjobs compiles.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

use super::{Error, Format};
use crate::interval::Interval;

/// A row of `reports`.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub id: i64,
    pub report_type: String,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub format: String,
    pub status: String,
    /// The file's name (its key in the store is `reports/<name>`).
    pub path: Option<String>,
    /// Its key in the object store; `None` for a file still in the old
    /// local `reports.output_dir` (`hxjobs storage migrate` moves it).
    pub storage_key: Option<String>,
    pub size: Option<i64>,
    pub sha256: Option<String>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Set when the period had not ended: the report covers up to here.
    pub partial_through: Option<DateTime<Utc>>,
    /// A later report of the same period, built from newer data.
    pub superseded_by: Option<i64>,
    /// What generating it noted (e.g. a period start snapped); not stored.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// [`Record`]s from `reports` with the rest of the statement and its
/// arguments.
macro_rules! select_records {
    ($rest:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            Record,
            r#"SELECT id, report_type, period_start, period_end, format, status, path,
                      storage_key, size, sha256, error, created_at, finished_at, partial_through, superseded_by,
                      ARRAY[]::text[] AS "notes!"
               FROM reports "# + $rest
            $(, $arg)*
        )
    };
}

/// A generation under way: its row, `running`.
pub async fn start(
    pool: &PgPool,
    report_type: &str,
    period: Interval,
    format: Format,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        "INSERT INTO reports (report_type, period_start, period_end, format, status)
         VALUES ($1, $2, $3, $4, 'running') RETURNING id",
        report_type,
        period.start,
        period.end,
        format.as_str(),
    )
    .fetch_one(pool)
    .await
}

/// What a finished generation wrote.
pub struct Written {
    /// The file's name.
    pub name: String,
    /// Its key in the object store.
    pub key: String,
    pub size: i64,
    pub sha256: String,
    /// The newest rollup sequence number its figures read.
    pub data_seq: i64,
    pub partial_through: Option<DateTime<Utc>>,
}

/// Records report `id` as done, and earlier reports of its period built
/// from older data as superseded by it, in the caller's transaction.
pub async fn finish(
    conn: &mut PgConnection,
    id: i64,
    written: &Written,
) -> Result<Record, sqlx::Error> {
    let record = sqlx::query_as!(
        Record,
        r#"UPDATE reports SET status = 'done', path = $2, size = $3, sha256 = $4,
                  data_seq = $5, partial_through = $6, storage_key = $7, finished_at = now()
           WHERE id = $1
           RETURNING id, report_type, period_start, period_end, format, status, path,
                     storage_key, size, sha256, error, created_at, finished_at, partial_through, superseded_by,
                     ARRAY[]::text[] AS "notes!""#,
        id,
        written.name,
        written.size,
        written.sha256,
        written.data_seq,
        written.partial_through,
        written.key,
    )
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query!(
        "UPDATE reports SET superseded_by = $1
         WHERE report_type = $2 AND period_start = $3 AND format = $4 AND id < $1
           AND status = 'done' AND superseded_by IS NULL
           AND (data_seq IS NULL OR data_seq < $5 OR partial_through IS NOT NULL)",
        id,
        record.report_type,
        record.period_start,
        record.format,
        written.data_seq,
    )
    .execute(&mut *conn)
    .await?;
    Ok(record)
}

/// Records report `id` as failed, and why.
pub async fn fail(pool: &PgPool, id: i64, error: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE reports SET status = 'failed', error = $2, finished_at = now() WHERE id = $1",
        id,
        error,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// The types and formats of the period's reports that are done and not
/// superseded.
pub async fn current_of(
    pool: &PgPool,
    period: Interval,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    Ok(sqlx::query!(
        "SELECT DISTINCT report_type, format FROM reports
         WHERE period_start = $1 AND period_end = $2 AND status = 'done' AND superseded_by IS NULL
         ORDER BY 1, 2",
        period.start,
        period.end,
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|r| (r.report_type, r.format))
    .collect())
}

pub async fn get(pool: &PgPool, id: i64) -> Result<Option<Record>, Error> {
    Ok(select_records!("WHERE id = $1", id)
        .fetch_optional(pool)
        .await?)
}

pub async fn list(
    pool: &PgPool,
    report_type: Option<&str>,
    limit: i64,
) -> Result<Vec<Record>, Error> {
    Ok(select_records!(
        "WHERE $1::text IS NULL OR report_type = $1 ORDER BY id DESC LIMIT $2",
        report_type,
        limit,
    )
    .fetch_all(pool)
    .await?)
}

/// Done reports whose file is still in the old local directory.
pub async fn local_only(pool: &PgPool) -> Result<Vec<Record>, Error> {
    Ok(select_records!(
        "WHERE status = 'done' AND storage_key IS NULL AND path IS NOT NULL ORDER BY id"
    )
    .fetch_all(pool)
    .await?)
}

/// Records that report `id`'s file is now at `key` in the store.
pub async fn moved(pool: &PgPool, id: i64, key: &str) -> Result<(), Error> {
    sqlx::query!("UPDATE reports SET storage_key = $2 WHERE id = $1", id, key)
        .execute(pool)
        .await?;
    Ok(())
}

/// The local file of a report written before the object store (or not
/// yet migrated), only if it lies inside `output_dir`.
pub fn file_of(output_dir: &Path, record: &Record) -> Option<PathBuf> {
    file_in(output_dir, record.path.as_deref()?)
}

/// `output_dir/name`, only if `name` is a plain file name there (no
/// separators, not hidden) and the existing file resolves inside it.
pub fn file_in(output_dir: &Path, name: &str) -> Option<PathBuf> {
    if name.is_empty()
        || name.contains(['/', '\\'])
        || name.starts_with('.')
        || Path::new(name).components().count() != 1
    {
        return None;
    }
    let dir = output_dir.canonicalize().ok()?;
    let file = dir.join(name).canonicalize().ok()?;
    file.starts_with(&dir).then_some(file)
}
