//! `hxjobs bench api`: the real router (`/health`, `/stats`) served on
//! loopback in this process, loaded with wrk; baseline in the same run: a
//! bare axum handler returning a constant, on the same runtime. `GET /jobs`
//! is measured twice: through hxjobs's own server with every request check
//! (Host, origin, time limit, panic answer, connection cap), and through
//! plain `axum::serve` without them, in paired rounds (which server goes
//! first alternates); the checks may cost at most 5%: the median of the
//! rounds' ratios.

use std::fmt;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::db::{self, Pools};
use crate::live::LiveStats;
use crate::server;
use crate::web::ApiState;

#[derive(Debug, Clone)]
pub struct ApiBench {
    pub connections: u32,
    pub secs: u32,
    /// (path, requests/s, p50 ms, p99 ms, non-2xx).
    pub results: Vec<(String, f64, f64, f64, u64)>,
    /// `GET /jobs` with the checks over without them, per paired round.
    pub jobs_ratios: Vec<f64>,
}

impl ApiBench {
    /// The median of [`ApiBench::jobs_ratios`].
    pub fn jobs_ratio(&self) -> f64 {
        let mut r = self.jobs_ratios.clone();
        r.sort_by(f64::total_cmp);
        r.get(r.len() / 2).copied().unwrap_or(f64::NAN)
    }
}

impl fmt::Display for ApiBench {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "hxjobs bench api: wrk, {} connections, {} s per endpoint, loopback",
            self.connections, self.secs
        )?;
        let base = self.results.first().map(|r| r.1).unwrap_or(1.0);
        for (path, rps, p50, p99, bad) in &self.results {
            let target = if path.starts_with("baseline") || path.ends_with("no request checks") {
                String::new()
            } else if path == "GET /jobs" {
                let ratio = self.jobs_ratio();
                format!(
                    "  ({ratio:.3} of unchecked, median of {} paired rounds; target >= 0.95: {})",
                    self.jobs_ratios.len(),
                    if ratio >= 0.95 && *bad == 0 {
                        "met"
                    } else {
                        "NOT met"
                    }
                )
            } else if path.ends_with("/metrics") {
                // A scrape must answer within 50 ms whatever is down.
                format!(
                    "  (target p99 <= 50 ms: {})",
                    if *p99 <= 50.0 && *bad == 0 {
                        "met"
                    } else {
                        "NOT met"
                    }
                )
            } else {
                format!(
                    "  (target >= 10000 req/s and p99 <= 10 ms: {})",
                    if *rps >= 10_000.0 && *p99 <= 10.0 && *bad == 0 {
                        "met"
                    } else {
                        "NOT met"
                    }
                )
            };
            writeln!(
                f,
                "  {path:<28} {rps:>9.0} req/s  p50 {p50:>6.2} ms  p99 {p99:>6.2} ms  non-2xx {bad}  ({:.2} of baseline){target}",
                rps / base
            )?;
        }
        let rounds: Vec<String> = self.jobs_ratios.iter().map(|r| format!("{r:.3}")).collect();
        writeln!(
            f,
            "  GET /jobs checked / unchecked by round: {}",
            rounds.join(" ")
        )
    }
}

/// Paired rounds of `GET /jobs` (odd: the median is a round).
const JOBS_ROUNDS: usize = 7;

/// wrk's latency figure (`123.45us`, `1.20ms`, `2.00s`) in milliseconds.
fn millis(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, scale) = if let Some(v) = s.strip_suffix("us") {
        (v, 0.001)
    } else if let Some(v) = s.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1000.0)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|v| v * scale)
}

fn wrk(url: &str, connections: u32, secs: u32) -> anyhow::Result<(f64, f64, f64, u64)> {
    let out = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{secs}s"),
            "--latency",
            url,
        ])
        .output()
        .map_err(|e| anyhow::anyhow!("wrk is needed (apt-get install wrk): {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix).map(|r| r.trim().to_string()))
    };
    let rps = field("Requests/sec:")
        .and_then(|v| v.parse::<f64>().ok())
        .ok_or_else(|| anyhow::anyhow!("no Requests/sec in wrk's output:\n{text}"))?;
    let p50 = field("50%").and_then(|v| millis(&v)).unwrap_or(f64::NAN);
    let p99 = field("99%").and_then(|v| millis(&v)).unwrap_or(f64::NAN);
    let bad = field("Non-2xx or 3xx responses:")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    Ok((rps, p50, p99, bad))
}

