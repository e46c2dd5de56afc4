//! Report definitions: one TOML file per report type in
//! `reports.definitions_dir`, read at generation time so an operator can
//! change a report's sections without rebuilding hxjobs. A definition is
//! checked whole when it is loaded: an unknown section or metric is an
//! error naming the file and line, before anything is read or rendered.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::interval::Grain;

#[derive(Debug, Clone)]
pub struct Definition {
    pub title: String,
    /// The period one report covers: `day`, `week` or `month`.
    pub period: Grain,
    /// The grain of chart points inside the period: `hour` or `day`.
    pub series: Grain,
    pub sections: Vec<SectionDef>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SectionDef {
    pub kind: SectionKind,
    pub title: String,
    /// For `chart`: what is drawn.
    #[serde(default)]
    pub metric: Option<Metric>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SectionKind {
    /// Requests, error rate, latency percentiles, tokens, cost,
    /// satisfaction, distinct users, with the change against the previous period.
    Kpis,
    ByModel,
    BySource,
    ErrorsByType,
    Chart,
    /// Daily peak and p95 events/s, trend and forecast (see `capacity`).
    Capacity,
    /// Revenue, signups, upgrades, LLM cost, gross margin, cost per 1,000
    /// requests, requests, users, satisfaction, availability; with the
    /// change against the previous period.
    BusinessKpis,
    /// Revenue, signups, upgrades, requests and distinct users per ISO week.
    BusinessWeekly,
    /// LLM cost per model and per 1,000 requests.
    CostByModel,
    /// Average rating and share of low ratings per model.
    Satisfaction,
    /// Availability against `reports.availability_slo_pct`, error budget spent.
    Availability,
    /// The five sources with most requests and with most failed requests.
    TopSources,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Requests per series point (line).
    Requests,
    /// p95 latency per series point (line).
    P95Latency,
    /// Error events by error type over the period (bars).
    ErrorsByType,
    /// Cost by model over the period (bars).
    CostByModel,
    /// Daily peak events/s over the capacity window (line).
    PeakEventsPerSec,
    /// Revenue per series point (bars).
    Revenue,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown report type {0:?}: expected one of {1}")]
    UnknownType(String, String),
    #[error("{path}: {detail}")]
    Invalid { path: PathBuf, detail: String },
}

/// Report type names: lower-case letters, digits and `_`, so a type can
/// never name a path outside the definitions directory.
pub fn valid_type(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The report types defined in `dir`, sorted.
pub fn types(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let stem = name.strip_suffix(".toml")?.to_string();
            valid_type(&stem).then_some(stem)
        })
        .collect();
    out.sort();
    out
}

/// Loads and checks the definition of `report_type`.
pub fn load(dir: &Path, report_type: &str) -> Result<Definition, Error> {
    let unknown = || Error::UnknownType(report_type.to_string(), types(dir).join(", "));
    if !valid_type(report_type) {
        return Err(unknown());
    }
    let path = dir.join(format!("{report_type}.toml"));
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(unknown()),
        Err(e) => {
            return Err(Error::Invalid {
                path,
                detail: e.to_string(),
            })
        }
    };
    let invalid = |detail: String| Error::Invalid {
        path: path.clone(),
        detail,
    };
    let raw: RawDefinition = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    let line =
        |span: std::ops::Range<usize>| text[..span.start.min(text.len())].lines().count() + 1;
    for s in &raw.sections {
        if s.get_ref().kind == SectionKind::Chart && s.get_ref().metric.is_none() {
            return Err(invalid(format!(
                "line {}: chart {:?} needs a metric",
                line(s.span()),
                s.get_ref().title
            )));
        }
    }
    let def = Definition {
        title: raw.title,
        period: raw.period,
        series: raw.series,
        sections: raw
            .sections
            .into_iter()
            .map(toml::Spanned::into_inner)
            .collect(),
    };
    if !matches!(def.period, Grain::Day | Grain::Week | Grain::Month) {
        return Err(invalid(format!(
            "period must be day, week or month, not {}",
            def.period.as_str()
        )));
    }
    if !matches!(def.series, Grain::Hour | Grain::Day) {
        return Err(invalid(format!(
            "series must be hour or day, not {}",
            def.series.as_str()
        )));
    }
    Ok(def)
}

/// A definition as written, with where each section starts.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefinition {
    title: String,
    period: Grain,
    series: Grain,
    sections: Vec<toml::Spanned<SectionDef>>,
}

/// Every definition in `dir` that does not load, with why.
pub fn check_all(dir: &Path) -> Vec<Error> {
    types(dir)
        .into_iter()
        .filter_map(|t| load(dir, &t).err())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_definitions_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("reports");
        let found = types(&dir);
        for t in [
            "capacity_analysis",
            "daily_summary",
            "monthly_business_intelligence",
            "weekly_summary",
        ] {
            assert!(found.iter().any(|f| f == t), "{t} in {found:?}");
            load(&dir, t).unwrap_or_else(|e| panic!("{t}: {e}"));
        }
    }

    #[test]
    fn unknown_sections_and_metrics_name_the_file_and_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let head = "title = \"t\"\nperiod = \"week\"\nseries = \"day\"\n\n";
        let cases = [
            (
                "bad_kind",
                "[[sections]]\nkind = \"kpi\"\ntitle = \"x\"\n",
                6,
                "kpi",
            ),
            (
                "bad_metric",
                "[[sections]]\nkind = \"chart\"\ntitle = \"x\"\nmetric = \"revenu\"\n",
                8,
                "revenu",
            ),
            (
                "no_metric",
                "[[sections]]\nkind = \"chart\"\ntitle = \"x\"\n",
                5,
                "needs a metric",
            ),
        ];
        for (name, body, line, word) in cases {
            std::fs::write(
                dir.path().join(format!("{name}.toml")),
                format!("{head}{body}"),
            )
            .expect("write");
            let e = load(dir.path(), name).expect_err(name).to_string();
            assert!(e.contains(&format!("{name}.toml")), "{e}");
            assert!(e.contains(&format!("line {line}")), "{name}: {e}");
            assert!(e.contains(word), "{e}");
        }
        assert_eq!(check_all(dir.path()).len(), 3);
    }

    #[test]
    fn names_cannot_leave_the_directory() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("reports");
        for bad in ["../Cargo", "weekly_summary/..", "", "Weekly", "a.b"] {
            assert!(
                matches!(load(&dir, bad), Err(Error::UnknownType(..))),
                "{bad}"
            );
        }
    }
}
