//! Prometheus metrics (the `metrics` facade with its Prometheus exporter).
//! Names follow the platform's specification where it has one:
//! `kafka_events_total`, `kafka_consumer_lag`, `batch_processing_success_rate`,
//! `event_processing_total`, `event_processing_duration_seconds`; hxjobs' own
//! are prefixed `hxjobs_`. Every metric has a description (`# HELP`).
//!
//! A scrape never waits on PostgreSQL or the broker: values read from them
//! are refreshed in the background ([`spawn_refresher`]) and a scrape only
//! renders what is in memory, so metrics stay visible during the outages
//! the alert rules exist for; `hxjobs_dependency_up` says which is down.

use std::collections::{BTreeMap, HashMap};
use std::sync::{LazyLock, OnceLock, RwLock};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use sqlx::PgPool;

use crate::config::Config;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the recorder once per process; later calls do nothing.
pub fn install() {
    // Histograms with buckets (not summaries), so alert rules and dashboards
    // can aggregate them with histogram_quantile.
    const BUCKETS: [f64; 14] = [
        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 30.0, 120.0, 600.0,
    ];
    HANDLE.get_or_init(|| {
        match PrometheusBuilder::new()
            .set_buckets(&BUCKETS)
            .and_then(|b| b.install_recorder())
        {
            Ok(h) => {
                describe();
                Some(h)
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics recorder not installed");
                None
            }
        }
    });
}

/// One description per metric, shown as `# HELP` in the exposition.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        "hxjobs_api_connections",
        "Connections open to the API now (past api.max_connections only /health and /metrics answer)."
    );
    describe_gauge!(
        "hxjobs_api_websockets",
        "WebSocket streams open now (at most api.max_websockets)."
    );
    describe_gauge!(
        "hxjobs_api_streams",
        "Server-sent event streams open now (at most api.max_sse_streams)."
    );
    describe_gauge!(
        "hxjobs_pool_slots",
        "Slots of each pool ([pools.NAME] slots)."
    );
    describe_gauge!(
        "hxjobs_pool_used",
        "Slots of each pool held by running task attempts, across daemons."
    );
    describe_gauge!(
        "hxjobs_pool_waiting",
        "Tasks waiting for a slot of each pool, across daemons."
    );
    describe_counter!(
        "hxjobs_checks_total",
        "Data checks run, by job, check and outcome (pass, fail, warn, error, skipped)."
    );
    describe_counter!(
        "kafka_events_total",
        "Messages read by the live-stats consumer, per topic (rejected ones included)."
    );
    describe_gauge!(
        "kafka_consumer_lag",
        "Messages the ingest consumer group has not stored yet: the broker's end offset minus the stored offset, per partition (refreshed in the background)."
    );
    describe_counter!(
        "event_processing_total",
        "Messages ingest handled, per topic and outcome (stored, duplicate, dead_letter)."
    );
    describe_histogram!(
        "event_processing_duration_seconds",
        "Time to write one ingest batch to PostgreSQL, in seconds."
    );
    describe_gauge!(
        "batch_processing_success_rate",
        "Share of runs that succeeded among runs finished in the window, per job and for all jobs."
    );
    describe_counter!(
        "hxjobs_job_runs_total",
        "Finished runs, per job and final state."
    );
    describe_histogram!(
        "hxjobs_job_run_duration_seconds",
        "Duration of finished runs, per job, in seconds."
    );
    describe_counter!(
        "hxjobs_task_runs_total",
        "Finished task attempts, per job, task kind and state."
    );
    describe_histogram!(
        "hxjobs_task_duration_seconds",
        "Duration of task attempts, per job and task kind, in seconds."
    );
    describe_counter!(
        "hxjobs_api_requests_total",
        "API requests answered, per method, route and status."
    );
    describe_histogram!(
        "hxjobs_api_request_duration_seconds",
        "API request handling time, per route, in seconds."
    );
    describe_gauge!(
        "dead_letters_unpublished",
        "Dead letters stored but not yet acknowledged by the dead-letter topic (published by the next drains)."
    );
    describe_gauge!(
        "hxjobs_job_files_invalid",
        "Job files in jobs.dir that did not load (see /health and `hxjobs jobs check`)."
    );
    describe_gauge!(
        "hxjobs_dependency_up",
        "1 when the dependency (postgresql, kafka) answered its last check, else 0."
    );
    describe_gauge!(
        "hxjobs_ingest_partitions_stalled",
        "Event partitions with data on the broker past their stored position whose position has not moved for ingest.stalled_after_secs (0 when ingest keeps up)."
    );
    describe_gauge!(
        "live_events_per_second",
        "Live stats: events per second over the window, per topic or model."
    );
    describe_gauge!(
        "live_error_rate",
        "Live stats: failed requests / requests over the window (docs/measures.md)."
    );
    describe_gauge!(
        "live_error_events_per_second",
        "Live stats: error events per second over the window."
    );
    describe_gauge!(
        "live_latency_p95_ms",
        "Live stats: 95th percentile of request latency over the window, in ms."
    );
    describe_gauge!(
        "live_tokens_per_second",
        "Live stats: prompt + completion tokens per second over the window."
    );
    describe_gauge!(
        "live_cost_usd_per_second",
        "Live stats: request cost in USD per second over the window."
    );
    describe_gauge!(
        "live_stats_lag_seconds",
        "Live stats: seconds since the consumer last stood at every partition's end (0 while caught up)."
    );
    describe_gauge!(
        "live_stats_lag_messages",
        "Live stats: messages between the consumer's position and the partition ends, per topic."
    );
    describe_counter!(
        "hxjobs_storage_bytes_total",
        "Bytes hxjobs wrote to and read from its object store (reports, archives), by direction."
    );
    describe_counter!(
        "live_stats_rejected_total",
        "Live stats: messages that were not valid events (counted, then skipped)."
    );
}

