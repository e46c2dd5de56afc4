//! Writes one [`Batch`] in one PostgreSQL transaction: the consumer offsets
//! (compare-and-set under the worker's lease epochs, logged in
//! `ingest_commits`), the events (binary COPY), dead letters and gaps.
//! Either all of it is committed or none of it, so a crash at any instant
//! neither loses nor duplicates an event. Nothing here waits on the broker:
//! dead letters reach their topic afterwards through [`super::outbox`].

use std::collections::{BTreeMap, HashSet};

use chrono::NaiveDate;
use sqlx::pool::PoolConnection;
use sqlx::{Acquire, PgConnection, Postgres};

use super::batch::{Batch, TopicCounts};
use super::copy::EVENT_COLUMNS;
use super::Error;
use crate::rollup;

pub struct Writer {
    conn: PgConnection,
    group: String,
    /// The worker whose leases this writer commits under.
    worker: String,
    known_days: HashSet<NaiveDate>,
    staging_ready: bool,
}

/// What one committed batch did, per topic name.
pub type BatchOutcome = BTreeMap<String, TopicCounts>;

impl Writer {
    /// A writer for `worker` of `group` on a connection of its own (it
    /// leaves the pool and closes when the writer is dropped).
    pub fn new(conn: PoolConnection<Postgres>, group: &str, worker: &str) -> Writer {
        Writer {
            conn: conn.detach(),
            group: group.to_string(),
            worker: worker.to_string(),
            known_days: HashSet::new(),
            staging_ready: false,
        }
    }

    /// Makes sure each day of the batch has its partition. Runs outside the
    /// batch transaction: partitions are idempotent and harmless if unused.
    async fn ensure_partitions(&mut self, batch: &Batch) -> Result<(), Error> {
        for day in &batch.days {
            if self.known_days.contains(day) {
                continue;
            }
            sqlx::query!("SELECT hxjobs_ensure_event_partition($1)", day)
                .execute(&mut self.conn)
                .await?;
            self.known_days.insert(*day);
        }
        Ok(())
    }

    pub async fn write(&mut self, batch: Batch) -> Result<BatchOutcome, Error> {
        self.ensure_partitions(&batch).await?;
        let mut outcome: BatchOutcome = BTreeMap::new();
        let parts = batch.parts.clone();
        let topic_of = |idx: usize| parts.get(&idx).map(|p| p.topic.clone()).unwrap_or_default();
        let partition_of = |idx: usize| parts.get(&idx).map(|p| p.partition).unwrap_or_default();

        let mut tx = self.conn.begin().await?;

        // Offsets first, each only under the lease epoch this worker still
        // owns; every move is logged in ingest_commits. If another worker
        // took a partition or moved its offset, stop before any work.
        let mut topics = Vec::new();
        let mut partitions = Vec::new();
        let mut epochs = Vec::new();
        let mut prevs = Vec::new();
        let mut nexts = Vec::new();
        for (&idx, &(prev, next)) in &batch.advances {
            topics.push(topic_of(idx));
            partitions.push(partition_of(idx));
            epochs.push(parts.get(&idx).map(|p| p.epoch).unwrap_or(-1));
            prevs.push(prev);
            nexts.push(next);
        }
        let moved = sqlx::query_scalar!(
            r#"WITH moved AS (
                 UPDATE consumer_offsets o
                 SET next_offset = u.next, updated_at = now(), last_commit_at = now()
                 FROM unnest($3::text[], $4::int[], $5::bigint[], $6::bigint[], $7::bigint[])
                      AS u(topic, partition, epoch, prev, next)
                 WHERE o.consumer_group = $1 AND o.topic = u.topic AND o.partition = u.partition
                   AND o.owner = $2 AND o.epoch = u.epoch AND o.next_offset = u.prev
                 RETURNING o.topic, o.partition, u.epoch, u.prev, u.next),
             logged AS (
                 INSERT INTO ingest_commits
                     (consumer_group, topic, partition, epoch, worker, from_offset, to_offset)
                 SELECT $1, topic, partition, epoch, $2, prev, next FROM moved)
             SELECT count(*) AS "moved!" FROM moved"#,
            self.group,
            self.worker,
            &topics,
            &partitions,
            &epochs,
            &prevs,
            &nexts,
        )
        .fetch_one(&mut *tx)
        .await?;
        if moved != batch.advances.len() as i64 {
            return Err(Error::OffsetConflict(self.group.clone()));
        }

