//! Console login through an OpenID provider (`api.oidc`): the
//! authorization code flow with PKCE (S256), a state bound to this browser
//! by a cookie and used once, a nonce, and an ID token whose signature
//! (the provider's JWKS), issuer, audience, expiry and nonce are checked.
//! The claim `role_claim` maps to a role; the session is `oidc:<email>`.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;
use base64::Engine;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::session::{self, random_id};
use super::{UiError, UiResult};
use crate::config::{ApiConfig, OidcConfig};
use crate::ops::{Actor, Means, Role};
use crate::web::{constant_time_eq, ApiState};

/// The cookie that ties a login in flight to this browser.
const COOKIE: &str = "hxjobs_oidc";
/// How long a login in flight may take.
const MAX_MINUTES: i32 = 10;
/// Logins in flight at once; past it, new ones wait (503), so anonymous
/// clients cannot grow the table or make hxjobs call the provider without end.
pub const MAX_IN_FLIGHT: i64 = 10_000;

/// What the provider's discovery document says.
#[derive(Debug, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
}

fn config(state: &ApiState) -> UiResult<&OidcConfig> {
    state
        .ops
        .config
        .api
        .oidc
        .as_ref()
        .ok_or_else(|| UiError::not_found("Single sign-on is not configured (api.oidc)."))
}

fn http() -> UiResult<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| unavailable(&e))
}

fn unavailable(e: &dyn std::fmt::Display) -> UiError {
    tracing::warn!(error = %crate::redact::text(&e.to_string()), "identity provider unreachable");
    UiError::new(
        StatusCode::BAD_GATEWAY,
        "The identity provider could not be reached; try again, or log in with a token.",
    )
}

async fn discover(oidc: &OidcConfig) -> UiResult<Discovery> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        oidc.issuer.trim_end_matches('/')
    );
    let d: Discovery = http()?
        .get(&url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| unavailable(&e))?
        .json()
        .await
        .map_err(|e| unavailable(&e))?;
    if d.issuer.trim_end_matches('/') != oidc.issuer.trim_end_matches('/') {
        return Err(UiError::new(
            StatusCode::BAD_GATEWAY,
            "The identity provider names another issuer than api.oidc.issuer.",
        ));
    }
    Ok(d)
}

/// Where the provider sends people back: under `api.public_url`, or this
/// loopback API's own address.
fn redirect_uri(api: &ApiConfig) -> String {
    let base = match &api.public_url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => format!("http://{}:{}", api.host, api.port),
    };
    format!("{base}/ui/login/oidc/callback")
}

fn form_encode(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", super::view::url_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

#[derive(Debug, Default, Deserialize)]
pub struct StartQuery {
    next: Option<String>,
}

/// Sends the browser to the provider, with a fresh state, nonce and PKCE
/// challenge kept for the callback.
pub async fn start(
    State(state): State<ApiState>,
    q: Result<Query<StartQuery>, QueryRejection>,
) -> UiResult<Response> {
    let oidc = config(&state)?;
    let q = q.map(|Query(q)| q).unwrap_or_default();
    let next = super::actions::safe_next(q.next.as_deref());
    let pool = &state.ops.pools.ledger;
    let in_flight = sqlx::query_scalar!(
        r#"SELECT count(*) AS "in_flight!" FROM oidc_logins
           WHERE created_at > now() - make_interval(mins => $1)"#,
        MAX_MINUTES,
    )
    .fetch_one(pool)
    .await?;
    if in_flight >= MAX_IN_FLIGHT {
        tracing::warn!(
            in_flight,
            "single sign-on logins refused: too many in flight"
        );
        return Err(UiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Too many logins are under way; try again in a few minutes.",
        ));
    }
    let d = discover(oidc).await?;
    let (login, nonce, verifier) = (random_id(), random_id(), random_id());
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(verifier.as_bytes()));
    sqlx::query!(
        "DELETE FROM oidc_logins WHERE created_at < now() - make_interval(mins => $1)",
        MAX_MINUTES,
    )
    .execute(pool)
    .await?;
    sqlx::query!(
        "INSERT INTO oidc_logins (state_sha256, nonce, verifier, next) VALUES ($1, $2, $3, $4)",
        session::digest(&login),
        nonce,
        verifier,
        next,
    )
    .execute(pool)
    .await?;
    let scope = std::iter::once("openid")
        .chain(
            oidc.scopes
                .iter()
                .map(String::as_str)
                .filter(|s| *s != "openid"),
        )
        .collect::<Vec<_>>()
        .join(" ");
    let redirect = redirect_uri(&state.ops.config.api);
    let query = form_encode(&[
        ("response_type", "code"),
        ("client_id", &oidc.client_id),
        ("redirect_uri", &redirect),
        ("scope", &scope),
        ("state", &login),
        ("nonce", &nonce),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
    ]);
    let sep = if d.authorization_endpoint.contains('?') {
        '&'
    } else {
        '?'
    };
    let mut response =
        Redirect::to(&format!("{}{sep}{query}", d.authorization_endpoint)).into_response();
    // Lax: the provider's redirect back is a top-level navigation from its site.
    let cookie = format!(
        "{COOKIE}={login}; Path=/ui/login/oidc; HttpOnly; SameSite=Lax; Max-Age={}{}",
        MAX_MINUTES * 60,
        super::secure_attribute(&state.ops.config.api)
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(response)
}

