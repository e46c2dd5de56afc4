//! Console sessions. A login creates a row in `console_sessions` with a
//! random id (the cookie holds the id; the table only its SHA-256) and its
//! own random CSRF token; logout revokes it, and it ends after
//! `api.session_hours`. A visitor without a login (a loopback console, or
//! the login form) gets a random visitor cookie, and a CSRF token that is
//! an HMAC of it under a key every API process reads from PostgreSQL: no
//! two visitors share one.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

/// The login cookie: a random session id.
pub const COOKIE: &str = "hxjobs_session";
/// A visitor's cookie: random, for the CSRF token of forms without login.
pub const VISITOR: &str = "hxjobs_visitor";

/// 32 random bytes as hex.
pub fn random_id() -> String {
    let bytes: [u8; 32] = rand::random();
    hex(&bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn digest(id: &str) -> Vec<u8> {
    Sha256::digest(id.as_bytes()).to_vec()
}

/// A live login: who, and its CSRF token.
#[derive(Debug, Clone)]
pub struct Login {
    /// A token's name, or `oidc:<email>` for a person the identity
    /// provider vouched for.
    pub actor: String,
    pub csrf: String,
    /// The role an identity provider's login mapped to (a token's comes
    /// from the config).
    pub role: Option<String>,
}

/// Starts a session for `actor` (a token's name); returns the cookie's id.
pub async fn create(
    pool: &PgPool,
    actor: &str,
    role: Option<&str>,
    client: Option<String>,
    hours: u64,
) -> Result<String, sqlx::Error> {
    let id = random_id();
    // Ended sessions go, a few at a time, as new ones start.
    sqlx::query!(
        "DELETE FROM console_sessions WHERE id_sha256 IN (
             SELECT id_sha256 FROM console_sessions
             WHERE expires_at < now() OR revoked_at < now() - interval '1 day' LIMIT 100)",
    )
    .execute(pool)
    .await?;
    sqlx::query!(
        "INSERT INTO console_sessions (id_sha256, actor, csrf, client, expires_at, role)
         VALUES ($1, $2, $3, $4, now() + make_interval(hours => $5), $6)",
        digest(&id),
        actor,
        random_id(),
        client,
        i32::try_from(hours).unwrap_or(i32::MAX),
        role,
    )
    .execute(pool)
    .await?;
    Ok(id)
}

/// The live session the cookie `id` names, if any.
pub async fn find(pool: &PgPool, id: &str) -> Result<Option<Login>, sqlx::Error> {
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(None);
    }
    sqlx::query_as!(
        Login,
        "SELECT actor, csrf, role FROM console_sessions
         WHERE id_sha256 = $1 AND revoked_at IS NULL AND expires_at > now()",
        digest(id),
    )
    .fetch_optional(pool)
    .await
}

/// Ends the session `id` names (logout).
pub async fn revoke(pool: &PgPool, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE console_sessions SET revoked_at = now()
         WHERE id_sha256 = $1 AND revoked_at IS NULL",
        digest(id),
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// The key for visitors' CSRF tokens, made once for the database.
pub async fn key(pool: &PgPool) -> Result<Vec<u8>, sqlx::Error> {
    let fresh: [u8; 32] = rand::random();
    sqlx::query!(
        "INSERT INTO console_keys (id, key) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
        fresh.as_slice(),
    )
    .execute(pool)
    .await?;
    sqlx::query_scalar!("SELECT key FROM console_keys WHERE id = 1")
        .fetch_one(pool)
        .await
}

/// A visitor's CSRF token: an HMAC of its cookie under `key`.
pub fn visitor_csrf(key: &[u8], visitor: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(b"hxjobs-visitor-csrf\0");
    mac.update(visitor.as_bytes());
    hex(&mac.finalize().into_bytes())
}

/// A cookie's value that hxjobs made (64 hex digits), or nothing.
pub fn well_formed(value: Option<String>) -> Option<String> {
    value.filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}
