//! Parsing the times and dates users type.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

/// `2026-01-31` (midnight UTC), `2026-01-31T12:00:00` (UTC) or RFC 3339.
pub fn parse_instant(s: &str) -> Result<DateTime<Utc>, String> {
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
    }
}
