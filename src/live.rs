//! Live stats: a consumer of its own (`live_stats.consumer_group`, manual
//! assignment from the latest offsets, nothing committed) keeps sliding
//! windows of 1, 5 and 15 minutes per topic and per model in memory:
//! events/s, error rate, latency p50/p95/p99, tokens/s, cost/s, average
//! rating. Time is bucketed in 10-second slots in fixed rings, latency in
//! DDSketches with a bounded number of bins, and models beyond
//! `live_stats.max_models` count as "other": memory stays bounded whatever
//! the traffic. A snapshot (JSON) is rebuilt every second and served as is.
//!
//! Errors are measured as everywhere in hxjobs (docs/measures.md): `errors`
//! are failed requests (llm_request with status error or timeout),
//! `error_rate` is failed requests / requests (null without requests), and
//! error events are counted on their own, never as errors.
//!
//! Every few seconds the consumer compares its position with each
//! partition's end: the distance is exported (`live_stats_lag_messages`,
//! `live_stats_lag_seconds`), and a partition that has data but makes no
//! progress (a message larger than a fetch, a broker that stopped serving
//! the fetch session) gets a new consumer with larger fetches, and as a
//! last resort its blocking message is counted as rejected and passed over.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

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
    requests: u64,
    /// Failed requests.
    errors: u64,
    error_events: u64,
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
            requests: 0,
            errors: 0,
            error_events: 0,
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
        match e.event_type {
            EventType::LlmRequest => {
                s.requests += 1;
                if crate::events::is_failed_request(e.status.as_deref()) {
                    s.errors += 1;
                }
            }
            EventType::ErrorEvent => s.error_events += 1,
            _ => {}
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
                w.requests += s.requests;
                w.errors += s.errors;
                w.error_events += s.error_events;
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
            requests: w.requests,
            errors: w.errors,
            error_rate: (w.requests > 0).then(|| w.errors as f64 / w.requests as f64),
            error_events: w.error_events,
            error_events_per_sec: w.error_events as f64 / span,
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
    /// llm_request events.
    pub requests: u64,
    /// Failed requests (status error or timeout).
    pub errors: u64,
    /// Failed requests / requests; `None` (null) without requests.
    pub error_rate: Option<f64>,
    /// error_event events, counted on their own.
    pub error_events: u64,
    pub error_events_per_sec: f64,
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
    /// Messages between the consumer's positions and the partition ends,
    /// at the last check; `None` before the first.
    behind_messages: Option<i64>,
    /// Seconds since the consumer last stood at every partition's end.
    behind_secs: f64,
}

/// The live stats of one process.
pub struct LiveStats {
    started: Instant,
    max_models: usize,
    group: String,
    windows: Mutex<Windows>,
    snapshot: RwLock<Arc<Vec<u8>>>,
    /// Why there are no figures yet (the consumer is starting, or could not
    /// start); `None` once it reads the topics.
    unavailable: RwLock<Option<String>>,
    /// Woken by every event counted: the publisher refreshes soon after.
    wake: tokio::sync::Notify,
    /// The latest snapshot, for streams to follow as it changes.
    published: tokio::sync::watch::Sender<Arc<Vec<u8>>>,
}

/// The shortest time between two published snapshots: events counted in a
/// burst go out together, a lone one at most this late (plus a refresh).
pub const PUBLISH_GAP: Duration = Duration::from_millis(20);

