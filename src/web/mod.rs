//! What the HTTP surfaces (the JSON API and the console) share: their
//! state, the bounds on what clients hold, the dependency checks, and who
//! a request's credentials name.

mod credentials;
pub mod health;

pub use credentials::{
    any_token, constant_time_eq, is_loopback, token_actor, token_role, Credentials,
};
pub use health::{spawn_health_checks, Check, Health, IngestCheck, StallWatch};

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::RwLock;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::dag::Job;
use crate::db::Pools;
use crate::live::LiveStats;
use crate::ops::{self, Need, Ops};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone who reaches the port.
    Public,
    /// Anyone when `api.public_metrics`; otherwise a viewer.
    Metrics,
    /// An actor with at least this (checked by `ops`; the table says what
    /// it checks).
    Needs(Need),
}

/// The HTTP status of an operation's refusal, the same for the API and
/// the console.
pub fn status_of(e: &ops::Error) -> axum::http::StatusCode {
    use axum::http::StatusCode;
    use ops::Kind;
    match e.kind {
        Kind::NotFound if e.code == "report_file_missing" => StatusCode::GONE,
        Kind::NotFound => StatusCode::NOT_FOUND,
        Kind::Conflict => StatusCode::CONFLICT,
        Kind::Invalid if e.cannot_apply() => StatusCode::UNPROCESSABLE_ENTITY,
        Kind::Invalid => StatusCode::BAD_REQUEST,
        Kind::Forbidden => StatusCode::FORBIDDEN,
        Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// What the API's and the console's handlers share: one allocation,
/// cloned (a reference count) by every extractor and layer that takes it.
#[derive(Clone)]
pub struct ApiState(Arc<Shared>);

/// [`ApiState`]'s contents.
#[derive(Clone)]
pub struct Shared {
    /// The operations, and what they work on (config, pools, jobs).
    pub ops: Ops,
    pub health: Arc<RwLock<Health>>,
    pub live: Option<Arc<LiveStats>>,
    /// What bounds clients: open streams, failed logins.
    pub guards: Arc<Guards>,
}

impl std::ops::Deref for ApiState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The API's bounds on what clients hold.
#[derive(Debug)]
pub struct Guards {
    streams: Arc<tokio::sync::Semaphore>,
    max_streams: usize,
    sockets: Arc<tokio::sync::Semaphore>,
    max_sockets: usize,
    /// Failed console logins per client address, within the window.
    logins: std::sync::Mutex<std::collections::HashMap<IpAddr, Vec<Instant>>>,
    /// The key anonymous console visitors' CSRF tokens are made with,
    /// shared by every API process through PostgreSQL.
    pub(crate) console_key: tokio::sync::OnceCell<Vec<u8>>,
    /// Audit writes started in the background (wrong tokens), at most
    /// [`MAX_BACKGROUND_AUDITS`] at once.
    audits: Arc<tokio::sync::Semaphore>,
}

/// Background audit writes in flight at once; past it, a wrong token is
/// logged but not written (a flood of them cannot queue work).
pub const MAX_BACKGROUND_AUDITS: usize = 32;

/// How long a failed login counts against its address.
pub const LOGIN_WINDOW: Duration = Duration::from_secs(300);

impl Guards {
    pub fn new(api: &crate::config::ApiConfig) -> Guards {
        Guards {
            streams: Arc::new(tokio::sync::Semaphore::new(api.max_sse_streams)),
            max_streams: api.max_sse_streams,
            sockets: Arc::new(tokio::sync::Semaphore::new(api.max_websockets)),
            max_sockets: api.max_websockets,
            logins: Default::default(),
            console_key: tokio::sync::OnceCell::new(),
            audits: Arc::new(tokio::sync::Semaphore::new(MAX_BACKGROUND_AUDITS)),
        }
    }

    /// A place for one background audit write, held until it is done;
    /// `None` while [`MAX_BACKGROUND_AUDITS`] are.
    pub fn audit_slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.audits.clone().try_acquire_owned().ok()
    }

    /// A place for one more event stream, held while it is open; 503 when
    /// `api.max_sse_streams` are.
    pub fn stream(&self) -> Result<StreamPermit, ops::Error> {
        let permit = self.streams.clone().try_acquire_owned().map_err(|_| {
            ops::Error::new(
                ops::Kind::Unavailable,
                "too_many_streams",
                "api.max_sse_streams event streams are open; try again later",
            )
        })?;
        crate::metrics::api_streams(self.max_streams - self.streams.available_permits());
        Ok(StreamPermit {
            _permit: permit,
            streams: self.streams.clone(),
            max: self.max_streams,
        })
    }

    /// A place for one more WebSocket, held while it is open; 503 when
    /// `api.max_websockets` are.
    pub fn socket(&self) -> Result<SocketPermit, ops::Error> {
        let permit = self.sockets.clone().try_acquire_owned().map_err(|_| {
            ops::Error::new(
                ops::Kind::Unavailable,
                "too_many_websockets",
                "api.max_websockets WebSocket streams are open; try again later",
            )
        })?;
        crate::metrics::api_websockets(self.max_sockets - self.sockets.available_permits());
        Ok(SocketPermit {
            _permit: permit,
            sockets: self.sockets.clone(),
            max: self.max_sockets,
        })
    }

    /// Whether `client` may try to log in now; `Err(seconds)` to wait.
    pub fn login_allowed(&self, client: IpAddr, max: u32) -> Result<(), u64> {
        let Ok(mut map) = self.logins.lock() else {
            return Ok(());
        };
        let now = Instant::now();
        // Only addresses that failed have an entry.
        let Some(failures) = map.get_mut(&client) else {
            return Ok(());
        };
        failures.retain(|t| now.duration_since(*t) < LOGIN_WINDOW);
        if failures.len() >= max as usize {
            let oldest = failures.first().copied().unwrap_or(now);
            let wait = LOGIN_WINDOW.saturating_sub(now.duration_since(oldest));
            return Err(wait.as_secs().max(1));
        }
        Ok(())
    }

    /// Counts a failed login of `client`.
    pub fn login_failed(&self, client: IpAddr) {
        if let Ok(mut map) = self.logins.lock() {
            // Bounded: addresses whose failures all aged out go.
            if map.len() > 10_000 {
                let now = Instant::now();
                map.retain(|_, f| f.iter().any(|t| now.duration_since(*t) < LOGIN_WINDOW));
            }
            map.entry(client).or_default().push(Instant::now());
        }
    }
}

/// One open event stream; dropping it frees its place.
#[derive(Debug)]
pub struct StreamPermit {
    _permit: tokio::sync::OwnedSemaphorePermit,
    streams: Arc<tokio::sync::Semaphore>,
    max: usize,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        // Its own place is freed just after this.
        let open = self.max - self.streams.available_permits();
        crate::metrics::api_streams(open.saturating_sub(1));
    }
}

