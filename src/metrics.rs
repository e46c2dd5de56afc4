//! Prometheus metrics (the `metrics` facade with its Prometheus exporter).
//! Names follow the platform's specification where it has one:
//! `kafka_events_total`, `kafka_consumer_lag`, `batch_processing_success_rate`,
//! `event_processing_total`, `event_processing_duration_seconds`; hxjobs' own
//! are prefixed `hxjobs_`.

use std::sync::OnceLock;

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
            Ok(h) => Some(h),
            Err(e) => {
                tracing::warn!(error = %e, "metrics recorder not installed");
                None
            }
        }
    });
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

/// Gauges read from the database at scrape time: the run ledger's success
/// rate over the last 24 hours, stored events per topic and the lag of
/// ingest behind the broker as last recorded.
pub async fn refresh(pool: &PgPool, config: &Config) {
    let window = "24h";
    if let Ok(rows) = sqlx::query_as::<_, (String, i64, i64)>(
        "SELECT job, count(*) FILTER (WHERE state = 'success'), count(*) FILTER (WHERE state IN ('success', 'failed'))
         FROM job_runs WHERE finished_at > now() - interval '24 hours' GROUP BY job",
    )
    .fetch_all(pool)
    .await
    {
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
    let offsets = sqlx::query_as::<_, (String, i32, i64)>(
        "SELECT topic, partition, next_offset FROM consumer_offsets WHERE consumer_group = $1",
    )
    .bind(&config.kafka.group_id)
    .fetch_all(pool)
    .await
    .unwrap_or_default();
    if offsets.is_empty() {
        return;
    }
    let kafka = config.kafka.clone();
    let group = config.kafka.group_id.clone();
    let _ = tokio::task::spawn_blocking(move || {
        static CLIENT: OnceLock<Option<rdkafka::consumer::BaseConsumer>> = OnceLock::new();
        let Some(client) = CLIENT
            .get_or_init(|| crate::kafka::client_config(&kafka).create().ok())
            .as_ref()
        else {
            return;
        };
        use rdkafka::consumer::Consumer;
        for (topic, partition, next) in offsets {
            if let Ok((_, high)) =
                client.fetch_watermarks(&topic, partition, std::time::Duration::from_secs(1))
            {
                metrics::gauge!(
                    "kafka_consumer_lag",
                    "group" => group.clone(),
                    "topic" => topic,
                    "partition" => partition.to_string()
                )
                .set((high - next).max(0) as f64);
            }
        }
    })
    .await;
}

/// Records one finished task attempt.
pub fn task_finished(job: &str, kind: &str, state: &str, seconds: f64) {
    metrics::counter!("hxjobs_task_runs_total", "job" => job.to_string(), "kind" => kind.to_string(), "state" => state.to_string())
        .increment(1);
    metrics::histogram!("hxjobs_task_duration_seconds", "job" => job.to_string(), "kind" => kind.to_string())
        .record(seconds);
}

/// Records one finished run.
pub fn run_finished(job: &str, state: &str, seconds: f64) {
    metrics::counter!("hxjobs_job_runs_total", "job" => job.to_string(), "state" => state.to_string())
        .increment(1);
    metrics::histogram!("hxjobs_job_run_duration_seconds", "job" => job.to_string())
        .record(seconds);
}
