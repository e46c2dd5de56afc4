//! Partition leases in PostgreSQL: which worker ingests which partition.
//!
//! Each row of `consumer_offsets` is also its partition's lease (`owner`,
//! `epoch`, `lease_expires_at`). A worker joins with a session of its own
//! (`ingest_workers` names its backend), claims free or lost leases with
//! `SKIP LOCKED` (each claim raises the epoch) and renews what it holds at
//! every beat. A lease is lost when it expires or at once when its owner's
//! session ends (the process died). A batch commits only under the epoch
//! its worker still owns ([`super::writer`]), so a worker that lost a
//! partition cannot store anything more of it. Its statements are checked
//! against the schema when hxjobs compiles.

use std::time::Duration;

use sqlx::{PgConnection, PgPool};

use super::Error;

/// How a member takes part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Shares the partitions with the other continuous workers.
    Continuous,
    /// Takes whatever is free for one drain.
    Drain,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Continuous => "continuous",
            Mode::Drain => "drain",
        }
    }
}

/// A partition this worker owns under `epoch`, stored up to `next`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owned {
    pub topic: String,
    pub partition: i32,
    pub epoch: i64,
    pub next: i64,
}

/// What one beat saw.
#[derive(Debug, Clone)]
pub struct Beat {
    /// Continuous workers present (this one included when continuous).
    pub workers: i64,
    /// Partitions of the event topics.
    pub partitions: i64,
    /// What this worker still owns, renewed.
    pub owned: Vec<Owned>,
}

impl Beat {
    /// The most partitions one continuous worker should hold.
    pub fn share(&self) -> usize {
        share(self.partitions, self.workers)
    }
}

/// What a pulse saw.
#[derive(Debug, Clone, Copy)]
pub struct Pulse {
    pub workers: i64,
    pub partitions: i64,
    pub claimable: i64,
}

impl Pulse {
    /// Whether a worker holding `owned` partitions should beat now: it holds
    /// more than its share, or less while some are claimable.
    pub fn unsettled(&self, owned: usize) -> bool {
        let share = share(self.partitions, self.workers);
        owned > share || (owned < share && self.claimable > 0)
    }
}

fn share(partitions: i64, workers: i64) -> usize {
    let workers = workers.max(1);
    ((partitions + workers - 1) / workers).max(0) as usize
}

/// A checked statement with `claimable` between `head` and `tail`: whether
/// the lease of `consumer_offsets c` may be claimed. It is when nobody holds
/// it, it expired, or its owner's PostgreSQL session is gone.
macro_rules! with_claimable {
    ($head:literal, $tail:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query!(
            $head
                + "(c.owner IS NULL OR c.lease_expires_at < now() OR NOT EXISTS (
                       SELECT 1 FROM ingest_workers w
                       JOIN pg_stat_activity a
                         ON a.pid = w.backend_pid AND a.backend_start = w.backend_start
                       WHERE w.consumer_group = c.consumer_group AND w.worker = c.owner))"
                + $tail
            $(, $arg)*
        )
    };
}

/// One worker's membership, on a connection of its own that stays open as
/// long as the worker lives.
pub struct Member {
    conn: PgConnection,
    pub group: String,
    pub worker: String,
    topics: Vec<String>,
    lease_secs: f64,
}

impl Member {
    /// Joins `group` as `worker`, holding one connection for its presence.
    pub async fn join(
        pool: &PgPool,
        group: &str,
        worker: &str,
        mode: Mode,
        topics: Vec<String>,
        lease: Duration,
    ) -> Result<Member, Error> {
        let mut conn = pool.acquire().await?.detach();
        sqlx::query!(
            "INSERT INTO ingest_workers (consumer_group, worker, mode, backend_pid, backend_start)
             SELECT $1, $2, $3, pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()
             ON CONFLICT (consumer_group, worker) DO UPDATE
             SET mode = EXCLUDED.mode, backend_pid = EXCLUDED.backend_pid,
                 backend_start = EXCLUDED.backend_start, started_at = now(), beat_at = now()",
            group,
            worker,
            mode.as_str(),
        )
        .execute(&mut conn)
        .await?;
        // Leases still held under this name belong to an earlier session of
        // this worker (one whose connection PostgreSQL dropped): that session
        // is over and read nothing more, so they are given back and claimed
        // again under new epochs. Kept, they would look live (this name has
        // a session again) while nothing reads them.
        give_back(&mut conn, group, worker).await?;
        Ok(Member {
            conn,
            group: group.to_string(),
            worker: worker.to_string(),
            topics,
            lease_secs: lease.as_secs_f64().max(1.0),
        })
    }

