//! What every route of the API needs, declared once: the authorization
//! middleware refuses a route that is not here, and a test holds this
//! table against the routes the router mounts and against what `ops` does
//! for each role.

use crate::ops::Need;
pub use crate::web::Access;

/// (method, path as the router declares it, access).
pub const POLICY: &[(&str, &str, Access)] = &[
    ("GET", "/health", Access::Public),
    ("GET", "/metrics", Access::Metrics),
    ("GET", "/openapi.json", Access::Needs(Need::Read)),
    ("GET", "/jobs", Access::Needs(Need::Read)),
    ("GET", "/jobs/{job}/runs", Access::Needs(Need::Read)),
    ("POST", "/jobs/{job}/runs", Access::Needs(Need::Operate)),
    ("GET", "/jobs/{job}/grid", Access::Needs(Need::Read)),
    ("GET", "/jobs/{job}/checks", Access::Needs(Need::Read)),
    ("GET", "/jobs/{job}/versions", Access::Needs(Need::Read)),
    (
        "GET",
        "/jobs/{job}/versions/{version}",
        Access::Needs(Need::Read),
    ),
    ("GET", "/pools", Access::Needs(Need::Read)),
    ("POST", "/jobs/{job}/clear", Access::Needs(Need::Operate)),
    ("POST", "/jobs/{job}/pause", Access::Needs(Need::Operate)),
    ("POST", "/jobs/{job}/unpause", Access::Needs(Need::Operate)),
    ("POST", "/backfill", Access::Needs(Need::Operate)),
    ("GET", "/backfills", Access::Needs(Need::Read)),
    ("GET", "/backfills/{id}", Access::Needs(Need::Read)),
    ("DELETE", "/backfills/{id}", Access::Needs(Need::Operate)),
    ("GET", "/runs", Access::Needs(Need::Read)),
    ("GET", "/runs/{id}", Access::Needs(Need::Read)),
    ("POST", "/runs/{id}/clear", Access::Needs(Need::Operate)),
    ("POST", "/runs/{id}/mark", Access::Needs(Need::Operate)),
    ("POST", "/runs/{id}/cancel", Access::Needs(Need::Operate)),
    (
        "GET",
        "/runs/{id}/tasks/{task}/logs",
        Access::Needs(Need::Read),
    ),
    (
        "GET",
        "/runs/{id}/tasks/{task}/logs/stream",
        Access::Needs(Need::Read),
    ),
    ("POST", "/reports/generate", Access::Needs(Need::Operate)),
    ("GET", "/reports", Access::Needs(Need::Read)),
    ("GET", "/reports/{id}", Access::Needs(Need::Read)),
    ("GET", "/reports/{id}/download", Access::Needs(Need::Read)),
    ("GET", "/capacity/analysis", Access::Needs(Need::Read)),
    ("POST", "/retention/cleanup", Access::Needs(Need::Admin)),
    ("GET", "/rollups", Access::Needs(Need::Read)),
    ("GET", "/stats", Access::Needs(Need::Read)),
    ("GET", "/stats/stream", Access::Needs(Need::Read)),
    ("GET", "/stats/ws", Access::Needs(Need::Read)),
    ("GET", "/audit", Access::Needs(Need::Admin)),
];

/// The access a route declares; `None`: undeclared (refused).
pub fn access(method: &str, path: &str) -> Option<Access> {
    let method = if method == "HEAD" { "GET" } else { method };
    POLICY
        .iter()
        .find(|(m, p, _)| *m == method && *p == path)
        .map(|(_, _, a)| *a)
}

/// Whether any method of `path` is declared.
pub fn declared(path: &str) -> bool {
    POLICY.iter().any(|(_, p, _)| *p == path)
}
