//! `report`: renders the PDF report of the run's period and records it;
//! the record commits with the task's success.

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Deserialize;

use super::{Failure, JobInfo, Kind, TaskContext};
use crate::reports::{self, Error, Format, Options};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Report {
    /// The report type (a definition in `reports.definitions_dir`).
    report: String,
}

pub(super) fn parse(table: toml::Table, _: &JobInfo) -> Result<Arc<dyn Kind>, String> {
    let r: Report = super::params("report", table)
        .map_err(|e| format!("{e} (a report task needs `report = \"<type>\"`)"))?;
    if r.report.trim().is_empty() {
        return Err("a report task needs `report = \"<type>\"`".into());
    }
    Ok(Arc::new(r))
}

fn failure(e: Error) -> Failure {
    match e {
        Error::Seal(s) => s.into(),
        Error::Definition(_)
        | Error::Format(_)
        | Error::PeriodInFuture { .. }
        | Error::Storage(crate::storage::Error::Config { .. }) => Failure::fatal(e),
        other => Failure::of(other),
    }
}

impl Kind for Report {
    fn name(&self) -> &'static str {
        "report"
    }

    fn seals(&self) -> bool {
        true
    }

    fn run<'a>(&'a self, ctx: &'a TaskContext<'a>) -> BoxFuture<'a, Result<String, Failure>> {
        Box::pin(async move {
            tracing::info!(report = %self.report, period_containing = %ctx.interval.start.to_rfc3339(), "generating report");
            let record = reports::generate_with(
                ctx.config,
                ctx.pool,
                &self.report,
                Format::Pdf,
                Some(ctx.interval.start),
                chrono::Utc::now(),
                Options {
                    seal: ctx.seal.clone(),
                    ..Options::default()
                },
            )
            .await
            .map_err(failure)?;
            let key = record.storage_key.as_deref().unwrap_or_default();
            let at = crate::storage::Store::open(&ctx.config.storage)
                .map(|s| s.location(key))
                .unwrap_or_else(|_| key.to_string());
            tracing::info!(
                id = record.id,
                bytes = record.size.unwrap_or(0),
                at = %at,
                "report written"
            );
            Ok(format!(
                "report {} ({}, {} bytes): {at}",
                record.id,
                self.report,
                record.size.unwrap_or(0),
            ))
        })
    }
}
