//! Evaluates a check for one interval against PostgreSQL. Every value from
//! a job file is a bound parameter; a `share` check's field is one of
//! [`super::FIELDS`]. Each check runs in a read-only transaction, under
//! its task's timeout.

use chrono::TimeDelta;
use sqlx::{PgPool, Postgres, Transaction};

use super::{Baseline, Check, CountFrom, Kind};
use crate::interval::{Grain, Interval};

/// What a check found, before its blocking flag makes a failure a warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    Pass,
    Fail,
    /// Nothing to judge (no baseline, raw events no longer stored): n/a.
    Skipped,
    /// The check itself could not run.
    Error,
}

#[derive(Debug, Clone)]
pub struct Verdict {
    pub found: Found,
    /// The figure it judged (a count, a percentage), when there is one.
    pub observed: Option<f64>,
    pub message: String,
}

impl Verdict {
    fn new(found: Found, observed: Option<f64>, message: String) -> Verdict {
        Verdict {
            found,
            observed,
            message,
        }
    }
}

/// Where a check's outcome is recorded: `pass`, `fail` (blocking), `warn`
/// (not blocking), `error` or `skipped`.
pub fn outcome(check: &Check, found: Found) -> &'static str {
    match found {
        Found::Pass => "pass",
        Found::Fail if check.blocking => "fail",
        Found::Fail => "warn",
        Found::Skipped => "skipped",
        Found::Error => "error",
    }
}

/// Whether an outcome stops the task: a blocking check that failed or
/// could not run.
pub fn stops(check: &Check, found: Found) -> bool {
    check.blocking && matches!(found, Found::Fail | Found::Error)
}

/// Runs `check` on `job`'s `interval`. A database error is an `Error`
/// verdict with its message, not an `Err`: the check's result is recorded.
pub async fn run(
    pool: &PgPool,
    check: &Check,
    job: &str,
    interval: Interval,
    timeout: std::time::Duration,
) -> Verdict {
    let attempt = async {
        let mut tx = pool.begin().await?;
        sqlx::query("SET TRANSACTION READ ONLY")
            .execute(&mut *tx)
            .await?;
        sqlx::query("SELECT set_config('statement_timeout', $1, true)")
            .bind(format!("{}ms", timeout.as_millis().max(1)))
            .execute(&mut *tx)
            .await?;
        let v = evaluate(&mut tx, check, job, interval).await;
        tx.rollback().await?;
        v
    };
    match tokio::time::timeout(timeout + std::time::Duration::from_secs(1), attempt).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => Verdict::new(
            Found::Error,
            None,
            format!(
                "the check could not run: {}",
                crate::redact::text(&e.to_string())
            ),
        ),
        Err(_) => Verdict::new(
            Found::Error,
            None,
            format!("the check did not finish within {} s", timeout.as_secs()),
        ),
    }
}

type Tx<'a> = Transaction<'a, Postgres>;

