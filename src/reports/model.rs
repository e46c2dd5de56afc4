//! A report's content, whatever the format: sections of tables and
//! charts whose cells say how a number is shown, and where the figures
//! came from.

use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};

use super::{Error, Freshness};
use crate::interval::Grain;
use crate::round;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Pdf,
    Json,
    Csv,
}

impl Format {
    pub fn parse(s: &str) -> Result<Format, Error> {
        match s {
            "pdf" => Ok(Format::Pdf),
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            other => Err(Error::Format(other.to_string())),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Pdf => "pdf",
            Format::Json => "json",
            Format::Csv => "csv",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Pdf => "application/pdf",
            Format::Json => "application/json",
            Format::Csv => "text/csv; charset=utf-8",
        }
    }
}

/// A report's content, whatever the format.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub report_type: String,
    pub title: String,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    /// Set when the period has not ended: the figures cover up to here.
    pub partial_through: Option<DateTime<Utc>>,
    pub previous_start: DateTime<Utc>,
    /// A period under way is compared to date: (the end of its whole hours
    /// compared, the end of the same span in the previous period).
    pub compared_to_date: Option<(DateTime<Utc>, DateTime<Utc>)>,
    pub generated_at: DateTime<Utc>,
    /// E.g. that the period start asked for was snapped.
    pub notes: Vec<String>,
    /// Which grain each part's figures came from, and buckets without data.
    pub sources: Vec<Source>,
    pub freshness: Freshness,
    /// The latest result of every data check on the period's intervals.
    pub data_quality: crate::ledger::checks::Quality,
    pub sections: Vec<Section>,
    /// The newest rollup `seq` read: a later report of the same period
    /// with a higher one was built from newer data.
    #[serde(skip)]
    pub data_seq: i64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Section {
    Table {
        title: String,
        columns: Vec<String>,
        rows: Vec<Vec<Cell>>,
    },
    Chart {
        title: String,
        style: ChartStyle,
        labels: Vec<String>,
        /// `None` where the point has no data: a gap, never 0.
        values: Vec<Option<f64>>,
        /// The point whose bucket has not ended yet: drawn as partial.
        #[serde(skip_serializing_if = "Option::is_none")]
        partial: Option<usize>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChartStyle {
    Line,
    Bar,
}

/// One table cell. Numbers are rounded to the decimals they are shown with,
/// so every format carries the same figures.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Int(i64),
    Num(f64, usize),
    /// A satisfaction rating on the contract's 1-10 scale, two decimals.
    Rating(f64),
    Text(String),
    Empty,
}

impl Cell {
    pub(crate) fn num(v: f64, decimals: usize) -> Cell {
        if !v.is_finite() {
            Cell::Empty
        } else if round(v, decimals as u32) == 0.0 {
            // A tiny negative figure reads "0.00", not "-0.00".
            Cell::Num(0.0, decimals)
        } else {
            Cell::Num(v, decimals)
        }
    }

    pub(crate) fn opt(v: Option<f64>, decimals: usize) -> Cell {
        v.map_or(Cell::Empty, |v| Cell::num(v, decimals))
    }

    pub(crate) fn rating(v: Option<f64>) -> Cell {
        match v {
            Some(v) if v.is_finite() => Cell::Rating(v),
            _ => Cell::Empty,
        }
    }

    /// The cell as a person reads it in a PDF: thousands separators, the
    /// rating's scale, "n/a" where there is no figure.
    pub fn shown(&self) -> String {
        match self {
            Cell::Int(v) => grouped(&v.to_string()),
            Cell::Num(v, d) => grouped(&format!("{v:.d$}")),
            Cell::Rating(v) => format!("{v:.2} / 10"),
            Cell::Text(s) => s.clone(),
            Cell::Empty => "n/a".to_string(),
        }
    }
}

/// `-1234567.891` → `-1,234,567.891`: separators in the integer part.
pub fn grouped(number: &str) -> String {
    let (sign, rest) = match number.strip_prefix('-') {
        Some(r) => ("-", r),
        None => ("", number),
    };
    let (int, frac) = match rest.find('.') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if !int.bytes().all(|b| b.is_ascii_digit()) {
        return number.to_string();
    }
    let mut out = String::with_capacity(number.len() + int.len() / 3);
    out.push_str(sign);
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out.push_str(frac);
    out
}

impl std::fmt::Display for Cell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cell::Int(v) => write!(f, "{v}"),
            Cell::Num(v, d) => write!(f, "{v:.d$}"),
            Cell::Rating(v) => write!(f, "{v:.2}"),
            Cell::Text(s) => f.write_str(s),
            Cell::Empty => f.write_str("-"),
        }
    }
}

impl Serialize for Cell {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Cell::Int(v) => s.serialize_i64(*v),
            Cell::Num(v, d) => s.serialize_f64(round(*v, *d as u32)),
            Cell::Rating(v) => s.serialize_f64(round(*v, 2)),
            Cell::Text(t) => s.serialize_str(t),
            Cell::Empty => s.serialize_none(),
        }
    }
}

/// Where the figures of one part of a report came from.
#[derive(Debug, Clone, Serialize)]
pub struct Source {
    /// "this period", "previous period" or "series".
    pub figures: String,
    pub grain: Grain,
    /// E.g. "week rollups" or "merged from day rollups".
    pub from: String,
    pub buckets: usize,
    /// Buckets without any data (their figures are n/a, or gaps).
    pub missing: Vec<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::{grouped, Cell};

    #[test]
    fn figures_read_as_a_person_writes_them() {
        assert_eq!(grouped("29568003"), "29,568,003");
        assert_eq!(grouped("-1234.5678"), "-1,234.5678");
        assert_eq!(grouped("999"), "999");
        assert_eq!(grouped("1000.00"), "1,000.00");
        assert_eq!(Cell::Rating(7.3812).shown(), "7.38 / 10");
        assert_eq!(Cell::Rating(7.3812).to_string(), "7.38");
        assert_eq!(Cell::Empty.shown(), "n/a");
        assert_eq!(Cell::Num(1234567.891, 2).shown(), "1,234,567.89");
        assert_eq!(Cell::num(-0.00004, 4).shown(), "0.0000");
        assert_eq!(Cell::num(-0.04, 1).to_string(), "0.0");
        assert_eq!(Cell::num(-0.06, 1).to_string(), "-0.1");
    }
}
