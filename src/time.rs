//! Parsing the times and dates users type.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

/// The first year hxjobs schedules, stores or reports.
pub const EARLIEST: i32 = 1970;
/// The last year hxjobs schedules, stores or reports (its intervals end by
/// the start of the year after).
pub const LATEST: i32 = 9999;

/// `EARLIEST-01-01T00:00:00Z`.
pub fn earliest() -> DateTime<Utc> {
    year_start(EARLIEST)
}

/// The end of year `LATEST`: no interval ends later.
pub fn latest() -> DateTime<Utc> {
    year_start(LATEST + 1)
}

fn year_start(year: i32) -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(year, 1, 1)
        .unwrap_or_default()
        .and_time(chrono::NaiveTime::MIN)
        .and_utc()
}

/// `t`, if hxjobs can schedule and store it (years 1970 to 9999).
pub fn in_range(t: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if t >= earliest() && t < latest() {
        Ok(t)
    } else {
        Err(format!(
            "{} is outside the years hxjobs schedules ({EARLIEST} to {LATEST})",
            t.format("%Y-%m-%dT%H:%M:%SZ")
        ))
    }
}

/// `2026-01-31` (midnight UTC), `2026-01-31T12:00:00` (UTC) or RFC 3339,
/// in the years hxjobs schedules ([`in_range`]).
pub fn parse_instant(s: &str) -> Result<DateTime<Utc>, String> {
    parse_any_instant(s).and_then(in_range)
}

/// A day, `2026-01-31`, in the years hxjobs schedules.
pub fn parse_day(s: &str) -> Result<NaiveDate, String> {
    let s = s.trim();
    let day = NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| format!("`{s}` is not a day (use 2026-01-31)"))?;
    in_range(day.and_time(chrono::NaiveTime::MIN).and_utc())?;
    Ok(day)
}

fn parse_any_instant(s: &str) -> Result<DateTime<Utc>, String> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Ok(t.and_utc());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    Err(format!(
        "`{s}` is not a date or time (use 2026-01-31, 2026-01-31T12:00:00 or RFC 3339)"
    ))
}

/// `90s`, `30m`, `2h`, `1d`, or a sum such as `1h30m`.
pub fn parse_duration(s: &str) -> Result<chrono::TimeDelta, String> {
    let text = s.trim();
    let bad = || format!("`{text}` is not a duration (use 90s, 30m, 2h, 1d or 1h30m)");
    let mut total = 0i64;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: i64 = digits.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        digits.clear();
    }
    if !digits.is_empty() || total <= 0 {
        return Err(bad());
    }
    chrono::TimeDelta::try_seconds(total).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2h").map(|d| d.num_seconds()), Ok(7200));
        assert_eq!(parse_duration("1h30m").map(|d| d.num_seconds()), Ok(5400));
        assert_eq!(parse_duration("1d").map(|d| d.num_seconds()), Ok(86_400));
        for bad in ["", "2", "h", "2x", "0s", "-1h", "99999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn forms() {
        assert_eq!(
            parse_instant("2026-01-31").map(|t| t.to_rfc3339()),
            Ok("2026-01-31T00:00:00+00:00".into())
        );
        assert_eq!(
            parse_instant("2026-01-31T12:30:00+01:00").map(|t| t.to_rfc3339()),
            Ok("2026-01-31T11:30:00+00:00".into())
        );
        assert_eq!(
            parse_instant("2026-01-31 12:30").map(|t| t.to_rfc3339()),
            Ok("2026-01-31T12:30:00+00:00".into())
        );
        assert!(parse_instant("31/01/2026").is_err());
        for far in [
            "1969-12-31T23:59:59Z",
            "+262142-12-31",
            "10000-01-01T00:00:00Z",
            "-0001-01-01",
        ] {
            let e = parse_instant(far).expect_err(far);
            assert!(
                e.contains("1970 to 9999") || e.contains("not a date"),
                "{far}: {e}"
            );
        }
        assert!(parse_instant("9999-12-31T23:59:59Z").is_ok());
    }
}
