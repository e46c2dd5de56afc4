//! Staged rollup inputs. Ingest writes, in the same transaction as the
//! events, the derived columns an hourly rollup reads (one Parquet blob per
//! batch and event hour) to `rollup_stage`. The hourly rollup reads those
//! blobs instead of pulling every raw row through one connection, when the
//! hour's staged row count equals its raw event count; otherwise (events
//! stored by an older hxjobs, or written by something else) it reads the
//! raw events. Retention removes a day's blobs with its partition; a
//! restore stages the day again.

use std::collections::BTreeMap;
use std::io::Cursor;

use chrono::{DateTime, NaiveDate, Utc};
use polars::prelude::*;
use sqlx::PgConnection;

use super::Error;
use crate::events::Event;
use crate::interval::{Grain, Interval};

/// The raw columns a rollup reads, per event (the names are the columns of `events`).
#[derive(Debug, Default, sqlx::FromRow)]
pub struct RawRow {
    pub event_type: String,
    pub source: String,
    pub model: Option<String>,
    pub model_id: Option<String>,
    pub name: Option<String>,
    pub error_type: Option<String>,
    pub status: Option<String>,
    pub latency_ms: Option<f64>,
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    pub cost_usd: Option<f64>,
    pub rating: Option<f64>,
    pub value: Option<f64>,
    pub user_id: Option<String>,
}

/// [`TimedRow`]s of `events` chosen by the rest of the statement
/// (`WHERE …`) and its arguments, checked against the schema.
macro_rules! select_timed {
    ($conn:expr, $rest:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query!(
            "SELECT event_time, event_type, source, model, model_id, name, error_type, status,
                    latency_ms, prompt_tokens, completion_tokens, cost_usd, rating, value, user_id
             FROM events " + $rest
            $(, $arg)*
        )
        .fetch_all($conn)
        .await
        .map(|rows| {
            rows.into_iter()
                .map(|r| $crate::rollup::stage::TimedRow {
                    event_time: r.event_time,
                    raw: $crate::rollup::stage::RawRow {
                        event_type: r.event_type,
                        source: r.source,
                        model: r.model,
                        model_id: r.model_id,
                        name: r.name,
                        error_type: r.error_type,
                        status: r.status,
                        latency_ms: r.latency_ms,
                        prompt_tokens: r.prompt_tokens,
                        completion_tokens: r.completion_tokens,
                        cost_usd: r.cost_usd,
                        rating: r.rating,
                        value: r.value,
                        user_id: r.user_id,
                    },
                })
                .collect::<Vec<_>>()
        })
    };
}
pub(crate) use select_timed;

/// [`RawRow`]'s columns, for statements on tables the schema does not
/// have when hxjobs compiles (the ingest's temporary staging table).
pub const RAW_COLUMNS: &str = "event_type, source, model, model_id, name, error_type, status, \
     latency_ms, prompt_tokens, completion_tokens, cost_usd, rating, value, user_id";

/// A [`RawRow`] with the event's time, to file it under its hour.
#[derive(Debug, sqlx::FromRow)]
pub struct TimedRow {
    pub event_time: DateTime<Utc>,
    #[sqlx(flatten)]
    pub raw: RawRow,
}

impl RawRow {
    pub fn of(e: &Event) -> RawRow {
        RawRow {
            event_type: e.event_type.as_str().to_string(),
            source: e.source.clone(),
            model: e.model.clone(),
            model_id: e.model_id.clone(),
            name: e.name.clone(),
            error_type: e.error_type.clone(),
            status: e.status.clone(),
            latency_ms: e.latency_ms,
            prompt_tokens: e.prompt_tokens,
            completion_tokens: e.completion_tokens,
            cost_usd: e.cost_usd,
            rating: e.rating,
            value: e.value,
            user_id: e.user_id.clone(),
        }
    }
}

