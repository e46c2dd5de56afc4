//! Rollups (docs/events.md, "Rollups"), computed with Polars. Hourly rows come
//! from the raw events; a day rolls up from its hours, a week and a month
//! from their days, so coarser grains stay right after retention removed
//! the raw events. Counts and sums add up; percentiles and distinct users
//! come from merged sketches ([`sketch`]), never from averaged percentiles.
//!
//! Writing a bucket replaces all of its rows in one transaction, so a
//! re-run picks up late events and never counts twice. The transaction also
//! records the bucket in `rollup_buckets` with what it was built from, so
//! a bucket whose input changed afterwards is known to be stale
//! ([`complete`]); it holds the bucket's advisory lock while it reads and
//! writes, and takes its coarser buckets' locks shared before it records a
//! new `seq`, so a coarser bucket never reads finer ones half-written.

pub mod complete;
mod legacy;
pub mod read;
pub mod sketch;
pub mod stage;

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use polars::prelude::*;
use sketches_ddsketch::DDSketch;
use sqlx::{PgConnection, PgPool};

use crate::interval::{Grain, Interval};
use sketch::Users;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("rollups are hourly, daily, weekly or monthly, not per {0}")]
    Grain(&'static str),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("polars: {0}")]
    Polars(#[from] PolarsError),
    #[error(transparent)]
    Sketch(#[from] sketch::Error),
    #[error("rollup computation stopped: {0}")]
    Blocking(#[from] tokio::task::JoinError),
    #[error("recording the task: {0}")]
    Seal(#[from] crate::ledger::SealError),
}

/// What one bucket's computation wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub grain: Grain,
    pub bucket_start: DateTime<Utc>,
    /// Raw events (hour) or finer rollup rows (other grains) read.
    pub inputs: usize,
    pub rows: usize,
    /// An hour read from the columns ingest staged (not from the raw events).
    pub staged: bool,
    /// The `rollup_buckets.seq` this write took.
    pub seq: i64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match (self.grain, self.staged) {
            (Grain::Hour, true) => "staged events",
            (Grain::Hour, false) => "raw events",
            _ => "finer rollup rows",
        };
        write!(
            f,
            "{} rollup of {}: {} {what} → {} rows",
            self.grain.as_str(),
            self.bucket_start.to_rfc3339(),
            self.inputs,
            self.rows
        )
    }
}

/// A rating at or below this is a low rating (docs/measures.md).
pub const LOW_RATING: f64 = 3.0;

/// Whether an hour's events are all stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Every partition's stored position passed the broker's end as read
    /// after the hour ended.
    Ready,
    /// Not yet, but the grace period after the hour's end is over.
    GraceOver(Option<DateTime<Utc>>),
    /// Not yet: every partition is stored up to the broker's ends read at
    /// this time (or some partition never caught up).
    NotYet(Option<DateTime<Utc>>),
}

/// Readiness of the interval ending at `end` for consumer `group` at `now`.
pub async fn readiness(
    pool: &PgPool,
    group: &str,
    topics: &[&str],
    end: DateTime<Utc>,
    grace: chrono::TimeDelta,
    now: DateTime<Utc>,
) -> Result<Readiness, Error> {
    let through = crate::ingest::lease::caught_up_through(pool, group, topics).await?;
    Ok(match through {
        Some(t) if t >= end => Readiness::Ready,
        _ if now >= end + grace => Readiness::GraceOver(through),
        _ => Readiness::NotYet(through),
    })
}

/// The finer grain a grain is built from; `None` for hours (raw events).
pub fn source_grain(grain: Grain) -> Option<Grain> {
    match grain {
        Grain::Minute | Grain::Hour => None,
        Grain::Day => Some(Grain::Hour),
        Grain::Week | Grain::Month => Some(Grain::Day),
    }
}

type Key = (String, String, String);

/// One rollup row being built.
struct Group {
    measures: Measures,
    latency: DDSketch,
    users: Users,
}

#[derive(Default, Clone, Copy)]
struct Measures {
    event_count: i64,
    error_count: i64,
    latency_count: i64,
    latency_sum: f64,
    latency_max: Option<f64>,
    prompt_tokens: i64,
    completion_tokens: i64,
    cost_usd: f64,
    rating_sum: f64,
    rating_count: i64,
    /// `None` when a merged finer row did not know it.
    rating_low_count: Option<i64>,
    value_sum: f64,
    value_min: Option<f64>,
    value_max: Option<f64>,
}

/// Computes and stores the rollup of `grain` for the bucket starting at
/// `bucket_start` (aligned down to the grain), from whatever finer data is
/// stored now.
pub async fn aggregate(
    pool: &PgPool,
    grain: Grain,
    bucket_start: DateTime<Utc>,
) -> Result<Summary, Error> {
    aggregate_sealed(pool, grain, bucket_start, None).await
}

/// [`aggregate`], committing with an `aggregate` task's success (`seal`).
pub async fn aggregate_sealed(
    pool: &PgPool,
    grain: Grain,
    bucket_start: DateTime<Utc>,
    seal: Option<&crate::ledger::Seal>,
) -> Result<Summary, Error> {
    if grain == Grain::Minute {
        return Err(Error::Grain(grain.as_str()));
    }
    let bucket = grain.containing(bucket_start);
    let mut tx = pool.begin().await?;
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        lock_key(grain, bucket.start)
    )
    .execute(&mut *tx)
    .await?;
    let (inputs, groups, staged, mark) = match source_grain(grain) {
        None => {
            // The version first: events stored after this read make the
            // hour stale even if the read below already saw them.
            let version: Option<i64> = sqlx::query_scalar!(
                "SELECT version FROM rollup_inputs WHERE hour = $1",
                bucket.start
            )
            .fetch_optional(&mut *tx)
            .await?;
            let (inputs, groups, staged) = from_events(&mut tx, bucket).await?;
            (inputs, groups, staged, version.unwrap_or(0))
        }
        Some(finer) => {
            let mark: Option<i64> = sqlx::query_scalar!(
                "SELECT max(seq) FROM rollup_buckets
                 WHERE grain = $1 AND bucket_start >= $2 AND bucket_start < $3",
                finer.as_str(),
                bucket.start,
                bucket.end,
            )
            .fetch_one(&mut *tx)
            .await?;
            let (inputs, groups) = from_rollups(&mut tx, finer, bucket).await?;
            (inputs, groups, false, mark.unwrap_or(0))
        }
    };
    let (rows, seq) = write(&mut tx, grain, bucket.start, groups, mark).await?;
    if let Some(seal) = seal {
        seal.apply(&mut tx).await?;
    }
    tx.commit().await?;
    Ok(Summary {
        grain,
        bucket_start: bucket.start,
        inputs,
        rows,
        staged,
        seq,
    })
}