    /// Renews this worker's presence and leases; forgets workers whose
    /// session is gone.
    pub async fn beat(&mut self) -> Result<Beat, Error> {
        sqlx::query!(
            "UPDATE ingest_workers SET beat_at = now() WHERE consumer_group = $1 AND worker = $2",
            self.group,
            self.worker,
        )
        .execute(&mut self.conn)
        .await?;
        sqlx::query!(
            "DELETE FROM ingest_workers w WHERE w.consumer_group = $1 AND w.worker <> $2
             AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a
                             WHERE a.pid = w.backend_pid AND a.backend_start = w.backend_start)",
            self.group,
            self.worker,
        )
        .execute(&mut self.conn)
        .await?;
        let owned: Vec<Owned> = sqlx::query_as!(
            Owned,
            r#"UPDATE consumer_offsets
               SET lease_expires_at = now() + make_interval(secs => $3)
               WHERE consumer_group = $1 AND owner = $2 AND topic = ANY($4)
               RETURNING topic, partition, epoch, next_offset AS "next""#,
            self.group,
            self.worker,
            self.lease_secs,
            &self.topics,
        )
        .fetch_all(&mut self.conn)
        .await?;
        let seen = self.pulse().await?;
        Ok(Beat {
            workers: seen.workers,
            partitions: seen.partitions,
            owned,
        })
    }

    /// A cheap look between beats: the continuous workers present, the
    /// partitions, and how many of them are claimable now.
    pub async fn pulse(&mut self) -> Result<Pulse, Error> {
        let seen = with_claimable!(
            r#"SELECT (SELECT count(*) FROM ingest_workers w
                       JOIN pg_stat_activity a
                         ON a.pid = w.backend_pid AND a.backend_start = w.backend_start
                       WHERE w.consumer_group = $1 AND w.mode = 'continuous'
                         AND w.beat_at > now() - make_interval(secs => $2)) AS "workers!",
                      (SELECT count(*) FROM consumer_offsets
                       WHERE consumer_group = $1 AND topic = ANY($3)) AS "partitions!",
                      (SELECT count(*) FROM consumer_offsets c
                       WHERE c.consumer_group = $1 AND c.topic = ANY($3) AND "#,
            r#") AS "claimable!""#,
            self.group,
            self.lease_secs,
            &self.topics,
        )
        .fetch_one(&mut self.conn)
        .await?;
        Ok(Pulse {
            workers: seen.workers,
            partitions: seen.partitions,
            claimable: seen.claimable,
        })
    }

    /// Claims up to `want` claimable partitions, each under a new epoch.
    pub async fn claim(&mut self, want: usize) -> Result<Vec<Owned>, Error> {
        if want == 0 {
            return Ok(Vec::new());
        }
        let claimed = with_claimable!(
            "UPDATE consumer_offsets o
             SET owner = $2, epoch = o.epoch + 1, acquired_at = now(),
                 lease_expires_at = now() + make_interval(secs => $3)
             FROM (SELECT c.topic, c.partition FROM consumer_offsets c
                   WHERE c.consumer_group = $1 AND c.topic = ANY($4) AND ",
            "
                   ORDER BY c.partition, c.topic
                   LIMIT $5 FOR UPDATE OF c SKIP LOCKED) f
             WHERE o.consumer_group = $1 AND o.topic = f.topic AND o.partition = f.partition
             RETURNING o.topic, o.partition, o.epoch, o.next_offset AS next",
            self.group,
            self.worker,
            self.lease_secs,
            &self.topics,
            want.min(i64::MAX as usize) as i64,
        )
        .fetch_all(&mut self.conn)
        .await?;
        Ok(claimed
            .into_iter()
            .map(|r| Owned {
                topic: r.topic,
                partition: r.partition,
                epoch: r.epoch,
                next: r.next,
            })
            .collect())
    }

    /// Gives back partitions (only those still held under the given epochs).
    pub async fn release(&mut self, parts: &[(String, i32, i64)]) -> Result<(), Error> {
        if parts.is_empty() {
            return Ok(());
        }
        let topics: Vec<&str> = parts.iter().map(|p| p.0.as_str()).collect();
        let partitions: Vec<i32> = parts.iter().map(|p| p.1).collect();
        let epochs: Vec<i64> = parts.iter().map(|p| p.2).collect();
        sqlx::query!(
            "UPDATE consumer_offsets o SET owner = NULL, lease_expires_at = NULL
             FROM unnest($3::text[], $4::int[], $5::bigint[]) AS u(topic, partition, epoch)
             WHERE o.consumer_group = $1 AND o.owner = $2
               AND o.topic = u.topic AND o.partition = u.partition AND o.epoch = u.epoch",
            self.group,
            self.worker,
            &topics as &[&str],
            &partitions,
            &epochs,
        )
        .execute(&mut self.conn)
        .await?;
        Ok(())
    }

    /// Releases everything and leaves the group.
    pub async fn leave(mut self) -> Result<(), Error> {
        give_back(&mut self.conn, &self.group, &self.worker).await?;
        sqlx::query!(
            "DELETE FROM ingest_workers WHERE consumer_group = $1 AND worker = $2",
            self.group,
            self.worker,
        )
        .execute(&mut self.conn)
        .await?;
        Ok(())
    }
}

