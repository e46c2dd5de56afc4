//! `hxjobs bench stream`: how soon a counted event reaches the clients of
//! the live figures. Events are counted here at a steady rate (as the live
//! consumer counts them); WebSocket clients on `/stats/ws` and
//! server-sent-event clients on `/stats/stream` of an API served by this
//! process on loopback read every snapshot; for each event, the time from
//! its being counted to the first snapshot a client read that includes it.
//! The baseline is a subscriber in this process, without HTTP.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::scaleout::percentile;
use crate::config::Config;
use crate::db::{self, Pools};
use crate::live::LiveStats;
use crate::server;
use crate::web::ApiState;

/// Per transport: its clients and the latencies they saw (ms).
#[derive(Debug, Clone)]
pub struct Transport {
    pub name: String,
    pub clients: usize,
    /// Sorted.
    pub latencies_ms: Vec<f64>,
    /// Snapshots read, over all clients.
    pub snapshots: u64,
    /// The longest time any client went without a snapshot (ms).
    pub longest_gap_ms: f64,
}

#[derive(Debug, Clone)]
pub struct StreamBench {
    pub events: u64,
    pub rate: u64,
    pub secs: u64,
    pub transports: Vec<Transport>,
    /// Past the cap, one more WebSocket and one more stream were refused 503.
    pub capped: (bool, bool),
    /// How late each event was counted against its place in the steady
    /// rate (ms, sorted): the clients share the cores with the counting.
    pub behind_ms: Vec<f64>,
}

impl StreamBench {
    pub fn p99(&self, name: &str) -> Option<f64> {
        self.transports
            .iter()
            .find(|t| t.name == name)
            .and_then(|t| percentile(&t.latencies_ms, 99.0))
    }
}

impl fmt::Display for StreamBench {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} events counted at {}/s for {} s; snapshots published at most every {} ms",
            self.events,
            self.rate,
            self.secs,
            crate::live::PUBLISH_GAP.as_millis()
        )?;
        let base = self
            .transports
            .first()
            .and_then(|t| percentile(&t.latencies_ms, 99.0));
        for t in &self.transports {
            let p =
                |q| percentile(&t.latencies_ms, q).map_or("n/a".into(), |v| format!("{v:.1} ms"));
            let ratio = match (percentile(&t.latencies_ms, 99.0), base) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
                _ => "n/a".into(),
            };
            writeln!(
                f,
                "  {:<44} {:>3} clients  counted → received: p50 {:>9}  p99 {:>9}  max {:>9}  ({} samples, {} snapshots, longest gap {:.0} ms; p99 {} of the baseline)",
                t.name,
                t.clients,
                p(50.0),
                p(99.0),
                p(100.0),
                t.latencies_ms.len(),
                t.snapshots,
                t.longest_gap_ms,
                ratio
            )?;
        }
        let b = |q| percentile(&self.behind_ms, q).map_or("n/a".into(), |v| format!("{v:.1} ms"));
        writeln!(
            f,
            "  counting behind its steady schedule (the clients share the cores): p50 {}  p99 {}",
            b(50.0),
            b(99.0)
        )?;
        write!(
            f,
            "  past the caps: one more WebSocket {}, one more event stream {}",
            if self.capped.0 {
                "refused 503"
            } else {
                "NOT refused"
            },
            if self.capped.1 {
                "refused 503"
            } else {
                "NOT refused"
            }
        )
    }
}

/// When each event was counted: the `n`th counted at `counted[n - 1]`.
type Counted = Arc<Mutex<Vec<Instant>>>;

/// What one client saw: latencies, snapshots, longest gap.
#[derive(Default)]
struct Seen {
    latencies_ms: Vec<f64>,
    snapshots: u64,
    longest_gap_ms: f64,
    /// The events included so far.
    upto: u64,
    last: Option<Instant>,
}

impl Seen {
    /// A snapshot including `consumed` events, read `at`.
    fn read(&mut self, consumed: u64, at: Instant, counted: &Counted, from: Instant) {
        self.snapshots += 1;
        if let Some(last) = self.last {
            self.longest_gap_ms = self
                .longest_gap_ms
                .max(at.duration_since(last).as_secs_f64() * 1000.0);
        }
        self.last = Some(at);
        if consumed <= self.upto {
            return;
        }
        if let Ok(times) = counted.lock() {
            for k in self.upto..consumed.min(times.len() as u64) {
                let t = times[k as usize];
                // Only events counted after the clients were connected.
                if t >= from {
                    self.latencies_ms
                        .push(at.duration_since(t).as_secs_f64() * 1000.0);
                }
            }
        }
        self.upto = consumed;
    }
}

