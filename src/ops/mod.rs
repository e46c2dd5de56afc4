//! The operations the CLI, the API and the console share: trigger, clear,
//! mark, cancel, pause, backfill, reports, rollups, capacity, retention and
//! the reads of jobs and runs. Each takes the [`Actor`] who asks, checks
//! its role here (never per surface), and answers with one [`Error`] whose
//! words belong to no surface; the surfaces parse, call and present.

mod access;
pub mod backfills;
pub mod data;
mod notify;
pub mod reports;
pub mod runs;
pub mod storage;

pub use access::{Actor, Means, Need, Role};

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::dag::catalog::Catalog;
use crate::dag::Job;
use crate::db::Pools;

/// What the operations work on, shared by every surface of one process.
#[derive(Clone)]
pub struct Ops {
    pub config: Arc<Config>,
    pub pools: Pools,
    /// The loaded jobs, kept current with `jobs.dir` by daemons and `serve`.
    pub jobs: Arc<Catalog>,
    /// Wakes this process's scheduler when a run was queued (`hxjobs
    /// daemon`); `None` elsewhere: a daemon claims it at its next poll.
    pub wake: Option<Arc<tokio::sync::Notify>>,
    /// Set on shutdown: backfills this process runs stop.
    pub stop: CancellationToken,
}

impl Ops {
    pub fn new(config: Arc<Config>, pools: Pools, jobs: Arc<Catalog>) -> Ops {
        Ops {
            config,
            pools,
            jobs,
            wake: None,
            stop: CancellationToken::new(),
        }
    }

    /// The loaded job named `name`.
    pub fn job(&self, name: &str) -> Result<Arc<Job>, Error> {
        let set = self.jobs.current();
        if let Some(job) = set.find(name) {
            return Ok(job.clone());
        }
        let known: Vec<&str> = set.iter().map(|j| j.name.as_str()).collect();
        let mut message = format!("no job {name:?} (known: {})", known.join(", "));
        let file = format!("{name}.toml:");
        if let Some(e) = set.errors.iter().find(|e| e.contains(&file)) {
            message = format!("job {name:?} is not valid: {e}");
        }
        Err(Error::not_found("unknown_job", message))
    }

    /// Records the end of what `actor` asked for (`target`: `run:42`,
    /// `job:NAME`, …): ok, refused (its role or jobs) or failed. Recording
    /// is best effort: a lost database already failed the operation.
    pub async fn audited<T>(&self, actor: &Actor, action: &str, target: &str, r: &Result<T>) {
        let (outcome, detail) = match r {
            Ok(_) => ("ok", None),
            Err(e) => (
                if e.kind == Kind::Forbidden {
                    "refused"
                } else {
                    "failed"
                },
                Some(serde_json::json!({ "error": e.code, "message": e.message })),
            ),
        };
        self.audit(actor, action, Some(target), outcome, detail)
            .await;
    }

    /// Records one entry of the audit log.
    pub async fn audit(
        &self,
        actor: &Actor,
        action: &str,
        target: Option<&str>,
        outcome: &str,
        detail: Option<serde_json::Value>,
    ) {
        let entry = crate::ledger::audit::Entry {
            actor: &actor.name,
            means: actor.means.as_str(),
            role: Some(actor.role.as_str()),
            client: actor.client.as_deref(),
            action,
            target,
            outcome,
            detail,
        };
        if let Err(e) = crate::ledger::audit::record(&self.pools.ledger, &entry).await {
            tracing::warn!(error = %crate::db::describe(&e), action, "not recorded in the audit log");
        }
    }

    /// A read `actor` may make; a refusal is audited.
    pub async fn read(&self, actor: &Actor, what: &str) -> Result<()> {
        let r = actor.require(Need::Read, None);
        if r.is_err() {
            self.audited(actor, "read", what, &r).await;
        }
        r
    }

    fn wake(&self) {
        if let Some(wake) = &self.wake {
            wake.notify_one();
        }
    }
}

