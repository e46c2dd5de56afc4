//! Task kinds. A job file's task is parsed once into the [`Kind`] its
//! `kind` names, with that kind's parameters validated; each kind lives in
//! its own file with its parameters, its run function and its reading of
//! its errors (retry, wait, fatal). [`KINDS`] registers them: adding a kind
//! is a new file and a line there.

mod aggregate;
mod ingest;
mod report;
mod retention;
mod shell;
mod sql;

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::interval::{Grain, Interval};
use crate::ledger::{RunType, Seal};

/// Every task kind: its name in job files and how its parameters parse.
pub const KINDS: &[(&str, Parse)] = &[
    ("ingest", ingest::parse),
    ("aggregate", aggregate::parse),
    ("retention", retention::parse),
    ("report", report::parse),
    ("sql", sql::parse),
    ("shell", shell::parse),
];

/// Builds a kind from a task's own parameters (every key of the task but
/// the common ones: `kind`, `depends_on`, retries, timeout, `in_backfill`).
pub type Parse = fn(toml::Table, &JobInfo) -> Result<Arc<dyn Kind>, String>;

/// What a kind may need from its job file when it parses.
pub struct JobInfo<'a> {
    /// The job's interval (an `aggregate` task's default grain).
    pub interval: Grain,
    /// The job file's directory (a `sql` task's `file` is relative to it).
    pub dir: &'a Path,
}

/// A task kind with its validated parameters.
pub trait Kind: fmt::Debug + Send + Sync {
    /// The name job files use.
    fn name(&self) -> &'static str;

    /// Runs one attempt. The executor applies the timeout, retries and
    /// fencing; a kind that writes data commits it with `ctx.seal`.
    fn run<'a>(&'a self, ctx: &'a TaskContext<'a>) -> BoxFuture<'a, Result<String, Failure>>;

    /// Whether a success is sealed into the task's own transaction: its
    /// attempt is then written to the ledger only when it has run for a
    /// second or logged a line (or by the seal), not before it starts.
    fn seals(&self) -> bool {
        false
    }

    /// The templates this task fills in, each with the key it came from
    /// (checked when the job file loads: every `{{ name }}` must be known).
    fn templates(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    /// Where a template puts a parameter so that its value could become
    /// code (checked when the job file loads): the template's key, the
    /// placeholder's byte offset in it, and why.
    fn unsafe_params(&self, _params: &[Param]) -> Vec<(&'static str, usize, String)> {
        Vec::new()
    }
}

use crate::dag::params::Param;

/// A placeholder's variable and its filter: `params.x | quote` →
/// (`params.x`, `Some("quote")`).
pub fn split_filter(var: &str) -> (&str, Option<&str>) {
    match var.split_once('|') {
        Some((v, f)) => (v.trim(), Some(f.trim())),
        None => (var.trim(), None),
    }
}

/// The declared parameter a placeholder names, if it names one.
pub fn param_of<'a>(params: &'a [Param], var: &str) -> Option<&'a Param> {
    let name = split_filter(var).0.strip_prefix("params.")?;
    params.iter().find(|p| p.name == name)
}

/// `value` as one shell word: single-quoted, a `'` inside written `'\''`.
pub fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "'\\''"))
}

/// A parameter's value as text: a string as it is, others as JSON.
pub fn param_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The variables hxjobs fills into every template (`{{ params.NAME }}`
/// adds the declared parameters, as values: see [`Kind::unsafe_params`]).
pub const TEMPLATE_VARS: [&str; 4] = ["interval_start", "interval_end", "job", "run_id"];

/// The filters a placeholder may carry: `quote` makes a parameter one
/// shell word (`shell` tasks).
pub const FILTERS: [&str; 1] = ["quote"];

/// Every `{{ name }}` in `template`, trimmed, with the byte offset of its
/// opening braces.
pub fn template_vars(template: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(open) = template[from..].find("{{") {
        let start = from + open;
        let Some(close) = template[start + 2..].find("}}") else {
            break;
        };
        out.push((
            template[start + 2..start + 2 + close].trim().to_string(),
            start,
        ));
        from = start + 2 + close + 2;
    }
    out
}

/// Parses the task kind `name` from its parameters.
pub fn parse(name: &str, params: toml::Table, job: &JobInfo) -> Result<Arc<dyn Kind>, String> {
    let (_, parse) = KINDS.iter().find(|(n, _)| *n == name).ok_or_else(|| {
        let known: Vec<&str> = KINDS.iter().map(|(n, _)| *n).collect();
        format!("unknown kind `{name}` (known: {})", known.join(", "))
    })?;
    parse(params, job)
}

/// A kind's parameters from its table, unknown keys refused.
fn params<P: DeserializeOwned>(kind: &str, table: toml::Table) -> Result<P, String> {
    toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| format!("a {kind} task: {}", e.message().trim()))
}