/// Gives back every lease `worker` holds in `group`.
async fn give_back(conn: &mut PgConnection, group: &str, worker: &str) -> Result<(), Error> {
    sqlx::query!(
        "UPDATE consumer_offsets SET owner = NULL, lease_expires_at = NULL
         WHERE consumer_group = $1 AND owner = $2",
        group,
        worker,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Makes sure every partition has its row, starting at `start` when new.
pub async fn register(
    pool: &PgPool,
    group: &str,
    parts: &[(String, i32, i64)],
) -> Result<(), Error> {
    let topics: Vec<&str> = parts.iter().map(|p| p.0.as_str()).collect();
    let partitions: Vec<i32> = parts.iter().map(|p| p.1).collect();
    let starts: Vec<i64> = parts.iter().map(|p| p.2).collect();
    sqlx::query!(
        "INSERT INTO consumer_offsets (consumer_group, topic, partition, next_offset)
         SELECT $1, * FROM unnest($2::text[], $3::int[], $4::bigint[])
         ON CONFLICT DO NOTHING",
        group,
        &topics as &[&str],
        &partitions,
        &starts,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Records that each partition's position passed the broker's end read at
/// a time (its marks: `(topic, partition, high, read_at)`), keeping the
/// newest reading for lag. Returns each partition's `caught_up_through`.
pub async fn record_marks(
    pool: &PgPool,
    group: &str,
    marks: &[(String, i32, i64, chrono::DateTime<chrono::Utc>)],
) -> Result<Vec<(String, i32, Option<chrono::DateTime<chrono::Utc>>)>, Error> {
    if marks.is_empty() {
        return Ok(Vec::new());
    }
    let topics: Vec<&str> = marks.iter().map(|m| m.0.as_str()).collect();
    let partitions: Vec<i32> = marks.iter().map(|m| m.1).collect();
    let highs: Vec<i64> = marks.iter().map(|m| m.2).collect();
    let ats: Vec<chrono::DateTime<chrono::Utc>> = marks.iter().map(|m| m.3).collect();
    let rows = sqlx::query!(
        "WITH m AS (SELECT * FROM unnest($2::text[], $3::int[], $4::bigint[], $5::timestamptz[])
                    AS m(topic, partition, high, at)),
         s AS (SELECT o.topic, o.partition,
                      max(m.at) FILTER (WHERE o.next_offset >= m.high) AS through,
                      (array_agg(m.high ORDER BY m.at DESC))[1] AS high,
                      max(m.at) AS read_at
               FROM consumer_offsets o JOIN m ON m.topic = o.topic AND m.partition = o.partition
               WHERE o.consumer_group = $1
               GROUP BY o.topic, o.partition)
         UPDATE consumer_offsets o
         SET caught_up_through = GREATEST(o.caught_up_through, s.through),
             high_watermark = s.high, high_read_at = s.read_at
         FROM s WHERE o.consumer_group = $1 AND o.topic = s.topic AND o.partition = s.partition
         RETURNING o.topic, o.partition, o.caught_up_through",
        group,
        &topics as &[&str],
        &partitions,
        &highs,
        &ats,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.topic, r.partition, r.caught_up_through))
        .collect())
}

/// Everything the broker held at the returned time is stored, over every
/// partition of `topics`; `None` while some partition never caught up.
pub async fn caught_up_through(
    pool: &PgPool,
    group: &str,
    topics: &[&str],
) -> Result<Option<chrono::DateTime<chrono::Utc>>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT CASE WHEN count(*) > 0 AND bool_and(caught_up_through IS NOT NULL)
                     THEN min(caught_up_through) END
         FROM consumer_offsets WHERE consumer_group = $1 AND topic = ANY($2)",
        group,
        topics as &[&str],
    )
    .fetch_one(pool)
    .await
}