/// The advisory-lock key of one bucket.
fn lock_key(grain: Grain, start: DateTime<Utc>) -> String {
    format!("hxjobs.rollup:{}:{}", grain.as_str(), start.timestamp())
}

/// The coarser buckets containing a bucket of `grain` at `start`, finer first.
pub fn ancestors(grain: Grain, start: DateTime<Utc>) -> Vec<(Grain, DateTime<Utc>)> {
    let above: &[Grain] = match grain {
        Grain::Minute | Grain::Hour => &[Grain::Day, Grain::Week, Grain::Month],
        Grain::Day => &[Grain::Week, Grain::Month],
        Grain::Week | Grain::Month => &[],
    };
    above.iter().map(|g| (*g, g.floor(start))).collect()
}

/// The hour's events → groups: the measures with Polars, the sketches
/// alongside over the same derived columns. Read from the staged columns
/// when they cover the hour, else from the raw events.
async fn from_events(
    conn: &mut PgConnection,
    bucket: Interval,
) -> Result<(usize, HashMap<Key, Group>, bool), Error> {
    let staged = stage::load_blobs(&mut *conn, bucket).await?;
    let from_stage = staged.is_some();
    let raw: Vec<stage::RawRow> = match staged {
        Some(_) => Vec::new(),
        None => stage::select_timed!(
            &mut *conn,
            "WHERE event_day = $3 AND event_time >= $1 AND event_time < $2",
            bucket.start,
            bucket.end,
            bucket.start.date_naive(),
        )?
        .into_iter()
        .map(|t| t.raw)
        .collect(),
    };
    crate::off_runtime(move || {
        let derived = match staged {
            Some(blobs) => stage::decode(blobs)?,
            None => stage::derive(raw)?,
        };
        let (n, groups) = group_events(derived)?;
        Ok((n, groups, from_stage))
    })
    .await
}

