//! Buckets made complete on demand. A report, or a coarser rollup, asks for
//! every bucket of a grain over a range; each comes from the finest data
//! that is right: the stored rollup when it is fresh, else merged again from
//! its finer buckets (made complete first), else rolled up from the events
//! still stored. What was computed is stored like the jobs store it.
//!
//! Fresh means: recorded in `rollup_buckets`, and, for an hour, no events
//! stored for it since (`rollup_inputs.version` not past its mark); for a
//! coarser bucket, every finer bucket still stored inside it is fresh and
//! none was written after it was merged (no finer `seq` past its mark).
//! Finer buckets that retention removed leave the coarser one standing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::{aggregate, source_grain, Error};
use crate::interval::Grain;

/// Where one bucket's rows came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Its own stored rollup, fresh.
    Stored,
    /// Merged again from finer rollups (the finest grain read).
    Merged(Grain),
    /// Rolled up from the raw events (some hour inside it, at least).
    Events,
    /// Nothing stored for it: no rollup, no events.
    NoData,
}

impl Origin {
    /// The finer of two origins, as read for a bucket merged from both.
    fn finest(self, other: Origin) -> Origin {
        let rank = |o: Origin| match o {
            Origin::NoData => 0,
            Origin::Stored => 1,
            Origin::Merged(Grain::Month) | Origin::Merged(Grain::Week) => 2,
            Origin::Merged(Grain::Day) => 3,
            Origin::Merged(_) => 4,
            Origin::Events => 5,
        };
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }
}

/// One bucket, complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    pub grain: Grain,
    pub start: DateTime<Utc>,
    pub origin: Origin,
    /// Rollup rows stored for it (0 with [`Origin::NoData`]).
    pub rows: i64,
    pub seq: i64,
}

impl Bucket {
    pub fn has_data(&self) -> bool {
        self.origin != Origin::NoData && self.rows > 0
    }
}

#[derive(Debug, Clone, Copy)]
struct Rec {
    seq: i64,
    mark: i64,
    rows: i64,
}

/// `rollup_buckets` and hour versions over a range, read once.
struct State {
    recs: HashMap<(Grain, DateTime<Utc>), Rec>,
    versions: HashMap<DateTime<Utc>, i64>,
}

impl State {
    async fn read(pool: &PgPool, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<State, Error> {
        let rows: Vec<(String, DateTime<Utc>, i64, i64, i32)> = sqlx::query!(
            "SELECT grain, bucket_start, seq, input_mark, rows FROM rollup_buckets
             WHERE bucket_start >= $1 AND bucket_start < $2",
            from,
            to,
        )
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|r| (r.grain, r.bucket_start, r.seq, r.input_mark, r.rows))
        .collect();
        let versions: Vec<(DateTime<Utc>, i64)> = sqlx::query!(
            "SELECT hour, version FROM rollup_inputs WHERE hour >= $1 AND hour < $2",
            from,
            to,
        )
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|r| (r.hour, r.version))
        .collect();
        let recs = rows
            .into_iter()
            .filter_map(|(g, start, seq, mark, rows)| {
                let grain = Grain::parse(&g)?;
                Some((
                    (grain, start),
                    Rec {
                        seq,
                        mark,
                        rows: i64::from(rows),
                    },
                ))
            })
            .collect();
        Ok(State {
            recs,
            versions: versions.into_iter().collect(),
        })
    }

    fn fresh(&self, grain: Grain, start: DateTime<Utc>) -> bool {
        let Some(rec) = self.recs.get(&(grain, start)) else {
            return false;
        };
        match source_grain(grain) {
            None => self.versions.get(&start).is_none_or(|v| *v <= rec.mark),
            Some(finer) => {
                let end = grain.next(start);
                finer
                    .starts(start, end)
                    .into_iter()
                    .all(|c| match self.recs.get(&(finer, c)) {
                        None => true,
                        Some(child) => child.seq <= rec.mark && self.fresh(finer, c),
                    })
            }
        }
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Every bucket of `grain` starting in `[from, to)` and before `now`, each
/// made complete (see the module's rules). Oldest first.
pub async fn ensure(
    pool: &PgPool,
    grain: Grain,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Vec<Bucket>, Error> {
    let from = grain.floor(from);
    let state = State::read(pool, from, to.max(grain.next(from))).await?;
    ensure_in(pool, &state, grain, from, to, now).await
}

fn ensure_in<'a>(
    pool: &'a PgPool,
    state: &'a State,
    grain: Grain,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
) -> BoxFuture<'a, Result<Vec<Bucket>, Error>> {
    Box::pin(async move {
        let mut out = Vec::new();
        for start in grain.starts(from, to) {
            if start >= now {
                break;
            }
            out.push(ensure_one(pool, state, grain, start, now).await?);
        }
        Ok(out)
    })
}

