//! What a request carries, checked: JSON bodies, query strings, ids and
//! times, each refused with a stable code and the client's own words.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query};
use axum::http::{header, StatusCode};
use axum::Json;
use chrono::{DateTime, Utc};

use super::ApiError;

pub(super) type ApiResult<T> = Result<T, ApiError>;

pub(super) fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> ApiResult<T> {
    match body {
        Ok(Json(v)) => Ok(v),
        Err(JsonRejection::BytesRejection(e)) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the request body is larger than api.max_body_bytes",
            ))
        }
        Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with Content-Type: application/json",
        )),
        Err(e) => Err(ApiError::bad_request(
            "invalid_json",
            client_words(&e.body_text()),
        )),
    }
}

/// A JSON body that may be left out: no body at all is `T::default()`. A
/// body that is not `Content-Type: application/json` is refused (415) and
/// one that does not parse is a 400: never read as the default.
pub(super) struct OptionalJson<T>(pub T);

impl<S, T> axum::extract::FromRequest<S> for OptionalJson<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned + Default,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let json_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|m| m.trim().to_ascii_lowercase())
            .is_some_and(|m| m == "application/json" || m.ends_with("+json"));
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        "the request body is larger than api.max_body_bytes",
                    )
                } else {
                    ApiError::bad_request("invalid_body", "the request body could not be read")
                }
            })?;
        if bytes.is_empty() {
            return Ok(OptionalJson(T::default()));
        }
        if !json_type {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with Content-Type: application/json (or send no body)",
            ));
        }
        json_body(Json::<T>::from_bytes(&bytes)).map(OptionalJson)
    }
}

pub(super) fn query<T>(q: Result<Query<T>, QueryRejection>) -> ApiResult<T> {
    q.map(|Query(v)| v)
        .map_err(|e| ApiError::bad_request("invalid_query", client_words(&e.body_text())))
}

/// A deserializer's message in the words of the request: the fields and
/// JSON types a client sent, never the names of hxjobs's own Rust types.
fn client_words(message: &str) -> String {
    let mut out = message
        .replace(
            "Failed to deserialize the JSON body into the target type: ",
            "",
        )
        .replace("Failed to deserialize query string: ", "query: ");
    for (marker, words) in [
        ("expected struct ", "expected a JSON object"),
        ("expected enum ", "expected one of the documented values"),
    ] {
        while let Some(at) = out.find(marker) {
            let name_end = out[at + marker.len()..]
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .map_or(out.len(), |n| at + marker.len() + n);
            out.replace_range(at..name_end, words);
        }
    }
    out
}

pub(super) fn id_of(p: Result<Path<String>, PathRejection>) -> ApiResult<i64> {
    let Path(raw) = p.map_err(|e| ApiError::bad_request("invalid_path", e.body_text()))?;
    parse_id(&raw)
}

/// A positive integer id from a path segment.
pub(super) fn parse_id(raw: &str) -> ApiResult<i64> {
    raw.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_id",
            format!("{raw:?} is not an id (a positive integer)"),
        )
    })
}

pub(super) fn instant(field: &str, s: &str) -> ApiResult<DateTime<Utc>> {
    crate::time::parse_instant(s)
        .map_err(|e| ApiError::bad_request("invalid_date", format!("{field}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::client_words;

    #[test]
    fn errors_name_fields_not_types() {
        let m = client_words(
            "Failed to deserialize the JSON body into the target type: invalid type: sequence, expected struct GenerateBody at line 1 column 1",
        );
        assert_eq!(
            m,
            "invalid type: sequence, expected a JSON object at line 1 column 1"
        );
        let m = client_words("unknown field `x`, expected one of `job`, `from`");
        assert_eq!(m, "unknown field `x`, expected one of `job`, `from`");
    }
}
