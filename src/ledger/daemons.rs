//! The daemons sharing the database (`daemons`): each says it is alive at
//! every scheduler pass; the console lists them. Its statements are
//! checked against the schema when hxjobs compiles (`scripts/sqlx-prepare.sh`).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

/// A daemon as last seen.
#[derive(Debug, Clone, Serialize)]
pub struct DaemonRow {
    pub worker: String,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    pub stopped_at: Option<DateTime<Utc>>,
    pub version: String,
    pub jobs: i32,
    pub running_runs: i32,
    /// Seconds since its last heartbeat.
    pub age_secs: f64,
}

/// Records that `worker` is alive, with what it runs.
pub async fn beat(
    pool: &PgPool,
    worker: &str,
    jobs: usize,
    running: usize,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO daemons (worker, version, jobs, running_runs) VALUES ($1, $2, $3, $4)
         ON CONFLICT (worker) DO UPDATE SET heartbeat_at = now(), stopped_at = NULL,
             version = $2, jobs = $3, running_runs = $4",
        worker,
        env!("CARGO_PKG_VERSION"),
        i32::try_from(jobs).unwrap_or(i32::MAX),
        i32::try_from(running).unwrap_or(i32::MAX),
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Records that `worker` stopped cleanly.
pub async fn stopped(pool: &PgPool, worker: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE daemons SET stopped_at = now(), running_runs = 0 WHERE worker = $1",
        worker
    )
    .execute(pool)
    .await?;
    sqlx::query!("DELETE FROM daemon_jobs WHERE worker = $1", worker)
        .execute(pool)
        .await?;
    Ok(())
}

/// A job as one live daemon has it loaded.
#[derive(Debug, Clone, Serialize)]
pub struct JobVersion {
    pub worker: String,
    pub job: String,
    pub version: String,
    pub file: String,
    pub loaded_at: DateTime<Utc>,
}

/// Replaces what `worker` has loaded (after its heartbeat row exists).
pub async fn record_jobs(
    pool: &PgPool,
    worker: &str,
    jobs: &[JobVersion],
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query!("DELETE FROM daemon_jobs WHERE worker = $1", worker)
        .execute(&mut *tx)
        .await?;
    let names: Vec<&str> = jobs.iter().map(|j| j.job.as_str()).collect();
    let versions: Vec<&str> = jobs.iter().map(|j| j.version.as_str()).collect();
    let files: Vec<&str> = jobs.iter().map(|j| j.file.as_str()).collect();
    let ats: Vec<DateTime<Utc>> = jobs.iter().map(|j| j.loaded_at).collect();
    sqlx::query!(
        "INSERT INTO daemon_jobs (worker, job, version, file, loaded_at)
         SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[], $5::timestamptz[])",
        worker,
        &names as &[&str],
        &versions as &[&str],
        &files as &[&str],
        &ats,
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// What every live daemon (heartbeat within `stale_secs`) has loaded.
pub async fn job_versions(pool: &PgPool, stale_secs: u64) -> Result<Vec<JobVersion>, sqlx::Error> {
    sqlx::query_as!(
        JobVersion,
        "SELECT j.worker, j.job, j.version, j.file, j.loaded_at
         FROM daemon_jobs j JOIN daemons d ON d.worker = j.worker
         WHERE d.stopped_at IS NULL AND d.heartbeat_at > now() - make_interval(secs => $1)
         ORDER BY j.job, j.worker",
        stale_secs as f64
    )
    .fetch_all(pool)
    .await
}

/// The note on a queued run whose job no live daemon has loaded.
pub const NOT_LOADED: &str = "no live daemon has this job loaded";

/// Notes queued runs whose job no live daemon has loaded (and takes the
/// note back once one has).
pub async fn note_unloaded(pool: &PgPool, stale_secs: u64) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "WITH live AS (SELECT DISTINCT j.job FROM daemon_jobs j JOIN daemons d ON d.worker = j.worker
                       WHERE d.stopped_at IS NULL
                         AND d.heartbeat_at > now() - make_interval(secs => $1))
         UPDATE job_runs r
         SET error = CASE WHEN r.job IN (SELECT job FROM live) THEN NULL ELSE $2 END
         WHERE r.state = 'queued'
           AND ((r.error IS NULL AND r.job NOT IN (SELECT job FROM live))
                OR (r.error = $2 AND r.job IN (SELECT job FROM live)))",
        stale_secs as f64,
        NOT_LOADED
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Daemons seen in the last day, the newest heartbeat first.
pub async fn list(pool: &PgPool) -> Result<Vec<DaemonRow>, sqlx::Error> {
    sqlx::query_as!(
        DaemonRow,
        r#"SELECT worker, started_at, heartbeat_at, stopped_at, version, jobs, running_runs,
                extract(epoch FROM now() - heartbeat_at)::float8 AS "age_secs!"
         FROM daemons WHERE heartbeat_at > now() - interval '1 day'
         ORDER BY heartbeat_at DESC"#
    )
    .fetch_all(pool)
    .await
}
