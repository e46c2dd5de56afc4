//! Live stats: a consumer of its own (`live_stats.consumer_group`, manual
//! assignment from the latest offsets, nothing committed) keeps sliding
//! windows of 1, 5 and 15 minutes per topic and per model in memory:
//! events/s, error rate, latency p50/p95/p99, tokens/s, cost/s, average
//! rating. Time is bucketed in 10-second slots in fixed rings, latency in
//! DDSketches with a bounded number of bins, and models beyond
//! `live_stats.max_models` count as "other": memory stays bounded whatever
//! the traffic. A snapshot (JSON) is rebuilt every second and served as is.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::Utc;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::Serialize;
use sketches_ddsketch::{Config as DdConfig, DDSketch};

use crate::config::Config;
use crate::events::{Event, EventType};

const SLOT_SECS: u64 = 10;
const SLOTS: usize = 90;
/// The windows, in seconds.
pub const WINDOWS: [(&str, u64); 3] = [("1m", 60), ("5m", 300), ("15m", 900)];
const OTHER: &str = "other";

#[derive(Clone)]
struct Slot {
    /// Slot number since the start; a ring entry holding an older one is stale.
    n: u64,
    events: u64,
    errors: u64,
    tokens: u64,
    cost: f64,
    rating_sum: f64,
    rating_n: u64,
    latency: DDSketch,
}

fn sketch() -> DDSketch {
    // 2% relative accuracy, at most 512 bins.
    DDSketch::new(DdConfig::new(0.02, 512, 1e-3))
}

impl Slot {
    fn empty(n: u64) -> Slot {
        Slot {
            n,
            events: 0,
            errors: 0,
            tokens: 0,
            cost: 0.0,
            rating_sum: 0.0,
            rating_n: 0,
            latency: sketch(),
        }
    }
}

/// One ring of slots.
struct Series {
    slots: Vec<Option<Slot>>,
}

impl Series {
    fn new() -> Series {
        Series {
            slots: vec![None; SLOTS],
        }
    }

    fn slot(&mut self, n: u64) -> &mut Slot {
        let i = (n % SLOTS as u64) as usize;
        let entry = &mut self.slots[i];
        if entry.as_ref().map(|s| s.n) != Some(n) {
            *entry = Some(Slot::empty(n));
        }
        entry.get_or_insert_with(|| Slot::empty(n))
    }

    fn add(&mut self, n: u64, e: &Event) {
        let s = self.slot(n);
        s.events += 1;
        let is_error = match e.event_type {
            EventType::ErrorEvent => true,
            EventType::LlmRequest => matches!(e.status.as_deref(), Some("error" | "timeout")),
            _ => false,
        };
        if is_error {
            s.errors += 1;
        }
        if e.event_type == EventType::LlmRequest {
            if let Some(l) = e.latency_ms {
                s.latency.add(l);
            }
        }
        let tokens = e.prompt_tokens.unwrap_or(0) + e.completion_tokens.unwrap_or(0);
        s.tokens += u64::try_from(tokens).unwrap_or(0);
        s.cost += e.cost_usd.unwrap_or(0.0);
        if e.event_type == EventType::UserFeedback {
            if let Some(r) = e.rating {
                s.rating_sum += r;
                s.rating_n += 1;
            }
        }
    }