#[derive(Debug, Default, Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
    #[allow(dead_code)]
    iss: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TokenResponse {
    id_token: String,
}

/// Takes the provider's answer: checks it, maps the person's groups to a
/// role and starts a console session as `oidc:<email>`.
pub async fn callback(
    State(state): State<ApiState>,
    Extension(_session): Extension<super::Session>,
    client: Option<Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: axum::http::HeaderMap,
    q: Result<Query<CallbackQuery>, QueryRejection>,
) -> UiResult<Response> {
    let oidc = config(&state)?.clone();
    let address = client.map(|c| c.0 .0.ip());
    let q = q.map(|Query(q)| q).unwrap_or_default();
    let refuse = |who: &str, why: String| {
        let actor = Actor::new(who, Means::Session, Role::Viewer).from(address);
        let ops = state.ops.clone();
        let why2 = why.clone();
        async move {
            ops.audit(
                &actor,
                "login",
                Some("oidc"),
                "refused",
                Some(serde_json::json!({ "message": why2 })),
            )
            .await;
            UiError::new(StatusCode::FORBIDDEN, why)
        }
    };
    if let Some(e) = &q.error {
        let why = format!(
            "The identity provider refused the login: {e}{}",
            q.error_description
                .as_deref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        );
        return Err(refuse("oidc:unknown", why).await);
    }
    let (Some(code), Some(login)) = (q.code.as_deref(), q.state.as_deref()) else {
        return Err(UiError::new(
            StatusCode::BAD_REQUEST,
            "The provider's answer has no code or state.",
        ));
    };
    let cookie = super::cookie(&headers, COOKIE).unwrap_or_default();
    if !constant_time_eq(cookie.as_bytes(), login.as_bytes()) {
        return Err(refuse(
            "oidc:unknown",
            "This login was not started in this browser (state). Start again.".into(),
        )
        .await);
    }
    let pool = &state.ops.pools.ledger;
    let held = sqlx::query!(
        "DELETE FROM oidc_logins
         WHERE state_sha256 = $1 AND created_at > now() - make_interval(mins => $2)
         RETURNING nonce, verifier, next",
        session::digest(login),
        MAX_MINUTES,
    )
    .fetch_optional(pool)
    .await?
    .map(|r| (r.nonce, r.verifier, r.next));
    let Some((nonce, verifier, next)) = held else {
        return Err(refuse(
            "oidc:unknown",
            "This login has expired or was already used. Start again.".into(),
        )
        .await);
    };
    let d = discover(&oidc).await?;
    let redirect = redirect_uri(&state.ops.config.api);
    let mut request = http()?.post(&d.token_endpoint).form(&[
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", &redirect),
        ("code_verifier", &verifier),
        ("client_id", &oidc.client_id),
    ]);
    if let Some(secret) = &oidc.client_secret {
        request = request.basic_auth(&oidc.client_id, Some(secret.expose()));
    }
    let answer = request.send().await.map_err(|e| unavailable(&e))?;
    if !answer.status().is_success() {
        let status = answer.status();
        let body = answer.text().await.unwrap_or_default();
        tracing::warn!(%status, body = %crate::redact::text(&body), "the identity provider refused the code");
        return Err(refuse(
            "oidc:unknown",
            format!("The identity provider refused the login code ({status})."),
        )
        .await);
    }
    let tokens: TokenResponse = answer.json().await.map_err(|e| unavailable(&e))?;
    let claims = match verify(&d, &oidc, &tokens.id_token, &nonce).await {
        Ok(c) => c,
        Err(why) => return Err(refuse("oidc:unknown", why).await),
    };
    let email = claims
        .get("email")
        .and_then(|v| v.as_str())
        .or_else(|| claims.get("sub").and_then(|v| v.as_str()))
        .unwrap_or_default()
        .to_string();
    let name = format!("oidc:{email}");
    let Some(role) = oidc.role_of(
        claims
            .get(&oidc.role_claim)
            .unwrap_or(&serde_json::Value::Null),
    ) else {
        return Err(refuse(
            &name,
            format!(
                "{email} has no hxjobs role: none of its {} is in api.oidc's admin, operator or viewer lists.",
                oidc.role_claim
            ),
        )
        .await);
    };
    let api = &state.ops.config.api;
    let id = session::create(
        pool,
        &name,
        Some(role.as_str()),
        address.map(|a| a.to_string()),
        api.session_hours,
    )
    .await?;
    let actor = Actor::new(&name, Means::Session, role).from(address);
    state
        .ops
        .audit(&actor, "login", Some("oidc"), "ok", None)
        .await;
    let mut response = Redirect::to(&next).into_response();
    let cookies = [
        format!(
            "{}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
            super::COOKIE,
            api.session_hours.saturating_mul(3600),
            super::secure_attribute(api)
        ),
        format!("{COOKIE}=; Path=/ui/login/oidc; HttpOnly; SameSite=Lax; Max-Age=0"),
    ];
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(&c) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    Ok(response)
}

