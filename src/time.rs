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

#[cfg(test)]
mod tests {
    use super::*;

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
