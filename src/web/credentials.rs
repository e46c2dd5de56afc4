//! Who a request's credentials name. An API token has a role (and maybe
//! jobs); the single `api.token` is an admin's. An API that listens on
//! loopback only trusts every local process: as an admin without tokens,
//! as a viewer (reads) with them. One that listens further answers nothing
//! but `/health` (and `/metrics` when `api.public_metrics`) without
//! credentials.

use std::net::IpAddr;

use crate::config::ApiConfig;
use crate::ops::{Actor, Means, Role};

/// Whether `host` only accepts connections from this machine.
pub fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// Compares secrets in time that does not depend on where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What a request brought.
#[derive(Debug)]
pub enum Credentials {
    /// A configured token: who it names.
    Known(Actor),
    /// A token that is not configured.
    Wrong,
    /// None, where none is needed (a loopback API without tokens).
    Trusted(Actor),
    /// None, where one is needed.
    Missing,
}

impl Credentials {
    /// The credentials of a bearer token (`given`) as `prefix:<name>`
    /// (`api`, `ui`), reached by `means`.
    pub fn of(api: &ApiConfig, given: Option<&str>, prefix: &str, means: Means) -> Credentials {
        match given {
            Some(token) => match token_actor(api, token, prefix, means) {
                Some(actor) => Credentials::Known(actor),
                None => Credentials::Wrong,
            },
            None if is_loopback(&api.host) => {
                let role = if any_token(api) {
                    Role::Viewer
                } else {
                    Role::Admin
                };
                Credentials::Trusted(Actor::new(
                    format!("{prefix}:loopback"),
                    Means::Loopback,
                    role,
                ))
            }
            None => Credentials::Missing,
        }
    }
}

/// Whether any token is configured.
pub fn any_token(api: &ApiConfig) -> bool {
    api.token.is_some() || !api.tokens.is_empty()
}

/// The actor a configured token names, if `given` is one.
pub fn token_actor(api: &ApiConfig, given: &str, prefix: &str, means: Means) -> Option<Actor> {
    let named = api
        .tokens
        .iter()
        .find(|t| constant_time_eq(given.as_bytes(), t.token.expose().as_bytes()))
        .map(|t| {
            Actor::new(format!("{prefix}:{}", t.name), means, t.role).only_jobs(t.jobs.clone())
        });
    named.or_else(|| {
        api.token
            .as_ref()
            .filter(|t| constant_time_eq(given.as_bytes(), t.expose().as_bytes()))
            .map(|_| Actor::new(format!("{prefix}:token"), means, Role::Admin))
    })
}

/// The role and jobs of the token named `name`, while it is configured.
pub fn token_role(api: &ApiConfig, name: &str) -> Option<(Role, Option<Vec<String>>)> {
    if let Some(t) = api.tokens.iter().find(|t| t.name == name) {
        return Some((t.role, t.jobs.clone()));
    }
    (name == "token" && api.token.is_some()).then_some((Role::Admin, None))
}
