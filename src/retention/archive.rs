//! One day of raw events ⇄ one Parquet object (zstd) in the store, written
//! with Polars under a Hive-style key (`events/event_date=DAY/…parquet`).
//! An object counts as an archive only after it was read back from the
//! store and gave the same row count and checksum; only then may the day's
//! partition go.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use chrono::NaiveDate;
use polars::prelude::*;
use sqlx::PgPool;
use xxhash_rust::xxh3::Xxh3;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("polars: {0}")]
    Polars(#[from] PolarsError),
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("archive of {day} did not verify: {detail}; nothing was removed")]
    Verify { day: NaiveDate, detail: String },
    #[error("{0}; nothing was removed")]
    Storage(#[from] crate::storage::Error),
    #[error("no archive of {0} is recorded")]
    NotArchived(NaiveDate),
    #[error("staging the restored day for rollups: {0}")]
    Stage(#[from] crate::rollup::Error),
    #[error("archive work stopped: {0}")]
    Blocking(#[from] tokio::task::JoinError),
    #[error("recording the task: {0}")]
    Seal(#[from] crate::ledger::SealError),
}

/// A verified archive in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archived {
    pub day: NaiveDate,
    /// Its key in the store.
    pub key: String,
    pub rows: i64,
    /// xxh3 over every typed value, column by column (see [`checksum`]).
    pub checksum: i64,
    pub bytes: i64,
}

/// The partition holding one UTC day of events.
pub fn partition_name(day: NaiveDate) -> String {
    format!("events_p{}", day.format("%Y%m%d"))
}

/// The events columns, typed for Parquet: uuid and jsonb as text, times as
/// microseconds since the epoch (exact), the day as text.
struct Row {
    event_day: String,
    event_id: String,
    event_type: String,
    event_time_us: i64,
    source: String,
    model: Option<String>,
    latency_ms: Option<f64>,
    prompt_tokens: Option<i64>,
    completion_tokens: Option<i64>,
    cost_usd: Option<f64>,
    status: Option<String>,
    rating: Option<f64>,
    name: Option<String>,
    value: Option<f64>,
    error_type: Option<String>,
    severity: Option<String>,
    user_id: Option<String>,
    session_id: Option<String>,
    request_id: Option<String>,
    model_id: Option<String>,
    priority: Option<String>,
    data: String,
    metadata: Option<String>,
    kafka_topic: String,
    kafka_partition: i32,
    kafka_offset: i64,
    ingested_at_us: i64,
}

/// A day's rows as a frame (CPU work: call on the blocking pool).
fn frame_of(mut rows: Vec<Row>) -> Result<DataFrame, Error> {
    let frame = DataFrame::new_infer_height(vec![
        take_column!(rows, "event_day", event_day),
        take_column!(rows, "event_id", event_id),
        take_column!(rows, "event_type", event_type),
        take_column!(rows, "event_time_us", event_time_us),
        take_column!(rows, "source", source),
        take_column!(rows, "model", model),
        take_column!(rows, "latency_ms", latency_ms),
        take_column!(rows, "prompt_tokens", prompt_tokens),
        take_column!(rows, "completion_tokens", completion_tokens),
        take_column!(rows, "cost_usd", cost_usd),
        take_column!(rows, "status", status),
        take_column!(rows, "rating", rating),
        take_column!(rows, "name", name),
        take_column!(rows, "value", value),
        take_column!(rows, "error_type", error_type),
        take_column!(rows, "severity", severity),
        take_column!(rows, "user_id", user_id),
        take_column!(rows, "session_id", session_id),
        take_column!(rows, "request_id", request_id),
        take_column!(rows, "model_id", model_id),
        take_column!(rows, "priority", priority),
        take_column!(rows, "data", data),
        take_column!(rows, "metadata", metadata),
        take_column!(rows, "kafka_topic", kafka_topic),
        take_column!(rows, "kafka_partition", kafka_partition),
        take_column!(rows, "kafka_offset", kafka_offset),
        take_column!(rows, "ingested_at_us", ingested_at_us),
    ])?;
    Ok(frame)
}

/// xxh3 over the frame: each column's name, then each value with a null
/// marker, in row order. Independent of how Parquet stores the values.
pub fn checksum(frame: &DataFrame) -> Result<i64, Error> {
    let mut h = Xxh3::new();
    for column in frame.columns() {
        h.update(column.name().as_bytes());
        h.update(&[0xff]);
        let series = column.as_materialized_series();
        match series.dtype() {
            DataType::String => {
                for v in series.str()?.iter() {
                    match v {
                        Some(s) => {
                            h.update(&[1]);
                            h.update(&(s.len() as u64).to_le_bytes());
                            h.update(s.as_bytes());
                        }
                        None => h.update(&[0]),
                    }
                }
            }
            DataType::Float64 => {
                for v in series.f64()?.iter() {
                    match v {
                        Some(x) => {
                            h.update(&[1]);
                            h.update(&x.to_bits().to_le_bytes());
                        }
                        None => h.update(&[0]),
                    }
                }
            }
            _ => {
                let ints = series.cast(&DataType::Int64)?;
                for v in ints.i64()?.iter() {
                    match v {
                        Some(x) => {
                            h.update(&[1]);
                            h.update(&x.to_le_bytes());
                        }
                        None => h.update(&[0]),
                    }
                }
            }
        }
    }
    Ok(h.digest() as i64)
}

/// A local file's bytes, off the async threads.
async fn read_local(path: &Path) -> Result<Bytes, Error> {
    let path = path.to_path_buf();
    crate::off_runtime(move || {
        std::fs::read(&path)
            .map(Bytes::from)
            .map_err(|source| Error::File { path, source })
    })
    .await
}

fn read_bytes(bytes: Bytes) -> Result<DataFrame, Error> {
    Ok(ParquetReader::new(Cursor::new(bytes)).finish()?)
}

/// Decodes an archive (off the async threads) and checks it has `rows`
/// rows with checksum `sum`; `whence` names it in the error.
async fn verified(
    bytes: Bytes,
    day: NaiveDate,
    rows: i64,
    sum: i64,
    whence: String,
) -> Result<DataFrame, Error> {
    let (frame, got) = crate::off_runtime(move || {
        let frame = read_bytes(bytes)?;
        let got = checksum(&frame)?;
        Ok::<_, Error>((frame, got))
    })
    .await?;
    if frame.height() as i64 != rows || got != sum {
        return Err(Error::Verify {
            day,
            detail: format!(
                "{whence} has {} rows (checksum {got:x}), expected {rows} ({sum:x})",
                frame.height()
            ),
        });
    }
    Ok(frame)
}

/// The day's rows, ordered by event id.
async fn day_rows(pool: &PgPool, day: NaiveDate) -> Result<Vec<Row>, Error> {
    Ok(sqlx::query_as!(
        Row,
        r#"SELECT event_day::text AS "event_day!", event_id::text AS "event_id!", event_type,
                  (extract(epoch FROM event_time) * 1000000)::int8 AS "event_time_us!", source,
                  model, latency_ms, prompt_tokens, completion_tokens, cost_usd, status, rating,
                  name, value, error_type, severity, user_id, session_id, request_id, model_id,
                  priority, data::text AS "data!", metadata::text AS metadata, kafka_topic,
                  kafka_partition, kafka_offset,
                  (extract(epoch FROM ingested_at) * 1000000)::int8 AS "ingested_at_us!"
           FROM events WHERE event_day = $1 ORDER BY event_id"#,
        day
    )
    .fetch_all(pool)
    .await?)
}

/// Encodes a frame as Parquet (zstd), with its row count and checksum.
fn encode(mut frame: DataFrame) -> Result<(Vec<u8>, i64, i64), Error> {
    let rows = frame.height() as i64;
    let sum = checksum(&frame)?;
    let mut out = Vec::new();
    ParquetWriter::new(&mut out)
        .with_compression(ParquetCompression::Zstd(None))
        .finish(&mut frame)?;
    Ok((out, rows, sum))
}

/// Writes `day` to the store, reads the object back from the store and
/// checks its rows and checksum. Removes nothing.
pub async fn write_day(
    pool: &PgPool,
    store: &crate::storage::Store,
    day: NaiveDate,
) -> Result<Archived, Error> {
    let rows = day_rows(pool, day).await?;
    let (bytes, rows, sum) = crate::off_runtime(move || encode(frame_of(rows)?)).await?;
    put_verified(store, day, bytes.into(), rows, sum).await
}

/// Copies a day archived before the object store from its local file into
/// the store, checked against the recorded rows and checksum both before
/// and after (`hxjobs storage migrate`).
pub async fn migrate_day(
    store: &crate::storage::Store,
    day: NaiveDate,
    path: &Path,
    rows: i64,
    sum: i64,
) -> Result<Archived, Error> {
    let bytes = read_local(path).await?;
    verified(bytes.clone(), day, rows, sum, path.display().to_string()).await?;
    put_verified(store, day, bytes, rows, sum).await
}

/// Writes a day's Parquet under its archive key and reads it back from the
/// store, checked against `rows` and `sum`.
async fn put_verified(
    store: &crate::storage::Store,
    day: NaiveDate,
    bytes: Bytes,
    rows: i64,
    sum: i64,
) -> Result<Archived, Error> {
    let key = crate::storage::archive_key(day);
    let stored = store.put(&key, bytes).await?;
    verified(store.get(&key).await?, day, rows, sum, store.location(&key)).await?;
    Ok(Archived {
        day,
        key,
        rows,
        checksum: sum,
        bytes: stored.size,
    })
}

/// Loads an archived day back into `events` (its partition recreated),
/// after checking the object against the recorded row count and checksum.
pub async fn restore_day(
    pool: &PgPool,
    store: &crate::storage::Store,
    day: NaiveDate,
) -> Result<u64, Error> {
    let recorded = sqlx::query!(
        "SELECT path, storage_key, rows, checksum FROM event_archives WHERE day = $1",
        day
    )
    .fetch_optional(pool)
    .await?
    .ok_or(Error::NotArchived(day))?;
    let (rows, sum) = (recorded.rows, recorded.checksum);
    // From the store; a day archived before it, from this node's disk.
    let (bytes, whence) = match recorded.storage_key {
        Some(key) => (store.get(&key).await?, store.location(&key)),
        None => (read_local(Path::new(&recorded.path)).await?, recorded.path),
    };
    let frame = verified(bytes, day, rows, sum, whence).await?;
    let s = |name: &str| -> Result<Vec<Option<String>>, Error> {
        Ok(frame
            .column(name)?
            .str()?
            .iter()
            .map(|v| v.map(str::to_string))
            .collect())
    };
    let f = |name: &str| -> Result<Vec<Option<f64>>, Error> {
        Ok(frame.column(name)?.f64()?.iter().collect())
    };
    let i = |name: &str| -> Result<Vec<Option<i64>>, Error> {
        Ok(frame
            .column(name)?
            .cast(&DataType::Int64)?
            .i64()?
            .iter()
            .collect())
    };
    let mut tx = pool.begin().await?;
    sqlx::query!("SELECT hxjobs_ensure_event_partition($1)", day)
        .execute(&mut *tx)
        .await?;
    // Every column may hold NULLs: bound unchecked (`as _`), the columns
    // themselves checked.
    let done = sqlx::query!(
        "INSERT INTO events (event_day, event_id, event_type, event_time, source, model, latency_ms,
             prompt_tokens, completion_tokens, cost_usd, status, rating, name, value, error_type,
             severity, user_id, session_id, request_id, model_id, priority, data, metadata,
             kafka_topic, kafka_partition, kafka_offset, ingested_at)
         SELECT d::date, id::uuid, t, 'epoch'::timestamptz + et * interval '1 microsecond', src, m,
                lat, pt, ct, cost, st, r, n, v, et2, sev, u, sess, req, mid, prio, data::jsonb,
                meta::jsonb, topic, part::int4, off, 'epoch'::timestamptz + ing * interval '1 microsecond'
         FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::text[], $6::text[],
                     $7::float8[], $8::int8[], $9::int8[], $10::float8[], $11::text[], $12::float8[],
                     $13::text[], $14::float8[], $15::text[], $16::text[], $17::text[], $18::text[],
                     $19::text[], $20::text[], $21::text[], $22::text[], $23::text[], $24::text[],
                     $25::int8[], $26::int8[], $27::int8[])
              AS x(d, id, t, et, src, m, lat, pt, ct, cost, st, r, n, v, et2, sev, u, sess, req,
                   mid, prio, data, meta, topic, part, off, ing)
         ON CONFLICT DO NOTHING",
        s("event_day")? as _,
        s("event_id")? as _,
        s("event_type")? as _,
        i("event_time_us")? as _,
        s("source")? as _,
        s("model")? as _,
        f("latency_ms")? as _,
        i("prompt_tokens")? as _,
        i("completion_tokens")? as _,
        f("cost_usd")? as _,
        s("status")? as _,
        f("rating")? as _,
        s("name")? as _,
        f("value")? as _,
        s("error_type")? as _,
        s("severity")? as _,
        s("user_id")? as _,
        s("session_id")? as _,
        s("request_id")? as _,
        s("model_id")? as _,
        s("priority")? as _,
        s("data")? as _,
        s("metadata")? as _,
        s("kafka_topic")? as _,
        i("kafka_partition")? as _,
        i("kafka_offset")? as _,
        i("ingested_at_us")? as _,
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query!(
        "UPDATE event_archives SET restored_at = now() WHERE day = $1",
        day
    )
    .execute(&mut *tx)
    .await?;
    crate::rollup::stage::restage_day(&mut tx, day).await?;
    tx.commit().await?;
    Ok(done)
}
