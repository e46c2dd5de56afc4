//! Job versions: every version of a job file seen (its text, the first
//! 12 hex digits of its SHA-256), kept when first seen; each run records
//! the version it was claimed with, each task attempt the version it ran
//! with (migration 0030).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::Fence;
use crate::dag::Job;

/// Records that the fenced run runs with `job`'s loaded version (kept in
/// `job_versions`, first seen by the run's worker, if new). False: the
/// claim is gone.
pub async fn stamp(pool: &PgPool, fence: Fence, job: &Job) -> Result<bool, sqlx::Error> {
    let stamped = sqlx::query_scalar!(
        r#"WITH r AS (UPDATE job_runs SET job_version = $4
                      WHERE id = $1 AND attempts = $2 AND state = 'running' RETURNING worker),
              v AS (INSERT INTO job_versions (job, version, definition, file, first_seen_by)
                    SELECT $3, $4, $5, $6, coalesce(worker, '') FROM r
                    ON CONFLICT DO NOTHING)
         SELECT count(*) AS "n!" FROM r"#,
        fence.run_id,
        fence.claim,
        job.name,
        job.version,
        &*job.source,
        job.file.display().to_string(),
    )
    .fetch_one(pool)
    .await?;
    Ok(stamped > 0)
}

/// Keeps the versions of `jobs` not seen before (a daemon's load).
pub async fn remember(
    pool: &PgPool,
    jobs: &[std::sync::Arc<Job>],
    by: &str,
) -> Result<(), sqlx::Error> {
    let names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
    let versions: Vec<&str> = jobs.iter().map(|j| j.version.as_str()).collect();
    let texts: Vec<&str> = jobs.iter().map(|j| &*j.source).collect();
    let files: Vec<String> = jobs.iter().map(|j| j.file.display().to_string()).collect();
    sqlx::query!(
        "INSERT INTO job_versions (job, version, definition, file, first_seen_by)
         SELECT n, v, d, f, $5 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS x(n, v, d, f)
         ON CONFLICT DO NOTHING",
        &names as &[&str],
        &versions as &[&str],
        &texts as &[&str],
        &files,
        by,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// One version of a job, without its text.
#[derive(Debug, Clone, Serialize)]
pub struct Version {
    pub version: String,
    pub file: String,
    pub first_seen_at: DateTime<Utc>,
    pub first_seen_by: String,
    /// Runs last claimed with it.
    pub runs: i64,
    pub last_run_at: Option<DateTime<Utc>>,
}

/// A job's versions, the newest first.
pub async fn of_job(pool: &PgPool, job: &str) -> Result<Vec<Version>, sqlx::Error> {
    sqlx::query_as!(
        Version,
        r#"SELECT v.version, v.file, v.first_seen_at, v.first_seen_by,
                  count(r.id) AS "runs!", max(r.started_at) AS last_run_at
           FROM job_versions v LEFT JOIN job_runs r ON r.job = v.job AND r.job_version = v.version
           WHERE v.job = $1
           GROUP BY v.version, v.file, v.first_seen_at, v.first_seen_by
           ORDER BY v.first_seen_at DESC, v.version"#,
        job,
    )
    .fetch_all(pool)
    .await
}

/// The text of one version.
pub async fn text(pool: &PgPool, job: &str, version: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT definition FROM job_versions WHERE job = $1 AND version = $2",
        job,
        version,
    )
    .fetch_optional(pool)
    .await
}
