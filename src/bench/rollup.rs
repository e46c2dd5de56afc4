//! `hxjobs bench rollup`: the hourly rollup of N events of one hour (load,
//! Polars, sketches, upsert: exactly what an `aggregate` task runs), from
//! the raw events and from the columns ingest stages, next to the same
//! rollup written as one PostgreSQL statement (GROUP BY with
//! `percentile_cont` and `count(DISTINCT …)`), on the same rows, in a
//! scratch database. Staging is timed on its own: ingest pays it.

use std::fmt;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::interval::Grain;
use crate::rollup::stage::{self, Staged, TimedRow, RAW_COLUMNS};
use crate::{db, rollup};

#[derive(Debug, Clone)]
pub struct RollupBench {
    pub events: u64,
    pub rows: usize,
    /// The rollup reading the staged columns (what ingest leaves).
    pub hxjobs: Duration,
    /// The same rollup before staging, reading the raw events.
    pub unstaged: Duration,
    /// Staging the hour as ingest does, batch by batch.
    pub staging: Duration,
    pub batches: usize,
    pub sql: Duration,
    pub sql_rows: u64,
}

impl fmt::Display for RollupBench {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let speedup = self.sql.as_secs_f64() / self.hxjobs.as_secs_f64().max(1e-9);
        writeln!(f, "hxjobs bench rollup: {} events in one hour", self.events)?;
        writeln!(
            f,
            "  one SQL statement (GROUP BY, percentile_cont)   {:>7.2} s  ({} rows)",
            self.sql.as_secs_f64(),
            self.sql_rows
        )?;
        writeln!(
            f,
            "  hxjobs aggregate from raw events (unstaged)     {:>7.2} s",
            self.unstaged.as_secs_f64(),
        )?;
        writeln!(
            f,
            "  hxjobs aggregate from staged columns            {:>7.2} s  ({} rows)",
            self.hxjobs.as_secs_f64(),
            self.rows
        )?;
        writeln!(
            f,
            "  staging cost paid at ingest ({} batches)        {:>7.2} s  ({:.2} µs/event)",
            self.batches,
            self.staging.as_secs_f64(),
            self.staging.as_secs_f64() * 1e6 / (self.events.max(1) as f64)
        )?;
        write!(
            f,
            "  SQL time / hxjobs time  {speedup:.2}  (target >= 2.00: {})",
            if speedup >= 2.0 { "met" } else { "NOT met" }
        )
    }
}

pub async fn rollup(base: &Config, events: u64, keep: bool) -> anyhow::Result<RollupBench> {
    let scratch = super::Scratch::create(base, "rollup").await?;
    let result = run(&scratch.config, events).await;
    scratch.finish(keep).await;
    result
}

async fn run(config: &Config, events: u64) -> anyhow::Result<RollupBench> {
    let pool = db::connect_and_migrate(&config.database).await?;
    let hour = crate::time::parse_instant(HOUR).map_err(anyhow::Error::msg)?;
    // One hour of events of all five types: 8 models, 3 sources, 20,000 users.
    let day = hour.date_naive();
    insert_events(&pool, day, hour, 3600, 0, events).await?;
    sqlx::query("VACUUM ANALYZE events").execute(&pool).await?;

    let started = Instant::now();
    let sql_rows = sqlx::raw_sql(&SQL_ROLLUP.replace("$1", &format!("'{HOUR}'::timestamptz")))
        .execute(&pool)
        .await?
        .rows_affected();
    let sql = started.elapsed();

    let started = Instant::now();
    rollup::aggregate(&pool, Grain::Hour, hour).await?;
    let unstaged = started.elapsed();

    // Stage the hour as ingest does: one blob per batch, inside its transaction.
    let rows: Vec<TimedRow> = sqlx::query_as(&format!(
        "SELECT event_time, {RAW_COLUMNS} FROM events ORDER BY kafka_offset"
    ))
    .fetch_all(&pool)
    .await?;
    let batch_size = config.ingest.batch_size.max(1);
    let mut batches = Vec::new();
    let mut staged = Staged::default();
    for row in rows {
        staged.push_timed(row);
        if staged.rows() == batch_size {
            batches.push(std::mem::take(&mut staged));
        }
    }
    if staged.rows() > 0 {
        batches.push(staged);
    }
    let n_batches = batches.len();
    let mut conn = pool.acquire().await?;
    let started = Instant::now();
    for batch in batches {
        let mut tx = sqlx::Acquire::begin(&mut *conn).await?;
        stage::write(&mut tx, batch).await?;
        tx.commit().await?;
    }
    let staging = started.elapsed();
    drop(conn);

    let started = Instant::now();
    let summary = rollup::aggregate(&pool, Grain::Hour, hour).await?;
    let hxjobs = started.elapsed();
    pool.close().await;
    Ok(RollupBench {
        events,
        rows: summary.rows,
        hxjobs,
        unstaged,
        staging,
        batches: n_batches,
        sql,
        sql_rows,
    })
}

