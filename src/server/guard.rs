//! Where a request comes from, checked before anything reads it
//! (docs/security.md):
//! - its `Host` must name this API (a loopback name, `api.host`, the host of
//!   `api.public_url`, or one of `api.allowed_hosts`), so a page served from
//!   another name that resolves here (DNS rebinding) is refused: 421;
//! - a state change, or a WebSocket, must not be sent by a page of another
//!   site (`Sec-Fetch-Site`, `Origin`): 403;
//! - the JSON API takes JSON or nothing: a form's body is refused (415),
//!   never read as an empty JSON body.

use std::net::IpAddr;

use axum::extract::Request;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::api::ApiError;
use crate::config::ApiConfig;

/// The host part of a `Host` header or an origin's authority:
/// lowercased, without the port (`[::1]:9101` → `::1`).
fn host_of(authority: &str) -> String {
    let a = authority.trim().to_ascii_lowercase();
    if let Some(rest) = a.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default().to_string();
    }
    a.rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map_or(a.clone(), |(h, _)| h.to_string())
        .trim_end_matches('.')
        .to_string()
}

/// The host of a URL such as `api.public_url`.
fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit('@').next()?;
    Some(host_of(authority))
}

/// Whether `host` (no port) names this API.
pub fn host_allowed(api: &ApiConfig, host: &str) -> bool {
    if host.is_empty() {
        return false;
    }
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        // An address is never an attacker's name; one not on loopback is
        // only reachable when the API listens beyond it.
        return ip.is_loopback() || !crate::web::is_loopback(&api.host);
    }
    let listed = |pattern: &str| {
        let p = pattern.trim().to_ascii_lowercase();
        match p.strip_prefix('.') {
            Some(suffix) => host == suffix || host.ends_with(&format!(".{suffix}")),
            None => host == p,
        }
    };
    host_of(&api.host) == host
        || api.public_url.as_deref().and_then(url_host).as_deref() == Some(host)
        || api.allowed_hosts.iter().any(|h| listed(h))
}

fn refuse(status: StatusCode, code: &'static str, message: String) -> Response {
    ApiError::new(status, code, message).into_response()
}

/// Whether a state change's `Sec-Fetch-Site` and `Origin` say a page of
/// another site sent it. No header (curl, scripts) is not a page.
fn cross_site(api: &ApiConfig, headers: &HeaderMap, host: &str) -> Option<String> {
    let fetch_site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if matches!(fetch_site, "cross-site" | "same-site") {
        return Some(format!("Sec-Fetch-Site is {fetch_site}"));
    }
    let origin = headers.get(header::ORIGIN)?;
    let origin = origin.to_str().unwrap_or("null");
    let same = |o: &str| {
        o.split_once("://")
            .map(|(_, authority)| authority.trim_end_matches('/').to_ascii_lowercase())
            .is_some_and(|authority| authority == host)
    };
    let public = api
        .public_url
        .as_deref()
        .is_some_and(|p| origin.eq_ignore_ascii_case(p.trim_end_matches('/')));
    (!(same(origin) || public)).then(|| format!("Origin {origin:?} is not this API"))
}

/// The checks above: the answer that refuses `request`, if any.
pub fn refusal(api: &ApiConfig, request: &Request) -> Option<Response> {
    let headers = request.headers();
    let authority = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| request.uri().authority().map(|a| a.to_string()));
    let Some(authority) = authority else {
        return Some(refuse(
            StatusCode::BAD_REQUEST,
            "missing_host",
            "the request names no Host".into(),
        ));
    };
    let host = host_of(&authority);
    if !host_allowed(api, &host) {
        return Some(refuse(
            StatusCode::MISDIRECTED_REQUEST,
            "unknown_host",
            format!(
                "this API does not answer to the name {:?}; add it to api.allowed_hosts if it is one of its names",
                crate::redact::text(&host)
            ),
        ));
    }
    let changes = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    // A WebSocket is opened by a GET that a page of any site may send with
    // the visitor's cookies: it is checked like a state change.
    let websocket = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if changes || websocket {
        if let Some(why) = cross_site(api, headers, &authority.trim().to_ascii_lowercase()) {
            return Some(refuse(
                StatusCode::FORBIDDEN,
                "cross_site_request",
                format!("a state change or WebSocket from another site is refused ({why})"),
            ));
        }
    }
    if changes {
        let path = request.uri().path();
        let console = path == "/ui" || path.starts_with("/ui/");
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap_or("?"))
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            });
        let json = |m: &str| m == "application/json" || m.ends_with("+json");
        if !console && content_type.as_deref().is_some_and(|m| !json(m)) {
            return Some(refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with Content-Type: application/json (or send no body)"
                    .into(),
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        let mut api = crate::config::Config::defaults().expect("defaults").api;
        for ok in ["localhost", "127.0.0.1", "::1", "app.localhost"] {
            assert!(host_allowed(&api, ok), "{ok}");
        }
        for bad in ["evil.example", "10.0.0.1", "", "127.0.0.1.evil.example"] {
            assert!(!host_allowed(&api, bad), "{bad}");
        }
        api.public_url = Some("https://hxjobs.example.com/".into());
        api.allowed_hosts = vec![".corp.example".into()];
        assert!(host_allowed(&api, "hxjobs.example.com"));
        assert!(host_allowed(&api, "a.corp.example"));
        assert!(!host_allowed(&api, "xcorp.example"));
        assert_eq!(host_of("[::1]:9101"), "::1");
        assert_eq!(host_of("LocalHost:9101"), "localhost");
        assert_eq!(host_of("example.com."), "example.com");
        assert_eq!(
            url_host("https://u:p@hxjobs.example.com:8443/x").as_deref(),
            Some("hxjobs.example.com")
        );
    }
}
