//! The data's reads and upkeep: rollups, capacity, retention, the audit log.

use chrono::{DateTime, NaiveDate, Utc};

use super::{Actor, Error, Need, Ops, Result};
use crate::ledger::audit;
use crate::rollup::read::{RollupFilter, RollupRow};

/// The grains rollups are kept at.
pub const GRAINS: [&str; 4] = ["hour", "day", "week", "month"];

/// What retention did, or would do.
#[derive(Debug)]
pub struct RetentionOutcome {
    pub plan: crate::retention::Plan,
    /// Empty on a dry run.
    pub archived: Vec<crate::retention::archive::Archived>,
}

impl Ops {
    /// Rollup rows, oldest bucket first.
    pub async fn rollups(&self, actor: &Actor, f: &RollupFilter<'_>) -> Result<Vec<RollupRow>> {
        self.read(actor, "rollups").await?;
        if !GRAINS.contains(&f.grain) {
            return Err(
                Error::invalid("invalid_grain", "grain must be hour, day, week or month")
                    .field("grain"),
            );
        }
        if f.from > f.to {
            return Err(Error::invalid("invalid_range", "from must not be after to").field("from"));
        }
        super::runs::check_limit("limit", f.limit, 10_000)?;
        Ok(crate::rollup::read::rows(&self.pools.data, f).await?)
    }

    /// Capacity analysis of the days up to `to` (default: today).
    pub async fn capacity(
        &self,
        actor: &Actor,
        to: Option<NaiveDate>,
    ) -> Result<crate::capacity::Analysis> {
        self.read(actor, "capacity").await?;
        Ok(
            crate::capacity::analyse(&self.pools.data, &self.config.capacity, to, Utc::now())
                .await?,
        )
    }

    /// What retention would remove now (an admin's read).
    pub async fn retention_plan(&self, actor: &Actor) -> Result<crate::retention::Plan> {
        self.read(actor, "retention").await?;
        crate::retention::plan(&self.pools.data, &self.config.retention, Utc::now())
            .await
            .map_err(|e| Error::internal("retention_failed", e))
    }

    /// Archives and drops what retention's plan names (nothing on a dry run).
    pub async fn retention(&self, actor: &Actor, dry_run: bool) -> Result<RetentionOutcome> {
        let action = if dry_run {
            "retention_dry_run"
        } else {
            "retention"
        };
        let r = async {
            actor.require(if dry_run { Need::Read } else { Need::Admin }, None)?;
            let cfg = &self.config.retention;
            let plan = crate::retention::plan(&self.pools.data, cfg, Utc::now())
                .await
                .map_err(|e| Error::internal("retention_failed", e))?;
            let archived = if dry_run {
                Vec::new()
            } else {
                let store = crate::storage::Store::open(&self.config.storage)
                    .map_err(super::reports::storage_refusal)?;
                crate::retention::apply(
                    &self.pools.data,
                    &store,
                    &self.config.reports.output_dir,
                    &plan,
                    None,
                )
                .await
                .map_err(|e| match e {
                    crate::retention::archive::Error::Storage(e) => {
                        super::reports::storage_refusal(e)
                    }
                    e => Error::internal("retention_failed", e),
                })?
            };
            Ok(RetentionOutcome { plan, archived })
        }
        .await;
        if !dry_run || r.is_err() {
            self.audited(actor, action, "retention", &r).await;
        }
        r
    }

    /// Loads an archived day back into `events`, after checking its file
    /// against the recorded row count and checksum (admins).
    pub async fn restore_archive(&self, actor: &Actor, day: chrono::NaiveDate) -> Result<u64> {
        use crate::retention::archive::{self, Error as ArchiveError};
        let r = async {
            actor.require(Need::Admin, None)?;
            let store = crate::storage::Store::open(&self.config.storage)
                .map_err(super::reports::storage_refusal)?;
            archive::restore_day(&self.pools.data, &store, day)
                .await
                .map_err(|e| match e {
                    ArchiveError::NotArchived(_) => {
                        Error::not_found("not_archived", e.to_string()).field("day")
                    }
                    ArchiveError::Verify { .. } => {
                        Error::conflict("archive_did_not_verify", e.to_string())
                    }
                    ArchiveError::Storage(e) => super::reports::storage_refusal(e),
                    ArchiveError::File { .. } => Error::new(
                        super::Kind::Unavailable,
                        "archive_unreadable",
                        e.to_string(),
                    ),
                    e => Error::internal("restore_failed", e),
                })
        }
        .await;
        self.audited(actor, "archive_restore", &day.to_string(), &r)
            .await;
        r
    }

    /// The audit log, newest first (admins only).
    pub async fn audit_log(
        &self,
        actor: &Actor,
        f: &audit::Filter,
    ) -> Result<Vec<audit::AuditRow>> {
        let r = actor.require(Need::Admin, None);
        if r.is_err() {
            self.audited(actor, "read", "audit", &r).await;
        }
        r?;
        super::runs::check_limit("limit", f.limit, 1000)?;
        Ok(audit::list(&self.pools.ledger, f).await?)
    }
}

/// `from`/`to` of a rollup read of `grain`: `to` by default now, `from`
/// by default two days before it for hours, 31 for days, 366 for weeks and
/// months (the API and the console alike).
pub fn range(
    grain: &str,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> (DateTime<Utc>, DateTime<Utc>) {
    let to = to.unwrap_or_else(Utc::now);
    let span = match grain {
        "hour" => chrono::TimeDelta::days(2),
        "day" => chrono::TimeDelta::days(31),
        _ => chrono::TimeDelta::days(366),
    };
    (from.unwrap_or(to - span), to)
}