        // Events: straight COPY; on a duplicate identity, COPY to staging
        // and insert what is new.
        let Batch {
            rows,
            stage,
            rows_by_partition,
            batch_duplicates,
            dead,
            advances: _,
            gaps,
            ..
        } = batch;
        let total_rows = rows.rows();
        let stream = rows.finish();
        let mut inserted_by_topic: Option<BTreeMap<String, u64>> = None;
        if total_rows > 0 {
            let mut sp = tx.begin().await?;
            let fast = copy_in(&mut sp, "events", &stream).await;
            match fast {
                Ok(_) => {
                    sp.commit().await?;
                    rollup::stage::write(&mut tx, stage).await?;
                }
                Err(e) if is_unique_violation(&e) => {
                    sp.rollback().await?;
                    if !self.staging_ready {
                        sqlx::query(
                            "CREATE TEMP TABLE IF NOT EXISTS events_staging
                             (LIKE events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS",
                        )
                        .execute(&mut *tx)
                        .await?;
                        self.staging_ready = true;
                    }
                    copy_in(&mut tx, "events_staging", &stream).await?;
                    // What was new, with its rollup columns to stage.
                    let inserted: Vec<Inserted> = sqlx::query_as(&format!(
                        "INSERT INTO events SELECT * FROM events_staging
                             ON CONFLICT DO NOTHING
                             RETURNING kafka_topic, event_time, {}",
                        rollup::stage::RAW_COLUMNS
                    ))
                    .fetch_all(&mut *tx)
                    .await?;
                    sqlx::query("TRUNCATE events_staging")
                        .execute(&mut *tx)
                        .await?;
                    let mut by_topic: BTreeMap<String, u64> = BTreeMap::new();
                    let mut staged = rollup::stage::Staged::default();
                    for Inserted { kafka_topic, row } in inserted {
                        *by_topic.entry(kafka_topic).or_default() += 1;
                        staged.push_timed(row);
                    }
                    rollup::stage::write(&mut tx, staged).await?;
                    inserted_by_topic = Some(by_topic);
                }
                Err(e) => return Err(e.into()),
            }
        }

        let mut rows_by_topic: BTreeMap<String, u64> = BTreeMap::new();
        for (&idx, &n) in &rows_by_partition {
            *rows_by_topic.entry(topic_of(idx)).or_default() += n;
        }
        for (topic, rows) in &rows_by_topic {
            let stored = match &inserted_by_topic {
                Some(ins) => ins.get(topic).copied().unwrap_or(0),
                None => *rows,
            };
            let c = outcome.entry(topic.clone()).or_default();
            c.stored += stored;
            c.duplicates += rows - stored.min(*rows);
        }
        for (&idx, &n) in &batch_duplicates {
            outcome.entry(topic_of(idx)).or_default().duplicates += n;
        }

        if !dead.is_empty() {
            let mut t = Vec::new();
            let mut p = Vec::new();
            let mut o = Vec::new();
            let mut reason = Vec::new();
            let mut detail = Vec::new();
            let mut payload: Vec<Option<Vec<u8>>> = Vec::new();
            for d in &dead {
                t.push(topic_of(d.partition_idx));
                p.push(partition_of(d.partition_idx));
                o.push(d.offset);
                reason.push(d.rejection.reason.code());
                detail.push(d.rejection.detail.clone());
                payload.push(d.payload.clone());
            }
            // `payload` holds NULLs: bound unchecked (`as _`).
            sqlx::query!(
                "INSERT INTO dead_letters (kafka_topic, kafka_partition, kafka_offset, reason, detail, payload)
                 SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::text[], $5::text[], $6::bytea[])
                 ON CONFLICT (kafka_topic, kafka_partition, kafka_offset) DO NOTHING",
                &t,
                &p,
                &o,
                &reason as &[&str],
                &detail,
                &payload as _,
            )
            .execute(&mut *tx)
            .await?;
            for topic in t {
                outcome.entry(topic).or_default().dead_letters += 1;
            }
        }

        if !gaps.is_empty() {
            let mut t = Vec::new();
            let mut p = Vec::new();
            let mut from = Vec::new();
            let mut to = Vec::new();
            for g in &gaps {
                let topic = topic_of(g.partition_idx);
                let partition = partition_of(g.partition_idx);
                tracing::warn!(
                    topic = %topic, partition, from = g.from, to = g.to,
                    "the broker skipped offsets; the gap is recorded in ingest_gaps"
                );
                let c = outcome.entry(topic.clone()).or_default();
                c.gaps += 1;
                c.skipped_offsets += (g.to - g.from).max(0) as u64;
                t.push(topic);
                p.push(partition);
                from.push(g.from);
                to.push(g.to);
            }
            sqlx::query!(
                "INSERT INTO ingest_gaps (consumer_group, topic, partition, from_offset, to_offset)
                 SELECT $1, * FROM unnest($2::text[], $3::int[], $4::bigint[], $5::bigint[])
                 ON CONFLICT DO NOTHING",
                self.group,
                &t,
                &p,
                &from,
                &to,
            )
            .execute(&mut *tx)
            .await?;
        }

        tx.commit().await?;
        Ok(outcome)
    }
}

/// An event the slow path inserted.
#[derive(sqlx::FromRow)]
struct Inserted {
    kafka_topic: String,
    #[sqlx(flatten)]
    row: rollup::stage::TimedRow,
}

async fn copy_in(
    conn: &mut sqlx::PgConnection,
    table: &str,
    stream: &[u8],
) -> Result<u64, sqlx::Error> {
    let mut copy = conn
        .copy_in_raw(&format!(
            "COPY {table} ({EVENT_COLUMNS}) FROM STDIN (FORMAT binary)"
        ))
        .await?;
    for chunk in stream.chunks(1 << 20) {
        if let Err(e) = copy.send(chunk).await {
            // The server's error, if any, comes back from abort/finish.
            let _ = copy.abort(e.to_string()).await;
            return Err(e);
        }
    }
    copy.finish().await
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505"))
}
