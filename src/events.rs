//! The event contract (`docs/events.md`): parse and validate one Kafka message
//! value into a typed [`Event`], or say exactly why it is rejected.
//!
//! Pure and panic-free on any input: every byte string maps to an event or
//! a [`Rejection`] with a stable reason code.

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    LlmRequest,
    UserFeedback,
    SystemMetric,
    BusinessEvent,
    ErrorEvent,
}

impl EventType {
    pub const ALL: [EventType; 5] = [
        EventType::LlmRequest,
        EventType::UserFeedback,
        EventType::SystemMetric,
        EventType::BusinessEvent,
        EventType::ErrorEvent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::LlmRequest => "llm_request",
            EventType::UserFeedback => "user_feedback",
            EventType::SystemMetric => "system_metric",
            EventType::BusinessEvent => "business_event",
            EventType::ErrorEvent => "error_event",
        }
    }

    pub fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// Whether an llm_request with this `status` failed: `error` or `timeout`.
/// The one definition of a failed request (docs/measures.md).
pub fn is_failed_request(status: Option<&str>) -> bool {
    matches!(status, Some("error" | "timeout"))
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One valid event with the contract's typed fields pulled out.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub event_id: Uuid,
    pub event_type: EventType,
    pub timestamp: DateTime<Utc>,
    pub source: String,
    /// `data.model`, else `metadata.model_id` (llm_request, user_feedback).
    pub model: Option<String>,
    pub latency_ms: Option<f64>,
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    pub cost_usd: Option<f64>,
    /// llm_request only; `success` when absent.
    pub status: Option<String>,
    pub rating: Option<f64>,
    /// `data.name` of system_metric and business_event.
    pub name: Option<String>,
    pub value: Option<f64>,
    pub error_type: Option<String>,
    pub severity: Option<String>,
    pub user_id: Option<String>,
    pub session_id: Option<String>,
    pub request_id: Option<String>,
    pub model_id: Option<String>,
    pub priority: Option<String>,
    /// `data` as received (JSON text).
    pub data: String,
    /// `metadata` as received (JSON text), when present.
    pub metadata: Option<String>,
}

impl Event {
    /// The UTC day the event belongs to: its partition in PostgreSQL.
    pub fn day(&self) -> NaiveDate {
        self.timestamp.date_naive()
    }
}

/// Why a message was rejected. The code is stable (stored, counted, matched on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    Empty,
    TooLarge,
    NotUtf8,
    NotJson,
    NotObject,
    MissingField,
    BadUuid,
    BadTimestamp,
    UnknownEventType,
    BadField,
}

impl Reason {
    pub const ALL: [Reason; 10] = [
        Reason::Empty,
        Reason::TooLarge,
        Reason::NotUtf8,
        Reason::NotJson,
        Reason::NotObject,
        Reason::MissingField,
        Reason::BadUuid,
        Reason::BadTimestamp,
        Reason::UnknownEventType,
        Reason::BadField,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Reason::Empty => "empty",
            Reason::TooLarge => "too_large",
            Reason::NotUtf8 => "not_utf8",
            Reason::NotJson => "not_json",
            Reason::NotObject => "not_object",
            Reason::MissingField => "missing_field",
            Reason::BadUuid => "bad_uuid",
            Reason::BadTimestamp => "bad_timestamp",
            Reason::UnknownEventType => "unknown_event_type",
            Reason::BadField => "bad_field",
        }
    }
}

/// A rejected message: the reason code and a human sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: Reason,
    pub detail: String,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason.code(), self.detail)
    }
}

fn reject<T>(reason: Reason, detail: impl Into<String>) -> Result<T, Rejection> {
    Err(Rejection {
        reason,
        detail: detail.into(),
    })
}