#[derive(Serialize)]
struct Snapshot<'a> {
    generated_at: chrono::DateTime<Utc>,
    consumer_group: &'a str,
    uptime_secs: f64,
    consumed_total: u64,
    rejected_total: u64,
    lag_ms: f64,
    /// Messages not read yet, up to the partition ends (null before the first check).
    behind_messages: Option<i64>,
    /// Seconds since the consumer last stood at every partition's end.
    behind_secs: f64,
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
                behind_messages: None,
                behind_secs: 0.0,
            }),
            snapshot: RwLock::new(Arc::new(b"{}".to_vec())),
            unavailable: RwLock::new(Some("the live-stats consumer is starting".to_string())),
            wake: tokio::sync::Notify::new(),
            published: tokio::sync::watch::channel(Arc::new(b"{}".to_vec())).0,
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
        drop(w);
        self.wake.notify_one();
    }

    pub fn rejected(&self) {
        if let Ok(mut w) = self.windows.lock() {
            w.consumed += 1;
            w.rejected += 1;
        }
        metrics::counter!("live_stats_rejected_total").increment(1);
    }

    /// Records how far the consumer is from the partition ends.
    fn behind(&self, messages: i64, secs: f64) {
        if let Ok(mut w) = self.windows.lock() {
            w.behind_messages = Some(messages);
            w.behind_secs = secs;
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
            behind_messages: w.behind_messages,
            behind_secs: crate::round(w.behind_secs, 1),
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
        // `scope="all"` is there from the start: 0 events/s while nothing
        // arrives (rates); error rate and latency stay absent without requests.
        let all: HashMap<&str, HashMap<&'static str, WindowStats>> =
            [("all", snapshot.total.clone())].into_iter().collect();
        for (scope, map) in [
            ("all", &all),
            ("topic", &snapshot.topics),
            ("model", &snapshot.models),
        ] {
            for (name, ws) in map {
                for (window, stats) in ws {
                    let labels = [
                        ("scope", scope.to_string()),
                        ("name", name.to_string()),
                        ("window", window.to_string()),
                    ];
                    metrics::gauge!("live_events_per_second", &labels).set(stats.events_per_sec);
                    if let Some(rate) = stats.error_rate {
                        metrics::gauge!("live_error_rate", &labels).set(rate);
                    }
                    metrics::gauge!("live_error_events_per_second", &labels)
                        .set(stats.error_events_per_sec);
                    metrics::gauge!("live_tokens_per_second", &labels).set(stats.tokens_per_sec);
                    metrics::gauge!("live_cost_usd_per_second", &labels).set(stats.cost_per_sec);
                    if let Some(p) = stats.latency_p95_ms {
                        metrics::gauge!("live_latency_p95_ms", &labels).set(p);
                    }
                }
            }
        }
        metrics::gauge!("live_stats_lag_seconds").set(w.behind_secs);
        if let Ok(bytes) = serde_json::to_vec(&snapshot) {
            drop(w);
            let bytes = Arc::new(bytes);
            if let Ok(mut s) = self.snapshot.write() {
                *s = bytes.clone();
            }
            self.published.send_replace(bytes);
        }
    }

    /// Follows the snapshot: the receiver sees each one published.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Arc<Vec<u8>>> {
        self.published.subscribe()
    }

    /// Publishes a fresh snapshot soon after events are counted (at most
    /// every [`PUBLISH_GAP`]), and every second besides (windows move on
    /// while nothing arrives), until `stop`.
    pub fn spawn_publisher(self: &Arc<Self>, stop: CancellationToken) {
        let live = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = live.wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.cancelled() => return,
                }
                live.refresh();
                tokio::time::sleep(PUBLISH_GAP).await;
            }
        });
    }

    /// `Err(why)` while there are no true figures to show.
    pub fn available(&self) -> Result<(), String> {
        match self.unavailable.read() {
            Ok(u) => u.clone().map_or(Ok(()), Err),
            Err(_) => Err("live stats are not readable".into()),
        }
    }

    /// Says the figures are being fed (by the consumer, or by a benchmark
    /// that records events itself).
    pub fn set_available(&self) {
        if let Ok(mut u) = self.unavailable.write() {
            *u = None;
        }
    }

    /// Records why the consumer is not running.
    pub fn set_unavailable(&self, why: String) {
        if let Ok(mut u) = self.unavailable.write() {
            *u = Some(why);
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
        stop: CancellationToken,
    ) -> anyhow::Result<std::thread::JoinHandle<()>> {
        let kafka = config.kafka.clone();
        let max_bytes = config.ingest.max_event_bytes;
        let fetch = crate::kafka::FETCH_BYTES.max(max_bytes + 4096);
        let probe: BaseConsumer = crate::kafka::build_consumer(&kafka, &self.group)?;
        let mut parts = Vec::new();
        for (topic, _) in config.topics.event_topics() {
            for p in crate::kafka::partitions_of(&probe, &kafka, topic)? {
                let (_, high) = crate::kafka::watermarks(&probe, &kafka, topic, p)?;
                parts.push(Part::new(topic, p, high));
            }
        }
        let mut reader = Reader {
            consumer: assigned(&kafka, &self.group, &parts, fetch)?,
            kafka,
            group: self.group.clone(),
            fetch,
            parts,
        };
        let live = self.clone();
        let thread = std::thread::Builder::new()
            .name("live-stats".into())
            .spawn(move || reader.run(&live, max_bytes, &stop))?;
        self.set_available();
        Ok(thread)
    }
}

