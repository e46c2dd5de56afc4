//! Data intervals: the minute, hour, day, ISO week (Monday 00:00) or
//! calendar month a run covers, in UTC. Pure functions.

use chrono::{DateTime, Datelike, Months, NaiveDate, TimeDelta, Timelike, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Grain {
    /// Only for jobs that run every minute (`ingest`); rollups start at hours.
    Minute,
    Hour,
    Day,
    Week,
    Month,
}

impl Grain {
    /// The grain named by [`Grain::as_str`].
    pub fn parse(s: &str) -> Option<Grain> {
        [
            Grain::Minute,
            Grain::Hour,
            Grain::Day,
            Grain::Week,
            Grain::Month,
        ]
        .into_iter()
        .find(|g| g.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Grain::Minute => "minute",
            Grain::Hour => "hour",
            Grain::Day => "day",
            Grain::Week => "week",
            Grain::Month => "month",
        }
    }

    /// The start of the interval that contains `t` (at the very start of
    /// chrono's range, where a week's Monday cannot be written, the day).
    pub fn floor(self, t: DateTime<Utc>) -> DateTime<Utc> {
        let day = t.date_naive();
        let midnight = |d: NaiveDate| d.and_time(chrono::NaiveTime::MIN).and_utc();
        let plus = |d: NaiveDate, delta: TimeDelta| {
            midnight(d)
                .checked_add_signed(delta)
                .unwrap_or_else(|| midnight(d))
        };
        match self {
            Grain::Minute => plus(
                day,
                TimeDelta::minutes(i64::from(t.hour() * 60 + t.minute())),
            ),
            Grain::Hour => plus(day, TimeDelta::hours(i64::from(t.hour()))),
            Grain::Day => midnight(day),
            Grain::Week => plus(
                day,
                -TimeDelta::days(i64::from(day.weekday().num_days_from_monday())),
            ),
            Grain::Month => midnight(day.with_day(1).unwrap_or(day)),
        }
    }

    /// The start of the interval after the one starting at `start`; at the
    /// end of chrono's range, the last instant it can write (never `start`
    /// itself, which would loop a walk over intervals).
    pub fn next(self, start: DateTime<Utc>) -> DateTime<Utc> {
        let next = match self {
            Grain::Minute => start.checked_add_signed(TimeDelta::minutes(1)),
            Grain::Hour => start.checked_add_signed(TimeDelta::hours(1)),
            Grain::Day => start.checked_add_signed(TimeDelta::days(1)),
            Grain::Week => start.checked_add_signed(TimeDelta::weeks(1)),
            Grain::Month => start.checked_add_months(Months::new(1)),
        };
        next.unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// The start of the interval before the one starting at `start`; at the
    /// start of chrono's range, the first instant it can write.
    pub fn prev(self, start: DateTime<Utc>) -> DateTime<Utc> {
        let prev = match self {
            Grain::Minute => start.checked_sub_signed(TimeDelta::minutes(1)),
            Grain::Hour => start.checked_sub_signed(TimeDelta::hours(1)),
            Grain::Day => start.checked_sub_signed(TimeDelta::days(1)),
            Grain::Week => start.checked_sub_signed(TimeDelta::weeks(1)),
            Grain::Month => start.checked_sub_months(Months::new(1)),
        };
        prev.unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    /// The interval that contains `t`: `[start, end)`.
    pub fn containing(self, t: DateTime<Utc>) -> Interval {
        let start = self.floor(t);
        Interval {
            start,
            end: self.next(start),
        }
    }

    /// The last interval that is complete at `t`.
    pub fn last_complete(self, t: DateTime<Utc>) -> Interval {
        let end = self.floor(t);
        Interval {
            start: self.prev(end),
            end,
        }
    }

    /// Finer grains first: minute 0 … month 4.
    pub fn rank(self) -> u8 {
        match self {
            Grain::Minute => 0,
            Grain::Hour => 1,
            Grain::Day => 2,
            Grain::Week => 3,
            Grain::Month => 4,
        }
    }

    /// Whether intervals of `self` tile intervals of `coarser` exactly (a
    /// grain tiles itself; a week does not tile a month).
    pub fn tiles(self, coarser: Grain) -> bool {
        self.rank() <= coarser.rank() && !(self == Grain::Week && coarser == Grain::Month)
    }

    /// Whether every interval of `finer` lies inside one interval of `self`
    /// (a month does not cover a week).
    pub fn covers(self, finer: Grain) -> bool {
        finer.tiles(self)
    }

    /// Every interval start in `[from, to)`, aligned to the grain.
    pub fn starts(self, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        self.starts_at_most(from, to, usize::MAX)
            .unwrap_or_default()
    }

    /// [`Grain::starts`], or `Err(max)` as soon as there are more than
    /// `max`: what a request may make is bounded before it is made.
    pub fn starts_at_most(
        self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        max: usize,
    ) -> Result<Vec<DateTime<Utc>>, usize> {
        let mut out = Vec::new();
        let mut s = self.floor(from);
        if s < from {
            s = self.next(s);
        }
        while s < to {
            if out.len() == max {
                return Err(max);
            }
            out.push(s);
            let next = self.next(s);
            if next <= s {
                break;
            }
            s = next;
        }
        Ok(out)
    }
}

impl Interval {
    /// Whether the interval is one hxjobs can run and store: it ends after
    /// it starts, within [`crate::time::EARLIEST`]..=[`crate::time::LATEST`].
    pub fn representable(&self) -> bool {
        self.start < self.end
            && self.start >= crate::time::earliest()
            && self.end <= crate::time::latest()
    }
}

/// A data interval `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Interval {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse_instant;

    fn t(s: &str) -> DateTime<Utc> {
        parse_instant(s).expect("time")
    }

    #[test]
    fn floors() {
        let x = t("2026-03-04T13:47:12Z"); // a Wednesday
        assert_eq!(Grain::Minute.floor(x), t("2026-03-04T13:47:00Z"));
        assert_eq!(Grain::Hour.floor(x), t("2026-03-04T13:00:00Z"));
        assert_eq!(Grain::Day.floor(x), t("2026-03-04"));
        assert_eq!(Grain::Week.floor(x), t("2026-03-02"));
        assert_eq!(Grain::Month.floor(x), t("2026-03-01"));
        assert_eq!(Grain::Week.floor(t("2026-03-02")), t("2026-03-02"));
        assert_eq!(
            Grain::Week.floor(t("2026-03-01T23:59:59Z")),
            t("2026-02-23")
        );
    }

    #[test]
    fn months_and_last_complete() {
        assert_eq!(Grain::Month.next(t("2026-01-01")), t("2026-02-01"));
        assert_eq!(Grain::Month.prev(t("2026-03-01")), t("2026-02-01"));
        let i = Grain::Hour.last_complete(t("2026-03-04T10:05:00Z"));
        assert_eq!(
            (i.start, i.end),
            (t("2026-03-04T09:00:00Z"), t("2026-03-04T10:00:00Z"))
        );
        let m = Grain::Month.last_complete(t("2026-01-01T00:10:00Z"));
        assert_eq!((m.start, m.end), (t("2025-12-01"), t("2026-01-01")));
    }

    #[test]
    fn the_ends_of_chrono_s_range_neither_panic_nor_loop() {
        let max = DateTime::<Utc>::MAX_UTC;
        let min = DateTime::<Utc>::MIN_UTC;
        for g in [
            Grain::Minute,
            Grain::Hour,
            Grain::Day,
            Grain::Week,
            Grain::Month,
        ] {
            assert_eq!(g.next(max), max);
            assert_eq!(g.prev(min), min);
            let last = g.floor(max);
            assert!(g.starts(last, max).len() <= 1);
            assert_eq!(g.starts_at_most(min, max, 3), Err(3));
        }
    }

    proptest::proptest! {
        /// Over every instant chrono can write: no panic, floors are at or
        /// before the instant, and a walk always moves.
        #[test]
        fn interval_arithmetic_is_total(secs in i64::MIN..i64::MAX, g in 0u8..5) {
            let lo = DateTime::<Utc>::MIN_UTC.timestamp();
            let hi = DateTime::<Utc>::MAX_UTC.timestamp();
            let secs = lo + (secs.rem_euclid(hi - lo));
            let t = DateTime::<Utc>::from_timestamp(secs, 0).unwrap_or_default();
            let g = [Grain::Minute, Grain::Hour, Grain::Day, Grain::Week, Grain::Month][g as usize];
            let i = g.containing(t);
            proptest::prop_assert!(i.start <= t);
            proptest::prop_assert!(i.end >= i.start);
            proptest::prop_assert!(g.next(i.start) > i.start || i.start == DateTime::<Utc>::MAX_UTC);
            proptest::prop_assert!(g.prev(i.start) < i.start || i.start == DateTime::<Utc>::MIN_UTC);
            let last = g.last_complete(t);
            proptest::prop_assert!(last.start <= last.end);
            let n = g.starts_at_most(t, DateTime::<Utc>::MAX_UTC, 1000).map(|v| v.len());
            proptest::prop_assert!(matches!(n, Ok(0..=1000) | Err(1000)));
        }
    }

    #[test]
    fn starts_in_a_range() {
        assert_eq!(
            Grain::Hour.starts(t("2025-01-01"), t("2026-01-01")).len(),
            8760
        );
        assert_eq!(
            Grain::Day
                .starts(t("2026-01-01T06:00:00Z"), t("2026-01-04"))
                .len(),
            2
        );
        assert_eq!(
            Grain::Week.starts(t("2026-03-02"), t("2026-03-30")).len(),
            4
        );
    }
}