pub async fn api(config: &Config, connections: u32, secs: u32) -> anyhow::Result<ApiBench> {
    let pool = db::connect_and_migrate(&config.database).await?;
    let stop = CancellationToken::new();
    let live = LiveStats::new("bench", config.live_stats.max_models);
    // Some traffic in the windows, so /stats has topics and models to report.
    let now = chrono::Utc::now();
    let spec = crate::demo::DemoSpec {
        events: 20_000,
        from: now - chrono::TimeDelta::minutes(10),
        to: now,
        bad_ratio: 0.0,
        duplicate_ratio: 0.0,
        seed: 3,
        max_event_bytes: config.ingest.max_event_bytes,
    };
    for r in crate::demo::Generator::new(spec).map_err(anyhow::Error::msg)? {
        if let Some(Ok(e)) = r.payload.map(|p| crate::events::parse(Some(&p), 1 << 20)) {
            live.record(r.event_type.as_str(), &e, 1.0);
        }
    }
    live.refresh();
    // Fed here, not by a consumer.
    live.set_available();
    let jobs = crate::dag::job::load(&config.jobs.dir)
        .and_then(crate::dag::job::Loaded::all_valid)
        .map_err(anyhow::Error::msg)?
        .into_iter()
        .map(Arc::new)
        .collect();
    let state = ApiState::new(
        Arc::new(config.clone()),
        Pools::new(pool),
        jobs,
        Some(live),
        stop.clone(),
    );
    // `server::serve` starts the health checks both servers read.
    let unchecked = server::router_without_checks(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let server = tokio::spawn(server::serve(listener, state, Duration::from_secs(1)));
    let unchecked_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let unchecked_port = unchecked_listener.local_addr()?.port();
    let unchecked_server =
        tokio::spawn(async move { axum::serve(unchecked_listener, unchecked).await });
    let bare = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
    let bare_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let bare_port = bare_listener.local_addr()?.port();
    let bare_server = tokio::spawn(async move { axum::serve(bare_listener, bare).await });
    // Let the first health check finish.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut results = Vec::new();
    for (name, url) in [
        (
            "baseline: bare axum GET /".to_string(),
            format!("http://127.0.0.1:{bare_port}/"),
        ),
        (
            "GET /health".to_string(),
            format!("http://127.0.0.1:{port}/health"),
        ),
        (
            "GET /stats".to_string(),
            format!("http://127.0.0.1:{port}/stats"),
        ),
        (
            "GET /metrics".to_string(),
            format!("http://127.0.0.1:{port}/metrics"),
        ),
    ] {
        let (rps, p50, p99, bad) =
            tokio::task::spawn_blocking(move || wrk(&url, connections, secs)).await??;
        results.push((name, rps, p50, p99, bad));
    }
    // `/jobs` reads PostgreSQL, which shares the cores and drifts: the two
    // servers take turns in paired rounds, the first of a pair alternating,
    // and each round's ratio is taken within its pair.
    let mut rounds: [Vec<(f64, f64, f64, u64)>; 2] = [Vec::new(), Vec::new()];
    for round in 0..JOBS_ROUNDS {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let p = [unchecked_port, port][i];
            let url = format!("http://127.0.0.1:{p}/jobs");
            let secs = secs.div_ceil(2).max(1);
            rounds[i]
                .push(tokio::task::spawn_blocking(move || wrk(&url, connections, secs)).await??);
        }
    }
    let jobs_ratios = rounds[1]
        .iter()
        .zip(&rounds[0])
        .map(|(checked, unchecked)| checked.0 / unchecked.0)
        .collect();
    for (i, name) in ["GET /jobs, no request checks", "GET /jobs"]
        .into_iter()
        .enumerate()
    {
        let mut r = rounds[i].clone();
        r.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (rps, p50, p99, _) = r[r.len() / 2];
        let bad = r.iter().map(|x| x.3).sum();
        results.insert(1 + i, (name.to_string(), rps, p50, p99, bad));
    }
    stop.cancel();
    server.abort();
    unchecked_server.abort();
    bare_server.abort();
    Ok(ApiBench {
        connections,
        secs,
        results,
        jobs_ratios,
    })
}