/// Parses one message value. `None` is a message without a value.
pub fn parse(payload: Option<&[u8]>, max_bytes: usize) -> Result<Event, Rejection> {
    let Some(bytes) = payload else {
        return reject(Reason::Empty, "message has no value");
    };
    if bytes.is_empty() {
        return reject(Reason::Empty, "message value is empty");
    }
    if bytes.len() > max_bytes {
        return reject(
            Reason::TooLarge,
            format!(
                "{} bytes, more than the {max_bytes}-byte limit",
                bytes.len()
            ),
        );
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            return reject(
                Reason::NotUtf8,
                format!("invalid UTF-8 at byte {}", e.valid_up_to()),
            )
        }
    };
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return reject(Reason::NotJson, e.to_string()),
    };
    let Value::Object(mut envelope) = value else {
        return reject(
            Reason::NotObject,
            format!("value is a JSON {}", kind(&value)),
        );
    };
    if envelope.iter().any(|(k, v)| k.contains('\0') || has_nul(v)) {
        return reject(
            Reason::BadField,
            "a string holds a NUL character (\\u0000), which PostgreSQL cannot store",
        );
    }

    let event_id = {
        let s = required_str(&envelope, "event_id")?;
        match Uuid::try_parse(s) {
            Ok(id) => id,
            Err(_) => {
                return reject(
                    Reason::BadUuid,
                    format!("event_id `{}` is not a UUID", clip(s)),
                )
            }
        }
    };
    let event_type = {
        let s = required_str(&envelope, "event_type")?;
        match EventType::parse(s) {
            Some(t) => t,
            None => {
                return reject(
                    Reason::UnknownEventType,
                    format!("event_type `{}`", clip(s)),
                )
            }
        }
    };
    let timestamp = {
        let s = required_str(&envelope, "timestamp")?;
        match DateTime::parse_from_rfc3339(s) {
            Ok(t) if (MIN_YEAR..=MAX_YEAR).contains(&t.with_timezone(&Utc).year()) => {
                t.with_timezone(&Utc)
            }
            Ok(_) => {
                return reject(
                    Reason::BadTimestamp,
                    format!(
                        "timestamp `{}` is outside the years {MIN_YEAR}..={MAX_YEAR}",
                        clip(s)
                    ),
                )
            }
            Err(e) => {
                return reject(
                    Reason::BadTimestamp,
                    format!("timestamp `{}` is not RFC 3339: {e}", clip(s)),
                )
            }
        }
    };
    let source = required_str(&envelope, "source")?;
    if source.trim().is_empty() {
        return reject(Reason::MissingField, "source is empty");
    }
    let source = source.to_string();

    let data = match envelope.remove("data") {
        None | Some(Value::Null) => return reject(Reason::MissingField, "data is missing"),
        Some(Value::Object(m)) => m,
        Some(other) => {
            return reject(
                Reason::NotObject,
                format!("data is a JSON {}, not an object", kind(&other)),
            )
        }
    };
    let metadata = match envelope.remove("metadata") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m),
        Some(other) => {
            return reject(
                Reason::NotObject,
                format!("metadata is a JSON {}, not an object", kind(&other)),
            )
        }
    };

    let empty = Map::new();
    let meta = metadata.as_ref().unwrap_or(&empty);
    let user_id = opt_str(meta, "metadata", "user_id")?;
    let session_id = opt_str(meta, "metadata", "session_id")?;
    let request_id = opt_str(meta, "metadata", "request_id")?;
    let model_id = opt_str(meta, "metadata", "model_id")?;
    let priority = opt_enum(
        meta,
        "metadata",
        "priority",
        &["low", "medium", "high", "critical"],
    )?;

    let mut event = Event {
        event_id,
        event_type,
        timestamp,
        source,
        model: None,
        latency_ms: None,
        prompt_tokens: None,
        completion_tokens: None,
        cost_usd: None,
        status: None,
        rating: None,
        name: None,
        value: None,
        error_type: None,
        severity: None,
        user_id,
        session_id,
        request_id,
        model_id,
        priority,
        data: String::new(),
        metadata: None,
    };

    match event_type {
        EventType::LlmRequest => {
            event.model = opt_str(&data, "data", "model")?.or_else(|| event.model_id.clone());
            event.latency_ms = opt_number(&data, "latency_ms", Some(0.0), None)?;
            event.prompt_tokens = opt_count(&data, "prompt_tokens")?;
            event.completion_tokens = opt_count(&data, "completion_tokens")?;
            event.cost_usd = opt_number(&data, "cost_usd", Some(0.0), None)?;
            event.status = Some(
                opt_enum(&data, "data", "status", &["success", "error", "timeout"])?
                    .unwrap_or_else(|| "success".to_string()),
            );
        }
        EventType::UserFeedback => {
            event.model = opt_str(&data, "data", "model")?.or_else(|| event.model_id.clone());
            event.rating = opt_number(&data, "rating", Some(1.0), Some(10.0))?;
        }
        EventType::SystemMetric | EventType::BusinessEvent => {
            event.name = opt_str(&data, "data", "name")?;
            event.value = opt_number(&data, "value", None, None)?;
        }
        EventType::ErrorEvent => {
            event.error_type = opt_str(&data, "data", "error_type")?;
            event.severity = opt_enum(
                &data,
                "data",
                "severity",
                &["low", "medium", "high", "critical"],
            )?;
        }
    }

    event.data = Value::Object(data).to_string();
    event.metadata = metadata.map(|m| Value::Object(m).to_string());
    Ok(event)
}