/// What a task attempt knows about its run.
pub struct TaskContext<'a> {
    pub config: &'a Config,
    pub pool: &'a PgPool,
    pub job: &'a str,
    pub interval: Interval,
    /// The ledger id, or 0 when the task runs outside the ledger (`tasks test`).
    pub run_id: i64,
    pub run_type: RunType,
    /// The run's parameters (`{{ params.NAME }}`), defaults filled in.
    pub params: &'a serde_json::Map<String, serde_json::Value>,
    /// This attempt's number, from 1.
    pub attempt: u32,
    /// Records the attempt's success in the transaction that commits its
    /// data; `None` outside the ledger.
    pub seal: Option<Seal>,
    /// Shutdown: a long task stops at a safe point and the run is handed back.
    pub stop: CancellationToken,
    /// The attempt's log (a shell task's output goes there); `None`
    /// outside the ledger.
    pub log: Option<crate::tasklog::AttemptLog>,
}

impl TaskContext<'_> {
    /// `{{ interval_start }}`, `{{ interval_end }}`, `{{ job }}` and
    /// `{{ run_id }}` replaced by the run's values (RFC 3339 times, UTC);
    /// each `{{ params.NAME [| filter] }}` by what `param` makes of the
    /// parameter's name, filter and value (the kind decides: a bound value
    /// in SQL, a quoted word in a shell line).
    pub fn render(
        &self,
        template: &str,
        param: impl Fn(&str, Option<&str>, &serde_json::Value) -> String,
    ) -> Result<String, Failure> {
        let mut out = String::with_capacity(template.len());
        let mut last = 0;
        let mut unknown = Vec::new();
        for (var, offset) in template_vars(template) {
            let Some(close) = template[offset + 2..].find("}}") else {
                break;
            };
            let end = offset + 2 + close + 2;
            out.push_str(&template[last..offset]);
            last = end;
            let (name, filter) = split_filter(&var);
            let builtin = match name {
                "interval_start" => Some(self.interval.start.to_rfc3339()),
                "interval_end" => Some(self.interval.end.to_rfc3339()),
                "job" => Some(self.job.to_string()),
                "run_id" => Some(self.run_id.to_string()),
                _ => None,
            };
            let given = name
                .strip_prefix("params.")
                .and_then(|p| self.params.get_key_value(p));
            match (builtin, given) {
                (Some(text), _) if filter.is_none() => out.push_str(&text),
                (None, Some((p, value))) => out.push_str(&param(p, filter, value)),
                _ => unknown.push(var.clone()),
            }
        }
        out.push_str(&template[last..]);
        // Job files are checked when they load; a `sql` file may have
        // changed since.
        if !unknown.is_empty() {
            return Err(Failure::fatal(anyhow::anyhow!(
                "unknown template variables: {}",
                unknown.join(", ")
            )));
        }
        Ok(out)
    }

    /// Seals the attempt's success into `conn`'s transaction (no-op
    /// outside the ledger).
    pub async fn seal(
        &self,
        conn: &mut sqlx::PgConnection,
    ) -> Result<(), crate::ledger::SealError> {
        match &self.seal {
            Some(seal) => seal.apply(conn).await,
            None => Ok(()),
        }
    }
}