/// The derived columns of an hour's events → its groups.
fn group_events(derived: DataFrame) -> Result<(usize, HashMap<Key, Group>), Error> {
    let n = derived.height();

    let measures = derived
        .clone()
        .lazy()
        .group_by([col("event_type"), col("source"), col("subject")])
        .agg([
            len().cast(DataType::Int64).alias("event_count"),
            col("is_error")
                .cast(DataType::Int64)
                .sum()
                .alias("error_count"),
            col("latency")
                .count()
                .cast(DataType::Int64)
                .alias("latency_count"),
            col("latency").sum().alias("latency_sum"),
            col("latency").max().alias("latency_max"),
            col("prompt_tokens").sum().alias("prompt_tokens"),
            col("completion_tokens").sum().alias("completion_tokens"),
            col("cost_usd").sum().alias("cost_usd"),
            col("rating_v").sum().alias("rating_sum"),
            col("rating_v")
                .count()
                .cast(DataType::Int64)
                .alias("rating_count"),
            col("rating_v")
                .lt_eq(lit(LOW_RATING))
                .cast(DataType::Int64)
                .sum()
                .alias("rating_low_count"),
            col("value_v").sum().alias("value_sum"),
            col("value_v").min().alias("value_min"),
            col("value_v").max().alias("value_max"),
        ])
        .collect()?;

    // Sketches per group from the same derived columns, keyed by borrowed
    // strings while scanning.
    let (types, sources, subjects) = (
        derived.column("event_type")?.str()?,
        derived.column("source")?.str()?,
        derived.column("subject")?.str()?,
    );
    let (latency, users) = (
        derived.column("latency")?.f64()?,
        derived.column("user_id")?.str()?,
    );
    let mut scanned: HashMap<(&str, &str, &str), (DDSketch, Users)> = HashMap::new();
    for i in 0..derived.height() {
        let key = (
            types.get(i).unwrap_or_default(),
            sources.get(i).unwrap_or_default(),
            subjects.get(i).unwrap_or_default(),
        );
        let (l, u) = scanned
            .entry(key)
            .or_insert_with(|| (sketch::new_latency(), sketch::new_users()));
        if let Some(v) = latency.get(i) {
            l.add(v);
        }
        if let Some(id) = users.get(i) {
            sketch::add_user(u, id);
        }
    }
    let sketches: HashMap<Key, (DDSketch, Users)> = scanned
        .into_iter()
        .map(|((t, s, j), v)| ((t.to_string(), s.to_string(), j.to_string()), v))
        .collect();
    Ok((n, join(read_measures(&measures)?, sketches)))
}

/// Finer rollup rows of the bucket → groups: sums with Polars, sketches
/// merged. Read in a fixed order, so floating-point sums come out the same
/// on every re-run whatever plan PostgreSQL picks.
async fn from_rollups(
    conn: &mut PgConnection,
    finer: Grain,
    bucket: Interval,
) -> Result<(usize, HashMap<Key, Group>), Error> {
    let filter = read::RollupFilter::all(finer.as_str(), bucket.start, bucket.end);
    let raw = read::rows(&mut *conn, &filter).await?;
    crate::off_runtime(move || merge_finer(raw)).await
}

