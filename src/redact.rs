//! One redaction for everything hxjobs prints: errors, logs, API bodies,
//! console pages and `hxjobs config`. Two rules:
//! - every configured secret ([`register`]ed when the configuration loads)
//!   is replaced by `***` wherever it appears;
//! - a URL loses its userinfo, its query and the token parts of its path
//!   (the shapes of Slack, Discord and similar webhook URLs, and any long
//!   random-looking segment), even when nobody registered it.

use std::sync::RwLock;

/// Secrets shorter than this are not searched for in text (too many false
/// matches); they still never print where a [`crate::config::Secret`] is.
const MIN_SECRET: usize = 6;

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Adds `secret` (and, for a URL, its userinfo, path tokens and query
/// values) to what [`text`] hides.
pub fn register(secret: &str) {
    let mut parts = vec![secret.to_string()];
    if let Some((_, rest)) = secret.split_once("://") {
        let (authority, tail) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
        if let Some((userinfo, _)) = authority.rsplit_once('@') {
            parts.extend(userinfo.split(':').map(str::to_string));
        }
        let (path, query) = tail.split_once('?').unwrap_or((tail, ""));
        parts.extend(
            path.split('/')
                .filter(|s| token_like(s))
                .map(str::to_string),
        );
        parts.extend(
            query
                .split('&')
                .filter_map(|kv| kv.split_once('=').map(|(_, v)| v.to_string())),
        );
    }
    let Ok(mut known) = SECRETS.write() else {
        return;
    };
    for p in parts {
        if p.len() >= MIN_SECRET && !known.contains(&p) {
            known.push(p);
        }
    }
    // Longest first, so a secret containing another goes whole.
    known.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// A path segment that looks like a credential: long, with letters and
/// digits, or under a known webhook prefix.
fn token_like(segment: &str) -> bool {
    let letters = segment.chars().filter(char::is_ascii_alphabetic).count();
    let digits = segment.chars().filter(char::is_ascii_digit).count();
    segment.len() >= 20 && letters > 0 && digits > 0
        || segment.len() >= 32
            && segment
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Path prefixes after which every segment is a credential.
const WEBHOOK_PATHS: [&str; 4] = ["/services/", "/api/webhooks/", "/webhookb2/", "/hooks/"];

/// `url` without userinfo, query or path tokens.
pub fn url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rsplit_once('@') {
        // A database's user is a name that helps; its password is not.
        Some((userinfo, host)) if scheme.starts_with("postgres") => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{user}:***@{host}")
        }
        Some((_, host)) => format!("***@{host}"),
        None => authority.to_string(),
    };
    let (tail, fragment) = tail.split_once('#').unwrap_or((tail, ""));
    let (path, query) = match tail.split_once('?') {
        Some((p, _)) => (p, "?***"),
        None => (tail, ""),
    };
    let mut out_path = String::new();
    let mut hidden = false;
    for (i, seg) in path.split('/').enumerate() {
        if i > 0 {
            out_path.push('/');
        }
        let under_webhook = WEBHOOK_PATHS
            .iter()
            .any(|p| out_path.ends_with(p) || (hidden && !seg.is_empty()));
        if !seg.is_empty() && (under_webhook || token_like(seg)) {
            out_path.push_str("***");
            hidden = true;
        } else {
            out_path.push_str(seg);
        }
    }
    let fragment = if fragment.is_empty() { "" } else { "#***" };
    format!("{scheme}://{authority}{out_path}{query}{fragment}")
}

/// `text` with every registered secret and every URL's credentials hidden.
pub fn text(text: &str) -> String {
    let mut out = text.to_string();
    if let Ok(known) = SECRETS.read() {
        for s in known.iter() {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "***");
            }
        }
    }
    if !out.contains("://") {
        return out;
    }
    let mut result = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(at) = rest.find("://") {
        let start = rest[..at]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '+' || c == '-' || c == '.'))
            .map_or(0, |i| i + 1);
        let end = rest[at..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`' | ')'))
            .map_or(rest.len(), |i| at + i);
        result.push_str(&rest[..start]);
        result.push_str(&url(&rest[start..end]));
        rest = &rest[end..];
    }
    result.push_str(rest);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials() {
        for (given, shown) in [
            (
                "https://user:pa55@hooks.example.com/x?token=abc",
                "https://***@hooks.example.com/x?***",
            ),
            (
                "https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXXXXXX",
                "https://hooks.slack.com/services/***/***/***",
            ),
            (
                "https://discord.com/api/webhooks/123/abcDEF",
                "https://discord.com/api/webhooks/***/***",
            ),
            (
                "postgres://hxjobs:pw@127.0.0.1:1/db",
                "postgres://hxjobs:***@127.0.0.1:1/db",
            ),
            (
                "http://127.0.0.1:9101/runs/42",
                "http://127.0.0.1:9101/runs/42",
            ),
            (
                "https://h.example/in/9f86d081884c7d659a2feaa0c55ad015",
                "https://h.example/in/***",
            ),
        ] {
            assert_eq!(url(given), shown, "{given}");
        }
    }

    #[test]
    fn text_hides_registered_secrets_and_urls_in_it() {
        register("s3cr3t-token-value");
        let t = text("POST https://u:p@x.example/a?k=v failed; token s3cr3t-token-value (see http://127.0.0.1/ok)");
        assert_eq!(
            t,
            "POST https://***@x.example/a?*** failed; token *** (see http://127.0.0.1/ok)"
        );
    }
}