/// How often the consumer compares its position with the partition ends.
const CHECK_EVERY: Duration = Duration::from_secs(2);
/// A partition with data that makes no progress this long is stalled.
const STALLED_AFTER: Duration = Duration::from_secs(10);

/// One assigned partition: where the consumer is, and where the end was.
struct Part {
    topic: String,
    partition: i32,
    /// The next offset to read.
    next: i64,
    /// The end at the last check, and when that check ran.
    end: i64,
    checked_at: Instant,
    /// When the partition last stood at an end seen by a check.
    current_at: Instant,
    /// When `next` last moved (or the consumer was rebuilt).
    moved_at: Instant,
}

impl Part {
    fn new(topic: &str, partition: i32, end: i64) -> Part {
        let now = Instant::now();
        Part {
            topic: topic.to_string(),
            partition,
            next: end,
            end,
            checked_at: now,
            current_at: now,
            moved_at: now,
        }
    }
}

/// A consumer assigned to every partition at its next offset.
fn assigned(
    kafka: &crate::config::KafkaConfig,
    group: &str,
    parts: &[Part],
    fetch_bytes: usize,
) -> anyhow::Result<BaseConsumer> {
    let consumer = crate::kafka::build_consumer_with(kafka, group, fetch_bytes)?;
    let mut tpl = TopicPartitionList::new();
    for p in parts {
        tpl.add_partition_offset(&p.topic, p.partition, Offset::Offset(p.next))?;
    }
    consumer.assign(&tpl)?;
    Ok(consumer)
}

/// The live consumer's loop and its bookkeeping.
struct Reader {
    consumer: BaseConsumer,
    kafka: crate::config::KafkaConfig,
    group: String,
    fetch: usize,
    parts: Vec<Part>,
}