/// Finer rows → groups: sums with Polars, sketches merged.
fn merge_finer(mut raw: Vec<read::RollupRow>) -> Result<(usize, HashMap<Key, Group>), Error> {
    let n = raw.len();
    // Sketches first: building the frame moves the fields out of the rows.
    let mut sketches: HashMap<Key, (DDSketch, Users)> = HashMap::new();
    for r in &raw {
        let key = (r.event_type.clone(), r.source.clone(), r.subject.clone());
        let (l, u) = sketches
            .entry(key)
            .or_insert_with(|| (sketch::new_latency(), sketch::new_users()));
        if let Some(bytes) = &r.latency_sketch {
            sketch::merge_latency(l, &sketch::decode_latency(bytes)?)?;
        }
        if let Some(bytes) = &r.users_sketch {
            sketch::merge_users(u, &sketch::decode_users(bytes)?)?;
        }
    }
    let frame = DataFrame::new_infer_height(vec![
        take_column!(raw, "event_type", event_type),
        take_column!(raw, "source", source),
        take_column!(raw, "subject", subject),
        take_column!(raw, "event_count", event_count),
        take_column!(raw, "error_count", error_count),
        take_column!(raw, "latency_count", latency_count),
        take_column!(raw, "latency_sum", latency_sum_ms),
        take_column!(raw, "latency_max", latency_max_ms),
        take_column!(raw, "prompt_tokens", prompt_tokens),
        take_column!(raw, "completion_tokens", completion_tokens),
        take_column!(raw, "cost_usd", cost_usd),
        take_column!(raw, "rating_sum", rating_sum),
        take_column!(raw, "rating_count", rating_count),
        take_column!(raw, "rating_low_count", rating_low_count),
        take_column!(raw, "value_sum", value_sum),
        take_column!(raw, "value_min", value_min),
        take_column!(raw, "value_max", value_max),
    ])?;
    let measures = frame
        .lazy()
        .group_by([col("event_type"), col("source"), col("subject")])
        .agg([
            col("event_count").sum(),
            col("error_count").sum(),
            col("latency_count").sum(),
            col("latency_sum").sum(),
            col("latency_max").max(),
            col("prompt_tokens").sum(),
            col("completion_tokens").sum(),
            col("cost_usd").sum(),
            col("rating_sum").sum(),
            col("rating_count").sum(),
            // Unknown (rows from before the measure) if any part is unknown.
            when(col("rating_low_count").null_count().gt(lit(0)))
                .then(lit(NULL).cast(DataType::Int64))
                .otherwise(col("rating_low_count").sum())
                .alias("rating_low_count"),
            col("value_sum").sum(),
            col("value_min").min(),
            col("value_max").max(),
        ])
        .collect()?;

    Ok((n, join(read_measures(&measures)?, sketches)))
}

/// Each group's measures with its sketches.
fn join(
    measures: Vec<(Key, Measures)>,
    mut sketches: HashMap<Key, (DDSketch, Users)>,
) -> HashMap<Key, Group> {
    measures
        .into_iter()
        .map(|(key, measures)| {
            let (latency, users) = sketches
                .remove(&key)
                .unwrap_or_else(|| (sketch::new_latency(), sketch::new_users()));
            let group = Group {
                measures,
                latency,
                users,
            };
            (key, group)
        })
        .collect()
}