/// Raw rows → the columns rollups group and measure: `event_type`,
/// `source`, `subject`, `is_error`, `latency`, `prompt_tokens`,
/// `completion_tokens`, `cost_usd`, `rating_v`, `value_v`, `user_id`
/// (docs/events.md, "Rollups": which event types carry which measure).
pub fn derive(mut raw: Vec<RawRow>) -> Result<DataFrame, Error> {
    let frame = DataFrame::new_infer_height(vec![
        take_column!(raw, "event_type", event_type),
        take_column!(raw, "source", source),
        take_column!(raw, "model", model),
        take_column!(raw, "model_id", model_id),
        take_column!(raw, "name", name),
        take_column!(raw, "error_type", error_type),
        take_column!(raw, "status", status),
        take_column!(raw, "latency_ms", latency_ms),
        take_column!(raw, "prompt_tokens", prompt_tokens),
        take_column!(raw, "completion_tokens", completion_tokens),
        take_column!(raw, "cost_usd", cost_usd),
        take_column!(raw, "rating", rating),
        take_column!(raw, "value", value),
        take_column!(raw, "user_id", user_id),
    ])?;
    drop(raw);
    let is = |t: &str| col("event_type").eq(lit(t));
    Ok(frame
        .lazy()
        .with_columns([
            when(is("llm_request").or(is("user_feedback")))
                .then(col("model").fill_null(col("model_id")).fill_null(lit("")))
                .when(is("system_metric").or(is("business_event")))
                .then(col("name").fill_null(lit("")))
                .when(is("error_event"))
                .then(col("error_type").fill_null(lit("")))
                .otherwise(lit(""))
                .alias("subject"),
            is("error_event")
                .or(is("llm_request").and(
                    col("status")
                        .eq(lit("error"))
                        .or(col("status").eq(lit("timeout")))
                        .fill_null(lit(false)),
                ))
                .alias("is_error"),
            when(is("llm_request"))
                .then(col("latency_ms"))
                .otherwise(lit(NULL).cast(DataType::Float64))
                .alias("latency"),
            when(is("user_feedback"))
                .then(col("rating"))
                .otherwise(lit(NULL).cast(DataType::Float64))
                .alias("rating_v"),
            when(is("system_metric").or(is("business_event")))
                .then(col("value"))
                .otherwise(lit(NULL).cast(DataType::Float64))
                .alias("value_v"),
        ])
        .select([
            col("event_type"),
            col("source"),
            col("subject"),
            col("is_error"),
            col("latency"),
            col("prompt_tokens"),
            col("completion_tokens"),
            col("cost_usd"),
            col("rating_v"),
            col("value_v"),
            col("user_id"),
        ])
        .collect()?)
}

/// Rows being staged, by event hour.
#[derive(Debug, Default)]
pub struct Staged {
    hours: BTreeMap<DateTime<Utc>, Vec<RawRow>>,
}

impl Staged {
    pub fn push(&mut self, e: &Event) {
        self.hours
            .entry(Grain::Hour.containing(e.timestamp).start)
            .or_default()
            .push(RawRow::of(e));
    }

    pub fn push_timed(&mut self, row: TimedRow) {
        self.hours
            .entry(Grain::Hour.containing(row.event_time).start)
            .or_default()
            .push(row.raw);
    }

    pub fn rows(&self) -> usize {
        self.hours.values().map(Vec::len).sum()
    }
}

/// Staged rows as one Parquet blob per hour.
struct Encoded {
    hours: Vec<DateTime<Utc>>,
    days: Vec<NaiveDate>,
    counts: Vec<i32>,
    blobs: Vec<Vec<u8>>,
}

/// Derives the columns of every hour at once (a query plan costs more than
/// the few hundred rows an hour of one batch usually holds), then writes
/// each hour's slice as a blob. LZ4: each Zstandard column chunk sets up
/// tables larger than a small blob.
fn encode(staged: Staged) -> Result<Encoded, Error> {
    let mut out = Encoded {
        hours: Vec::new(),
        days: Vec::new(),
        counts: Vec::new(),
        blobs: Vec::new(),
    };
    let mut all = Vec::with_capacity(staged.rows());
    let mut spans = Vec::new();
    for (hour, rows) in staged.hours {
        spans.push((hour, all.len(), rows.len()));
        all.extend(rows);
    }
    if all.is_empty() {
        return Ok(out);
    }
    let frame = derive(all)?;
    for (hour, offset, len) in spans {
        out.counts.push(i32::try_from(len).unwrap_or(i32::MAX));
        let mut slice = frame.slice(i64::try_from(offset).unwrap_or(i64::MAX), len);
        let mut blob = Vec::new();
        ParquetWriter::new(&mut blob)
            .with_compression(ParquetCompression::Lz4Raw)
            .finish(&mut slice)?;
        out.hours.push(hour);
        out.days.push(hour.date_naive());
        out.blobs.push(blob);
    }
    Ok(out)
}