/// The text exposition of every metric.
pub fn render() -> String {
    install();
    HANDLE
        .get()
        .and_then(|h| h.as_ref())
        .map(PrometheusHandle::render)
        .unwrap_or_default()
}

/// Sets `hxjobs_dependency_up` for one dependency.
pub fn dependency_up(dependency: &'static str, up: bool) {
    metrics::gauge!("hxjobs_dependency_up", "dependency" => dependency)
        .set(f64::from(u8::from(up)));
}

/// Adds to `hxjobs_storage_bytes_total{direction}` ("written", "read").
pub fn storage_bytes(direction: &'static str, bytes: u64) {
    metrics::counter!("hxjobs_storage_bytes_total", "direction" => direction).increment(bytes);
}

/// Sets `hxjobs_api_connections` (open now).
pub fn api_connections(open: usize) {
    metrics::gauge!("hxjobs_api_connections").set(open as f64);
}

/// Sets `hxjobs_api_streams` (server-sent event streams open now).
pub fn api_streams(open: usize) {
    metrics::gauge!("hxjobs_api_streams").set(open as f64);
}

/// Sets `hxjobs_ingest_partitions_stalled`.
/// WebSocket streams open now.
pub fn api_websockets(open: usize) {
    metrics::gauge!("hxjobs_api_websockets").set(open as f64);
}

pub fn ingest_stalled(partitions: usize) {
    metrics::gauge!("hxjobs_ingest_partitions_stalled").set(partitions as f64);
}

/// Refreshes the gauges read from PostgreSQL and the broker every `every`
/// until `stop`, each pass bounded in time, so `/metrics` never waits.
pub fn spawn_refresher(
    pool: PgPool,
    config: std::sync::Arc<Config>,
    every: std::time::Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    tokio::spawn(async move {
        while !stop.is_cancelled() {
            let pass = tokio::time::timeout(every * 3, refresh(&pool, &config)).await;
            if pass.is_err() {
                tracing::debug!("metrics refresh took too long; values kept from the last pass");
            }
            tokio::time::sleep(every).await;
        }
    });
}

/// Ingest's lag per partition as the refresher last measured it: messages
/// behind the partition's end, and when.
type LagMap = HashMap<(String, i32), (i64, chrono::DateTime<chrono::Utc>)>;
static LAG: LazyLock<RwLock<LagMap>> = LazyLock::new(Default::default);

/// Ingest's lag per topic (its partitions summed) as last measured, with
/// the oldest measurement's time; empty before the first.
pub fn lag_by_topic() -> BTreeMap<String, (i64, chrono::DateTime<chrono::Utc>)> {
    let mut out: BTreeMap<String, (i64, chrono::DateTime<chrono::Utc>)> = BTreeMap::new();
    if let Ok(lag) = LAG.read() {
        for ((topic, _), (behind, at)) in lag.iter() {
            let e = out.entry(topic.clone()).or_insert((0, *at));
            e.0 += behind;
            e.1 = e.1.min(*at);
        }
    }
    out
}