/// Event times outside these years are rejected as malformed.
pub const MIN_YEAR: i32 = 1970;
pub const MAX_YEAR: i32 = 9999;

fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(m) => m.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// At most 64 characters of untrusted text for a message.
fn clip(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

fn required_str<'a>(m: &'a Map<String, Value>, key: &str) -> Result<&'a str, Rejection> {
    match m.get(key) {
        None | Some(Value::Null) => reject(Reason::MissingField, format!("{key} is missing")),
        Some(Value::String(s)) => Ok(s),
        Some(other) => reject(
            Reason::BadField,
            format!("{key} is a JSON {}, not a string", kind(other)),
        ),
    }
}

fn opt_str(m: &Map<String, Value>, section: &str, key: &str) -> Result<Option<String>, Rejection> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => reject(
            Reason::BadField,
            format!("{section}.{key} is a JSON {}, not a string", kind(other)),
        ),
    }
}

fn opt_enum(
    m: &Map<String, Value>,
    section: &str,
    key: &str,
    allowed: &[&str],
) -> Result<Option<String>, Rejection> {
    match opt_str(m, section, key)? {
        None => Ok(None),
        Some(s) if allowed.contains(&s.as_str()) => Ok(Some(s)),
        Some(s) => reject(
            Reason::BadField,
            format!(
                "{section}.{key} `{}` is not one of {}",
                clip(&s),
                allowed.join(", ")
            ),
        ),
    }
}

fn opt_number(
    m: &Map<String, Value>,
    key: &str,
    min: Option<f64>,
    max: Option<f64>,
) -> Result<Option<f64>, Rejection> {
    let v = match m.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(v) if v.is_finite() => v,
            _ => {
                return reject(
                    Reason::BadField,
                    format!("data.{key} is not a finite number"),
                )
            }
        },
        Some(other) => {
            return reject(
                Reason::BadField,
                format!("data.{key} is a JSON {}, not a number", kind(other)),
            )
        }
    };
    if min.is_some_and(|lo| v < lo) || max.is_some_and(|hi| v > hi) {
        let range = match (min, max) {
            (Some(lo), Some(hi)) => format!("{lo}..{hi}"),
            (Some(lo), None) => format!(">= {lo}"),
            (None, Some(hi)) => format!("<= {hi}"),
            (None, None) => String::new(),
        };
        return reject(
            Reason::BadField,
            format!("data.{key} = {v} is outside {range}"),
        );
    }
    Ok(Some(v))
}

