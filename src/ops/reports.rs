//! Reports: generate now, list, read one, open its file.

use chrono::{DateTime, Utc};
use futures::StreamExt;

use super::{Actor, Error, Need, Ops, Result};
use crate::reports::{self, Format, Record};
use crate::storage::{Error as StorageError, Store};

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

    /// A finished report and its bytes as a stream: from the object store,
    /// or from the old local directory for a report not yet migrated.
    pub async fn report_file(&self, actor: &Actor, id: i64) -> Result<(Record, ByteStream)> {
        let record = self.report(actor, id).await?;
        if record.status != "done" {
            return Err(Error::conflict(
                "report_not_ready",
                format!("report {} is {}", record.id, record.status),
            ));
        }
        let gone = |why: String| Error::new(super::Kind::NotFound, "report_file_missing", why);
        if let Some(key) = &record.storage_key {
            let files = Store::open(&self.config.storage).map_err(storage_refusal)?;
            let (_, stream) = files.stream(key).await.map_err(|e| match e {
                StorageError::NotFound { .. } | StorageError::Verify { .. } => {
                    gone(format!("the report's file is no longer in the store: {e}"))
                }
                e => storage_refusal(e),
            })?;
            return Ok((record, stream));
        }
        let missing = || {
            gone(
                "the report's file is not in the store and not in this node's reports.output_dir \
                 (run `hxjobs storage migrate` on the node that wrote it)"
                    .into(),
            )
        };
        let path =
            reports::file_of(&self.config.reports.output_dir, &record).ok_or_else(missing)?;
        let file = tokio::fs::File::open(&path).await.map_err(|_| missing())?;
        Ok((record, tokio_util::io::ReaderStream::new(file).boxed()))
    }
}

/// A file's bytes, streamed.
pub type ByteStream = futures::stream::BoxStream<'static, std::io::Result<bytes::Bytes>>;

/// The store's refusal: unavailable (503, `storage_unavailable`) unless
/// the configuration itself is wrong.
pub fn storage_refusal(e: StorageError) -> Error {
    match e {
        StorageError::Config { .. } => Error::internal("storage_misconfigured", e),
        e => Error::new(
            super::Kind::Unavailable,
            "storage_unavailable",
            e.to_string(),
        ),
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
        reports::Error::Storage(e) => storage_refusal(e),
        other => Error::internal("internal", other),
    }
}
