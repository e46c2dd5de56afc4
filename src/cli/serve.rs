//! `hxjobs serve`: the REST API (and live stats) alone; `hxjobs daemon`
//! starts the same next to the scheduler.

use std::sync::Arc;
use tokio_util::sync::CancellationToken;

use tokio::task::JoinHandle;

use super::{stop_on_signal, CliResult, Failure};
use crate::api::{self, ApiState};
use crate::config::Config;
use crate::dag::Job;
use crate::db::Pools;
use crate::live::LiveStats;

pub struct Running {
    api: JoinHandle<anyhow::Result<()>>,
    consumer: Option<std::thread::JoinHandle<()>>,
}

/// Starts the API (and the live-stats consumer when enabled) until `stop`.
pub fn start(
    config: &Config,
    pools: Pools,
    jobs: Vec<Arc<Job>>,
    wake: Option<Arc<tokio::sync::Notify>>,
    invalid_job_files: Vec<String>,
    stop: CancellationToken,
) -> Result<Running, Failure> {
    crate::metrics::install();
    let (live, consumer) = if config.live_stats.enabled {
        let live = LiveStats::new(
            &config.live_stats.consumer_group,
            config.live_stats.max_models,
        );
        match live.spawn_consumer(config, stop.clone()) {
            Ok(handle) => (Some(live), Some(handle)),
            Err(e) => {
                tracing::warn!(error = %e, "live stats not started; /stats answers 503");
                (None, None)
            }
        }
    } else {
        (None, None)
    };
    let mut state = ApiState::new(Arc::new(config.clone()), pools, jobs, live, stop);
    state.wake = wake;
    state.invalid_job_files = Arc::new(invalid_job_files);
    Ok(Running {
        api: tokio::spawn(api::serve(state)),
        consumer,
    })
}

/// Waits for a started API (after `stop` was set) and its consumer.
pub async fn finish(running: Running) -> Result<(), Failure> {
    let served = running
        .api
        .await
        .map_err(|e| Failure::from(format!("API task: {e}")))?;
    if let Some(c) = running.consumer {
        let _ = tokio::task::spawn_blocking(move || c.join()).await;
    }
    served.map_err(Failure::from)
}

pub async fn serve(config: &Config) -> CliResult {
    let loaded = super::load_jobs(config)?;
    let invalid = loaded.errors.iter().map(ToString::to_string).collect();
    let jobs = loaded.jobs;
    let pools = Pools::new(crate::db::connect_and_migrate(&config.database).await?);
    let stop = stop_on_signal();
    let jobs: Vec<Arc<Job>> = jobs.into_iter().map(Arc::new).collect();
    // Deadlines fire and notifications go out with no scheduler running.
    crate::notify::spawn(
        Arc::new(config.clone()),
        pools.ledger.clone(),
        jobs.clone(),
        stop.clone(),
    );
    let running = start(config, pools, jobs, None, invalid, stop)?;
    finish(running).await
}