/// Writes one blob per hour of `staged` on `conn` (inside the caller's
/// transaction) and bumps each hour's `rollup_inputs` version, which makes
/// an hour already rolled up stale. Returns the rows staged.
pub async fn write(conn: &mut PgConnection, staged: Staged) -> Result<usize, Error> {
    let Encoded {
        hours,
        days,
        counts,
        blobs,
    } = crate::off_runtime(move || encode(staged)).await?;
    if !hours.is_empty() {
        sqlx::query!(
            "INSERT INTO rollup_stage (hour, event_day, rows, data)
             SELECT * FROM unnest($1::timestamptz[], $2::date[], $3::int4[], $4::bytea[])",
            &hours,
            &days,
            &counts,
            &blobs,
        )
        .execute(&mut *conn)
        .await?;
        sqlx::query!(
            "INSERT INTO rollup_inputs (hour, version) SELECT h, 1 FROM unnest($1::timestamptz[]) h
             ON CONFLICT (hour) DO UPDATE SET version = rollup_inputs.version + 1",
            &hours,
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(counts.iter().map(|&n| n as usize).sum())
}

/// Stages `day` again from its raw events (after a restore), replacing
/// whatever was staged for it.
pub async fn restage_day(conn: &mut PgConnection, day: NaiveDate) -> Result<usize, Error> {
    sqlx::query!("DELETE FROM rollup_stage WHERE event_day = $1", day)
        .execute(&mut *conn)
        .await?;
    let rows = select_timed!(&mut *conn, "WHERE event_day = $1", day)?;
    let mut staged = Staged::default();
    for row in rows {
        staged.push_timed(row);
    }
    write(conn, staged).await
}

/// The hour's staged blobs, when they cover every raw event of the hour;
/// `None` otherwise. Decode them with [`decode`] (CPU work, off the async
/// threads).
pub async fn load_blobs(
    conn: &mut PgConnection,
    hour: Interval,
) -> Result<Option<Vec<Vec<u8>>>, Error> {
    let day = hour.start.date_naive();
    let counts = sqlx::query!(
        r#"SELECT (SELECT sum(rows)::int8 FROM rollup_stage WHERE hour = $1) AS staged,
                  (SELECT count(*) FROM events
                   WHERE event_day = $3 AND event_time >= $1 AND event_time < $2) AS "raw!""#,
        hour.start,
        hour.end,
        day,
    )
    .fetch_one(&mut *conn)
    .await?;
    let (staged, raw) = (counts.staged, counts.raw);
    if staged.unwrap_or(0) != raw {
        if raw > 0 {
            tracing::info!(
                hour = %hour.start.to_rfc3339(), staged = staged.unwrap_or(0), raw,
                "hour not fully staged; reading its raw events"
            );
        }
        return Ok(None);
    }
    let blobs: Vec<Vec<u8>> = sqlx::query_scalar!(
        "SELECT data FROM rollup_stage WHERE hour = $1 ORDER BY id",
        hour.start
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok((!blobs.is_empty()).then_some(blobs))
}

/// Staged blobs → one frame of derived columns.
pub fn decode(blobs: Vec<Vec<u8>>) -> Result<DataFrame, Error> {
    let mut frames = Vec::with_capacity(blobs.len());
    for blob in blobs {
        frames.push(ParquetReader::new(Cursor::new(blob)).finish()?.lazy());
    }
    Ok(concat(frames, UnionArgs::default())?.collect()?)
}
