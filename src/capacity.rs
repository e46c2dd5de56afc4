//! Capacity analysis from hourly rollups: per UTC day the peak and p95
//! events/s (an hour's events / 3600; hours without a rollup row count as
//! 0), a least-squares trend over the daily peaks, and when that trend
//! reaches the configured capacity.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::config::CapacityConfig;
use crate::round;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DayLoad {
    pub day: NaiveDate,
    pub events: i64,
    /// Hours of the day with a rollup row.
    pub hours: u32,
    pub peak_events_per_sec: f64,
    /// The value at rank ⌊0.95·23⌋ of the day's 24 hourly rates.
    pub p95_events_per_sec: f64,
    pub avg_events_per_sec: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Trend {
    /// Change of the daily peak, events/s per day.
    pub slope_per_day: f64,
    /// The fitted peak on the last analysed day.
    pub fitted_last: f64,
    pub r_squared: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Forecast {
    /// The latest peak is at or above capacity already.
    Reached { day: NaiveDate },
    /// The trend reaches capacity on this day.
    Projected { day: NaiveDate, days_from_now: i64 },
    /// The trend is flat or falling: never at this rate.
    NotGrowing,
    /// Fewer than two days with rollups.
    InsufficientData,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Analysis {
    pub generated_at: DateTime<Utc>,
    /// First analysed day and the day after the last (exclusive).
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub capacity_events_per_sec: f64,
    pub days: Vec<DayLoad>,
    /// `None` when no day of the window has hourly data.
    pub peak_events_per_sec: Option<f64>,
    /// The highest daily peak as a share of capacity, in percent.
    pub peak_utilization_pct: Option<f64>,
    pub trend: Option<Trend>,
    pub forecast: Forecast,
}

/// The analysis of the `config.days` complete UTC days before `to`
/// (default, and at most: today, so a day still under way never counts).
pub async fn analyse(
    pool: &PgPool,
    config: &CapacityConfig,
    to: Option<NaiveDate>,
    now: DateTime<Utc>,
) -> Result<Analysis, sqlx::Error> {
    let today = now.date_naive();
    let to = to.map_or(today, |t| t.min(today));
    let from = to - Duration::days(i64::from(config.days));
    let start = from.and_time(chrono::NaiveTime::MIN).and_utc();
    let end = to.and_time(chrono::NaiveTime::MIN).and_utc();
    let hours: Vec<(DateTime<Utc>, i64)> = sqlx::query!(
        r#"SELECT bucket_start, sum(event_count)::int8 AS "events!" FROM rollups
           WHERE grain = 'hour' AND bucket_start >= $1 AND bucket_start < $2
           GROUP BY bucket_start ORDER BY bucket_start"#,
        start,
        end,
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|r| (r.bucket_start, r.events))
    .collect();
    Ok(compute(config, from, to, &hours, now))
}

/// The analysis from (hour, events) pairs.
pub fn compute(
    config: &CapacityConfig,
    from: NaiveDate,
    to: NaiveDate,
    hours: &[(DateTime<Utc>, i64)],
    now: DateTime<Utc>,
) -> Analysis {
    let mut days = Vec::new();
    let mut i = 0;
    let mut day = from;
    while day < to {
        let mut rates = [0.0f64; 24];
        let (mut events, mut present) = (0i64, 0u32);
        while i < hours.len() && hours[i].0.date_naive() < day {
            i += 1;
        }
        while i < hours.len() && hours[i].0.date_naive() == day {
            let (t, n) = hours[i];
            let h = usize::try_from(chrono::Timelike::hour(&t)).unwrap_or(0);
            rates[h.min(23)] = n as f64 / 3600.0;
            events += n;
            present += 1;
            i += 1;
        }
        if present > 0 {
            rates.sort_by(f64::total_cmp);
            days.push(DayLoad {
                day,
                events,
                hours: present,
                peak_events_per_sec: round(rates[23], 3),
                p95_events_per_sec: round(rates[(0.95 * 23.0) as usize], 3),
                avg_events_per_sec: round(events as f64 / 86_400.0, 3),
            });
        }
        day += Duration::days(1);
    }
    let capacity = config.events_per_sec;
    let peak = days.iter().map(|d| d.peak_events_per_sec).reduce(f64::max);
    let trend = fit(from, &days);
    let forecast = match (&trend, days.last()) {
        (_, Some(last)) if last.peak_events_per_sec >= capacity => {
            Forecast::Reached { day: last.day }
        }
        (Some(t), Some(last)) if t.slope_per_day > 0.0 => {
            let days_more = ((capacity - t.fitted_last) / t.slope_per_day)
                .ceil()
                .max(0.0);
            // Beyond about 27 years the date is not worth stating.
            if days_more > 10_000.0 {
                Forecast::NotGrowing
            } else {
                let day = last.day + Duration::days(days_more as i64);
                Forecast::Projected {
                    day,
                    days_from_now: (day - now.date_naive()).num_days(),
                }
            }
        }
        (Some(_), Some(_)) => Forecast::NotGrowing,
        _ => Forecast::InsufficientData,
    };
    Analysis {
        generated_at: now,
        from,
        to,
        capacity_events_per_sec: capacity,
        peak_events_per_sec: peak,
        peak_utilization_pct: peak.map(|p| round(p / capacity * 100.0, 2)),
        days,
        trend,
        forecast,
    }
}

/// Least squares of the daily peak over the day's index since `from`.
fn fit(from: NaiveDate, days: &[DayLoad]) -> Option<Trend> {
    if days.len() < 2 {
        return None;
    }
    let n = days.len() as f64;
    let xs: Vec<f64> = days
        .iter()
        .map(|d| (d.day - from).num_days() as f64)
        .collect();
    let ys: Vec<f64> = days.iter().map(|d| d.peak_events_per_sec).collect();
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    let sxy: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let syy: f64 = ys.iter().map(|y| (y - my).powi(2)).sum();
    if sxx == 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    let intercept = my - slope * mx;
    let last_x = xs.last().copied().unwrap_or(0.0);
    Some(Trend {
        slope_per_day: round(slope, 4),
        fitted_last: round(intercept + slope * last_x, 3),
        r_squared: if syy == 0.0 {
            1.0
        } else {
            round(sxy * sxy / (sxx * syy), 4)
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> CapacityConfig {
        CapacityConfig {
            events_per_sec: 1000.0,
            days: 10,
        }
    }

    fn hour(day: u32, h: u32) -> DateTime<Utc> {
        chrono::NaiveDate::from_ymd_opt(2026, 3, day)
            .and_then(|d| d.and_hms_opt(h, 0, 0))
            .map(|t| t.and_utc())
            .expect("valid")
    }

    #[test]
    fn peaks_trend_and_forecast() {
        // Day k (1..=4): 23 quiet hours of 360 events (0.1/s) and one
        // peak hour of k·360,000 events (k·100/s).
        let mut hours = Vec::new();
        for k in 1..=4u32 {
            for h in 0..24 {
                let n = if h == 12 { i64::from(k) * 360_000 } else { 360 };
                hours.push((hour(k, h), n));
            }
        }
        let from = NaiveDate::from_ymd_opt(2026, 3, 1).expect("day");
        let to = NaiveDate::from_ymd_opt(2026, 3, 5).expect("day");
        let now = hour(5, 0);
        let a = compute(&config(), from, to, &hours, now);
        assert_eq!(a.days.len(), 4);
        assert_eq!(a.days[1].peak_events_per_sec, 200.0);
        assert_eq!(a.days[1].p95_events_per_sec, 0.1);
        assert_eq!(a.days[1].events, 23 * 360 + 720_000);
        let t = a.trend.clone().expect("trend");
        assert_eq!(t.slope_per_day, 100.0);
        assert_eq!(t.fitted_last, 400.0);
        assert_eq!(t.r_squared, 1.0);
        // 400/s on the 4th, +100/s a day: 1,000/s six days later.
        assert_eq!(
            a.forecast,
            Forecast::Projected {
                day: NaiveDate::from_ymd_opt(2026, 3, 10).expect("day"),
                days_from_now: 5
            }
        );
        assert_eq!(a.peak_utilization_pct, Some(40.0));
    }

    #[test]
    fn flat_and_missing_data() {
        let from = NaiveDate::from_ymd_opt(2026, 3, 1).expect("day");
        let to = NaiveDate::from_ymd_opt(2026, 3, 5).expect("day");
        let a = compute(&config(), from, to, &[], hour(5, 0));
        assert_eq!(a.forecast, Forecast::InsufficientData);
        let flat: Vec<_> = (1..=3).map(|d| (hour(d, 0), 3600)).collect();
        let a = compute(&config(), from, to, &flat, hour(5, 0));
        assert_eq!(a.forecast, Forecast::NotGrowing);
    }
}