/// Why an operation did nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// What it names does not exist.
    NotFound,
    /// What it names is not in a state the operation applies to.
    Conflict,
    /// A value given is not acceptable (`field` names it, when one does).
    Invalid,
    /// The actor's role or jobs do not allow it.
    Forbidden,
    /// A dependency (the database) cannot be reached now.
    Unavailable,
    /// A failure inside hxjobs; the log has the detail under `error_id`.
    Internal,
}

/// An operation's refusal or failure: a kind, a stable code, a message for
/// people, and, where one value is to blame, the option's name.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    pub kind: Kind,
    pub code: &'static str,
    pub message: String,
    /// The option that would allow it, or the value that is wrong
    /// (`ignore_start_date`, `parallel`): each surface spells it its own way.
    pub field: Option<&'static str>,
    /// More facts, e.g. `missing_hours`, `backfill_id`.
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl Error {
    pub fn new(kind: Kind, code: &'static str, message: impl Into<String>) -> Error {
        Error {
            kind,
            code,
            message: message.into(),
            field: None,
            details: Default::default(),
        }
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Error {
        Error::new(Kind::NotFound, code, message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Error {
        Error::new(Kind::Conflict, code, message)
    }

    pub fn invalid(code: &'static str, message: impl Into<String>) -> Error {
        Error::new(Kind::Invalid, code, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Error {
        Error::new(Kind::Forbidden, "forbidden", message)
    }

    /// A failure inside hxjobs: logged with an id, which is all that is shown.
    pub fn internal(code: &'static str, e: impl std::fmt::Display) -> Error {
        let id = error_id();
        tracing::error!(error_id = %id, code, error = %crate::redact::text(&e.to_string()), "operation failed");
        Error::new(
            Kind::Internal,
            code,
            format!("internal error {id}; the server's log has the detail"),
        )
        .with("error_id", serde_json::Value::String(id))
    }

    /// A value that is well formed but cannot be acted on (an interval
    /// not ended, before the start date, too many, out of range), rather
    /// than a malformed one.
    pub fn cannot_apply(&self) -> bool {
        self.kind == Kind::Invalid
            && matches!(
                self.code,
                "interval_not_ended"
                    | "before_start_date"
                    | "too_many_intervals"
                    | "invalid_interval"
                    | "period_in_future"
                    | "invalid_value"
            )
    }

    /// Names the option or value to blame.
    pub fn field(mut self, field: &'static str) -> Error {
        self.field = Some(field);
        self
    }

    /// Adds a fact.
    pub fn with(mut self, key: &str, value: serde_json::Value) -> Error {
        self.details.insert(key.to_string(), value);
        self
    }
}

/// A short id for one failure, unique enough to find it in the log.
pub fn error_id() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mixed = (nanos as u64) ^ (u64::from(SEQ.fetch_add(1, Ordering::Relaxed)) << 40);
    format!("e-{mixed:016x}")
}

/// A value PostgreSQL cannot hold is the caller's; a lost database is
/// unavailable; anything else is internal. PostgreSQL's text goes to the
/// log only.
impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Error {
        match crate::db::fault(&e) {
            crate::db::Fault::Input(what) => Error::invalid("invalid_value", what),
            crate::db::Fault::Unavailable => {
                tracing::warn!(error = %crate::db::describe(&e), "database unavailable");
                Error::new(
                    Kind::Unavailable,
                    "database_unavailable",
                    "the database cannot be reached; try again shortly",
                )
            }
            crate::db::Fault::Internal => Error::internal("database_error", e),
        }
    }
}

impl From<crate::ledger::controls::ControlError> for Error {
    fn from(e: crate::ledger::controls::ControlError) -> Error {
        use crate::ledger::controls::ControlError;
        match e {
            ControlError::NotFound(m) => Error::not_found("not_found", m),
            ControlError::Conflict(m) => Error::conflict("conflict", m),
            ControlError::Database(e) => e.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
