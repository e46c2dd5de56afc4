//! `sql`: statements (inline or from a file next to the job file) run in
//! one transaction that also records the task's success, so an interval's
//! effect happens exactly once.
//!
//! Parameters are bound values, never SQL: before the statements run, each
//! parameter is set for the transaction with a bound `set_config($1)`, and
//! `{{ params.NAME }}` becomes `current_setting(…)` cast to its type, so no
//! value can change a statement. A placeholder inside quotes is refused
//! when the job file loads (it would be text, not the value).

use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Deserialize;

use sqlx::pool::PoolConnection;
use sqlx::postgres::PgQueryResult;
use sqlx::Postgres;

use super::{Failure, JobInfo, Kind, TaskContext};
use crate::dag::params::{Param, ParamType};
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

    fn unsafe_params(&self, params: &[Param]) -> Vec<(&'static str, usize, String)> {
        self.templates()
            .into_iter()
            .flat_map(|(key, text)| {
                misplaced(&text, params)
                    .into_iter()
                    .map(move |(at, why)| (key, at, why))
            })
            .collect()
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
        // A file may have changed since the job file loaded.
        if let Some((_, why)) = misplaced(&text, &declared_of(ctx)).first() {
            return Err(Failure::fatal(anyhow::anyhow!("{why}")));
        }
        // Each parameter used: its setting's name and its value as text.
        let used = std::sync::Mutex::new(Vec::<(String, String)>::new());
        let sql = ctx.render(&text, |name, _, value| {
            let setting = format!("hxjobs.param_{}", hex(name));
            let cast = match value {
                serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => "::bigint",
                serde_json::Value::Number(_) => "::double precision",
                serde_json::Value::Bool(_) => "::boolean",
                _ => "",
            };
            if let Ok(mut used) = used.lock() {
                used.push((setting.clone(), super::param_text(value)));
            }
            format!("(current_setting('{setting}'){cast})")
        })?;
        let used = used.into_inner().unwrap_or_default();
        let conn = ctx.pool.acquire().await.map_err(Failure::of)?;
        let mut tx = OpenTransaction(Some(conn));
        if let Err(e) = tx.execute("BEGIN").await {
            tx.rollback().await;
            return Err(failure(e));
        }
        for (setting, value) in &used {
            if let Err(e) = tx.bind_setting(setting, value).await {
                tx.rollback().await;
                return Err(failure(e));
            }
        }
        // The statements, then the seal with `COMMIT` (simple protocol;
        // the seal's ids are integers).
        let done = tx.execute(&sql).await;
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

    /// Sets `setting` to `value` for the transaction, the value bound.
    async fn bind_setting(&mut self, setting: &str, value: &str) -> Result<(), sqlx::Error> {
        let conn = self.0.as_mut().ok_or(sqlx::Error::PoolClosed)?;
        sqlx::query!("SELECT set_config($1, $2, true)", setting, value)
            .fetch_one(&mut **conn)
            .await
            .map(|_| ())
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

/// A parameter name as hex: setting names are case-blind and dotted.
fn hex(name: &str) -> String {
    name.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The run's parameters as declarations (their types from their values),
/// for checking a file read at run time.
fn declared_of(ctx: &TaskContext<'_>) -> Vec<Param> {
    ctx.params
        .iter()
        .map(|(name, value)| Param {
            name: name.clone(),
            kind: match value {
                serde_json::Value::Bool(_) => ParamType::Bool,
                serde_json::Value::Number(n) if n.is_i64() => ParamType::Int,
                serde_json::Value::Number(_) => ParamType::Float,
                _ => ParamType::String,
            },
            default: value.clone(),
            description: String::new(),
            rules: Default::default(),
        })
        .collect()
}

/// Placeholders of parameters that are not where a value goes: inside a
/// string, a quoted name or a dollar-quoted body, or with a filter.
/// Returns each one's byte offset and why.
fn misplaced(sql: &str, params: &[Param]) -> Vec<(usize, String)> {
    let quoted = quoted_spans(sql);
    super::template_vars(sql)
        .into_iter()
        .filter_map(|(var, at)| {
            let p = super::param_of(params, &var)?;
            let (_, filter) = super::split_filter(&var);
            if filter.is_some() {
                return Some((
                    at,
                    format!("`{{{{ {var} }}}}`: a sql task binds parameters as values; write `{{{{ params.{} }}}}` with no filter", p.name),
                ));
            }
            quoted.iter().any(|(s, e)| (*s..*e).contains(&at)).then(|| {
                (
                    at,
                    format!(
                        "`{{{{ {var} }}}}` is inside quotes: hxjobs binds it as a value, so write it bare (e.g. WHERE model = {{{{ params.{} }}}})",
                        p.name
                    ),
                )
            })
        })
        .collect()
}

/// Byte ranges of `'…'`, `"…"` and `$tag$…$tag$` in `sql` (comments are
/// skipped so a quote in one opens nothing).
fn quoted_spans(sql: &str) -> Vec<(usize, usize)> {
    let b = sql.as_bytes();
    let mut spans = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = memchr::memchr(b'\n', &b[i..]).map_or(b.len(), |n| i + n);
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = sql[i + 2..].find("*/").map_or(b.len(), |n| i + 2 + n + 2);
            }
            q @ (b'\'' | b'"') => {
                let start = i;
                i += 1;
                while i < b.len() {
                    if b[i] == q {
                        if b.get(i + 1) == Some(&q) {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                spans.push((start, (i + 1).min(b.len())));
                i += 1;
            }
            b'$' => {
                let tag_end = sql[i + 1..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .map(|n| i + 1 + n);
                match tag_end.filter(|&e| b.get(e) == Some(&b'$')) {
                    Some(e) if !sql[i + 1..e].starts_with(|c: char| c.is_ascii_digit()) => {
                        let tag = &sql[i..=e];
                        let body = e + 1;
                        let close = sql[body..]
                            .find(tag)
                            .map_or(b.len(), |n| body + n + tag.len());
                        spans.push((i, close));
                        i = close;
                    }
                    _ => i += 1,
                }
            }
            _ => i += 1,
        }
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(name: &str) -> Param {
        Param {
            name: name.into(),
            kind: ParamType::String,
            default: serde_json::Value::from(""),
            description: String::new(),
            rules: Default::default(),
        }
    }

    #[test]
    fn placeholders_in_quotes_are_found() {
        let p = [param("m")];
        assert!(misplaced("SELECT 1 WHERE model = {{ params.m }}", &p).is_empty());
        assert!(misplaced("-- '{{ params.m }}'\nSELECT {{ params.m }}", &p).is_empty());
        for bad in [
            "SELECT '{{ params.m }}'",
            "SELECT \"{{ params.m }}\"",
            "DO $x$ BEGIN PERFORM {{ params.m }}; END $x$",
            "SELECT 'it''s {{params.m}}'",
            "SELECT {{ params.m | quote }}",
        ] {
            assert_eq!(misplaced(bad, &p).len(), 1, "{bad}");
        }
    }
}