const HOUR: &str = "2026-03-02T13:00:00Z";

/// Inserts `n` synthetic events of all five types (8 models, 3 sources,
/// 20,000 users) into `day`'s partition, spread evenly over the
/// `spread_secs` seconds from `start`; offsets continue from `first_offset`.
pub(super) async fn insert_events(
    pool: &sqlx::PgPool,
    day: chrono::NaiveDate,
    start: chrono::DateTime<chrono::Utc>,
    spread_secs: i64,
    first_offset: i64,
    n: u64,
) -> anyhow::Result<()> {
    sqlx::query("SELECT hxjobs_ensure_event_partition($1)")
        .bind(day)
        .execute(pool)
        .await?;
    sqlx::query(
        "INSERT INTO events (event_day, event_id, event_type, event_time, source, model, latency_ms,
                             prompt_tokens, completion_tokens, cost_usd, status, rating, name, value,
                             error_type, user_id, data, kafka_topic, kafka_partition, kafka_offset)
         SELECT $1, gen_random_uuid(), t, $2::timestamptz + (i * $3::bigint / $4::bigint) * interval '1 second',
                'src-' || (i % 3),
                CASE WHEN t IN ('llm_request', 'user_feedback') THEN 'model-' || (i % 8) END,
                CASE WHEN t = 'llm_request' THEN 50 + (i * 7919 % 5000) + random() END,
                CASE WHEN t = 'llm_request' THEN i % 2000 END,
                CASE WHEN t = 'llm_request' THEN i % 700 END,
                CASE WHEN t = 'llm_request' THEN (i % 1000) / 100000.0 END,
                CASE WHEN t = 'llm_request' THEN (ARRAY['success', 'success', 'error', 'timeout'])[1 + i % 4] END,
                CASE WHEN t = 'user_feedback' THEN 1 + i % 5 END,
                CASE WHEN t IN ('system_metric', 'business_event') THEN 'metric-' || (i % 10) END,
                CASE WHEN t IN ('system_metric', 'business_event') THEN (i % 997) * 1.5 END,
                CASE WHEN t = 'error_event' THEN 'error-' || (i % 6) END,
                'user-' || (i * 31 % 20000),
                '{}'::jsonb, 'bench', 0, $5::bigint + i
         FROM generate_series(0, $4::bigint - 1) i,
              LATERAL (SELECT (ARRAY['llm_request', 'llm_request', 'user_feedback', 'system_metric',
                                     'business_event', 'error_event'])[1 + i % 6] AS t) types",
    )
    .bind(day)
    .bind(start)
    .bind(spread_secs)
    .bind(n as i64)
    .bind(first_offset)
    .execute(pool)
    .await?;
    Ok(())
}

/// The same measures in one statement, exact percentiles and distinct counts.
const SQL_ROLLUP: &str = "
CREATE TABLE sql_rollup AS
SELECT event_type, source,
       CASE WHEN event_type IN ('llm_request', 'user_feedback') THEN COALESCE(model, model_id, '')
            WHEN event_type IN ('system_metric', 'business_event') THEN COALESCE(name, '')
            WHEN event_type = 'error_event' THEN COALESCE(error_type, '') ELSE '' END AS subject,
       count(*) AS event_count,
       count(*) FILTER (WHERE event_type = 'error_event'
                        OR (event_type = 'llm_request' AND status IN ('error', 'timeout'))) AS error_count,
       avg(latency_ms) FILTER (WHERE event_type = 'llm_request') AS latency_avg_ms,
       max(latency_ms) FILTER (WHERE event_type = 'llm_request') AS latency_max_ms,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) FILTER (WHERE event_type = 'llm_request') AS p50,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) FILTER (WHERE event_type = 'llm_request') AS p95,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms) FILTER (WHERE event_type = 'llm_request') AS p99,
       sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens,
       sum(cost_usd) AS cost_usd,
       avg(rating) FILTER (WHERE event_type = 'user_feedback') AS rating_avg,
       count(rating) FILTER (WHERE event_type = 'user_feedback') AS rating_count,
       sum(value) AS value_sum, min(value) AS value_min, max(value) AS value_max,
       count(DISTINCT user_id) AS distinct_users
FROM events
WHERE event_time >= $1 AND event_time < $1 + interval '1 hour'
GROUP BY 1, 2, 3";