/// Gauges read from the database: the run ledger's success rate over the
/// last 24 hours, and the lag of ingest behind the broker.
async fn refresh(pool: &PgPool, config: &Config) {
    let window = "24h";
    if let Ok(rows) = crate::ledger::success_rates(pool).await {
        let (mut ok, mut all) = (0i64, 0i64);
        for (job, s, n) in rows {
            ok += s;
            all += n;
            if n > 0 {
                metrics::gauge!("batch_processing_success_rate", "job" => job, "window" => window)
                    .set(s as f64 / n as f64);
            }
        }
        if all > 0 {
            metrics::gauge!("batch_processing_success_rate", "job" => "all", "window" => window)
                .set(ok as f64 / all as f64);
        }
    }
    pool_gauges(pool, config).await;
    let Ok(progress) = crate::ingest::progress::Progress::read(config, pool).await else {
        return;
    };
    if progress.partitions.is_empty() {
        return;
    }
    let (kafka, group) = (config.kafka.clone(), config.kafka.group_id.clone());
    let topics = config.topics.event_topic_names();
    let _ = tokio::task::spawn_blocking(move || {
        static CLIENT: OnceLock<Option<rdkafka::consumer::BaseConsumer>> = OnceLock::new();
        let Some(client) = CLIENT
            .get_or_init(|| crate::kafka::client_config(&kafka).create().ok())
            .as_ref()
        else {
            return;
        };
        // Every partition's end in one metadata and one offsets request.
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        let Ok(ends) = crate::kafka::partition_ends(client, &kafka, &names) else {
            return;
        };
        let mut progress = progress;
        let now = chrono::Utc::now();
        progress.measure(&ends, now);
        for p in progress.partitions {
            let Some(behind) = p.lag else { continue };
            if let Ok(mut lag) = LAG.write() {
                lag.insert((p.topic.clone(), p.partition), (behind, now));
            }
            metrics::gauge!(
                "kafka_consumer_lag",
                "group" => group.clone(),
                "topic" => p.topic,
                "partition" => p.partition.to_string()
            )
            .set(behind as f64);
        }
    })
    .await;
}

/// Each pool's slots, and how many are held and waited for now.
async fn pool_gauges(pool: &PgPool, config: &Config) {
    if config.pools.is_empty() {
        return;
    }
    let stale = config.scheduler.stale_after_secs;
    let Ok(holders) = crate::ledger::pools::holders(pool, stale).await else {
        return;
    };
    for (name, p) in &config.pools {
        let of = holders.iter().filter(|h| &h.pool == name);
        let used = of.clone().filter(|h| h.granted_at.is_some()).count();
        let waiting = of.filter(|h| h.granted_at.is_none()).count();
        metrics::gauge!("hxjobs_pool_slots", "pool" => name.clone()).set(p.slots as f64);
        metrics::gauge!("hxjobs_pool_used", "pool" => name.clone()).set(used as f64);
        metrics::gauge!("hxjobs_pool_waiting", "pool" => name.clone()).set(waiting as f64);
    }
}

/// Records one finished task attempt.
pub fn task_finished(job: &str, kind: &str, state: &str, seconds: f64) {
    metrics::counter!("hxjobs_task_runs_total", "job" => job.to_string(), "kind" => kind.to_string(), "state" => state.to_string())
        .increment(1);
    metrics::histogram!("hxjobs_task_duration_seconds", "job" => job.to_string(), "kind" => kind.to_string())
        .record(seconds);
}

/// Records one data check's outcome.
pub fn check_finished(job: &str, check: &str, outcome: &str) {
    metrics::counter!("hxjobs_checks_total", "job" => job.to_string(), "check" => check.to_string(), "outcome" => outcome.to_string())
        .increment(1);
}

/// Records one finished run.
pub fn run_finished(job: &str, state: &str, seconds: f64) {
    metrics::counter!("hxjobs_job_runs_total", "job" => job.to_string(), "state" => state.to_string())
        .increment(1);
    metrics::histogram!("hxjobs_job_run_duration_seconds", "job" => job.to_string())
        .record(seconds);
}