async fn evaluate(
    tx: &mut Tx<'_>,
    check: &Check,
    job: &str,
    interval: Interval,
) -> Result<Verdict, sqlx::Error> {
    match &check.kind {
        Kind::Count {
            grain,
            from,
            event_type,
            min,
            max,
            vs,
            within_pct,
            min_baseline,
        } => {
            let Some(n) = count(tx, *grain, *from, event_type.as_deref(), interval).await? else {
                return Ok(Verdict::new(
                    Found::Error,
                    None,
                    format!(
                        "the {} rollup of the interval was not found",
                        grain.as_str()
                    ),
                ));
            };
            let what = match event_type {
                Some(t) => format!("{} {t} events", thousands(n)),
                None => format!("{} events", thousands(n)),
            };
            if let Some(lo) = min.filter(|lo| n < *lo) {
                return Ok(Verdict::new(
                    Found::Fail,
                    Some(n as f64),
                    format!("{what}, fewer than the minimum {}", thousands(lo)),
                ));
            }
            if let Some(hi) = max.filter(|hi| n > *hi) {
                return Ok(Verdict::new(
                    Found::Fail,
                    Some(n as f64),
                    format!("{what}, more than the maximum {}", thousands(hi)),
                ));
            }
            let Some(vs) = vs else {
                return Ok(Verdict::new(Found::Pass, Some(n as f64), what));
            };
            let base = baseline(interval, *vs, *grain);
            let before = count(tx, *grain, *from, event_type.as_deref(), base).await?;
            match before {
                Some(b) if b >= *min_baseline => {
                    let change = (n - b) as f64 / b as f64 * 100.0;
                    let found = if change.abs() > *within_pct {
                        Found::Fail
                    } else {
                        Found::Pass
                    };
                    Ok(Verdict::new(
                        found,
                        Some(n as f64),
                        format!(
                            "{what}, {:.1}% {} {} {} (allowed ±{within_pct}%)",
                            change.abs(),
                            if change < 0.0 { "below" } else { "above" },
                            thousands(b),
                            vs.words()
                        ),
                    ))
                }
                Some(b) => Ok(Verdict::new(
                    Found::Skipped,
                    Some(n as f64),
                    format!(
                        "{what}; {} {}, too few to compare with (min_baseline {min_baseline}): n/a",
                        thousands(b),
                        vs.words()
                    ),
                )),
                None => Ok(Verdict::new(
                    Found::Skipped,
                    Some(n as f64),
                    format!("{what}; no data {} to compare with: n/a", vs.words()),
                )),
            }
        }
        Kind::DeadLetters { max_pct } => {
            // Of the messages ingest read in the interval (its commits'
            // offset ranges), the share it rejected.
            let (dead, read): (i64, i64) = sqlx::query_as(
                "SELECT (SELECT count(*) FROM dead_letters
                         WHERE received_at >= $1 AND received_at < $2),
                        (SELECT COALESCE(sum(to_offset - from_offset), 0)::int8 FROM ingest_commits
                         WHERE committed_at >= $1 AND committed_at < $2)",
            )
            .bind(interval.start)
            .bind(interval.end)
            .fetch_one(&mut **tx)
            .await?;
            if read == 0 {
                return Ok(Verdict::new(
                    Found::Skipped,
                    None,
                    format!(
                        "{} dead letters; no record of the messages ingest read in the interval: n/a",
                        thousands(dead)
                    ),
                ));
            }
            let share = dead as f64 / read.max(dead) as f64 * 100.0;
            Ok(Verdict::new(
                if share > *max_pct {
                    Found::Fail
                } else {
                    Found::Pass
                },
                Some(share),
                format!(
                    "{} dead letters of {} messages read in the interval ({share:.2}%; at most {max_pct}%)",
                    thousands(dead),
                    thousands(read.max(dead))
                ),
            ))
        }
        Kind::Share {
            field,
            value,
            event_type,
            min_pct,
            max_pct,
        } => {
            // `field` is one of FIELDS, never text from the file.
            let sql = format!(
                "SELECT count(*) FILTER (WHERE CASE WHEN $3::text IS NULL THEN {field} IS NULL
                                                  ELSE {field}::text = $3 END),
                        count(*)
                 FROM events
                 WHERE event_day >= ($1 AT TIME ZONE 'UTC')::date
                   AND event_day <= ($2 AT TIME ZONE 'UTC')::date
                   AND event_time >= $1 AND event_time < $2
                   AND ($4::text IS NULL OR event_type = $4)"
            );
            let (hits, all): (i64, i64) = sqlx::query_as(&sql)
                .bind(interval.start)
                .bind(interval.end)
                .bind(value)
                .bind(event_type)
                .fetch_one(&mut **tx)
                .await?;
            let what = match value {
                Some(v) => format!("{field} = \"{v}\""),
                None => format!("{field} null"),
            };
            let of = event_type
                .as_ref()
                .map_or_else(|| "events".to_string(), |t| format!("{t} events"));
            if all == 0 {
                return Ok(Verdict::new(
                    Found::Skipped,
                    None,
                    format!("no {of} in the interval: n/a"),
                ));
            }
            let share = hits as f64 / all as f64 * 100.0;
            let low = min_pct.is_some_and(|lo| share < lo);
            let high = max_pct.is_some_and(|hi| share > hi);
            let bounds = match (min_pct, max_pct) {
                (Some(lo), Some(hi)) => format!("between {lo}% and {hi}%"),
                (Some(lo), None) => format!("at least {lo}%"),
                (None, Some(hi)) => format!("at most {hi}%"),
                (None, None) => String::new(),
            };
            Ok(Verdict::new(
                if low || high {
                    Found::Fail
                } else {
                    Found::Pass
                },
                Some(share),
                format!(
                    "{what} in {} of {} {of} ({share:.2}%; {bounds})",
                    thousands(hits),
                    thousands(all)
                ),
            ))
        }
        Kind::Reconcile { grain } => reconcile(tx, *grain, interval).await,
        Kind::Sql { sql } => {
            let row: Option<(Option<bool>, Option<String>)> = match sqlx::query_as(sql)
                .bind(interval.start)
                .bind(interval.end)
                .bind(job)
                .fetch_optional(&mut **tx)
                .await
            {
                Ok(r) => r,
                // Fewer than two columns: the boolean alone.
                Err(sqlx::Error::ColumnIndexOutOfBounds { .. }) => {
                    let one: Option<(Option<bool>,)> = sqlx::query_as(sql)
                        .bind(interval.start)
                        .bind(interval.end)
                        .bind(job)
                        .fetch_optional(&mut **tx)
                        .await?;
                    one.map(|(b,)| (b, None))
                }
                Err(e) => return Err(e),
            };
            Ok(match row {
                Some((Some(ok), message)) => Verdict::new(
                    if ok { Found::Pass } else { Found::Fail },
                    None,
                    message.unwrap_or_else(|| format!("the query returned {ok}")),
                ),
                Some((None, _)) | None => Verdict::new(
                    Found::Error,
                    None,
                    "the query returned no boolean (it must return one row: ok boolean, message text)"
                        .into(),
                ),
            })
        }
    }
}