/// One partition's ingest as the ledger knows it (`hxjobs status`, `/health`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct PartitionView {
    pub topic: String,
    pub partition: i32,
    /// The worker holding a live lease; `None` while nobody does.
    pub owner: Option<String>,
    pub epoch: i64,
    /// The next offset to store.
    pub position: i64,
    /// The broker's end minus the position, as the owner last read it
    /// (within three leases); `None` when no recent reading exists.
    pub lag: Option<i64>,
    pub lag_read_at: Option<chrono::DateTime<chrono::Utc>>,
    pub last_commit_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Seconds since the last commit that moved this partition.
    pub last_commit_age_secs: Option<f64>,
    pub caught_up_through: Option<chrono::DateTime<chrono::Utc>>,
    /// Data on the broker past the position, and the position unmoved for
    /// `ingest.stalled_after_secs` (set by the API's health check).
    pub stalled: bool,
}

/// Every partition of `topics` with its owner, position, lag and last commit.
pub async fn partitions(
    pool: &PgPool,
    group: &str,
    topics: &[String],
    lease: Duration,
) -> Result<Vec<PartitionView>, sqlx::Error> {
    let rows = with_claimable!(
        r#"SELECT c.topic, c.partition,
                  CASE WHEN NOT "#,
        r#" THEN c.owner END AS owner,
                  c.epoch, c.next_offset AS position,
                  CASE WHEN c.high_read_at > now() - make_interval(secs => $3::float8 * 3)
                       THEN GREATEST(c.high_watermark - c.next_offset, 0) END AS lag,
                  c.high_read_at AS lag_read_at, c.last_commit_at,
                  round(extract(epoch FROM now() - c.last_commit_at)::numeric, 1)::float8
                      AS last_commit_age_secs,
                  c.caught_up_through
           FROM consumer_offsets c
           WHERE c.consumer_group = $1 AND c.topic = ANY($2)
           ORDER BY c.topic, c.partition"#,
        group,
        topics,
        lease.as_secs_f64(),
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| PartitionView {
            topic: r.topic,
            partition: r.partition,
            owner: r.owner,
            epoch: r.epoch,
            position: r.position,
            lag: r.lag,
            lag_read_at: r.lag_read_at,
            last_commit_at: r.last_commit_at,
            last_commit_age_secs: r.last_commit_age_secs,
            caught_up_through: r.caught_up_through,
            stalled: false,
        })
        .collect())
}