/// The aggregated frame (one row per group, columns named as in [`Measures`]) → rows.
fn read_measures(frame: &DataFrame) -> Result<Vec<(Key, Measures)>, Error> {
    let s = |name: &str| -> Result<&StringChunked, Error> { Ok(frame.column(name)?.str()?) };
    let i = |name: &str| -> Result<Int64Chunked, Error> {
        Ok(frame.column(name)?.cast(&DataType::Int64)?.i64()?.clone())
    };
    let f = |name: &str| -> Result<Float64Chunked, Error> {
        Ok(frame.column(name)?.cast(&DataType::Float64)?.f64()?.clone())
    };
    let (types, sources, subjects) = (s("event_type")?, s("source")?, s("subject")?);
    let (events, errors, lat_n) = (i("event_count")?, i("error_count")?, i("latency_count")?);
    let (lat_sum, lat_max) = (f("latency_sum")?, f("latency_max")?);
    let (prompt, completion, cost) = (i("prompt_tokens")?, i("completion_tokens")?, f("cost_usd")?);
    let (rating_sum, rating_n) = (f("rating_sum")?, i("rating_count")?);
    let rating_low = i("rating_low_count")?;
    let (value_sum, value_min, value_max) = (f("value_sum")?, f("value_min")?, f("value_max")?);
    let mut out = Vec::with_capacity(frame.height());
    for r in 0..frame.height() {
        let key = (
            types.get(r).unwrap_or_default().to_string(),
            sources.get(r).unwrap_or_default().to_string(),
            subjects.get(r).unwrap_or_default().to_string(),
        );
        out.push((
            key,
            Measures {
                event_count: events.get(r).unwrap_or(0),
                error_count: errors.get(r).unwrap_or(0),
                latency_count: lat_n.get(r).unwrap_or(0),
                latency_sum: lat_sum.get(r).unwrap_or(0.0),
                latency_max: lat_max.get(r),
                prompt_tokens: prompt.get(r).unwrap_or(0),
                completion_tokens: completion.get(r).unwrap_or(0),
                cost_usd: cost.get(r).unwrap_or(0.0),
                rating_sum: rating_sum.get(r).unwrap_or(0.0),
                rating_count: rating_n.get(r).unwrap_or(0),
                rating_low_count: rating_low.get(r),
                value_sum: value_sum.get(r).unwrap_or(0.0),
                value_min: value_min.get(r),
                value_max: value_max.get(r),
            },
        ));
    }
    Ok(out)
}

/// Replaces the bucket's rows with `groups` and records the bucket, inside
/// the caller's transaction. Returns the rows written and the new seq.
async fn write(
    tx: &mut PgConnection,
    grain: Grain,
    bucket_start: DateTime<Utc>,
    groups: HashMap<Key, Group>,
    mark: i64,
) -> Result<(usize, i64), Error> {
    let cols = crate::off_runtime(move || columns(groups)).await?;
    let rows = cols.event_type.len();
    sqlx::query!(
        "DELETE FROM rollups WHERE grain = $1 AND bucket_start = $2",
        grain.as_str(),
        bucket_start,
    )
    .execute(&mut *tx)
    .await?;
    if rows > 0 {
        // Arrays that hold NULLs are bound unchecked (`as _`): the macro's
        // check knows arrays without them only.
        sqlx::query!(
            "INSERT INTO rollups (grain, bucket_start, event_type, source, subject, event_count,
                error_count, latency_count, latency_sum_ms, latency_avg_ms, latency_max_ms,
                latency_p50_ms, latency_p95_ms, latency_p99_ms, prompt_tokens, completion_tokens,
                cost_usd, rating_sum, rating_count, rating_avg, value_sum, value_min, value_max,
                distinct_users, latency_sketch, users_sketch, rating_low_count)
             SELECT $1, $2, * FROM unnest($3::text[], $4::text[], $5::text[], $6::int8[],
                $7::int8[], $8::int8[], $9::float8[], $10::float8[], $11::float8[], $12::float8[],
                $13::float8[], $14::float8[], $15::int8[], $16::int8[], $17::float8[],
                $18::float8[], $19::int8[], $20::float8[], $21::float8[], $22::float8[],
                $23::float8[], $24::int8[], $25::bytea[], $26::bytea[], $27::int8[])",
            grain.as_str(),
            bucket_start,
            &cols.event_type,
            &cols.source,
            &cols.subject,
            &cols.event_count,
            &cols.error_count,
            &cols.latency_count,
            &cols.latency_sum,
            &cols.latency_avg as _,
            &cols.latency_max as _,
            &cols.p50 as _,
            &cols.p95 as _,
            &cols.p99 as _,
            &cols.prompt,
            &cols.completion,
            &cols.cost,
            &cols.rating_sum,
            &cols.rating_count,
            &cols.rating_avg as _,
            &cols.value_sum,
            &cols.value_min as _,
            &cols.value_max as _,
            &cols.users,
            &cols.latency_sketch as _,
            &cols.users_sketch as _,
            &cols.rating_low as _,
        )
        .execute(&mut *tx)
        .await?;
    }
    let above: Vec<String> = ancestors(grain, bucket_start)
        .into_iter()
        .map(|(g, s)| lock_key(g, s))
        .collect();
    sqlx::query!(
        "SELECT pg_advisory_xact_lock_shared(hashtextextended(k, 0)) FROM unnest($1::text[]) k",
        &above,
    )
    .execute(&mut *tx)
    .await?;
    let seq: i64 = sqlx::query_scalar!(
        "INSERT INTO rollup_buckets (grain, bucket_start, seq, input_mark, rows, computed_at)
         VALUES ($1, $2, nextval('rollup_seq'), $3, $4, now())
         ON CONFLICT (grain, bucket_start) DO UPDATE SET
             seq = EXCLUDED.seq, input_mark = EXCLUDED.input_mark, rows = EXCLUDED.rows,
             computed_at = EXCLUDED.computed_at
         RETURNING seq",
        grain.as_str(),
        bucket_start,
        mark,
        i32::try_from(rows).unwrap_or(i32::MAX),
    )
    .fetch_one(&mut *tx)
    .await?;
    Ok((rows, seq))
}

