//! Data checks: what a job file declares under `[checks.NAME]` about the
//! data a task wrote for its interval, and their evaluation against
//! PostgreSQL ([`eval`]). A blocking check that fails fails its task
//! (`check_failed`), so nothing downstream reads the interval; a warning
//! only notifies.

pub mod eval;

use serde::Deserialize;

use crate::interval::Grain;

/// One declared check.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    /// The task whose success it checks.
    pub after: String,
    pub blocking: bool,
    pub kind: Kind,
}

#[derive(Debug, Clone)]
pub enum Kind {
    /// Events in the interval (of one type, optionally) within bounds, and
    /// within `within_pct` of a baseline interval.
    Count {
        /// The job's interval: which rollup is read, and what "previous" is.
        grain: Grain,
        from: CountFrom,
        event_type: Option<String>,
        min: Option<i64>,
        max: Option<i64>,
        vs: Option<Baseline>,
        within_pct: f64,
        /// A baseline with fewer events is too small to compare with.
        min_baseline: i64,
    },
    /// Dead letters received in the interval, as a share of the messages
    /// ingest read then (`ingest_commits`), at most `max_pct`.
    DeadLetters { max_pct: f64 },
    /// Raw events of the interval whose `field` is null (or equals
    /// `value`), as a share of the events (of `event_type`), within bounds.
    Share {
        field: &'static str,
        value: Option<String>,
        event_type: Option<String>,
        min_pct: Option<f64>,
        max_pct: Option<f64>,
    },
    /// The interval's rollup equals its raw events: per event type, the
    /// count, errors, tokens and cost (while the raw events are stored).
    Reconcile { grain: Grain },
    /// An operator's query returning a boolean (and a message).
    Sql { sql: String },
}

/// Where a count comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountFrom {
    /// The interval's rollup (cheap at any grain).
    Rollup,
    /// The raw events.
    Events,
}

/// The interval a count is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baseline {
    /// The same interval a day earlier.
    Day,
    /// The same interval a week earlier.
    Week,
    /// The interval just before.
    Previous,
}

impl Baseline {
    pub fn words(self) -> &'static str {
        match self {
            Baseline::Day => "a day earlier",
            Baseline::Week => "a week earlier",
            Baseline::Previous => "the interval before",
        }
    }
}

impl Kind {
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Count { .. } => "count",
            Kind::DeadLetters { .. } => "dead_letters",
            Kind::Share { .. } => "share",
            Kind::Reconcile { .. } => "reconcile",
            Kind::Sql { .. } => "sql",
        }
    }
}

/// The event columns a `share` check may name (its field is one of these
/// names, never text from the file pasted into SQL).
pub const FIELDS: [&str; 18] = [
    "event_type",
    "source",
    "model",
    "status",
    "name",
    "error_type",
    "severity",
    "user_id",
    "session_id",
    "request_id",
    "model_id",
    "priority",
    "latency_ms",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "rating",
    "value",
];

/// What `{{ … }}` an `sql` check may use, and the parameter each becomes.
const SQL_VARS: [(&str, &str); 3] = [
    ("interval_start", "$1::timestamptz"),
    ("interval_end", "$2::timestamptz"),
    ("job", "$3::text"),
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    after: String,
    kind: String,
    #[serde(default = "yes")]
    blocking: bool,
    // count
    from: Option<String>,
    event_type: Option<String>,
    min: Option<i64>,
    max: Option<i64>,
    vs: Option<String>,
    within_pct: Option<f64>,
    min_baseline: Option<i64>,
    // dead_letters, share
    max_pct: Option<f64>,
    min_pct: Option<f64>,
    // share
    field: Option<String>,
    value: Option<String>,
    is_null: Option<bool>,
    // sql
    sql: Option<String>,
}

fn yes() -> bool {
    true
}

