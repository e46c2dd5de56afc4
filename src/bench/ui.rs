//! `hxjobs bench ui`: the console's grid, calendar, durations and runs
//! pages for a job with 100,000 runs of 5 tasks, next to the JSON API call
//! that returns the grid's data (`GET /jobs/{job}/grid`), all served by the
//! real router on loopback in this process, in a scratch database. Time is measured by the client
//! from request to the last byte (it includes the loopback round trip, so
//! the server's own time is at most this).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::db::{self, Pools};
use crate::server;
use crate::web::ApiState;

#[derive(Debug, Clone)]
pub struct UiBench {
    pub runs: usize,
    pub columns: i64,
    pub requests: usize,
    /// (what, p50, p95, bytes).
    pub results: Vec<(String, Duration, Duration, usize)>,
}

impl fmt::Display for UiBench {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "hxjobs bench ui: a 5-task job with {} runs, {} grid columns per page, {} requests each, loopback",
            self.runs, self.columns, self.requests
        )?;
        let base = self.results.first().map(|r| r.1);
        for (what, p50, p95, bytes) in &self.results {
            let ratio = base.map_or(f64::NAN, |b| p50.as_secs_f64() / b.as_secs_f64());
            writeln!(
                f,
                "  {what:<34} p50 {:>7.2} ms  p95 {:>7.2} ms  {:>7.1} KB  ({ratio:.2} x the JSON call's time)",
                p50.as_secs_f64() * 1000.0,
                p95.as_secs_f64() * 1000.0,
                *bytes as f64 / 1000.0
            )?;
        }
        let pages: Vec<_> = self
            .results
            .iter()
            .filter(|r| {
                r.0.starts_with("grid")
                    || r.0.starts_with("calendar")
                    || r.0.starts_with("durations")
            })
            .collect();
        let met = !pages.is_empty()
            && pages
                .iter()
                .all(|(_, _, p95, bytes)| *p95 <= Duration::from_millis(200) && *bytes <= 300_000);
        write!(
            f,
            "  targets (grid, calendar and duration pages p95 <= 200 ms, <= 300 KB): {}",
            if met { "met" } else { "NOT met" }
        )
    }
}

const JOB: &str = r#"name = "bench_grid"
schedule = "0 * * * *"
interval = "hour"
start_date = "2024-01-01"
[tasks.extract]
kind = "shell"
command = "true"
[tasks.validate]
kind = "shell"
depends_on = ["extract"]
command = "true"
[tasks.transform]
kind = "shell"
depends_on = ["validate"]
command = "true"
[tasks.load]
kind = "shell"
depends_on = ["transform"]
command = "true"
[tasks.report]
kind = "shell"
depends_on = ["load"]
command = "true"
"#;

pub async fn ui(base: &Config, runs: usize, requests: usize) -> anyhow::Result<UiBench> {
    let scratch = super::Scratch::create(base, "ui").await?;
    let result = run(scratch.config.clone(), runs, requests).await;
    scratch.finish(false).await;
    result
}

async fn run(config: Config, runs: usize, requests: usize) -> anyhow::Result<UiBench> {
    let pool = db::connect_and_migrate(&config.database).await?;
    let job = crate::dag::job::parse(std::path::Path::new("bench_grid.toml"), JOB)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // 10,000 hourly runs, most succeeded, some failed with their later
    // tasks upstream_failed, a few retried: the ledger as it looks after
    // a year and more of one job.
    sqlx::query(
        "WITH r AS (
             INSERT INTO job_runs (job, run_type, interval_start, interval_end, state, attempts,
                                   started_at, finished_at)
             SELECT 'bench_grid', 'scheduled', t, t + interval '1 hour',
                    CASE WHEN i % 97 = 0 THEN 'failed' ELSE 'success' END, 1,
                    t + interval '1 hour', t + interval '1 hour 2 minutes'
             FROM generate_series(1, $1) AS i,
                  LATERAL (SELECT timestamptz '2024-01-01' + (i - 1) * interval '1 hour' AS t) x
             RETURNING id, state)
         INSERT INTO task_instances (run_id, task, kind, state, attempt, started_at, finished_at,
                                     duration_ms)
         SELECT r.id, t.task, 'shell',
                CASE WHEN r.state = 'success' THEN 'success'
                     WHEN t.n < 3 THEN 'success' WHEN t.n = 3 THEN 'failed'
                     ELSE 'upstream_failed' END,
                CASE WHEN r.state = 'failed' AND t.n = 3 THEN 3 WHEN t.n > 3 AND r.state = 'failed'
                     THEN 0 ELSE 1 END,
                now(), now(), 1000
         FROM r, (VALUES (1, 'extract'), (2, 'validate'), (3, 'transform'), (4, 'load'),
                         (5, 'report')) AS t(n, task)",
    )
    .bind(runs as i64)
    .execute(&pool)
    .await?;
    sqlx::raw_sql("ANALYZE job_runs; ANALYZE task_instances")
        .execute(&pool)
        .await?;

    let mut config = config;
    config.api.host = "127.0.0.1".into();
    let stop = CancellationToken::new();
    let state = ApiState::new(
        Arc::new(config),
        Pools::new(pool),
        vec![Arc::new(job)],
        None,
        stop.clone(),
    );
    let app = server::router(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let client = reqwest::Client::new();
    let columns = 100;
    let targets = [
        (
            "JSON API /jobs/{job}/grid?runs=100",
            format!("http://{addr}/jobs/bench_grid/grid?runs={columns}"),
        ),
        (
            "grid page /ui/jobs/{job}?runs=100",
            format!("http://{addr}/ui/jobs/bench_grid?runs={columns}"),
        ),
        (
            "grid page, the oldest page",
            format!(
                "http://{addr}/ui/jobs/bench_grid?runs={columns}&before={}",
                crate::ui::url_encode(&format!(
                    "{}_{}",
                    (chrono::DateTime::parse_from_rfc3339("2024-01-01T00:00:00Z")?
                        + chrono::TimeDelta::hours(columns))
                    .to_rfc3339(),
                    i64::MAX
                ))
            ),
        ),
        (
            "calendar page, a full year (8,760 runs)",
            format!("http://{addr}/ui/jobs/bench_grid/calendar?year=2025"),
        ),
        (
            "durations page, 50 runs",
            format!("http://{addr}/ui/jobs/bench_grid/durations?runs=50"),
        ),
        (
            "durations page, 1,000 runs",
            format!("http://{addr}/ui/jobs/bench_grid/durations?runs=1000"),
        ),
        (
            "runs page, every job, 100 runs",
            format!("http://{addr}/ui/runs?limit=100"),
        ),
    ];
    let mut results = Vec::new();
    for (what, url) in targets {
        let mut times = Vec::with_capacity(requests);
        let mut bytes = 0;
        // Two unmeasured requests warm the connection pools.
        for i in 0..requests + 2 {
            let started = Instant::now();
            let response = client.get(&url).send().await?;
            let status = response.status();
            let body = response.bytes().await?;
            let took = started.elapsed();
            if !status.is_success() {
                anyhow::bail!("{url}: {status}");
            }
            if i >= 2 {
                times.push(took);
                bytes = body.len();
            }
        }
        times.sort();
        let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
        results.push((what.to_string(), at(0.5), at(0.95), bytes));
    }
    stop.cancel();
    server.abort();
    Ok(UiBench {
        runs,
        columns,
        requests,
        results,
    })
}
