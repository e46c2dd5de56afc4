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

    /// The start of the interval that contains `t`.
    pub fn floor(self, t: DateTime<Utc>) -> DateTime<Utc> {
        let day = t.date_naive();
        let midnight = |d: NaiveDate| d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
        match self {
            Grain::Minute => {
                midnight(day)
                    + TimeDelta::hours(i64::from(t.hour()))
                    + TimeDelta::minutes(i64::from(t.minute()))
            }
            Grain::Hour => midnight(day) + TimeDelta::hours(i64::from(t.hour())),
            Grain::Day => midnight(day),
            Grain::Week => {
                midnight(day) - TimeDelta::days(i64::from(day.weekday().num_days_from_monday()))
            }
            Grain::Month => midnight(day.with_day(1).unwrap_or(day)),
        }
    }

    /// The start of the interval after the one starting at `start`.
    pub fn next(self, start: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Grain::Minute => start + TimeDelta::minutes(1),
            Grain::Hour => start + TimeDelta::hours(1),
            Grain::Day => start + TimeDelta::days(1),
            Grain::Week => start + TimeDelta::weeks(1),
            Grain::Month => start.checked_add_months(Months::new(1)).unwrap_or(start),
        }
    }

    /// The start of the interval before the one starting at `start`.
    pub fn prev(self, start: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Grain::Minute => start - TimeDelta::minutes(1),
            Grain::Hour => start - TimeDelta::hours(1),
            Grain::Day => start - TimeDelta::days(1),
            Grain::Week => start - TimeDelta::weeks(1),
            Grain::Month => start.checked_sub_months(Months::new(1)).unwrap_or(start),
        }
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
        let mut out = Vec::new();
        let mut s = self.floor(from);
        if s < from {
            s = self.next(s);
        }
        while s < to {
            out.push(s);
            s = self.next(s);
        }
        out
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
