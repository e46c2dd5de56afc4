//! Reading rollup rows: what the API, the console and exports show.

use chrono::{DateTime, Utc};
use serde::Serialize;

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct RollupRow {
    pub grain: String,
    pub bucket_start: DateTime<Utc>,
    pub event_type: String,
    pub source: String,
    pub subject: String,
    pub event_count: i64,
    pub error_count: i64,
    pub latency_avg_ms: Option<f64>,
    pub latency_max_ms: Option<f64>,
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost_usd: f64,
    pub rating_avg: Option<f64>,
    pub rating_count: i64,
    pub value_sum: f64,
    pub value_min: Option<f64>,
    pub value_max: Option<f64>,
    pub distinct_users: i64,
}

/// Which rollup rows to read.
pub struct RollupFilter<'a> {
    pub grain: &'a str,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub event_type: Option<&'a str>,
    pub source: Option<&'a str>,
    pub subject: Option<&'a str>,
    pub limit: i64,
}

/// Rollup rows, oldest bucket first.
pub async fn rows(
    pool: &sqlx::PgPool,
    f: &RollupFilter<'_>,
) -> Result<Vec<RollupRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT grain, bucket_start, event_type, source, subject, event_count, error_count,
                latency_avg_ms, latency_max_ms, latency_p50_ms, latency_p95_ms, latency_p99_ms,
                prompt_tokens, completion_tokens, cost_usd, rating_avg, rating_count, value_sum,
                value_min, value_max, distinct_users
         FROM rollups
         WHERE grain = $1 AND bucket_start >= $2 AND bucket_start < $3
           AND ($4::text IS NULL OR event_type = $4) AND ($5::text IS NULL OR source = $5)
           AND ($6::text IS NULL OR subject = $6)
         ORDER BY bucket_start, event_type, source, subject LIMIT $7",
    )
    .bind(f.grain)
    .bind(f.from)
    .bind(f.to)
    .bind(f.event_type)
    .bind(f.source)
    .bind(f.subject)
    .bind(f.limit)
    .fetch_all(pool)
    .await
}
