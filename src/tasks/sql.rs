//! `sql`: statements (inline or from a file next to the job file) run in
//! one transaction that also records the task's success, so an interval's
//! effect happens exactly once.

use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Deserialize;

use sqlx::pool::PoolConnection;
use sqlx::postgres::PgQueryResult;
use sqlx::Postgres;

use super::{Failure, JobInfo, Kind, TaskContext};
use crate::ledger::SealError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    sql: Option<String>,
    file: Option<String>,
}

#[derive(Debug)]
enum Sql {
    Inline(String),
    /// Read at each attempt, so an edit takes effect without a reload.
    File(PathBuf),
}

pub(super) fn parse(table: toml::Table, job: &JobInfo) -> Result<Arc<dyn Kind>, String> {
    let p: Params = super::params("sql", table)?;
    let set = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.trim().is_empty());
    if set(&p.sql) == set(&p.file) {
        return Err("a sql task needs exactly one of `sql` or `file`".into());
    }
    Ok(Arc::new(match (p.sql, p.file) {
        (Some(sql), _) if !sql.trim().is_empty() => Sql::Inline(sql),
        (_, file) => Sql::File(job.dir.join(file.unwrap_or_default())),
    }))
}

/// A statement PostgreSQL refused as written (SQLSTATE class 42: syntax,
/// unknown table or column, permissions) fails at once; others retry.
fn failure(e: sqlx::Error) -> Failure {
    let class_42 = e
        .as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c.starts_with("42"));
    if class_42 {
        Failure::fatal(e)
    } else {
        Failure::of(e)
    }
}

impl Kind for Sql {
    fn name(&self) -> &'static str {
        "sql"
    }

    fn seals(&self) -> bool {
        true
    }

    fn run<'a>(&'a self, ctx: &'a TaskContext<'a>) -> BoxFuture<'a, Result<String, Failure>> {
        Box::pin(self.execute(ctx))
    }

    fn templates(&self) -> Vec<(&'static str, String)> {
        match self {
            Sql::Inline(sql) => vec![("sql", sql.clone())],
            // Checked as it is now; a missing file fails the attempt.
            Sql::File(path) => std::fs::read_to_string(path)
                .map(|text| vec![("file", text)])
                .unwrap_or_default(),
        }
    }
}

impl Sql {
    async fn execute(&self, ctx: &TaskContext<'_>) -> Result<String, Failure> {
        let text = match self {
            Sql::Inline(sql) => sql.clone(),
            Sql::File(path) => std::fs::read_to_string(path)
                .map_err(|e| Failure::fatal(anyhow::anyhow!("reading {}: {e}", path.display())))?,
        };
        let sql = ctx.render(&text)?;
        let conn = ctx.pool.acquire().await.map_err(Failure::of)?;
        let mut tx = OpenTransaction(Some(conn));
        // Two round trips: `BEGIN` with the statements, then the seal with
        // `COMMIT` (simple protocol; the seal's ids are integers).
        let done = tx.execute(&format!("BEGIN;\n{sql}")).await;
        let done = match done {
            Ok(done) => done,
            Err(e) => {
                tx.rollback().await;
                return Err(failure(e));
            }
        };
        let commit = match &ctx.seal {
            Some(seal) => format!("{};\nCOMMIT", seal.statement()),
            None => "COMMIT".to_string(),
        };
        if let Err(e) = tx.execute(&commit).await {
            tx.rollback().await;
            return Err(SealError::of(e).into());
        }
        tx.0 = None;
        if let Some(seal) = &ctx.seal {
            seal.applied_by_statement();
        }
        Ok(format!("{} rows affected", done.rows_affected()))
    }
}

/// A connection inside a transaction it began itself. Dropped before the
/// transaction ended (a timeout, the run fenced out), the connection is
/// closed, which rolls the transaction back: it never returns to the pool
/// inside it.
struct OpenTransaction(Option<PoolConnection<Postgres>>);

impl OpenTransaction {
    async fn execute(&mut self, sql: &str) -> Result<PgQueryResult, sqlx::Error> {
        let conn = self.0.as_mut().ok_or(sqlx::Error::PoolClosed)?;
        sqlx::Executor::execute(&mut **conn, sqlx::raw_sql(sql)).await
    }

    /// Ends a failed transaction; the connection goes back to the pool
    /// only if that worked.
    async fn rollback(&mut self) {
        if self.execute("ROLLBACK").await.is_ok() {
            self.0 = None;
        }
    }
}

impl Drop for OpenTransaction {
    fn drop(&mut self) {
        if let Some(mut conn) = self.0.take() {
            conn.close_on_drop();
        }
    }
}