/// The interval `vs` names for `interval`.
fn baseline(interval: Interval, vs: Baseline, grain: Grain) -> Interval {
    let shift = |d: TimeDelta| Interval {
        start: interval.start - d,
        end: interval.end - d,
    };
    match vs {
        Baseline::Day => shift(TimeDelta::days(1)),
        Baseline::Week => shift(TimeDelta::days(7)),
        Baseline::Previous => Interval {
            start: grain.prev(interval.start),
            end: interval.start,
        },
    }
}

/// The interval's events (of `event_type`); `None` when its rollup was
/// never computed.
async fn count(
    tx: &mut Tx<'_>,
    grain: Grain,
    from: CountFrom,
    event_type: Option<&str>,
    interval: Interval,
) -> Result<Option<i64>, sqlx::Error> {
    match from {
        CountFrom::Rollup => {
            let (computed, n): (bool, i64) = sqlx::query_as(
                "SELECT EXISTS (SELECT 1 FROM rollup_buckets WHERE grain = $1 AND bucket_start = $2),
                        COALESCE((SELECT sum(event_count)::int8 FROM rollups
                                  WHERE grain = $1 AND bucket_start = $2
                                    AND ($3::text IS NULL OR event_type = $3)), 0)",
            )
            .bind(grain.as_str())
            .bind(interval.start)
            .bind(event_type)
            .fetch_one(&mut **tx)
            .await?;
            Ok(computed.then_some(n))
        }
        CountFrom::Events => {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM events
                 WHERE event_day >= ($1 AT TIME ZONE 'UTC')::date
                   AND event_day <= ($2 AT TIME ZONE 'UTC')::date
                   AND event_time >= $1 AND event_time < $2
                   AND ($3::text IS NULL OR event_type = $3)",
            )
            .bind(interval.start)
            .bind(interval.end)
            .bind(event_type)
            .fetch_one(&mut **tx)
            .await?;
            Ok(Some(n))
        }
    }
}