    /// The window of `secs` ending in slot `now_n`, `elapsed` seconds long at most.
    fn window(&self, now_n: u64, secs: u64, elapsed: f64) -> WindowStats {
        let count = secs / SLOT_SECS;
        let oldest = now_n.saturating_sub(count.saturating_sub(1));
        let mut w = Slot::empty(now_n);
        for s in self.slots.iter().flatten() {
            if s.n >= oldest && s.n <= now_n {
                w.events += s.events;
                w.errors += s.errors;
                w.tokens += s.tokens;
                w.cost += s.cost;
                w.rating_sum += s.rating_sum;
                w.rating_n += s.rating_n;
                let _ = w.latency.merge(&s.latency);
            }
        }
        let span = elapsed.clamp(1e-3, secs as f64);
        let q = |p: f64| {
            w.latency
                .quantile(p)
                .ok()
                .flatten()
                .map(|v| crate::round(v, 2))
        };
        WindowStats {
            span_secs: crate::round(span, 3),
            events: w.events,
            events_per_sec: w.events as f64 / span,
            errors: w.errors,
            error_rate: if w.events > 0 {
                w.errors as f64 / w.events as f64
            } else {
                0.0
            },
            latency_p50_ms: q(0.50),
            latency_p95_ms: q(0.95),
            latency_p99_ms: q(0.99),
            tokens_per_sec: w.tokens as f64 / span,
            cost_per_sec: w.cost / span,
            avg_rating: (w.rating_n > 0).then(|| w.rating_sum / w.rating_n as f64),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct WindowStats {
    /// The seconds the rates are over: the window, or less just after start.
    pub span_secs: f64,
    pub events: u64,
    pub events_per_sec: f64,
    pub errors: u64,
    pub error_rate: f64,
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub tokens_per_sec: f64,
    pub cost_per_sec: f64,
    pub avg_rating: Option<f64>,
}

struct Windows {
    total: Series,
    topics: HashMap<String, Series>,
    models: HashMap<String, Series>,
    consumed: u64,
    rejected: u64,
    /// Arrival minus the message's timestamp, of the latest message.
    lag_ms: f64,
}

/// The live stats of one process.
pub struct LiveStats {
    started: Instant,
    max_models: usize,
    group: String,
    windows: Mutex<Windows>,
    snapshot: RwLock<Arc<Vec<u8>>>,
}

#[derive(Serialize)]
struct Snapshot<'a> {
    generated_at: chrono::DateTime<Utc>,
    consumer_group: &'a str,
    uptime_secs: f64,
    consumed_total: u64,
    rejected_total: u64,
    lag_ms: f64,
    total: HashMap<&'static str, WindowStats>,
    topics: HashMap<&'a str, HashMap<&'static str, WindowStats>>,
    models: HashMap<&'a str, HashMap<&'static str, WindowStats>>,
}

impl LiveStats {
    pub fn new(group: &str, max_models: usize) -> Arc<LiveStats> {
        let live = Arc::new(LiveStats {
            started: Instant::now(),
            max_models,
            group: group.to_string(),
            windows: Mutex::new(Windows {
                total: Series::new(),
                topics: HashMap::new(),
                models: HashMap::new(),
                consumed: 0,
                rejected: 0,
                lag_ms: 0.0,
            }),
            snapshot: RwLock::new(Arc::new(b"{}".to_vec())),
        });
        live.refresh();
        live
    }

    fn slot_now(&self) -> u64 {
        self.started.elapsed().as_secs() / SLOT_SECS
    }

    /// Counts one event read from `topic`, `lag_ms` after it was produced.
    pub fn record(&self, topic: &str, event: &Event, lag_ms: f64) {
        let n = self.slot_now();
        let Ok(mut w) = self.windows.lock() else {
            return;
        };
        w.consumed += 1;
        w.lag_ms = lag_ms;
        w.total.add(n, event);
        if let Some(s) = w.topics.get_mut(topic) {
            s.add(n, event);
        } else {
            let mut s = Series::new();
            s.add(n, event);
            w.topics.insert(topic.to_string(), s);
        }
        if let Some(model) = event.model.as_deref() {
            let key = if w.models.contains_key(model) || w.models.len() < self.max_models {
                model
            } else {
                OTHER
            };
            // A new String only for a model seen for the first time.
            match w.models.get_mut(key) {
                Some(s) => s.add(n, event),
                None => {
                    let mut s = Series::new();
                    s.add(n, event);
                    w.models.insert(key.to_string(), s);
                }
            }
        }
    }

    pub fn rejected(&self) {
        if let Ok(mut w) = self.windows.lock() {
            w.consumed += 1;
            w.rejected += 1;
        }
    }

    /// Rebuilds the snapshot and the Prometheus gauges.
    pub fn refresh(&self) {
        let n = self.slot_now();
        let uptime = self.started.elapsed().as_secs_f64();
        let Ok(w) = self.windows.lock() else {
            return;
        };
        let windows = |s: &Series| -> HashMap<&'static str, WindowStats> {
            WINDOWS
                .iter()
                .map(|(name, secs)| {
                    // The oldest slot's start bounds the window's real length.
                    let first = n.saturating_sub(secs / SLOT_SECS - 1) * SLOT_SECS;
                    let span = (uptime - first as f64).min(*secs as f64);
                    (*name, s.window(n, *secs, span))
                })
                .collect()
        };
        let snapshot = Snapshot {
            generated_at: Utc::now(),
            consumer_group: &self.group,
            uptime_secs: crate::round(uptime, 1),
            consumed_total: w.consumed,
            rejected_total: w.rejected,
            lag_ms: w.lag_ms,
            total: windows(&w.total),
            topics: w
                .topics
                .iter()
                .map(|(k, s)| (k.as_str(), windows(s)))
                .collect(),
            models: w
                .models
                .iter()
                .map(|(k, s)| (k.as_str(), windows(s)))
                .collect(),
        };
        for (scope, map) in [("topic", &snapshot.topics), ("model", &snapshot.models)] {
            for (name, ws) in map {
                for (window, stats) in ws {
                    let labels = [
                        ("scope", scope.to_string()),
                        ("name", name.to_string()),
                        ("window", window.to_string()),
                    ];
                    metrics::gauge!("live_events_per_second", &labels).set(stats.events_per_sec);
                    metrics::gauge!("live_error_rate", &labels).set(stats.error_rate);
                    metrics::gauge!("live_tokens_per_second", &labels).set(stats.tokens_per_sec);
                    metrics::gauge!("live_cost_usd_per_second", &labels).set(stats.cost_per_sec);
                    if let Some(p) = stats.latency_p95_ms {
                        metrics::gauge!("live_latency_p95_ms", &labels).set(p);
                    }
                }
            }
        }
        metrics::gauge!("live_stats_lag_seconds").set(w.lag_ms / 1000.0);
        if let Ok(bytes) = serde_json::to_vec(&snapshot) {
            drop(w);
            if let Ok(mut s) = self.snapshot.write() {
                *s = Arc::new(bytes);
            }
        }
    }

    /// The latest snapshot, as JSON.
    pub fn snapshot_json(&self) -> Arc<Vec<u8>> {
        self.snapshot
            .read()
            .map(|s| s.clone())
            .unwrap_or_else(|_| Arc::new(b"{}".to_vec()))
    }

    /// Consumes the event topics from their latest offsets on a thread of
    /// its own until `stop`; refreshes the snapshot every second.
    pub fn spawn_consumer(
        self: &Arc<Self>,
        config: &Config,
        stop: Arc<AtomicBool>,
    ) -> anyhow::Result<std::thread::JoinHandle<()>> {
        let kafka = config.kafka.clone();
        let consumer: BaseConsumer = crate::kafka::build_consumer(&kafka, &self.group)?;
        let mut assignment = TopicPartitionList::new();
        for (topic, _) in config.topics.event_topics() {
            for p in crate::kafka::partitions_of(&consumer, &kafka, topic)? {
                assignment.add_partition_offset(topic, p, Offset::End)?;
            }
        }
        consumer.assign(&assignment)?;
        let max_bytes = config.ingest.max_event_bytes;
        let live = self.clone();
        Ok(std::thread::Builder::new()
            .name("live-stats".into())
            .spawn(move || {
                let mut last_refresh = Instant::now();
                let mut per_topic: HashMap<String, u64> = HashMap::new();
                while !stop.load(Ordering::Relaxed) {
                    if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                        let topic = m.topic();
                        match crate::events::parse(m.payload(), max_bytes) {
                            Ok(event) => {
                                let lag = m
                                    .timestamp()
                                    .to_millis()
                                    .map(|t| (Utc::now().timestamp_millis() - t).max(0) as f64)
                                    .unwrap_or(0.0);
                                live.record(topic, &event, lag);
                            }
                            Err(_) => live.rejected(),
                        }
                        *per_topic.entry(topic.to_string()).or_default() += 1;
                    }
                    if last_refresh.elapsed() >= Duration::from_secs(1) {
                        for (topic, n) in per_topic.drain() {
                            metrics::counter!("kafka_events_total", "topic" => topic).increment(n);
                        }
                        live.refresh();
                        last_refresh = Instant::now();
                    }
                }
            })?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(model: &str, latency: f64, status: &str) -> Event {
        let json = format!(
            r#"{{"event_id":"{}","event_type":"llm_request","timestamp":"2026-03-01T00:00:00Z","source":"api","data":{{"model":"{model}","latency_ms":{latency},"prompt_tokens":10,"completion_tokens":5,"cost_usd":0.5,"status":"{status}"}}}}"#,
            uuid::Uuid::new_v4()
        );
        crate::events::parse(Some(json.as_bytes()), 1 << 20).expect("valid event")
    }

    #[test]
    fn windows_count_and_models_are_capped() {
        let live = LiveStats::new("g", 2);
        for i in 0..100 {
            let status = if i % 4 == 0 { "error" } else { "success" };
            live.record(
                "llm",
                &event(&format!("m{}", i % 5), 100.0 + i as f64, status),
                5.0,
            );
        }
        live.refresh();
        let v: serde_json::Value = serde_json::from_slice(&live.snapshot_json()).expect("json");
        assert_eq!(v["total"]["1m"]["events"], 100);
        assert_eq!(v["total"]["15m"]["errors"], 25);
        assert_eq!(v["topics"]["llm"]["5m"]["events"], 100);
        let models = v["models"].as_object().expect("models");
        assert_eq!(models.len(), 3, "{models:?}");
        assert_eq!(models["other"]["1m"]["events"], 60);
        let p50 = v["total"]["1m"]["latency_p50_ms"].as_f64().expect("p50");
        assert!((p50 - 149.0).abs() / 149.0 < 0.03, "{p50}");
    }
}
