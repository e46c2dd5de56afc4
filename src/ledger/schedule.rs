//! A job's schedule cursor (`job_schedule`), its skips and the claiming of
//! its queued runs, all under the cursor row's lock: one daemon at a time
//! turns a job's occurrences into runs or claims its runs. Its statements
//! are checked against the schema when hxjobs compiles.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};

use super::{claimed, in_order, Claimed, RunType};
use crate::interval::Interval;

/// Occurrences the catch-up policy did not run: a contiguous range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skipped {
    pub first_interval_start: DateTime<Utc>,
    pub last_interval_start: DateTime<Utc>,
    pub occurrences: i64,
}

/// A transaction holding one job's cursor row lock. Dropped without
/// [`JobLock::commit`], everything it did is rolled back.
pub struct JobLock {
    tx: Transaction<'static, Postgres>,
    job: String,
    /// The newest occurrence already turned into runs or skips.
    pub last_fire: Option<DateTime<Utc>>,
    /// Paused: no new scheduled runs, no claims.
    pub paused: bool,
    /// The oldest interval start a completeness trigger has not seen queued.
    pub complete_from: Option<DateTime<Utc>>,
}

impl JobLock {
    /// Takes `job`'s cursor lock (creating its row the first time).
    pub async fn take(pool: &PgPool, job: &str) -> Result<JobLock, sqlx::Error> {
        sqlx::query!(
            "INSERT INTO job_schedule (job) VALUES ($1) ON CONFLICT DO NOTHING",
            job
        )
        .execute(pool)
        .await?;
        let mut tx = pool.begin().await?;
        let row = sqlx::query!(
            "SELECT last_fire, paused, complete_from FROM job_schedule WHERE job = $1 FOR UPDATE",
            job
        )
        .fetch_one(&mut *tx)
        .await?;
        Ok(JobLock {
            tx,
            job: job.to_string(),
            last_fire: row.last_fire,
            paused: row.paused,
            complete_from: row.complete_from,
        })
    }

    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }

    /// Queues a scheduled run per `(fire time, interval)`; returns the
    /// intervals that had none yet, oldest first.
    pub async fn enqueue(
        &mut self,
        runs: &[(DateTime<Utc>, Interval)],
    ) -> Result<Vec<Interval>, sqlx::Error> {
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        let fires: Vec<DateTime<Utc>> = runs.iter().map(|(f, _)| *f).collect();
        let starts: Vec<DateTime<Utc>> = runs.iter().map(|(_, i)| i.start).collect();
        let ends: Vec<DateTime<Utc>> = runs.iter().map(|(_, i)| i.end).collect();
        let rows = sqlx::query!(
            "INSERT INTO job_runs (job, run_type, scheduled_for, interval_start, interval_end)
             SELECT $1, 'scheduled', * FROM unnest($2::timestamptz[], $3::timestamptz[], $4::timestamptz[])
             ON CONFLICT DO NOTHING
             RETURNING interval_start, interval_end",
            self.job,
            &fires,
            &starts,
            &ends,
        )
        .fetch_all(&mut *self.tx)
        .await?;
        let mut created: Vec<Interval> = rows
            .into_iter()
            .map(|r| Interval {
                start: r.interval_start,
                end: r.interval_end,
            })
            .collect();
        created.sort();
        Ok(created)
    }

    /// Records occurrences the catch-up `policy` skipped.
    pub async fn record_skip(&mut self, policy: &str, s: Skipped) -> Result<(), sqlx::Error> {
        sqlx::query!(
            "INSERT INTO schedule_skips (job, policy, first_interval_start, last_interval_start, occurrences)
             VALUES ($1, $2, $3, $4, $5)",
            self.job,
            policy,
            s.first_interval_start,
            s.last_interval_start,
            s.occurrences,
        )
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Moves the cursor to `fire`.
    pub async fn advance(&mut self, fire: DateTime<Utc>) -> Result<(), sqlx::Error> {
        sqlx::query!(
            "UPDATE job_schedule SET last_fire = $2, updated_at = now() WHERE job = $1",
            self.job,
            fire,
        )
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Scheduled and manual runs of the job running now (on any worker).
    pub async fn active(&mut self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar!(
            r#"SELECT count(*) AS "running!" FROM job_runs
             WHERE job = $1 AND state = 'running' AND run_type <> 'backfill'"#,
            self.job
        )
        .fetch_one(&mut *self.tx)
        .await
    }

    /// Up to `limit` queued scheduled or manual runs (and cleared backfill
    /// runs), oldest interval first, locked (others skip them) until the
    /// lock ends.
    pub async fn queued(&mut self, limit: i64) -> Result<Vec<(i64, Interval)>, sqlx::Error> {
        let rows = sqlx::query!(
            "SELECT id, interval_start, interval_end FROM job_runs
             WHERE job = $1 AND state = 'queued'
               AND (run_type <> 'backfill' OR cleared_at IS NOT NULL)
             ORDER BY interval_start, id
             LIMIT $2
             FOR UPDATE SKIP LOCKED",
            self.job,
            limit,
        )
        .fetch_all(&mut *self.tx)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let interval = Interval {
                    start: r.interval_start,
                    end: r.interval_end,
                };
                (r.id, interval)
            })
            .collect())
    }

    /// The lock's transaction, for reads that must see what it wrote.
    pub fn conn(&mut self) -> &mut sqlx::PgConnection {
        &mut self.tx
    }

    /// Moves the completeness trigger's cursor to `start`.
    pub async fn advance_complete(&mut self, start: DateTime<Utc>) -> Result<(), sqlx::Error> {
        sqlx::query!(
            "UPDATE job_schedule SET complete_from = $2, updated_at = now() WHERE job = $1",
            self.job,
            start,
        )
        .execute(&mut *self.tx)
        .await?;
        self.complete_from = Some(start);
        Ok(())
    }

    /// Starts of this job's intervals in `[from, to)` that have a scheduled run.
    pub async fn scheduled_starts(
        &mut self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<DateTime<Utc>>, sqlx::Error> {
        sqlx::query_scalar!(
            "SELECT interval_start FROM job_runs
             WHERE job = $1 AND run_type = 'scheduled'
               AND interval_start >= $2 AND interval_start < $3",
            self.job,
            from,
            to,
        )
        .fetch_all(&mut *self.tx)
        .await
    }

    /// Says on a queued run why it has not started (written only when it changes).
    pub async fn note_waiting(&mut self, run_id: i64, note: &str) -> Result<(), sqlx::Error> {
        sqlx::query!(
            "UPDATE job_runs SET error = $2 WHERE id = $1 AND error IS DISTINCT FROM $2",
            run_id,
            note,
        )
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Claims the queued runs `ids` for `worker`.
    pub async fn claim(&mut self, ids: &[i64], worker: &str) -> Result<Vec<Claimed>, sqlx::Error> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query!(
            r#"UPDATE job_runs SET state = 'running', worker = $2, started_at = now(),
                    heartbeat_at = now(), attempts = attempts + 1, error = NULL
             WHERE id = ANY($1) AND state = 'queued'
             RETURNING id, run_type AS "run_type: RunType", interval_start, interval_end,
                       attempts, params"#,
            ids,
            worker,
        )
        .fetch_all(&mut *self.tx)
        .await?;
        Ok(in_order(rows.into_iter().map(|r| claimed!(r)).collect()))
    }
}

/// Distinct intervals of `job` in `[from, to)` with a succeeded run.
pub async fn succeeded_intervals(
    conn: impl sqlx::PgExecutor<'_>,
    job: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT count(DISTINCT interval_start) AS "intervals!" FROM job_runs
         WHERE job = $1 AND state = 'success'
           AND interval_start >= $2 AND interval_end <= $3"#,
        job,
        from,
        to,
    )
    .fetch_one(conn)
    .await
}

/// Each job's completeness cursor (`complete_from`), for jobs that have one.
pub async fn complete_cursors(
    pool: &PgPool,
    jobs: &[String],
) -> Result<Vec<(String, DateTime<Utc>)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT job, complete_from AS "complete_from!" FROM job_schedule
         WHERE job = ANY($1) AND complete_from IS NOT NULL"#,
        jobs,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| (r.job, r.complete_from)).collect())
}