/// A check from its table in a job file of `interval`; `tasks` are the
/// job's task ids. The error is a sentence (the caller adds file and line).
pub fn parse(
    name: &str,
    table: toml::Table,
    interval: Grain,
    tasks: &[&str],
) -> Result<Check, String> {
    let at = |m: String| format!("check `{name}`: {m}");
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(at("a check's name must be letters, digits, _ or -".into()));
    }
    let raw: Raw = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| at(e.message().trim().to_string()))?;
    if !tasks.contains(&raw.after.as_str()) {
        return Err(at(format!(
            "after = \"{}\" is not a task of this job",
            raw.after
        )));
    }
    // Keys that belong to other kinds are mistakes, not ignored.
    let given = |keys: &[(&str, bool)], allowed: &[&str]| -> Result<(), String> {
        match keys.iter().find(|(k, set)| *set && !allowed.contains(k)) {
            Some((k, _)) => Err(at(format!("`{k}` does not apply to kind \"{}\"", raw.kind))),
            None => Ok(()),
        }
    };
    let keys = [
        ("from", raw.from.is_some()),
        ("event_type", raw.event_type.is_some()),
        ("min", raw.min.is_some()),
        ("max", raw.max.is_some()),
        ("vs", raw.vs.is_some()),
        ("within_pct", raw.within_pct.is_some()),
        ("min_baseline", raw.min_baseline.is_some()),
        ("max_pct", raw.max_pct.is_some()),
        ("min_pct", raw.min_pct.is_some()),
        ("field", raw.field.is_some()),
        ("value", raw.value.is_some()),
        ("is_null", raw.is_null.is_some()),
        ("sql", raw.sql.is_some()),
    ];
    let pct = |key: &str, v: Option<f64>| -> Result<Option<f64>, String> {
        match v {
            Some(p) if !(0.0..=100.0).contains(&p) || p.is_nan() => {
                Err(at(format!("{key} must be between 0 and 100, not {p}")))
            }
            other => Ok(other),
        }
    };
    let kind = match raw.kind.as_str() {
        "count" => {
            given(
                &keys,
                &[
                    "from",
                    "event_type",
                    "min",
                    "max",
                    "vs",
                    "within_pct",
                    "min_baseline",
                ],
            )?;
            let from = match raw.from.as_deref() {
                None | Some("rollup") if interval == Grain::Minute => {
                    return Err(at(
                        "rollups start at hours: a minute job counts from = \"events\"".into(),
                    ))
                }
                None | Some("rollup") => CountFrom::Rollup,
                Some("events") => CountFrom::Events,
                Some(other) => {
                    return Err(at(format!(
                        "from = \"{other}\": expected \"rollup\" or \"events\""
                    )))
                }
            };
            let vs = match raw.vs.as_deref() {
                None => None,
                Some("day") => Some(Baseline::Day),
                Some("week") => Some(Baseline::Week),
                Some("previous") => Some(Baseline::Previous),
                Some(other) => {
                    return Err(at(format!(
                        "vs = \"{other}\": expected \"day\", \"week\" or \"previous\""
                    )))
                }
            };
            if vs.is_some() != raw.within_pct.is_some() {
                return Err(at("`vs` and `within_pct` go together".into()));
            }
            if raw.min.is_none() && raw.max.is_none() && vs.is_none() {
                return Err(at("a count check needs min, max or vs".into()));
            }
            if let (Some(lo), Some(hi)) = (raw.min, raw.max) {
                if lo > hi {
                    return Err(at(format!("min ({lo}) is above max ({hi})")));
                }
            }
            let within_pct = raw.within_pct.unwrap_or(0.0);
            if within_pct < 0.0 || within_pct.is_nan() {
                return Err(at("within_pct must be 0 or more".into()));
            }
            Kind::Count {
                grain: interval,
                from,
                event_type: raw.event_type,
                min: raw.min,
                max: raw.max,
                vs,
                within_pct,
                min_baseline: raw.min_baseline.unwrap_or(1).max(1),
            }
        }
        "dead_letters" => {
            given(&keys, &["max_pct"])?;
            match pct("max_pct", raw.max_pct)? {
                Some(max_pct) => Kind::DeadLetters { max_pct },
                None => return Err(at("a dead_letters check needs max_pct".into())),
            }
        }
        "share" => {
            given(
                &keys,
                &[
                    "field",
                    "value",
                    "is_null",
                    "event_type",
                    "min_pct",
                    "max_pct",
                ],
            )?;
            let Some(written) = raw.field.as_deref() else {
                return Err(at("a share check needs field".into()));
            };
            let Some(field) = FIELDS.iter().copied().find(|f| *f == written) else {
                return Err(at(format!(
                    "field `{written}` is not an event column (known: {})",
                    FIELDS.join(", ")
                )));
            };
            if raw.value.is_some() == raw.is_null.unwrap_or(false) {
                return Err(at(
                    "a share check counts either value = \"…\" or is_null = true".into(),
                ));
            }
            let (min_pct, max_pct) = (pct("min_pct", raw.min_pct)?, pct("max_pct", raw.max_pct)?);
            if min_pct.is_none() && max_pct.is_none() {
                return Err(at("a share check needs min_pct or max_pct".into()));
            }
            Kind::Share {
                field,
                value: raw.value,
                event_type: raw.event_type,
                min_pct,
                max_pct,
            }
        }
        "reconcile" => {
            given(&keys, &[])?;
            if interval == Grain::Minute {
                return Err(at("rollups start at hours: nothing to reconcile".into()));
            }
            Kind::Reconcile { grain: interval }
        }
        "sql" => {
            given(&keys, &["sql"])?;
            let sql = raw.sql.unwrap_or_default();
            if sql.trim().is_empty() {
                return Err(at("an sql check needs sql".into()));
            }
            Kind::Sql {
                sql: sql_with_parameters(&sql).map_err(at)?,
            }
        }
        other => {
            return Err(at(format!(
                "kind \"{other}\": expected count, dead_letters, share, reconcile or sql"
            )))
        }
    };
    Ok(Check {
        name: name.to_string(),
        after: raw.after,
        blocking: raw.blocking,
        kind,
    })
}

