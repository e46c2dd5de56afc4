//! `sql`: statements (inline or from a file next to the job file) run in
//! one transaction that also records the task's success, so an interval's
//! effect happens exactly once.

use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Deserialize;

use super::{Failure, JobInfo, Kind, TaskContext};

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

    fn run<'a>(&'a self, ctx: &'a TaskContext<'a>) -> BoxFuture<'a, Result<String, Failure>> {
        Box::pin(self.execute(ctx))
    }
}

impl Sql {
    async fn execute(&self, ctx: &TaskContext<'_>) -> Result<String, Failure> {
        let text = match self {
            Sql::Inline(sql) => sql.clone(),
            Sql::File(path) => std::fs::read_to_string(path)
                .map_err(|e| Failure::fatal(anyhow::anyhow!("reading {}: {e}", path.display())))?,
        };
        let sql = ctx.render(&text);
        let mut tx = ctx.pool.begin().await.map_err(Failure::of)?;
        let conn: &mut sqlx::PgConnection = &mut tx;
        let done = sqlx::Executor::execute(&mut *conn, sqlx::raw_sql(&sql))
            .await
            .map_err(failure)?;
        ctx.seal(conn).await?;
        tx.commit().await.map_err(Failure::of)?;
        Ok(format!("{} rows affected", done.rows_affected()))
    }
}