/// The `"consumed_total":N` of a snapshot's text.
fn consumed_of(text: &str) -> Option<u64> {
    let rest = &text[text.find("\"consumed_total\":")? + "\"consumed_total\":".len()..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

pub async fn stream(
    config: &Config,
    rate: u64,
    secs: u64,
    sockets: usize,
    streams: usize,
) -> anyhow::Result<StreamBench> {
    let pool = db::connect_and_migrate(&config.database).await?;
    let stop = CancellationToken::new();
    let live = LiveStats::new("bench", config.live_stats.max_models);
    live.set_available();
    live.spawn_publisher(stop.clone());
    let mut config = config.clone();
    config.api.max_websockets = sockets;
    config.api.max_sse_streams = streams;
    let state = ApiState::new(
        Arc::new(config.clone()),
        Pools::new(pool),
        Vec::new(),
        Some(live.clone()),
        stop.clone(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let server = tokio::spawn(server::serve(listener, state, Duration::from_secs(1)));
    tokio::time::sleep(Duration::from_millis(500)).await;

    let counted: Counted = Arc::new(Mutex::new(Vec::new()));
    let done = CancellationToken::new();
    let from = Instant::now() + Duration::from_millis(1500);
    let mut tasks = Vec::new();
    // The baseline: a subscriber in this process.
    {
        let mut rx = live.subscribe();
        let (counted, done) = (counted.clone(), done.clone());
        tasks.push((
            "baseline: a subscriber in this process (no HTTP)",
            tokio::spawn(async move {
                let mut seen = Seen::default();
                loop {
                    tokio::select! {
                        _ = done.cancelled() => break,
                        r = rx.changed() => {
                            if r.is_err() { break; }
                            let data = rx.borrow_and_update().clone();
                            let at = Instant::now();
                            if let Some(n) = consumed_of(&String::from_utf8_lossy(&data)) {
                                seen.read(n, at, &counted, from);
                            }
                        }
                    }
                }
                seen
            }),
        ));
    }
    for _ in 0..sockets {
        let (counted, done) = (counted.clone(), done.clone());
        let (mut socket, _) =
            tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/stats/ws")).await?;
        tasks.push((
            "WebSocket /stats/ws",
            tokio::spawn(async move {
                let mut seen = Seen::default();
                loop {
                    tokio::select! {
                        _ = done.cancelled() => break,
                        m = socket.next() => match m {
                            Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text))) => {
                                let at = Instant::now();
                                if let Some(n) = consumed_of(text.as_str()) {
                                    seen.read(n, at, &counted, from);
                                }
                            }
                            Some(Ok(_)) => {}
                            _ => break,
                        },
                    }
                }
                let _ = socket.close(None).await;
                seen
            }),
        ));
    }
    for _ in 0..streams {
        let (counted, done) = (counted.clone(), done.clone());
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        tcp.write_all(
            format!("GET /stats/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n")
                .as_bytes(),
        )
        .await?;
        tasks.push((
            "server-sent events /stats/stream",
            tokio::spawn(async move {
                let mut seen = Seen::default();
                let mut buf = vec![0u8; 1 << 16];
                let mut pending = String::new();
                loop {
                    tokio::select! {
                        _ = done.cancelled() => break,
                        r = tcp.read(&mut buf) => match r {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                let at = Instant::now();
                                pending.push_str(&String::from_utf8_lossy(&buf[..n]));
                                // Each event ends with a blank line.
                                while let Some(end) = pending.find("\n\n") {
                                    let event: String = pending.drain(..end + 2).collect();
                                    if let Some(n) = consumed_of(&event) {
                                        seen.read(n, at, &counted, from);
                                    }
                                }
                            }
                        },
                    }
                }
                seen
            }),
        ));
    }
    // Past the caps, one more of each is refused.
    let socket_capped =
        match tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/stats/ws")).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => r.status() == 503,
            _ => false,
        };
    let stream_capped = {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        tcp.write_all(
            format!(
                "GET /stats/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await?;
        let mut head = vec![0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut head)).await??;
        String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 503")
    };

    // Count events at the rate, as the consumer would.
    let now = chrono::Utc::now();
    let spec = crate::demo::DemoSpec {
        events: rate * secs + rate * 2,
        from: now,
        to: now + chrono::TimeDelta::seconds(secs as i64 + 2),
        bad_ratio: 0.0,
        duplicate_ratio: 0.0,
        seed: 5,
        max_event_bytes: config.ingest.max_event_bytes,
    };
    let events: Vec<(String, crate::events::Event)> = crate::demo::Generator::new(spec)
        .map_err(anyhow::Error::msg)?
        .filter_map(|r| {
            let e = crate::events::parse(r.payload.as_deref(), 1 << 20).ok()?;
            Some((r.event_type.as_str().to_string(), e))
        })
        .collect();
    let started = Instant::now();
    let total = (rate * secs) as usize;
    let every = Duration::from_secs_f64(1.0 / rate as f64);
    let mut behind_ms = Vec::with_capacity(total);
    for (i, (topic, event)) in events.iter().take(total).enumerate() {
        let due = started + every * i as u32;
        let wait = due.saturating_duration_since(Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let now = Instant::now();
        behind_ms.push(now.saturating_duration_since(due).as_secs_f64() * 1000.0);
        if let Ok(mut c) = counted.lock() {
            c.push(now);
        }
        live.record(topic, event, 0.0);
    }
    // The last snapshots arrive.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    done.cancel();
    let mut by_name: Vec<Transport> = Vec::new();
    for (name, task) in tasks {
        let seen = task.await?;
        match by_name.iter_mut().find(|t| t.name == name) {
            Some(t) => {
                t.clients += 1;
                t.latencies_ms.extend(seen.latencies_ms);
                t.snapshots += seen.snapshots;
                t.longest_gap_ms = t.longest_gap_ms.max(seen.longest_gap_ms);
            }
            None => by_name.push(Transport {
                name: name.to_string(),
                clients: 1,
                latencies_ms: seen.latencies_ms,
                snapshots: seen.snapshots,
                longest_gap_ms: seen.longest_gap_ms,
            }),
        }
    }
    for t in &mut by_name {
        t.latencies_ms.sort_by(f64::total_cmp);
    }
    behind_ms.sort_by(f64::total_cmp);
    stop.cancel();
    server.abort();
    Ok(StreamBench {
        behind_ms,
        events: total as u64,
        rate,
        secs,
        transports: by_name,
        capped: (socket_capped, stream_capped),
    })
}
