//! A report as CSV: one line per number.

use chrono::{DateTime, Utc};

use super::{Cell, Report, Section};

/// One line per number: section, row, column, value; first the `report`
/// lines (period, partial, sources, freshness, notes).
pub(super) fn render(report: &Report) -> String {
    fn field(s: &str) -> String {
        if s.contains([',', '"', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    }
    let mut out = String::from("section,row,column,value\n");
    let mut line = |a: &str, b: &str, c: &str, d: &str| {
        out.push_str(&[field(a), field(b), field(c), field(d)].join(","));
        out.push('\n');
    };
    let t = |t: Option<DateTime<Utc>>| t.map(|t| t.to_rfc3339()).unwrap_or_default();
    line("report", "period", "start", &t(Some(report.period_start)));
    line("report", "period", "end", &t(Some(report.period_end)));
    line("report", "partial", "through", &t(report.partial_through));
    for s in &report.sources {
        line("report", "sources", &s.figures, &s.from);
        if !s.missing.is_empty() {
            let missing: Vec<String> = s.missing.iter().map(|m| m.to_rfc3339()).collect();
            line("report", "no data", &s.figures, &missing.join(" "));
        }
    }
    let f = &report.freshness;
    line(
        "report",
        "freshness",
        "latest_event_time",
        &t(f.latest_event_time),
    );
    let opt = |v: Option<String>| v.unwrap_or_default();
    line(
        "report",
        "freshness",
        "ingest_caught_up",
        &opt(f.ingest_caught_up.map(|b| b.to_string())),
    );
    line(
        "report",
        "freshness",
        "hours_ready",
        &f.hours_ready.to_string(),
    );
    for n in &report.notes {
        line("report", "note", "", n);
    }
    for s in &report.sections {
        match s {
            Section::Table {
                title,
                columns,
                rows,
            } => {
                for row in rows {
                    let name = row.first().map(Cell::to_string).unwrap_or_default();
                    for (col, cell) in columns.iter().zip(row).skip(1) {
                        let v = if *cell == Cell::Empty {
                            String::new()
                        } else {
                            cell.to_string()
                        };
                        line(title, &name, col, &v);
                    }
                }
            }
            Section::Chart {
                title,
                labels,
                values,
                partial,
                ..
            } => {
                for (n, (l, v)) in labels.iter().zip(values).enumerate() {
                    let col = if *partial == Some(n) {
                        "value so far"
                    } else {
                        "value"
                    };
                    line(title, l, col, &opt(v.map(|v| v.to_string())));
                }
            }
        }
    }
    out
}