/// Why an attempt did not succeed, as the executor acts on it.
#[derive(Debug)]
pub enum Failure {
    /// Another attempt may succeed: spends one of the task's retries.
    Retry(anyhow::Error),
    /// PostgreSQL or the broker could not be reached: waited for, with
    /// backoff up to the task's timeout, without spending retries.
    Unreachable(anyhow::Error),
    /// No retry can fix it (a bad setting or statement): failed at once.
    Fatal(anyhow::Error),
    /// Stopped by shutdown: the run is handed back.
    Interrupted,
    /// The run's claim was taken over: the attempt's writes were rolled
    /// back and the worker writes nothing more.
    Fenced,
}

impl Failure {
    /// The usual reading of an error: unreachable dependency or retry.
    pub fn of(e: impl Into<anyhow::Error>) -> Failure {
        let e = e.into();
        if dependency_unreachable(&e) {
            Failure::Unreachable(e)
        } else {
            Failure::Retry(e)
        }
    }

    pub fn fatal(e: impl Into<anyhow::Error>) -> Failure {
        Failure::Fatal(e.into())
    }
}

impl From<crate::ledger::SealError> for Failure {
    fn from(e: crate::ledger::SealError) -> Failure {
        match e {
            crate::ledger::SealError::Fenced => Failure::Fenced,
            crate::ledger::SealError::Database(e) => Failure::of(e),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Retry(e) | Failure::Unreachable(e) | Failure::Fatal(e) => write!(f, "{e:#}"),
            Failure::Interrupted => f.write_str("interrupted by shutdown"),
            Failure::Fenced => f.write_str("the run's claim was taken over by another worker"),
        }
    }
}

/// Whether an attempt failed only because PostgreSQL or the broker could
/// not be reached (README, "Retries and outages").
pub fn dependency_unreachable(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        let kafka = |k: &crate::kafka::Error| matches!(k, crate::kafka::Error::Unreachable { .. });
        let sql = |s: &sqlx::Error| {
            matches!(
                s,
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed
            )
        };
        cause
            .downcast_ref::<crate::kafka::Error>()
            .is_some_and(kafka)
            || cause.downcast_ref::<sqlx::Error>().is_some_and(sql)
            || matches!(
                cause.downcast_ref::<crate::db::Error>(),
                Some(crate::db::Error::Unreachable { .. })
            )
            || match cause.downcast_ref::<crate::ingest::Error>() {
                Some(crate::ingest::Error::Kafka(k)) => kafka(k),
                Some(crate::ingest::Error::Database(s)) => sql(s),
                _ => false,
            }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> JobInfo<'static> {
        JobInfo {
            interval: Grain::Hour,
            dir: Path::new("jobs"),
        }
    }

    fn table(text: &str) -> toml::Table {
        toml::from_str(text).expect("toml")
    }

    #[test]
    fn every_kind_parses_its_own_parameters_and_refuses_others() {
        for (text, kind) in [
            ("", "ingest"),
            ("grain = \"day\"", "aggregate"),
            ("", "retention"),
            ("report = \"daily\"", "report"),
            ("sql = \"SELECT 1\"", "sql"),
            ("file = \"x.sql\"", "sql"),
            ("command = \"true\"", "shell"),
        ] {
            let k = parse(kind, table(text), &info()).expect(kind);
            assert_eq!(k.name(), kind);
        }
        for (text, kind, says) in [
            ("command = \"x\"", "sql", "unknown field `command`"),
            ("", "sql", "exactly one of `sql` or `file`"),
            ("sql = \"a\"\nfile = \"b\"", "sql", "exactly one"),
            ("", "shell", "command"),
            ("command = \" \"", "shell", "command"),
            ("", "report", "report"),
            ("grain = \"minute\"", "aggregate", "not per minute"),
            ("grain = \"fortnight\"", "aggregate", "fortnight"),
            ("sql = \"x\"", "ingest", "unknown field `sql`"),
        ] {
            let e = parse(kind, table(text), &info()).expect_err(text);
            assert!(e.contains(says), "{kind} {text:?}: {e}");
        }
        let e = parse("ingestt", toml::Table::new(), &info()).expect_err("unknown");
        assert!(e.contains("unknown kind `ingestt`"), "{e}");
    }
}