/// Per event type: the rollup's events, errors, tokens and cost against
/// the raw events of the interval.
async fn reconcile(
    tx: &mut Tx<'_>,
    grain: Grain,
    interval: Interval,
) -> Result<Verdict, sqlx::Error> {
    let archived: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM event_archives
         WHERE day >= ($1 AT TIME ZONE 'UTC')::date AND day < ($2 AT TIME ZONE 'UTC')::date
           AND restored_at IS NULL",
    )
    .bind(interval.start)
    .bind(interval.end)
    .fetch_one(&mut **tx)
    .await?;
    if archived > 0 {
        return Ok(Verdict::new(
            Found::Skipped,
            None,
            format!("{archived} day(s) of the interval archived, raw events no longer stored: n/a"),
        ));
    }
    let computed: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM rollup_buckets WHERE grain = $1 AND bucket_start = $2)",
    )
    .bind(grain.as_str())
    .bind(interval.start)
    .fetch_one(&mut **tx)
    .await?;
    if !computed {
        return Ok(Verdict::new(
            Found::Error,
            None,
            format!(
                "the {} rollup of the interval was not found",
                grain.as_str()
            ),
        ));
    }
    type Row = (
        String,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<f64>,
        Option<f64>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "WITH raw AS (
             SELECT event_type, count(*)::int8 AS n,
                    count(*) FILTER (WHERE event_type = 'error_event'
                                        OR (event_type = 'llm_request'
                                            AND status IN ('error', 'timeout')))::int8 AS errors,
                    COALESCE(sum(prompt_tokens), 0)::int8 AS prompt,
                    COALESCE(sum(completion_tokens), 0)::int8 AS completion,
                    COALESCE(sum(cost_usd), 0)::float8 AS cost
             FROM events
             WHERE event_day >= ($2 AT TIME ZONE 'UTC')::date
               AND event_day <= ($3 AT TIME ZONE 'UTC')::date
               AND event_time >= $2 AND event_time < $3
             GROUP BY 1),
         rolled AS (
             SELECT event_type, sum(event_count)::int8 AS n, sum(error_count)::int8 AS errors,
                    COALESCE(sum(prompt_tokens), 0)::int8 AS prompt,
                    COALESCE(sum(completion_tokens), 0)::int8 AS completion,
                    COALESCE(sum(cost_usd), 0)::float8 AS cost
             FROM rollups WHERE grain = $1 AND bucket_start = $2
             GROUP BY 1)
         SELECT COALESCE(r.event_type, u.event_type), u.n, r.n, u.errors, r.errors,
                u.prompt, r.prompt, u.completion, r.completion, u.cost, r.cost
         FROM raw r FULL JOIN rolled u ON u.event_type = r.event_type
         ORDER BY 1",
    )
    .bind(grain.as_str())
    .bind(interval.start)
    .bind(interval.end)
    .fetch_all(&mut **tx)
    .await?;
    let mut differences = Vec::new();
    let mut events = 0i64;
    for (t, un, rn, ue, re, up, rp, uc, rc, ucost, rcost) in rows {
        events += rn.unwrap_or(0);
        let ints = [
            ("events", un, rn),
            ("errors", ue, re),
            ("prompt tokens", up, rp),
            ("completion tokens", uc, rc),
        ];
        for (what, rolled, raw) in ints {
            let (rolled, raw) = (rolled.unwrap_or(0), raw.unwrap_or(0));
            if rolled != raw {
                differences.push(format!(
                    "{t} {what}: rollup {}, raw {}",
                    thousands(rolled),
                    thousands(raw)
                ));
            }
        }
        let (ucost, rcost) = (ucost.unwrap_or(0.0), rcost.unwrap_or(0.0));
        if (ucost - rcost).abs() > 1e-6 * rcost.abs().max(1.0) {
            differences.push(format!("{t} cost: rollup {ucost:.6}, raw {rcost:.6} USD"));
        }
    }
    Ok(if differences.is_empty() {
        Verdict::new(
            Found::Pass,
            Some(0.0),
            format!(
                "the {} rollup equals its {} raw events (counts, errors, tokens, cost)",
                grain.as_str(),
                thousands(events)
            ),
        )
    } else {
        let n = differences.len();
        let shown: Vec<String> = differences.into_iter().take(5).collect();
        Verdict::new(
            Found::Fail,
            Some(n as f64),
            format!(
                "the {} rollup differs from its raw events in {n} figure(s): {}",
                grain.as_str(),
                shown.join("; ")
            ),
        )
    })
}

/// `n` with thousands separators.
pub fn thousands(n: i64) -> String {
    crate::reports::grouped(&n.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_baselines() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(-1200), "-1,200");
        let t = |s: &str| crate::time::parse_instant(s).expect("time");
        let day = Interval {
            start: t("2026-03-02T00:00:00Z"),
            end: t("2026-03-03T00:00:00Z"),
        };
        let month = Interval {
            start: t("2026-03-01T00:00:00Z"),
            end: t("2026-04-01T00:00:00Z"),
        };
        assert_eq!(
            baseline(day, Baseline::Week, Grain::Day).start,
            t("2026-02-23T00:00:00Z")
        );
        let prev = baseline(month, Baseline::Previous, Grain::Month);
        assert_eq!(
            (prev.start, prev.end),
            (t("2026-02-01T00:00:00Z"), month.start)
        );
    }
}
