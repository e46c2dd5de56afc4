//! Reading rollup rows, for every reader: the API, the console, exports,
//! reports and the coarser grains merged from finer ones. Its statement is checked against the schema when hxjobs
//! compiles.

use chrono::{DateTime, Utc};
use serde::Serialize;

/// A stored rollup row. Its sketches are read only when asked for
/// ([`RollupFilter::sketches`]) and are never shown.
#[derive(Debug, Clone, Serialize)]
pub struct RollupRow {
    pub grain: String,
    pub bucket_start: DateTime<Utc>,
    pub event_type: String,
    pub source: String,
    pub subject: String,
    pub event_count: i64,
    pub error_count: i64,
    pub latency_count: i64,
    pub latency_sum_ms: f64,
    pub latency_avg_ms: Option<f64>,
    pub latency_max_ms: Option<f64>,
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost_usd: f64,
    pub rating_sum: f64,
    pub rating_avg: Option<f64>,
    pub rating_count: i64,
    /// Ratings ≤ 3; `None` on rows written before it was recorded.
    pub rating_low_count: Option<i64>,
    pub value_sum: f64,
    pub value_min: Option<f64>,
    pub value_max: Option<f64>,
    pub distinct_users: i64,
    #[serde(skip)]
    pub latency_sketch: Option<Vec<u8>>,
    #[serde(skip)]
    pub users_sketch: Option<Vec<u8>>,
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
    /// Read the latency and users sketches too (to merge rows).
    pub sketches: bool,
}

impl<'a> RollupFilter<'a> {
    /// Every row of `grain` with buckets starting in `[from, to)`, sketches
    /// included.
    pub fn all(grain: &'a str, from: DateTime<Utc>, to: DateTime<Utc>) -> RollupFilter<'a> {
        RollupFilter {
            grain,
            from,
            to,
            event_type: None,
            source: None,
            subject: None,
            limit: i64::MAX,
            sketches: true,
        }
    }
}

/// Rollup rows, oldest bucket first.
pub async fn rows(
    db: impl sqlx::PgExecutor<'_>,
    f: &RollupFilter<'_>,
) -> Result<Vec<RollupRow>, sqlx::Error> {
    sqlx::query_as!(
        RollupRow,
        "SELECT grain, bucket_start, event_type, source, subject, event_count, error_count,
                latency_count, latency_sum_ms, latency_avg_ms, latency_max_ms, latency_p50_ms,
                latency_p95_ms, latency_p99_ms, prompt_tokens, completion_tokens, cost_usd,
                rating_sum, rating_avg, rating_count, rating_low_count, value_sum, value_min,
                value_max, distinct_users,
                CASE WHEN $8 THEN latency_sketch END AS latency_sketch,
                CASE WHEN $8 THEN users_sketch END AS users_sketch
         FROM rollups
         WHERE grain = $1 AND bucket_start >= $2 AND bucket_start < $3
           AND ($4::text IS NULL OR event_type = $4) AND ($5::text IS NULL OR source = $5)
           AND ($6::text IS NULL OR subject = $6)
         ORDER BY bucket_start, event_type, source, subject LIMIT $7",
        f.grain,
        f.from,
        f.to,
        f.event_type,
        f.source,
        f.subject,
        f.limit,
        f.sketches,
    )
    .fetch_all(db)
    .await
}