/// The groups as the columns to insert (quantiles and sketches encoded).
fn columns(groups: HashMap<Key, Group>) -> Result<Columns, Error> {
    let mut cols = Columns::default();
    for ((event_type, source, subject), mut g) in groups {
        let m = g.measures;
        let ratio = |sum: f64, n: i64| (n > 0).then(|| sum / n as f64);
        let has_latency = m.latency_count > 0;
        cols.event_type.push(event_type);
        cols.source.push(source);
        cols.subject.push(subject);
        cols.event_count.push(m.event_count);
        cols.error_count.push(m.error_count);
        cols.latency_count.push(m.latency_count);
        cols.latency_sum.push(m.latency_sum);
        cols.latency_avg.push(ratio(m.latency_sum, m.latency_count));
        cols.latency_max.push(m.latency_max);
        for (p, out) in [
            (0.50, &mut cols.p50),
            (0.95, &mut cols.p95),
            (0.99, &mut cols.p99),
        ] {
            out.push(if has_latency {
                sketch::quantile(&g.latency, p)
            } else {
                None
            });
        }
        cols.prompt.push(m.prompt_tokens);
        cols.completion.push(m.completion_tokens);
        cols.cost.push(m.cost_usd);
        cols.rating_sum.push(m.rating_sum);
        cols.rating_count.push(m.rating_count);
        cols.rating_low.push(m.rating_low_count);
        cols.rating_avg.push(ratio(m.rating_sum, m.rating_count));
        cols.value_sum.push(m.value_sum);
        cols.value_min.push(m.value_min);
        cols.value_max.push(m.value_max);
        cols.users.push(sketch::count_users(&mut g.users));
        cols.latency_sketch.push(
            has_latency
                .then(|| sketch::encode_latency(&g.latency))
                .transpose()?,
        );
        cols.users_sketch
            .push(Some(sketch::encode_users(&g.users)?));
    }
    Ok(cols)
}

/// The rows to insert, column by column (bound as arrays).
#[derive(Default)]
struct Columns {
    event_type: Vec<String>,
    source: Vec<String>,
    subject: Vec<String>,
    event_count: Vec<i64>,
    error_count: Vec<i64>,
    latency_count: Vec<i64>,
    latency_sum: Vec<f64>,
    latency_avg: Vec<Option<f64>>,
    latency_max: Vec<Option<f64>>,
    p50: Vec<Option<f64>>,
    p95: Vec<Option<f64>>,
    p99: Vec<Option<f64>>,
    prompt: Vec<i64>,
    completion: Vec<i64>,
    cost: Vec<f64>,
    rating_sum: Vec<f64>,
    rating_count: Vec<i64>,
    rating_low: Vec<Option<i64>>,
    rating_avg: Vec<Option<f64>>,
    value_sum: Vec<f64>,
    value_min: Vec<Option<f64>>,
    value_max: Vec<Option<f64>>,
    users: Vec<i64>,
    latency_sketch: Vec<Option<Vec<u8>>>,
    users_sketch: Vec<Option<Vec<u8>>>,
}
