//! The rollup rows a report reads, and their measures summed with the
//! sketches merged (docs/measures.md).

use chrono::{DateTime, Utc};
use sketches_ddsketch::DDSketch;
use sqlx::PgPool;

use super::Error;
use crate::interval::Grain;
use crate::rollup::read::{self, RollupFilter, RollupRow};
use crate::rollup::sketch::{self, Users};

/// A stored rollup row, as reports read it: its sketches decoded once.
pub struct Row {
    row: RollupRow,
    latency: Option<DDSketch>,
    users: Option<Users>,
}

impl std::ops::Deref for Row {
    type Target = RollupRow;

    fn deref(&self) -> &RollupRow {
        &self.row
    }
}

/// Stored rows of `grain` with buckets starting in `[from, to)`.
pub async fn rows(
    pool: &PgPool,
    grain: Grain,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<Row>, Error> {
    let stored = read::rows(pool, &RollupFilter::all(grain.as_str(), from, to)).await?;
    stored
        .into_iter()
        .map(|mut row| {
            let latency = row
                .latency_sketch
                .take()
                .map(|b| sketch::decode_latency(&b))
                .transpose()?;
            let users = row
                .users_sketch
                .take()
                .map(|b| sketch::decode_users(&b))
                .transpose()?;
            Ok(Row {
                row,
                latency,
                users,
            })
        })
        .collect()
}

/// Measures summed over rollup rows, sketches merged.
pub struct Totals {
    pub rows: usize,
    pub events: i64,
    pub requests: i64,
    /// Failed requests: llm_request with status error or timeout.
    pub request_errors: i64,
    pub error_events: i64,
    pub latency_count: i64,
    pub latency_sum: f64,
    pub prompt: i64,
    pub completion: i64,
    pub cost: f64,
    pub rating_sum: f64,
    pub rating_count: i64,
    /// Ratings ≤ 3; `None` when a row with ratings did not record it.
    pub rating_low: Option<i64>,
    /// business_event values named revenue, and counts of signup and
    /// subscription_upgrade events.
    pub revenue: f64,
    pub signups: i64,
    pub upgrades: i64,
    latency: DDSketch,
    users: Users,
}

impl Default for Totals {
    fn default() -> Self {
        Totals {
            rows: 0,
            events: 0,
            requests: 0,
            request_errors: 0,
            error_events: 0,
            latency_count: 0,
            latency_sum: 0.0,
            prompt: 0,
            completion: 0,
            cost: 0.0,
            rating_sum: 0.0,
            rating_count: 0,
            rating_low: Some(0),
            revenue: 0.0,
            signups: 0,
            upgrades: 0,
            latency: sketch::new_latency(),
            users: sketch::new_users(),
        }
    }
}

impl Totals {
    pub fn add(&mut self, r: &Row) -> Result<(), Error> {
        self.rows += 1;
        self.events += r.event_count;
        match r.event_type.as_str() {
            "llm_request" => {
                self.requests += r.event_count;
                self.request_errors += r.error_count;
            }
            "error_event" => self.error_events += r.event_count,
            "business_event" => match r.subject.as_str() {
                "revenue" => self.revenue += r.value_sum,
                "signup" => self.signups += r.event_count,
                "subscription_upgrade" => self.upgrades += r.event_count,
                _ => {}
            },
            _ => {}
        }
        self.latency_count += r.latency_count;
        self.latency_sum += r.latency_sum_ms;
        self.prompt += r.prompt_tokens;
        self.completion += r.completion_tokens;
        self.cost += r.cost_usd;
        self.rating_sum += r.rating_sum;
        self.rating_count += r.rating_count;
        if r.rating_count > 0 {
            self.rating_low = match (self.rating_low, r.rating_low_count) {
                (Some(a), Some(b)) => Some(a + b),
                _ => None,
            };
        }
        if let Some(l) = &r.latency {
            sketch::merge_latency(&mut self.latency, l)?;
        }
        if let Some(u) = &r.users {
            sketch::merge_users(&mut self.users, u)?;
        }
        Ok(())
    }

    pub fn of<'a>(rows: impl IntoIterator<Item = &'a Row>) -> Result<Totals, Error> {
        let mut t = Totals::default();
        for r in rows {
            t.add(r)?;
        }
        Ok(t)
    }

    /// Whether any stored row fed these totals.
    pub fn has_data(&self) -> bool {
        self.rows > 0
    }

    pub fn error_rate_pct(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.request_errors as f64 * 100.0 / self.requests as f64)
    }

    pub fn availability_pct(&self) -> Option<f64> {
        self.error_rate_pct().map(|e| 100.0 - e)
    }

    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.latency_count == 0 {
            return None;
        }
        sketch::quantile(&self.latency, q)
    }

    pub fn latency_avg(&self) -> Option<f64> {
        (self.latency_count > 0).then(|| self.latency_sum / self.latency_count as f64)
    }

    pub fn rating_avg(&self) -> Option<f64> {
        (self.rating_count > 0).then(|| self.rating_sum / self.rating_count as f64)
    }

    pub fn low_rating_pct(&self) -> Option<f64> {
        let low = self.rating_low?;
        (self.rating_count > 0).then(|| low as f64 * 100.0 / self.rating_count as f64)
    }

    pub fn cost_per_1k_requests(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.cost * 1000.0 / self.requests as f64)
    }

    pub fn users(&mut self) -> i64 {
        sketch::count_users(&mut self.users)
    }
}