/// The ID token's claims, once its signature, issuer, audience, expiry and
/// nonce are right; otherwise why not.
async fn verify(
    d: &Discovery,
    oidc: &OidcConfig,
    id_token: &str,
    nonce: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};
    let header = jsonwebtoken::decode_header(id_token)
        .map_err(|e| format!("The ID token is not a JWT: {e}"))?;
    // Only the provider's own keys: never a secret shared with the client.
    if matches!(
        header.alg,
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
    ) {
        return Err(
            "The ID token is signed with a shared secret; hxjobs accepts only the provider's keys."
                .into(),
        );
    }
    let keys: jsonwebtoken::jwk::JwkSet = http()
        .map_err(|e| e.message)?
        .get(&d.jwks_uri)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| format!("The provider's keys could not be read: {e}"))?
        .json()
        .await
        .map_err(|e| format!("The provider's keys could not be read: {e}"))?;
    let jwk = match &header.kid {
        Some(kid) => keys.find(kid),
        None => keys.keys.first(),
    }
    .ok_or("The ID token's key is not among the provider's keys.")?;
    let key =
        DecodingKey::from_jwk(jwk).map_err(|e| format!("The provider's key is not usable: {e}"))?;
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[&d.issuer]);
    validation.set_audience(&[&oidc.client_id]);
    let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
        id_token,
        &key,
        &validation,
    )
    .map_err(|e| format!("The ID token is not valid: {e}"))?;
    let claims = data.claims;
    let given = claims
        .get("nonce")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    if !constant_time_eq(given.as_bytes(), nonce.as_bytes()) {
        return Err("The ID token was not made for this login (nonce).".into());
    }
    Ok(claims)
}
