//! Reports: generate now, list, read one, open its file.

use chrono::{DateTime, Utc};

use super::{Actor, Error, Need, Ops, Result};
use crate::reports::{self, Format, Record};

/// A report asked for now.
#[derive(Debug, Clone)]
pub struct Generate<'a> {
    pub report_type: &'a str,
    pub format: &'a str,
    /// Any instant of the period; `None`: the last complete one.
    pub period_start: Option<DateTime<Utc>>,
    /// Refuse rather than render a period not completely stored.
    pub require_complete: bool,
}

impl Ops {
    /// Generates, writes and records one report.
    pub async fn generate_report(&self, actor: &Actor, g: &Generate<'_>) -> Result<Record> {
        let r = async {
            actor.require(Need::Operate, None)?;
            let format = Format::parse(g.format).map_err(refusal)?;
            reports::generate_with(
                &self.config,
                &self.pools.data,
                g.report_type,
                format,
                g.period_start,
                Utc::now(),
                reports::Options {
                    require_complete: g.require_complete,
                    ..Default::default()
                },
            )
            .await
            .map_err(refusal)
        }
        .await;
        self.audited(
            actor,
            "generate_report",
            &format!("report_type:{}", g.report_type),
            &r,
        )
        .await;
        r
    }

    /// Reports, newest first (of one type, if named).
    pub async fn reports(
        &self,
        actor: &Actor,
        report_type: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Record>> {
        self.read(actor, "reports").await?;
        super::runs::check_limit("limit", limit, 1000)?;
        reports::list(&self.pools.data, report_type, limit)
            .await
            .map_err(refusal)
    }

    pub async fn report(&self, actor: &Actor, id: i64) -> Result<Record> {
        self.read(actor, &format!("report:{id}")).await?;
        reports::get(&self.pools.data, id)
            .await
            .map_err(refusal)?
            .ok_or_else(|| Error::not_found("unknown_report", format!("no report {id}")))
    }

    /// A finished report and its open file.
    pub async fn report_file(&self, actor: &Actor, id: i64) -> Result<(Record, tokio::fs::File)> {
        let record = self.report(actor, id).await?;
        if record.status != "done" {
            return Err(Error::conflict(
                "report_not_ready",
                format!("report {} is {}", record.id, record.status),
            ));
        }
        let gone = || {
            Error::new(
                super::Kind::NotFound,
                "report_file_missing",
                "the report's file is no longer there",
            )
        };
        let path = reports::file_of(&self.config.reports.output_dir, &record).ok_or_else(gone)?;
        let file = tokio::fs::File::open(&path).await.map_err(|_| gone())?;
        Ok((record, file))
    }
}

/// A report's refusal or failure, in no surface's words.
pub fn refusal(e: reports::Error) -> Error {
    use crate::reports::definition::Error as Definition;
    match e {
        reports::Error::Definition(Definition::UnknownType(..)) => {
            Error::invalid("unknown_report_type", e.to_string()).field("report_type")
        }
        reports::Error::Definition(Definition::Invalid { .. }) => {
            Error::internal("invalid_report_definition", e)
        }
        reports::Error::PeriodInFuture { .. } => {
            Error::invalid("period_in_future", e.to_string()).field("period_start")
        }
        reports::Error::Incomplete { ref missing } => {
            let hours = serde_json::to_value(missing).unwrap_or_default();
            Error::conflict("period_incomplete", e.to_string()).with("missing_hours", hours)
        }
        reports::Error::Format(_) => {
            Error::invalid("invalid_format", e.to_string()).field("format")
        }
        reports::Error::Database(e) => e.into(),
        other => Error::internal("internal", other),
    }
}