impl Reader {
    fn run(&mut self, live: &LiveStats, max_bytes: usize, stop: &CancellationToken) {
        let mut index: HashMap<(String, i32), usize> = HashMap::new();
        for (i, p) in self.parts.iter().enumerate() {
            index.insert((p.topic.clone(), p.partition), i);
        }
        let mut last_refresh = Instant::now();
        let mut last_check = Instant::now();
        let mut per_topic: HashMap<String, u64> = HashMap::new();
        while !stop.is_cancelled() {
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
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
                    let key = (topic.to_string(), m.partition());
                    if let Some(p) = index.get(&key).and_then(|&i| self.parts.get_mut(i)) {
                        p.next = p.next.max(m.offset() + 1);
                        p.moved_at = Instant::now();
                    }
                }
                Some(Err(e)) => tracing::debug!(error = %e, "live stats consumer error"),
                None => {}
            }
            if last_check.elapsed() >= CHECK_EVERY {
                self.check(live);
                last_check = Instant::now();
            }
            if last_refresh.elapsed() >= Duration::from_secs(1) {
                for (topic, n) in per_topic.drain() {
                    metrics::counter!("kafka_events_total", "topic" => topic).increment(n);
                }
                live.refresh();
                last_refresh = Instant::now();
            }
        }
    }

    /// Compares each partition's position with its end, exports the
    /// distance and unblocks partitions that stopped moving.
    fn check(&mut self, live: &LiveStats) {
        let now = Instant::now();
        let mut behind_by_topic: HashMap<String, i64> = HashMap::new();
        let mut behind_secs: f64 = 0.0;
        let mut stalled = Vec::new();
        for (i, p) in self.parts.iter_mut().enumerate() {
            // Up to the end the previous check saw: current as of that check.
            if p.next >= p.end {
                p.current_at = p.checked_at;
            }
            let Ok((_, high)) =
                self.consumer
                    .fetch_watermarks(&p.topic, p.partition, Duration::from_millis(1000))
            else {
                continue;
            };
            p.end = high;
            p.checked_at = now;
            let behind = (high - p.next).max(0);
            *behind_by_topic.entry(p.topic.clone()).or_default() += behind;
            if behind > 0 {
                behind_secs = behind_secs.max(now.duration_since(p.current_at).as_secs_f64());
                if p.moved_at.elapsed() >= STALLED_AFTER {
                    stalled.push(i);
                }
            }
        }
        let total: i64 = behind_by_topic.values().sum();
        for (topic, n) in behind_by_topic {
            metrics::gauge!("live_stats_lag_messages", "topic" => topic).set(n as f64);
        }
        live.behind(total, behind_secs);
        if stalled.is_empty() {
            return;
        }
        if self.fetch < crate::kafka::LARGE_FETCH_BYTES {
            self.fetch = (self.fetch * 2).min(crate::kafka::LARGE_FETCH_BYTES);
            tracing::warn!(
                fetch_bytes = self.fetch,
                partitions = stalled.len(),
                "live stats: partitions with data stopped moving; reconnecting with larger fetches"
            );
        } else {
            // Larger fetches did not help: the message at the position is
            // counted as rejected and passed over.
            for &i in &stalled {
                if let Some(p) = self.parts.get_mut(i) {
                    tracing::warn!(
                        topic = %p.topic,
                        partition = p.partition,
                        offset = p.next,
                        "live stats: a message cannot be fetched; counted as rejected and skipped"
                    );
                    p.next += 1;
                    live.rejected();
                }
            }
        }
        for p in &mut self.parts {
            p.moved_at = now;
        }
        match assigned(&self.kafka, &self.group, &self.parts, self.fetch) {
            Ok(c) => self.consumer = c,
            Err(e) => tracing::warn!(error = %e, "live stats: consumer not rebuilt; retrying"),
        }
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
    fn error_events_are_not_request_errors() {
        let live = LiveStats::new("g", 4);
        let json = format!(
            r#"{{"event_id":"{}","event_type":"error_event","timestamp":"2026-03-01T00:00:00Z","source":"api","data":{{"error_type":"oom"}}}}"#,
            uuid::Uuid::new_v4()
        );
        let e = crate::events::parse(Some(json.as_bytes()), 1 << 20).expect("valid event");
        live.record("errors", &e, 1.0);
        live.refresh();
        let v: serde_json::Value = serde_json::from_slice(&live.snapshot_json()).expect("json");
        let w = &v["total"]["1m"];
        assert_eq!(w["errors"], 0, "{w}");
        assert_eq!(w["error_events"], 1, "{w}");
        assert!(w["error_rate"].is_null(), "no requests: n/a, {w}");
        live.record("llm", &event("m", 10.0, "timeout"), 1.0);
        live.record("llm", &event("m", 10.0, "success"), 1.0);
        live.refresh();
        let v: serde_json::Value = serde_json::from_slice(&live.snapshot_json()).expect("json");
        assert_eq!(v["total"]["1m"]["error_rate"], 0.5);
        assert_eq!(v["total"]["1m"]["errors"], 1);
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
        assert_eq!(v["total"]["15m"]["error_rate"], 0.25);
        assert_eq!(v["topics"]["llm"]["5m"]["events"], 100);
        let models = v["models"].as_object().expect("models");
        assert_eq!(models.len(), 3, "{models:?}");
        assert_eq!(models["other"]["1m"]["events"], 60);
        let p50 = v["total"]["1m"]["latency_p50_ms"].as_f64().expect("p50");
        assert!((p50 - 149.0).abs() / 149.0 < 0.03, "{p50}");
    }
}