/// A non-negative integer that fits PostgreSQL's bigint; `12.0` counts as 12.
fn opt_count(m: &Map<String, Value>, key: &str) -> Result<Option<i64>, Rejection> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                if i >= 0 {
                    return Ok(Some(i));
                }
            } else if let Some(f) = n.as_f64() {
                if f.fract() == 0.0 && (0.0..9.0e18).contains(&f) {
                    return Ok(Some(f as i64));
                }
            }
            reject(
                Reason::BadField,
                format!("data.{key} = {n} is not an integer >= 0"),
            )
        }
        Some(other) => reject(
            Reason::BadField,
            format!("data.{key} is a JSON {}, not an integer", kind(other)),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0b6a3f9e-3c1d-4b8e-9a51-2f0d6f3c1a77";

    fn ok(json: &str) -> Event {
        parse(Some(json.as_bytes()), 1 << 20).expect("valid event")
    }

    fn rejected(bytes: &[u8]) -> Reason {
        parse(Some(bytes), 1 << 20).expect_err("rejected").reason
    }

    #[test]
    fn llm_request_typed_fields() {
        let e = ok(&format!(
            r#"{{"event_id":"{ID}","event_type":"llm_request","timestamp":"2026-03-01T23:30:00+02:00",
               "source":"api-gateway","data":{{"model":"m1","latency_ms":120.5,"prompt_tokens":10,
               "completion_tokens":20.0,"cost_usd":0.01,"extra":[1,2]}},
               "metadata":{{"user_id":"u1","priority":"high","other":true}}}}"#
        ));
        assert_eq!(e.event_type, EventType::LlmRequest);
        assert_eq!(e.timestamp.to_rfc3339(), "2026-03-01T21:30:00+00:00");
        assert_eq!(e.day().to_string(), "2026-03-01");
        assert_eq!(e.model.as_deref(), Some("m1"));
        assert_eq!(e.latency_ms, Some(120.5));
        assert_eq!(e.prompt_tokens, Some(10));
        assert_eq!(e.completion_tokens, Some(20));
        assert_eq!(e.status.as_deref(), Some("success"));
        assert_eq!(e.user_id.as_deref(), Some("u1"));
        assert_eq!(e.priority.as_deref(), Some("high"));
        assert!(e.data.contains("\"extra\":[1,2]"));
        assert!(e
            .metadata
            .as_deref()
            .is_some_and(|m| m.contains("\"other\":true")));
    }

    #[test]
    fn model_falls_back_to_metadata() {
        let e = ok(&format!(
            r#"{{"event_id":"{ID}","event_type":"user_feedback","timestamp":"2026-03-01T00:00:00Z",
               "source":"web","data":{{"rating":7}},"metadata":{{"model_id":"m2"}}}}"#
        ));
        assert_eq!(e.model.as_deref(), Some("m2"));
        assert_eq!(e.rating, Some(7.0));
    }

    #[test]
    fn every_rejection_class() {
        let base = |patch: &str| {
            format!(
                r#"{{"event_id":"{ID}","event_type":"llm_request","timestamp":"2026-03-01T00:00:00Z","source":"s","data":{{}}{patch}}}"#
            )
        };
        assert_eq!(parse(None, 100).expect_err("none").reason, Reason::Empty);
        assert_eq!(rejected(b""), Reason::Empty);
        assert_eq!(
            parse(Some(&[b'x'; 101]), 100).expect_err("big").reason,
            Reason::TooLarge
        );
        assert_eq!(rejected(&[0xff, 0xfe, b'{']), Reason::NotUtf8);
        assert_eq!(rejected(b"{not json"), Reason::NotJson);
        assert_eq!(rejected(b"[1,2]"), Reason::NotObject);
        assert_eq!(rejected(b"{}"), Reason::MissingField);
        let no_source = base("").replace(r#""source":"s","#, "");
        assert_eq!(rejected(no_source.as_bytes()), Reason::MissingField);
        let empty_source = base("").replace(r#""source":"s""#, r#""source":" ""#);
        assert_eq!(rejected(empty_source.as_bytes()), Reason::MissingField);
        let bad_id = base("").replace(ID, "not-a-uuid");
        assert_eq!(rejected(bad_id.as_bytes()), Reason::BadUuid);
        let bad_ts = base("").replace("2026-03-01T00:00:00Z", "yesterday");
        assert_eq!(rejected(bad_ts.as_bytes()), Reason::BadTimestamp);
        let bad_type = base("").replace("llm_request", "llm_reply");
        assert_eq!(rejected(bad_type.as_bytes()), Reason::UnknownEventType);
        let neg = base("").replace(r#""data":{}"#, r#""data":{"latency_ms":-1}"#);
        assert_eq!(rejected(neg.as_bytes()), Reason::BadField);
        let wrong = base("").replace(r#""data":{}"#, r#""data":{"prompt_tokens":"ten"}"#);
        assert_eq!(rejected(wrong.as_bytes()), Reason::BadField);
        let frac = base("").replace(r#""data":{}"#, r#""data":{"prompt_tokens":1.5}"#);
        assert_eq!(rejected(frac.as_bytes()), Reason::BadField);
        let status = base("").replace(r#""data":{}"#, r#""data":{"status":"meh"}"#);
        assert_eq!(rejected(status.as_bytes()), Reason::BadField);
        let data_arr = base("").replace(r#""data":{}"#, r#""data":[]"#);
        assert_eq!(rejected(data_arr.as_bytes()), Reason::NotObject);
        assert_eq!(
            rejected(base(r#","metadata":{"priority":"urgent"}"#).as_bytes()),
            Reason::BadField
        );
        assert_eq!(
            rejected(base(r#","metadata":{"user_id":5}"#).as_bytes()),
            Reason::BadField
        );
        let rating = format!(
            r#"{{"event_id":"{ID}","event_type":"user_feedback","timestamp":"2026-03-01T00:00:00Z","source":"s","data":{{"rating":11}}}}"#
        );
        assert_eq!(rejected(rating.as_bytes()), Reason::BadField);
        let nul = base("").replace(r#""data":{}"#, r#""data":{"x":{"y":["a\u0000"]}}"#);
        assert_eq!(rejected(nul.as_bytes()), Reason::BadField);
        let old = base("").replace("2026-03-01T00:00:00Z", "0001-01-01T00:00:00Z");
        assert_eq!(rejected(old.as_bytes()), Reason::BadTimestamp);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for len in 0..2000usize {
            let bytes: Vec<u8> = (0..len % 97)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x & 0xff) as u8
                })
                .collect();
            let _ = parse(Some(&bytes), 64);
        }
    }
}
