//! `hxjobs serve`: the REST API (and live stats) alone; `hxjobs daemon`
//! starts the same next to the scheduler.

use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use tokio::task::JoinHandle;

use super::{service_signals, CliResult, Failure};
use crate::config::Config;
use crate::dag::catalog::Catalog;
use crate::db::Pools;
use crate::live::LiveStats;
use crate::server;
use crate::web::ApiState;

/// How long a stopping API waits for open connections (a browser's
/// live streams among them) before it closes them.
const CONNECTIONS_GRACE: Duration = Duration::from_secs(3);

/// How long a stopping process waits for the live-stats consumer to close.
const CONSUMER_GRACE: Duration = Duration::from_secs(3);

pub struct Running {
    api: JoinHandle<anyhow::Result<()>>,
    /// The live-stats consumer's start (off the runtime: it asks the broker
    /// for every partition first), then its thread.
    consumer: Option<JoinHandle<Option<std::thread::JoinHandle<()>>>>,
}

/// Starts the API (and the live-stats consumer when enabled) until `stop`.
/// Fails at once when the API's address cannot be listened on.
pub async fn start(
    config: &Config,
    pools: Pools,
    jobs: Arc<Catalog>,
    wake: Option<Arc<tokio::sync::Notify>>,
    stop: CancellationToken,
) -> Result<Running, Failure> {
    let listener = server::bind(&config.api).await.map_err(Failure::from)?;
    crate::metrics::install();
    let live = config.live_stats.enabled.then(|| {
        LiveStats::new(
            &config.live_stats.consumer_group,
            config.live_stats.max_models,
        )
    });
    if let Some(live) = &live {
        live.spawn_publisher(stop.clone());
    }
    let mut state = ApiState::new(
        Arc::new(config.clone()),
        pools,
        Vec::new(),
        live.clone(),
        stop.clone(),
    );
    state.edit().ops.jobs = jobs;
    state.edit().ops.wake = wake;
    // The API answers at once; /stats says 503 until the consumer reads.
    let api = tokio::spawn(server::serve(listener, state, CONNECTIONS_GRACE));
    let consumer = live.map(|live| {
        let config = config.clone();
        tokio::task::spawn_blocking(move || match live.spawn_consumer(&config, stop) {
            Ok(handle) => Some(handle),
            Err(e) => {
                tracing::warn!(error = %e, "live stats not started; /stats answers 503");
                live.set_unavailable(format!("the live-stats consumer did not start: {e}"));
                None
            }
        })
    });
    Ok(Running { api, consumer })
}

/// Waits for a started API (after `stop` was set) and its consumer, saying
/// what it waits for.
pub async fn finish(running: Running) -> Result<(), Failure> {
    let started = Instant::now();
    tracing::info!(
        grace_secs = CONNECTIONS_GRACE.as_secs(),
        "waiting for open API connections to finish"
    );
    let served = running
        .api
        .await
        .map_err(|e| Failure::from(format!("API task: {e}")))?;
    if let Some(c) = running.consumer {
        tracing::info!("waiting for the live-stats consumer to close");
        let joined = tokio::time::timeout(CONSUMER_GRACE, async move {
            if let Ok(Some(thread)) = c.await {
                let _ = tokio::task::spawn_blocking(move || thread.join()).await;
            }
        })
        .await;
        if joined.is_err() {
            tracing::warn!(
                grace_secs = CONSUMER_GRACE.as_secs(),
                "the live-stats consumer did not close in time; leaving it"
            );
        }
    }
    tracing::debug!(
        secs = started.elapsed().as_secs_f64(),
        "API and live stats stopped"
    );
    served.map_err(Failure::from)
}

/// Reloads `catalog` from `jobs.dir` every `jobs.reload_secs` and on SIGHUP.
pub fn watch_jobs(
    config: &Config,
    catalog: &Arc<Catalog>,
    reload: Arc<tokio::sync::Notify>,
    stop: CancellationToken,
) {
    let every = Duration::from_secs(config.jobs.reload_secs);
    tokio::spawn(catalog.clone().watch(every, reload, stop));
}

pub async fn serve(config: &Config) -> CliResult {
    let catalog = Arc::new(super::catalog(config)?);
    let pools = Pools::new(crate::db::connect_and_migrate(&config.database).await?);
    let signals = service_signals();
    watch_jobs(
        config,
        &catalog,
        signals.reload.clone(),
        signals.stop.clone(),
    );
    // Deadlines fire and notifications go out with no scheduler running.
    crate::notify::spawn(
        Arc::new(config.clone()),
        pools.ledger.clone(),
        catalog.clone(),
        signals.stop.clone(),
    );
    let running = start(config, pools, catalog, None, signals.stop.clone()).await?;
    let outcome = finish(running).await;
    tracing::info!(
        signal = signals.cause.get().copied().unwrap_or("none"),
        "API stopped"
    );
    outcome
}