async fn ensure_one(
    pool: &PgPool,
    state: &State,
    grain: Grain,
    start: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Bucket, Error> {
    let rec = state.recs.get(&(grain, start)).copied();
    if let Some(rec) = rec.filter(|_| state.fresh(grain, start)) {
        return Ok(Bucket {
            grain,
            start,
            origin: if rec.rows > 0 {
                Origin::Stored
            } else {
                Origin::NoData
            },
            rows: rec.rows,
            seq: rec.seq,
        });
    }
    let origin = match source_grain(grain) {
        None => {
            let known = rec.is_some() || state.versions.contains_key(&start);
            if !known && !has_events(pool, start, grain.next(start)).await? {
                return Ok(no_data(grain, start));
            }
            Origin::Events
        }
        Some(finer) => {
            let children = ensure_in(pool, state, finer, start, grain.next(start), now).await?;
            if rec.is_none() && !children.iter().any(Bucket::has_data) {
                return Ok(no_data(grain, start));
            }
            children
                .iter()
                .fold(Origin::Merged(finer), |o, c| match c.origin {
                    Origin::Stored => o.finest(Origin::Merged(finer)),
                    other => o.finest(other),
                })
        }
    };
    let summary = aggregate(pool, grain, start).await?;
    let rows = summary.rows as i64;
    Ok(Bucket {
        grain,
        start,
        origin: if rows > 0 { origin } else { Origin::NoData },
        rows,
        seq: summary.seq,
    })
}

fn no_data(grain: Grain, start: DateTime<Utc>) -> Bucket {
    Bucket {
        grain,
        start,
        origin: Origin::NoData,
        rows: 0,
        seq: 0,
    }
}

async fn has_events(pool: &PgPool, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<bool, Error> {
    Ok(sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM events
                          WHERE event_day = $3 AND event_time >= $1 AND event_time < $2)
                  AS "any!""#,
        from,
        to,
        from.date_naive(),
    )
    .fetch_one(pool)
    .await?)
}

/// Hours rolled up before events were stored for them, oldest first.
pub async fn stale_hours(pool: &PgPool, limit: i64) -> Result<Vec<DateTime<Utc>>, Error> {
    Ok(sqlx::query_scalar!(
        "SELECT b.bucket_start FROM rollup_buckets b
         JOIN rollup_inputs i ON i.hour = b.bucket_start
         WHERE b.grain = 'hour' AND i.version > b.input_mark
         ORDER BY b.bucket_start LIMIT $1",
        limit,
    )
    .fetch_all(pool)
    .await?)
}

/// What [`refresh_stale`] did.
#[derive(Debug, Default, Clone)]
pub struct Refreshed {
    pub hours: Vec<DateTime<Utc>>,
    /// Coarser buckets (already stored, period over) merged again.
    pub coarser: Vec<(Grain, DateTime<Utc>)>,
}

/// Rolls every stale hour up again (at most `limit`), then merges again
/// each stored day, week and month above them whose period is over, so the
/// late events reach every grain.
pub async fn refresh_stale(
    pool: &PgPool,
    limit: i64,
    now: DateTime<Utc>,
) -> Result<Refreshed, Error> {
    let hours = stale_hours(pool, limit).await?;
    // Days first, then weeks, then months: each merges the one below.
    const ORDER: [Grain; 3] = [Grain::Day, Grain::Week, Grain::Month];
    let mut above: BTreeSet<(usize, DateTime<Utc>)> = BTreeSet::new();
    for &h in &hours {
        aggregate(pool, Grain::Hour, h).await?;
        for (g, s) in super::ancestors(Grain::Hour, h) {
            if let Some(order) = ORDER.iter().position(|o| *o == g) {
                above.insert((order, s));
            }
        }
    }
    let mut coarser = Vec::new();
    for (order, start) in above {
        let grain = ORDER[order];
        if grain.next(start) > now {
            continue;
        }
        let stored: Option<i64> = sqlx::query_scalar!(
            "SELECT seq FROM rollup_buckets WHERE grain = $1 AND bucket_start = $2",
            grain.as_str(),
            start,
        )
        .fetch_optional(pool)
        .await?;
        if stored.is_none() {
            continue; // its own job computes it, from the refreshed hours
        }
        let done = ensure(pool, grain, start, grain.next(start), now).await?;
        if done.iter().any(|b| b.origin != Origin::Stored) {
            coarser.push((grain, start));
        }
    }
    Ok(Refreshed { hours, coarser })
}

const NO_DATA: &str = "no data";

/// How a range's buckets were obtained, for a report's `sources`.
#[derive(Debug, Clone, Serialize)]
pub struct Provenance {
    pub grain: Grain,
    pub buckets: usize,
    /// Buckets per origin, e.g. `{"stored": 5, "merged_from_hour": 2}`.
    pub origins: BTreeMap<String, usize>,
    /// Starts of the buckets without any data.
    pub missing: Vec<DateTime<Utc>>,
}

impl Provenance {
    pub fn of(grain: Grain, buckets: &[Bucket]) -> Provenance {
        let mut origins = BTreeMap::new();
        let mut missing = Vec::new();
        for b in buckets {
            let key = match b.origin {
                Origin::Stored => format!("{} rollups", grain.as_str()),
                Origin::Merged(g) => format!("merged from {} rollups", g.as_str()),
                Origin::Events => "rolled up from events".to_string(),
                Origin::NoData => NO_DATA.to_string(),
            };
            *origins.entry(key).or_insert(0) += 1;
            if !b.has_data() {
                missing.push(b.start);
            }
        }
        Provenance {
            grain,
            buckets: buckets.len(),
            origins,
            missing,
        }
    }

    /// "week rollups" / "merged from hour rollups: 7" / "no data"; buckets
    /// without data are left out unless none has any ([`Provenance::missing`]
    /// lists them).
    pub fn describe(&self) -> String {
        if self.missing.len() == self.buckets {
            return "no data".to_string();
        }
        let parts: Vec<String> = self
            .origins
            .iter()
            .filter(|(k, _)| k.as_str() != NO_DATA)
            .map(|(k, n)| {
                if self.buckets == 1 {
                    k.clone()
                } else {
                    format!("{k}: {n}")
                }
            })
            .collect();
        parts.join(", ")
    }
}