/// An `sql` check's text with `{{ interval_start }}`, `{{ interval_end }}`
/// and `{{ job }}` as bound parameters; anything else in braces is an error.
fn sql_with_parameters(sql: &str) -> Result<String, String> {
    let mut out = String::with_capacity(sql.len());
    let mut last = 0;
    for (var, offset) in crate::tasks::template_vars(sql) {
        let Some(close) = sql[offset + 2..].find("}}") else {
            break;
        };
        let Some((_, param)) = SQL_VARS.iter().find(|(v, _)| *v == var) else {
            return Err(format!(
                "unknown template variable `{{{{ {var} }}}}` in sql (known: interval_start, interval_end, job)"
            ));
        };
        out.push_str(&sql[last..offset]);
        out.push_str(param);
        last = offset + 2 + close + 2;
    }
    out.push_str(&sql[last..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        toml::from_str(text).expect("toml")
    }

    #[test]
    fn kinds_parse_and_mistakes_are_named() {
        let tasks = ["ingest", "rollup"];
        let ok = |t: &str| parse("c", table(t), Grain::Hour, &tasks);
        let c = ok("after = \"rollup\"\nkind = \"count\"\nvs = \"day\"\nwithin_pct = 40")
            .expect("count");
        assert!(c.blocking);
        assert!(matches!(
            c.kind,
            Kind::Count {
                grain: Grain::Hour,
                from: CountFrom::Rollup,
                vs: Some(Baseline::Day),
                ..
            }
        ));
        let s = ok("after = \"ingest\"\nkind = \"sql\"\nblocking = false\nsql = \"SELECT count(*) > 0 FROM events WHERE event_time >= {{ interval_start }} AND event_time < {{interval_end}}\"")
            .expect("sql");
        match s.kind {
            Kind::Sql { sql } => assert_eq!(
                sql,
                "SELECT count(*) > 0 FROM events WHERE event_time >= $1::timestamptz AND event_time < $2::timestamptz"
            ),
            other => panic!("{other:?}"),
        }
        for (text, says) in [
            ("after = \"report\"\nkind = \"count\"\nmin = 1", "not a task of this job"),
            ("after = \"rollup\"\nkind = \"count\"", "needs min, max or vs"),
            ("after = \"rollup\"\nkind = \"count\"\nvs = \"day\"", "go together"),
            ("after = \"rollup\"\nkind = \"count\"\nmin = 5\nmax = 1", "above max"),
            ("after = \"rollup\"\nkind = \"count\"\nmin = 1\nmax_pct = 3", "does not apply"),
            ("after = \"rollup\"\nkind = \"share\"\nfield = \"data; DROP TABLE events\"\nis_null = true\nmax_pct = 1", "not an event column"),
            ("after = \"rollup\"\nkind = \"share\"\nfield = \"status\"\nmax_pct = 1", "either value"),
            ("after = \"rollup\"\nkind = \"dead_letters\"\nmax_pct = 101", "between 0 and 100"),
            ("after = \"rollup\"\nkind = \"sql\"\nsql = \"SELECT {{ params.x }}\"", "unknown template variable"),
            ("after = \"rollup\"\nkind = \"freshness\"", "expected count"),
            ("after = \"rollup\"\nkind = \"count\"\nmin = 1\nbogus = 1", "unknown field"),
        ] {
            let e = ok(text).expect_err(text);
            assert!(e.contains(says), "{text}: {e}");
        }
        let e = parse(
            "c",
            table("after = \"rollup\"\nkind = \"reconcile\""),
            Grain::Minute,
            &tasks,
        )
        .expect_err("minute");
        assert!(e.contains("nothing to reconcile"), "{e}");
    }
}