/// A WebSocket's place; frees it (and updates the gauge) when dropped.
pub struct SocketPermit {
    _permit: tokio::sync::OwnedSemaphorePermit,
    sockets: Arc<tokio::sync::Semaphore>,
    max: usize,
}

impl Drop for SocketPermit {
    fn drop(&mut self) {
        let open = self.max - self.sockets.available_permits();
        crate::metrics::api_websockets(open.saturating_sub(1));
    }
}

impl ApiState {
    pub fn new(
        config: Arc<Config>,
        pools: Pools,
        jobs: Vec<Arc<Job>>,
        live: Option<Arc<LiveStats>>,
        stop: CancellationToken,
    ) -> ApiState {
        let guards = Arc::new(Guards::new(&config.api));
        let mut ops = Ops::new(
            config,
            pools,
            Arc::new(crate::dag::catalog::Catalog::fixed(jobs)),
        );
        ops.stop = stop;
        ApiState(Arc::new(Shared {
            ops,
            health: Arc::new(RwLock::new(Health::unknown())),
            live,
            guards,
        }))
    }

    /// The contents to change before serving (copied if already shared).
    pub fn edit(&mut self) -> &mut Shared {
        Arc::make_mut(&mut self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn background_audit_writes_are_bounded() {
        let config = Config::defaults().expect("defaults");
        let guards = Guards::new(&config.api);
        let held: Vec<_> = (0..MAX_BACKGROUND_AUDITS)
            .map(|_| guards.audit_slot().expect("a place"))
            .collect();
        assert!(guards.audit_slot().is_none(), "past the bound, none");
        drop(held);
        assert!(guards.audit_slot().is_some(), "places come back");
    }
}
