//! PostgreSQL: the pool, migrations, and errors that name the server.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

use crate::config::DatabaseConfig;

/// The migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach PostgreSQL at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("bad database URL {url}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("migrating the database at {url} failed: {reason}")]
    Migrate { url: String, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A short reason for a connection failure, without library noise.
/// Whose fault a failed statement was, as a client is told it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// A value the client sent that PostgreSQL cannot store (SQLSTATE
    /// class 22): hxjobs's own words for it.
    Input(&'static str),
    /// PostgreSQL could not be reached, or refused connections for now.
    Unavailable,
    /// Anything else: hxjobs's own failure.
    Internal,
}

/// Reads a failure as [`Fault`], never passing PostgreSQL's text on.
pub fn fault(error: &sqlx::Error) -> Fault {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => Fault::Unavailable,
        sqlx::Error::Database(e) => {
            let code = e.code().map(|c| c.into_owned()).unwrap_or_default();
            match code.as_str() {
                "22021" => {
                    Fault::Input("a text value holds a NUL byte or bytes that are not UTF-8")
                }
                "22008" | "22007" => Fault::Input("a date or time is outside what can be stored"),
                "22003" => Fault::Input("a number is outside what can be stored"),
                "22001" => Fault::Input("a text value is longer than can be stored"),
                c if c.starts_with("22") => Fault::Input("a value sent cannot be stored as it is"),
                c if c.starts_with("08") || c == "57P01" || c == "57P03" || c == "53300" => {
                    Fault::Unavailable
                }
                _ => Fault::Internal,
            }
        }
        _ => Fault::Internal,
    }
}

pub fn describe(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Io(e) => e.to_string(),
        sqlx::Error::Database(e) => e.message().to_string(),
        sqlx::Error::PoolTimedOut => "timed out waiting for a connection".to_string(),
        sqlx::Error::Tls(e) => format!("TLS: {e}"),
        other => other.to_string(),
    }
}

/// Opens a pool and checks that the server answers.
pub async fn connect(config: &DatabaseConfig) -> Result<PgPool> {
    let url = config.redacted_url();
    let options: PgConnectOptions =
        config
            .url
            .expose()
            .parse()
            .map_err(|e: sqlx::Error| Error::BadUrl {
                url: url.clone(),
                reason: describe(&e),
            })?;
    let options = options.disable_statement_logging();
    // One direct connection first: a pool reports only "timed out" where the
    // server's own answer (refused, bad password, no such database) helps.
    let wait = Duration::from_secs(config.connect_timeout_secs);
    match tokio::time::timeout(wait, PgConnection::connect_with(&options)).await {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
        }
        Ok(Err(e)) => {
            return Err(Error::Unreachable {
                url,
                reason: describe(&e),
            })
        }
        Err(_) => {
            return Err(Error::Unreachable {
                url,
                reason: format!("no answer within {} s", config.connect_timeout_secs),
            })
        }
    }
    let pool = PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(Duration::from_secs(config.connect_timeout_secs))
        .connect_with(options)
        .await
        .map_err(|e| Error::Unreachable {
            url: url.clone(),
            reason: describe(&e),
        })?;
    Ok(pool)
}

/// The two pools hxjobs works with: `data` for what tasks read and write,
/// `ledger` for the run ledger. Ledger commits do not wait for the WAL
/// flush (`synchronous_commit = off`): a PostgreSQL crash can lose the last
/// fraction of a second of ledger writes (never corrupt them), which the
/// scheduler repairs like a lost worker: the run is queued and runs again.
#[derive(Clone)]
pub struct Pools {
    pub data: PgPool,
    pub ledger: PgPool,
}

impl Pools {
    /// Adds a ledger pool to `data`, with the same server and limits.
    pub fn new(data: PgPool) -> Pools {
        let options = data
            .connect_options()
            .as_ref()
            .clone()
            .options([("synchronous_commit", "off")]);
        let ledger = PgPoolOptions::new()
            .max_connections(data.options().get_max_connections())
            .acquire_timeout(data.options().get_acquire_timeout())
            .connect_lazy_with(options);
        Pools { data, ledger }
    }
}

/// Applies every pending migration.
pub async fn migrate(pool: &PgPool, config: &DatabaseConfig) -> Result<()> {
    MIGRATOR.run(pool).await.map_err(|e| Error::Migrate {
        url: config.redacted_url(),
        reason: e.to_string(),
    })
}

/// Connects and migrates: what every command that touches the database does first.
pub async fn connect_and_migrate(config: &DatabaseConfig) -> Result<PgPool> {
    let pool = connect(config).await?;
    migrate(&pool, config).await?;
    Ok(pool)
}

/// The same server URL pointing at another database.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let server = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{server}/{database}?{q}"),
        None => format!("{server}/{database}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn with_database() {
        assert_eq!(
            super::with_database("postgres://u:p@127.0.0.1:5432/hxjobs", "other"),
            "postgres://u:p@127.0.0.1:5432/other"
        );
        assert_eq!(
            super::with_database("postgres://127.0.0.1/x?sslmode=disable", "y"),
            "postgres://127.0.0.1/y?sslmode=disable"
        );
        assert_eq!(
            super::with_database("postgres://h:1", "y"),
            "postgres://h:1/y"
        );
    }
}
