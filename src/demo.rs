//! Realistic, deterministic demo traffic: all five event types over a time
//! range with a diurnal load curve, several models with their own latency,
//! cost and error profiles, a Zipf-shaped user population, and, on request,
//! duplicates and malformed input of every rejected class.
//!
//! The same spec and seed always give the same bytes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal, Normal, Zipf};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::config::Config;
use crate::events::{EventType, Reason};
use crate::kafka;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("demo: {0}")]
    Spec(String),
    #[error(transparent)]
    Kafka(#[from] kafka::Error),
    #[error("Kafka at {servers}: {failed} of {total} messages were not delivered (first error: {first})")]
    Delivery {
        servers: String,
        failed: u64,
        total: u64,
        first: String,
    },
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct DemoSpec {
    pub events: u64,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Share of messages replaced by malformed input, 0..=1.
    pub bad_ratio: f64,
    /// Share of messages that repeat an earlier event byte for byte, 0..=1.
    pub duplicate_ratio: f64,
    pub seed: u64,
    /// The ingest limit, so that `too_large` input is just over it.
    pub max_event_bytes: usize,
}

impl DemoSpec {
    pub fn validate(&self) -> Result<(), Error> {
        if self.to <= self.from {
            return Err(Error::Spec(format!(
                "--to ({}) must be after --from ({})",
                self.to, self.from
            )));
        }
        for (name, r) in [
            ("--bad-ratio", self.bad_ratio),
            ("--duplicate-ratio", self.duplicate_ratio),
        ] {
            if !(0.0..=1.0).contains(&r) {
                return Err(Error::Spec(format!(
                    "{name} must be between 0 and 1, not {r}"
                )));
            }
        }
        if self.bad_ratio + self.duplicate_ratio > 1.0 {
            return Err(Error::Spec(
                "--bad-ratio plus --duplicate-ratio must not exceed 1".into(),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    Event,
    /// The same bytes as an earlier event.
    Duplicate,
    /// Malformed on purpose; ingest must reject it for this reason.
    Bad(Reason),
}

/// One message to produce.
#[derive(Debug, Clone)]
pub struct DemoRecord {
    /// Which topic it goes to.
    pub event_type: EventType,
    pub key: String,
    pub payload: Option<Vec<u8>>,
    pub kind: RecordKind,
}

struct Model {
    name: &'static str,
    weight: f64,
    median_latency_ms: f64,
    latency_sigma: f64,
    usd_per_1k_tokens: f64,
    error_rate: f64,
    timeout_rate: f64,
    mean_rating: f64,
}

const MODELS: [Model; 5] = [
    Model {
        name: "llama-3.1-70b",
        weight: 0.30,
        median_latency_ms: 900.0,
        latency_sigma: 0.45,
        usd_per_1k_tokens: 0.0009,
        error_rate: 0.015,
        timeout_rate: 0.004,
        mean_rating: 8.1,
    },
    Model {
        name: "mixtral-8x7b",
        weight: 0.25,
        median_latency_ms: 450.0,
        latency_sigma: 0.40,
        usd_per_1k_tokens: 0.0006,
        error_rate: 0.010,
        timeout_rate: 0.002,
        mean_rating: 7.4,
    },
    Model {
        name: "qwen2.5-coder-32b",
        weight: 0.15,
        median_latency_ms: 650.0,
        latency_sigma: 0.50,
        usd_per_1k_tokens: 0.0008,
        error_rate: 0.020,
        timeout_rate: 0.003,
        mean_rating: 7.9,
    },
    Model {
        name: "mistral-7b",
        weight: 0.20,
        median_latency_ms: 220.0,
        latency_sigma: 0.40,
        usd_per_1k_tokens: 0.0002,
        error_rate: 0.008,
        timeout_rate: 0.001,
        mean_rating: 6.8,
    },
    Model {
        name: "phi-3-mini",
        weight: 0.10,
        median_latency_ms: 120.0,
        latency_sigma: 0.35,
        usd_per_1k_tokens: 0.0001,
        error_rate: 0.005,
        timeout_rate: 0.001,
        mean_rating: 6.2,
    },
];

const SOURCES: [(&str, f64); 4] = [
    ("api-gateway", 0.6),
    ("web-app", 0.2),
    ("mobile-app", 0.15),
    ("batch-api", 0.05),
];

const TYPE_MIX: [(EventType, f64); 5] = [
    (EventType::LlmRequest, 0.55),
    (EventType::UserFeedback, 0.10),
    (EventType::SystemMetric, 0.20),
    (EventType::BusinessEvent, 0.05),
    (EventType::ErrorEvent, 0.10),
];

const USERS: u64 = 20_000;

fn pick<'a, T>(rng: &mut ChaCha8Rng, items: &'a [(T, f64)]) -> &'a T {
    let total: f64 = items.iter().map(|(_, w)| w).sum();
    let mut x = rng.random::<f64>() * total;
    for (item, w) in items {
        if x < *w {
            return item;
        }
        x -= w;
    }
    &items[items.len() - 1].0
}

/// Relative load at a UTC hour of day: a trough at night, a peak at 14:00.
pub fn diurnal_load(hour_of_day: f64) -> f64 {
    1.0 + 0.6 * (std::f64::consts::TAU * (hour_of_day - 8.0) / 24.0).sin()
}

/// Iterator over the spec's messages, in event-time order.
pub struct Generator {
    spec: DemoSpec,
    rng: ChaCha8Rng,
    /// Cumulative load per minute of the range, normalised to 1 at the end.
    cumulative: Vec<f64>,
    i: u64,
    last_good: Option<DemoRecord>,
    users: Zipf<f64>,
    prompt_tokens: LogNormal<f64>,
    completion_tokens: LogNormal<f64>,
}

impl Generator {
    pub fn new(spec: DemoSpec) -> Result<Generator, Error> {
        spec.validate()?;
        let minutes = ((spec.to - spec.from).num_seconds().max(60) / 60) as usize;
        let mut cumulative = Vec::with_capacity(minutes);
        let mut sum = 0.0;
        for m in 0..minutes {
            let t = spec.from + TimeDelta::minutes(m as i64);
            let hour = t.timestamp().rem_euclid(86_400) as f64 / 3600.0;
            sum += diurnal_load(hour);
            cumulative.push(sum);
        }
        for c in &mut cumulative {
            *c /= sum;
        }
        let bad = |e: rand_distr::ZipfError| Error::Spec(e.to_string());
        let lognormal =
            |mu: f64, sigma: f64| LogNormal::new(mu, sigma).map_err(|e| Error::Spec(e.to_string()));
        Ok(Generator {
            rng: ChaCha8Rng::seed_from_u64(spec.seed),
            cumulative,
            i: 0,
            last_good: None,
            users: Zipf::new(USERS as f64, 1.07).map_err(bad)?,
            prompt_tokens: lognormal(400f64.ln(), 0.8)?,
            completion_tokens: lognormal(250f64.ln(), 0.7)?,
            spec,
        })
    }

    /// The event time of message `i`: stratified over the load curve, so
    /// times rise with `i` and follow the diurnal shape.
    fn time_of(&mut self, i: u64) -> DateTime<Utc> {
        let u = (i as f64 + self.rng.random::<f64>()) / self.spec.events as f64;
        let minute = self.cumulative.partition_point(|&c| c < u);
        let before = if minute == 0 {
            0.0
        } else {
            self.cumulative[minute - 1]
        };
        let here = self.cumulative.get(minute).copied().unwrap_or(1.0);
        let frac = if here > before {
            ((u - before) / (here - before)).clamp(0.0, 1.0)
        } else {
            0.0
        };
        let micros = ((minute as f64 + frac) * 60_000_000.0) as i64;
        let t = self.spec.from + TimeDelta::microseconds(micros);
        if t >= self.spec.to {
            self.spec.to - TimeDelta::microseconds(1)
        } else {
            t
        }
    }

    fn uuid(&mut self) -> Uuid {
        uuid::Builder::from_random_bytes(self.rng.random()).into_uuid()
    }

    fn good(&mut self, at: DateTime<Utc>) -> DemoRecord {
        let event_type = *pick(&mut self.rng, &TYPE_MIX);
        let event_id = self.uuid();
        let source = *pick(&mut self.rng, &SOURCES);
        let user = self.users.sample(&mut self.rng) as u64;
        let user_id = format!("user-{user:05}");
        let session_id = format!(
            "sess-{:08x}",
            (user.wrapping_mul(0x9e37_79b9) ^ (at.timestamp() as u64 / 1800)) as u32
        );
        let request_id = self.uuid().to_string();
        let weights: Vec<(usize, f64)> = MODELS
            .iter()
            .enumerate()
            .map(|(i, m)| (i, m.weight))
            .collect();
        let model = &MODELS[*pick(&mut self.rng, &weights)];
        let priority = *pick(
            &mut self.rng,
            &[
                ("low", 0.3),
                ("medium", 0.5),
                ("high", 0.15),
                ("critical", 0.05),
            ],
        );
        let mut metadata = json!({
            "user_id": user_id,
            "session_id": session_id,
            "request_id": request_id,
            "priority": priority,
        });
        let data = match event_type {
            EventType::LlmRequest => {
                // The model is sometimes only named in metadata.model_id.
                let in_data = self.rng.random::<f64>() < 0.9;
                metadata["model_id"] = json!(model.name);
                let latency = LogNormal::new(model.median_latency_ms.ln(), model.latency_sigma)
                    .map(|d| d.sample(&mut self.rng))
                    .unwrap_or(model.median_latency_ms);
                let prompt = self.prompt_tokens.sample(&mut self.rng).min(32_000.0) as i64;
                let completion = self.completion_tokens.sample(&mut self.rng).min(8_000.0) as i64;
                let r: f64 = self.rng.random();
                let (status, latency) = if r < model.timeout_rate {
                    ("timeout", 30_000.0)
                } else if r < model.timeout_rate + model.error_rate {
                    ("error", latency * 0.2)
                } else {
                    ("success", latency)
                };
                let completion = if status == "success" { completion } else { 0 };
                let cost = (prompt + completion) as f64 / 1000.0 * model.usd_per_1k_tokens;
                let mut d = json!({
                    "latency_ms": (latency * 100.0).round() / 100.0,
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "cost_usd": (cost * 1e6).round() / 1e6,
                    "status": status,
                    "endpoint": "/v1/chat/completions",
                });
                if in_data {
                    d["model"] = json!(model.name);
                }
                d
            }
            EventType::UserFeedback => {
                metadata["model_id"] = json!(model.name);
                let rating = Normal::new(model.mean_rating, 1.6)
                    .map(|d| d.sample(&mut self.rng))
                    .unwrap_or(model.mean_rating)
                    .round()
                    .clamp(1.0, 10.0);
                json!({ "model": model.name, "rating": rating, "comment_length": self.rng.random_range(0..400) })
            }
            EventType::SystemMetric => {
                let hour = at.timestamp().rem_euclid(86_400) as f64 / 3600.0;
                let load = diurnal_load(hour) / 1.6;
                let (name, value) = match self.rng.random_range(0..4) {
                    0 => (
                        "cpu_percent",
                        (load * 70.0 + self.rng.random_range(0.0..20.0)).min(100.0),
                    ),
                    1 => (
                        "gpu_memory_gb",
                        20.0 + load * 40.0 + self.rng.random_range(0.0..8.0),
                    ),
                    2 => (
                        "queue_depth",
                        (load * 120.0 * self.rng.random_range(0.5..1.5)).round(),
                    ),
                    _ => (
                        "gpu_utilization_percent",
                        (load * 85.0 + self.rng.random_range(0.0..10.0)).min(100.0),
                    ),
                };
                json!({ "name": name, "value": (value * 100.0).round() / 100.0, "host": format!("gpu-node-{}", self.rng.random_range(1..=4)) })
            }
            EventType::BusinessEvent => {
                let (name, value) = match self.rng.random_range(0..10) {
                    0..=4 => {
                        let amount: f64 = LogNormal::new(3.0, 0.9)
                            .map(|d| d.sample(&mut self.rng))
                            .unwrap_or(20.0);
                        ("revenue", (amount * 100.0).round() / 100.0)
                    }
                    5..=7 => ("signup", 1.0),
                    8 => ("subscription_upgrade", 1.0),
                    _ => (
                        "tokens_purchased",
                        (self.rng.random_range(1..100) * 10_000) as f64,
                    ),
                };
                json!({ "name": name, "value": value, "currency": "USD" })
            }
            EventType::ErrorEvent => {
                let error_type = *pick(
                    &mut self.rng,
                    &[
                        ("rate_limit_exceeded", 0.35),
                        ("model_overloaded", 0.25),
                        ("invalid_request", 0.2),
                        ("upstream_timeout", 0.12),
                        ("internal_error", 0.08),
                    ],
                );
                let severity = *pick(
                    &mut self.rng,
                    &[
                        ("low", 0.4),
                        ("medium", 0.35),
                        ("high", 0.2),
                        ("critical", 0.05),
                    ],
                );
                metadata["model_id"] = json!(model.name);
                json!({ "error_type": error_type, "severity": severity, "message": format!("{error_type} on {}", model.name) })
            }
        };
        let envelope = json!({
            "event_id": event_id.to_string(),
            "event_type": event_type.as_str(),
            "timestamp": at.to_rfc3339_opts(SecondsFormat::Micros, true),
            "source": source,
            "data": data,
            "metadata": metadata,
        });
        DemoRecord {
            event_type,
            key: event_id.to_string(),
            payload: Some(envelope.to_string().into_bytes()),
            kind: RecordKind::Event,
        }
    }

    fn bad(&mut self, at: DateTime<Utc>) -> DemoRecord {
        let reason = Reason::ALL[self.rng.random_range(0..Reason::ALL.len())];
        let event_type = *pick(&mut self.rng, &TYPE_MIX);
        let id = self.uuid().to_string();
        let ts = at.to_rfc3339_opts(SecondsFormat::Millis, true);
        let t = event_type.as_str();
        let envelope = |id: &str, t: &str, ts: &str, data: &str| {
            format!(
                r#"{{"event_id":"{id}","event_type":"{t}","timestamp":"{ts}","source":"api-gateway","data":{data}}}"#
            )
        };
        let payload: Option<Vec<u8>> = match reason {
            Reason::Empty => None,
            Reason::TooLarge => {
                let pad = "x".repeat(self.spec.max_event_bytes);
                Some(envelope(&id, t, &ts, &format!(r#"{{"blob":"{pad}"}}"#)).into_bytes())
            }
            Reason::NotUtf8 => {
                let mut b = envelope(&id, t, &ts, "{}").into_bytes();
                b.insert(10, 0xC3);
                b.insert(11, 0x28);
                Some(b)
            }
            Reason::NotJson => {
                Some(format!("{{\"event_id\":\"{id}\",\"event_type\":").into_bytes())
            }
            Reason::NotObject => Some(format!(r#"["{id}","{t}","{ts}"]"#).into_bytes()),
            Reason::MissingField => Some(
                format!(
                    r#"{{"event_id":"{id}","event_type":"{t}","timestamp":"{ts}","data":{{}}}}"#
                )
                .into_bytes(),
            ),
            Reason::BadUuid => Some(envelope(&id[..20], t, &ts, "{}").into_bytes()),
            Reason::BadTimestamp => Some(envelope(&id, t, "31/12/2025 25:61", "{}").into_bytes()),
            Reason::UnknownEventType => Some(envelope(&id, "llm_reply", &ts, "{}").into_bytes()),
            Reason::BadField => {
                let data = match event_type {
                    EventType::LlmRequest => r#"{"latency_ms":-5}"#,
                    EventType::UserFeedback => r#"{"rating":42}"#,
                    EventType::SystemMetric | EventType::BusinessEvent => r#"{"value":"high"}"#,
                    EventType::ErrorEvent => r#"{"severity":"apocalyptic"}"#,
                };
                Some(envelope(&id, t, &ts, data).into_bytes())
            }
        };
        DemoRecord {
            event_type,
            key: id,
            payload,
            kind: RecordKind::Bad(reason),
        }
    }
}

impl Iterator for Generator {
    type Item = DemoRecord;

    fn next(&mut self) -> Option<DemoRecord> {
        if self.i >= self.spec.events {
            return None;
        }
        let i = self.i;
        self.i += 1;
        let at = self.time_of(i);
        let r: f64 = self.rng.random();
        if r < self.spec.bad_ratio {
            return Some(self.bad(at));
        }
        if r < self.spec.bad_ratio + self.spec.duplicate_ratio {
            if let Some(prev) = &self.last_good {
                let mut dup = prev.clone();
                dup.kind = RecordKind::Duplicate;
                return Some(dup);
            }
        }
        let record = self.good(at);
        self.last_good = Some(record.clone());
        Some(record)
    }
}

/// Counts of what was produced.
#[derive(Debug, Clone, Default)]
pub struct ProduceSummary {
    pub events: u64,
    pub duplicates: u64,
    pub bad: u64,
    pub elapsed: Duration,
}

impl ProduceSummary {
    pub fn total(&self) -> u64 {
        self.events + self.duplicates + self.bad
    }
}

#[derive(Default)]
struct DeliveryCounter {
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for DeliveryCounter {}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut first) = self.first_error.lock() {
                first.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// Produces any records to their topics and waits until every one is acknowledged.
/// `progress` is called with the number sent so far, now and then.
pub fn produce(
    config: &Config,
    records: impl Iterator<Item = DemoRecord>,
    mut progress: impl FnMut(u64),
) -> Result<ProduceSummary, Error> {
    let started = Instant::now();
    let producer: ThreadedProducer<DeliveryCounter> =
        kafka::build_producer_with(&config.kafka, DeliveryCounter::default())?;
    let mut summary = ProduceSummary::default();
    for record in records {
        let topic = config.topics.topic_for(record.event_type);
        let mut base: BaseRecord<'_, str, [u8]> = BaseRecord::to(topic).key(record.key.as_str());
        if let Some(p) = &record.payload {
            base = base.payload(p.as_slice());
        }
        loop {
            match producer.send(base) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    base = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => {
                    return Err(Error::Delivery {
                        servers: config.kafka.bootstrap_servers.clone(),
                        failed: 1,
                        total: summary.total() + 1,
                        first: e.to_string(),
                    })
                }
            }
        }
        match record.kind {
            RecordKind::Event => summary.events += 1,
            RecordKind::Duplicate => summary.duplicates += 1,
            RecordKind::Bad(_) => summary.bad += 1,
        }
        if summary.total() % 50_000 == 0 {
            progress(summary.total());
        }
    }
    let flushed = producer.flush(Duration::from_secs(120));
    let failed = producer.context().failed.load(Ordering::Relaxed);
    let first = producer
        .context()
        .first_error
        .lock()
        .ok()
        .and_then(|f| f.clone());
    if failed > 0 || flushed.is_err() {
        return Err(Error::Delivery {
            servers: config.kafka.bootstrap_servers.clone(),
            failed: failed.max(u64::from(flushed.is_err())),
            total: summary.total(),
            first: first.unwrap_or_else(|| "flush timed out after 120 s".into()),
        });
    }
    if summary.total() % 50_000 != 0 {
        progress(summary.total());
    }
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// The JSON value of a good record, for tests and checks.
pub fn payload_json(record: &DemoRecord) -> Option<Value> {
    record
        .payload
        .as_ref()
        .and_then(|p| serde_json::from_slice(p).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events;

    fn spec(events: u64, bad: f64, dup: f64) -> DemoSpec {
        DemoSpec {
            events,
            from: DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
                .expect("ts")
                .with_timezone(&Utc),
            to: DateTime::parse_from_rfc3339("2026-01-03T00:00:00Z")
                .expect("ts")
                .with_timezone(&Utc),
            bad_ratio: bad,
            duplicate_ratio: dup,
            seed: 7,
            max_event_bytes: 4096,
        }
    }

    #[test]
    fn deterministic_for_a_seed() {
        let a: Vec<_> = Generator::new(spec(500, 0.1, 0.05))
            .expect("spec")
            .map(|r| r.payload)
            .collect();
        let b: Vec<_> = Generator::new(spec(500, 0.1, 0.05))
            .expect("spec")
            .map(|r| r.payload)
            .collect();
        assert_eq!(a, b);
        let mut other = spec(500, 0.1, 0.05);
        other.seed = 8;
        let c: Vec<_> = Generator::new(other)
            .expect("spec")
            .map(|r| r.payload)
            .collect();
        assert_ne!(a, c);
    }

    #[test]
    fn every_record_parses_as_labelled() {
        let mut reasons = std::collections::HashSet::new();
        let mut types = std::collections::HashSet::new();
        for r in Generator::new(spec(5000, 0.2, 0.05)).expect("spec") {
            let parsed = events::parse(r.payload.as_deref(), 4096);
            match r.kind {
                RecordKind::Event | RecordKind::Duplicate => {
                    let e = parsed.expect("good record parses");
                    assert_eq!(e.event_type, r.event_type);
                    types.insert(e.event_type);
                    assert!(
                        e.timestamp >= spec(1, 0.0, 0.0).from && e.timestamp < spec(1, 0.0, 0.0).to
                    );
                }
                RecordKind::Bad(reason) => {
                    assert_eq!(parsed.expect_err("bad record is rejected").reason, reason);
                    reasons.insert(reason);
                }
            }
        }
        assert_eq!(
            reasons.len(),
            Reason::ALL.len(),
            "every rejection class appears"
        );
        assert_eq!(types.len(), 5, "every event type appears");
    }

    #[test]
    fn load_follows_the_day() {
        let mut night = 0;
        let mut afternoon = 0;
        for r in Generator::new(spec(20_000, 0.0, 0.0)).expect("spec") {
            let v = payload_json(&r).expect("json");
            let ts = v["timestamp"].as_str().expect("ts");
            let hour: u32 = ts[11..13].parse().expect("hour");
            if (1..=3).contains(&hour) {
                night += 1;
            }
            if (13..=15).contains(&hour) {
                afternoon += 1;
            }
        }
        assert!(
            afternoon > night * 2,
            "afternoon {afternoon} vs night {night}"
        );
    }

    #[test]
    fn times_are_ordered() {
        let times: Vec<String> = Generator::new(spec(2000, 0.0, 0.0))
            .expect("spec")
            .filter_map(|r| payload_json(&r))
            .map(|v| v["timestamp"].as_str().unwrap_or_default().to_string())
            .collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
    }
}
