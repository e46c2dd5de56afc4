//! `hxjobs bench live`: the live-stats engine (parse each message, count
//! it into the 1/5/15-minute windows, rebuild the snapshot every second)
//! fed demo messages at a fixed rate for N seconds. Per second: events
//! taken, the lag of the last one behind its scheduled arrival, resident
//! memory. Baseline in the same run: parsing alone, as fast as it goes.

use std::fmt;
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};

use crate::config::Config;
use crate::demo::{DemoSpec, Generator};
use crate::live::LiveStats;

#[derive(Debug, Clone)]
pub struct LiveBench {
    pub rate: u64,
    pub secs: u64,
    /// (second, events taken, lag at the end of the second, resident MB).
    pub seconds: Vec<(u64, u64, Duration, f64)>,
    pub parse_only_per_sec: f64,
    pub unpaced_per_sec: f64,
}

impl fmt::Display for LiveBench {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "hxjobs bench live: {} events/s offered for {} s",
            self.rate, self.secs
        )?;
        writeln!(f, "  second  events  lag ms  rss MB")?;
        for (s, n, lag, rss) in &self.seconds {
            writeln!(
                f,
                "  {s:>6}  {n:>6}  {:>6.1}  {rss:>6.1}",
                lag.as_secs_f64() * 1000.0
            )?;
        }
        let total: u64 = self.seconds.iter().map(|s| s.1).sum();
        let max_lag = self.seconds.iter().map(|s| s.2).max().unwrap_or_default();
        let rss: Vec<f64> = self.seconds.iter().map(|s| s.3).collect();
        let (first, last) = (
            rss.get(rss.len() / 4).copied().unwrap_or(0.0),
            rss.last().copied().unwrap_or(0.0),
        );
        writeln!(
            f,
            "  kept up: {:.0} events/s on average, max lag {:.1} ms (target <= 1000 ms: {}), memory {first:.1} MB after a quarter, {last:.1} MB at the end",
            total as f64 / self.secs as f64,
            max_lag.as_secs_f64() * 1000.0,
            if max_lag <= Duration::from_secs(1) && total as f64 >= self.rate as f64 * self.secs as f64 * 0.99 { "met" } else { "NOT met" }
        )?;
        write!(
            f,
            "  unpaced: parse + count {:.0} events/s; baseline parse alone {:.0} events/s (ratio {:.2})",
            self.unpaced_per_sec,
            self.parse_only_per_sec,
            self.unpaced_per_sec / self.parse_only_per_sec.max(1e-9)
        )
    }
}

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map(|pages| pages * 4096.0 / 1_048_576.0)
        .unwrap_or(0.0)
}

pub async fn live(config: &Config, rate: u64, secs: u64) -> anyhow::Result<LiveBench> {
    let config = config.clone();
    tokio::task::spawn_blocking(move || run(&config, rate, secs)).await?
}

fn run(config: &Config, rate: u64, secs: u64) -> anyhow::Result<LiveBench> {
    let now = Utc::now();
    let spec = DemoSpec {
        events: 200_000,
        from: now - TimeDelta::hours(1),
        to: now,
        bad_ratio: 0.0,
        duplicate_ratio: 0.0,
        seed: 7,
        max_event_bytes: config.ingest.max_event_bytes,
    };
    let payloads: Vec<(String, Vec<u8>)> = Generator::new(spec)
        .map_err(anyhow::Error::msg)?
        .filter_map(|r| Some((r.event_type.as_str().to_string(), r.payload?)))
        .collect();
    let max = config.ingest.max_event_bytes;

    // Baselines: parsing alone, and parse + count, unpaced.
    let started = Instant::now();
    let mut ok = 0u64;
    for (_, p) in &payloads {
        ok += u64::from(crate::events::parse(Some(p), max).is_ok());
    }
    let parse_only_per_sec = ok as f64 / started.elapsed().as_secs_f64();
    let live = LiveStats::new("bench", config.live_stats.max_models);
    let started = Instant::now();
    for (topic, p) in &payloads {
        if let Ok(e) = crate::events::parse(Some(p), max) {
            live.record(topic, &e, 0.0);
        }
    }
    let unpaced_per_sec = payloads.len() as f64 / started.elapsed().as_secs_f64();

    // Paced: event k is due at k / rate seconds.
    let live = LiveStats::new("bench", config.live_stats.max_models);
    let started = Instant::now();
    let mut seconds = Vec::new();
    let (mut k, mut taken_this_second, mut second) = (0u64, 0u64, 1u64);
    let mut last_refresh = Instant::now();
    let total = rate * secs;
    while k < total {
        let elapsed = started.elapsed();
        let due = ((elapsed.as_secs_f64() * rate as f64) as u64).min(total);
        if due <= k {
            std::thread::sleep(Duration::from_micros(200));
        }
        while k < due {
            let (topic, p) = &payloads[(k as usize) % payloads.len()];
            if let Ok(e) = crate::events::parse(Some(p), max) {
                live.record(topic, &e, 0.0);
            }
            k += 1;
            taken_this_second += 1;
        }
        if last_refresh.elapsed() >= Duration::from_secs(1) {
            live.refresh();
            last_refresh = Instant::now();
        }
        if started.elapsed() >= Duration::from_secs(second) {
            let scheduled = Duration::from_secs_f64(k as f64 / rate as f64);
            let lag = started.elapsed().saturating_sub(scheduled);
            seconds.push((second, taken_this_second, lag, rss_mb()));
            taken_this_second = 0;
            second += 1;
        }
    }
    if taken_this_second > 0 {
        let scheduled = Duration::from_secs_f64(k as f64 / rate as f64);
        seconds.push((
            second,
            taken_this_second,
            started.elapsed().saturating_sub(scheduled),
            rss_mb(),
        ));
    }
    Ok(LiveBench {
        rate,
        secs,
        seconds,
        parse_only_per_sec,
        unpaced_per_sec,
    })
}
