//! The object store's files: archived days listed, and files written before
//! the store copied into it (`hxjobs storage migrate`).

use chrono::NaiveDate;
use serde::Serialize;

use super::reports::storage_refusal;
use super::{Actor, Error, Need, Ops, Result};
use crate::retention::{archive, ArchiveRow};
use crate::storage::Store;

/// What a migration did; a second run finds nothing left to move.
#[derive(Debug, Default, Serialize)]
pub struct Migrated {
    /// `(report id, key)` copied and verified.
    pub reports: Vec<(i64, String)>,
    /// `(day, key)` copied and verified.
    pub archives: Vec<(NaiveDate, String)>,
    /// Files recorded but not on this node's disk (another node may have
    /// them: run the migration there too), or that did not verify.
    pub skipped: Vec<String>,
}

impl Ops {
    /// Archived days, newest first.
    pub async fn archives(&self, actor: &Actor, limit: i64) -> Result<Vec<ArchiveRow>> {
        self.read(actor, "archives").await?;
        Ok(crate::retention::archives(&self.pools.data, limit.clamp(1, 10_000)).await?)
    }

    /// Copies reports and archives still in the old local directories into
    /// the store, verifies each (sha256 of a report, rows and checksum of an
    /// archive) and records its key (admins). Idempotent.
    pub async fn migrate_storage(&self, actor: &Actor) -> Result<Migrated> {
        let r = async {
            actor.require(Need::Admin, None)?;
            let store = Store::open(&self.config.storage).map_err(storage_refusal)?;
            let mut done = Migrated::default();
            self.migrate_reports(&store, &mut done).await?;
            self.migrate_archives(&store, &mut done).await?;
            Ok(done)
        }
        .await;
        self.audited(
            actor,
            "storage_migrate",
            self.config.storage.url.as_str(),
            &r,
        )
        .await;
        r
    }

    async fn migrate_reports(&self, store: &Store, done: &mut Migrated) -> Result<()> {
        use sha2::{Digest, Sha256};
        let pending = crate::reports::store::local_only(&self.pools.data)
            .await
            .map_err(super::reports::refusal)?;
        for record in pending {
            let Some(file) = crate::reports::file_of(&self.config.reports.output_dir, &record)
            else {
                done.skipped.push(format!(
                    "report {}: {} is not in this node's {}",
                    record.id,
                    record.path.as_deref().unwrap_or_default(),
                    self.config.reports.output_dir.display()
                ));
                continue;
            };
            let bytes = tokio::fs::read(&file)
                .await
                .map_err(|e| Error::internal("storage_migrate_failed", e))?;
            let sha = format!("{:x}", Sha256::digest(&bytes));
            if record.sha256.as_deref().is_some_and(|want| want != sha) {
                done.skipped.push(format!(
                    "report {}: {} does not match its recorded sha256",
                    record.id,
                    file.display()
                ));
                continue;
            }
            let name = record.path.clone().unwrap_or_default();
            let key = crate::storage::report_key(&name);
            let stored = store
                .put(&key, bytes.into())
                .await
                .map_err(storage_refusal)?;
            let back = store.get(&key).await.map_err(storage_refusal)?;
            if stored.sha256 != sha || format!("{:x}", Sha256::digest(&back)) != sha {
                return Err(Error::internal(
                    "storage_migrate_failed",
                    format!(
                        "report {}: {key} read back differs from {}",
                        record.id,
                        file.display()
                    ),
                ));
            }
            crate::reports::store::moved(&self.pools.data, record.id, &key)
                .await
                .map_err(super::reports::refusal)?;
            done.reports.push((record.id, key));
        }
        Ok(())
    }

    async fn migrate_archives(&self, store: &Store, done: &mut Migrated) -> Result<()> {
        let pending = sqlx::query!(
            "SELECT day, path, rows, checksum FROM event_archives
             WHERE storage_key IS NULL ORDER BY day"
        )
        .fetch_all(&self.pools.data)
        .await?;
        for row in pending {
            let path = std::path::Path::new(&row.path);
            if !path.is_file() {
                done.skipped.push(format!(
                    "archive of {}: {} is not on this node",
                    row.day, row.path
                ));
                continue;
            }
            let moved =
                match archive::migrate_day(store, row.day, path, row.rows, row.checksum).await {
                    Ok(moved) => moved,
                    Err(archive::Error::Storage(e)) => return Err(storage_refusal(e)),
                    Err(e @ archive::Error::Verify { .. }) => {
                        done.skipped.push(e.to_string());
                        continue;
                    }
                    Err(e) => return Err(Error::internal("storage_migrate_failed", e)),
                };
            sqlx::query!(
                "UPDATE event_archives SET storage_key = $2, path = $3, bytes = $4 WHERE day = $1",
                row.day,
                moved.key,
                store.location(&moved.key),
                moved.bytes,
            )
            .execute(&self.pools.data)
            .await?;
            done.archives.push((row.day, moved.key));
        }
        Ok(())
    }
}
