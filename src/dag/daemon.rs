//! `hxjobs daemon`: tokio-cron-scheduler wakes the loop when a job's
//! schedule fires; a poll every `scheduler.poll_secs` catches anything a
//! wake-up missed (a DST change, a clock jump, a database that was down).
//! Each pass requeues runs of lost workers, enqueues due occurrences and
//! claims runs up to `max_parallel_runs`; finished runs free their slot.
//!
//! The jobs come from a [`Catalog`]: when it reloads (a changed file in
//! `jobs.dir`, or SIGHUP), the next pass schedules the new set, the cron
//! wake-ups follow it, and the daemon records which versions it has loaded
//! (`daemon_jobs`). Runs already running keep the version they started with.
//!
//! On Ctrl-C / SIGTERM nothing new is claimed, running runs stop before
//! their next task and get `shutdown_grace_secs` to finish; what is left is
//! stopped and handed back to the queue for the next daemon.

use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use chrono::Utc;
use tokio::sync::Notify;

use super::catalog::Catalog;
use super::scheduler::{reap_stale, Finished, Running, Scheduler};
use super::Job;

/// Runs until `stop` is cancelled, scheduling `catalog`'s jobs as they are
/// now. A pass also starts whenever `wake` is notified (schedules firing, a
/// run queued through the API) or the catalog reloads.
pub async fn run(
    mut scheduler: Scheduler,
    catalog: Arc<Catalog>,
    wake: Arc<Notify>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let settings = scheduler.config.scheduler.clone();
    let mut reloads = catalog.subscribe();
    let mut seen = *reloads.borrow_and_update();
    scheduler.jobs = catalog.current().jobs.clone();
    let mut cron = wakeups(&scheduler.jobs, &wake).await?;
    let mut recorded = false;
    tracing::info!(
        worker = %scheduler.worker, jobs = scheduler.jobs.len(),
        max_parallel_runs = settings.max_parallel_runs, "daemon started"
    );

    let mut running = Running::default();
    let poll = Duration::from_secs(settings.poll_secs);
    let watch = Duration::from_millis(settings.complete_poll_ms);
    let mut due = true;
    let mut last_pass = Instant::now();
    while !stop.is_cancelled() {
        let generation = *reloads.borrow_and_update();
        if generation != seen {
            seen = generation;
            scheduler.jobs = catalog.current().jobs.clone();
            if let Err(e) = cron.shutdown().await {
                tracing::warn!(error = %e, "old cron wake-ups did not stop cleanly");
            }
            cron = wakeups(&scheduler.jobs, &wake).await?;
            recorded = false;
        }
        if due {
            match pass(&scheduler, &mut running, &stop).await {
                Err(e) => {
                    tracing::warn!(error = %e, "scheduler pass failed; trying again at the next poll")
                }
                // After the heartbeat row exists: which versions this daemon runs.
                Ok(()) if !recorded => recorded = record_loaded(&scheduler, &catalog).await,
                Ok(()) => {}
            }
            last_pass = Instant::now();
        }
        due = true;
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep_until((last_pass + poll).into()) => {}
            _ = stop.cancelled() => {}
            _ = reloads.changed() => {}
            Some(done) = running.next(), if !running.is_empty() => log_finished(&done),
            // Between passes: has ingest completed a data-triggered interval?
            _ = tokio::time::sleep(watch), if watching(&scheduler.jobs) => {
                due = crate::dag::trigger::data_due(
                    &scheduler.config, &scheduler.pools.ledger, &scheduler.jobs, chrono::Utc::now(),
                )
                .await
                .unwrap_or(false);
            }
        }
    }

    tracing::info!(
        running = running.len(),
        grace_secs = settings.shutdown_grace_secs,
        "stopping: no new runs; running ones finish or are handed back"
    );
    if let Err(e) = cron.shutdown().await {
        tracing::warn!(error = %e, "cron wake-ups did not stop cleanly");
    }
    let grace = Duration::from_secs(settings.shutdown_grace_secs);
    let (finished, stopped) = running.shutdown(grace, &scheduler.pools.ledger).await;
    for done in finished {
        log_finished(&done);
    }
    if stopped > 0 {
        tracing::info!(
            runs = stopped,
            "runs stopped after the grace period and handed back"
        );
    }
    if let Err(e) =
        crate::ledger::daemons::stopped(&scheduler.pools.ledger, &scheduler.worker).await
    {
        tracing::debug!(error = %e, "daemon's stop not recorded");
    }
    tracing::info!("scheduler stopped");
    Ok(())
}

/// Whether some job is queued when ingest completes its interval.
fn watching(jobs: &[Arc<Job>]) -> bool {
    jobs.iter()
        .any(|j| matches!(j.trigger, super::job::Trigger::Complete { .. }) && j.wait_for.is_empty())
}

/// The cron wake-ups of `jobs`, started.
async fn wakeups(
    jobs: &[Arc<Job>],
    wake: &Arc<Notify>,
) -> anyhow::Result<tokio_cron_scheduler::JobScheduler> {
    let cron = tokio_cron_scheduler::JobScheduler::new().await?;
    for job in jobs {
        add_wakeup(&cron, job, wake.clone()).await;
    }
    cron.start().await?;
    Ok(cron)
}

/// Records the versions this daemon has loaded; whether that worked.
async fn record_loaded(scheduler: &Scheduler, catalog: &Catalog) -> bool {
    let set = catalog.current();
    let versions: Vec<crate::ledger::daemons::JobVersion> = set
        .iter()
        .map(|j| crate::ledger::daemons::JobVersion {
            worker: scheduler.worker.clone(),
            job: j.name.clone(),
            version: j.version.clone(),
            file: j.file.display().to_string(),
            loaded_at: set.since.get(&j.name).copied().unwrap_or_else(Utc::now),
        })
        .collect();
    let recorded =
        crate::ledger::daemons::record_jobs(&scheduler.pools.ledger, &scheduler.worker, &versions)
            .await;
    let recorded = match recorded {
        Ok(()) => {
            crate::ledger::versions::remember(&scheduler.pools.ledger, &set.jobs, &scheduler.worker)
                .await
        }
        Err(e) => Err(e),
    };
    match recorded {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "loaded job versions not recorded; trying again");
            false
        }
    }
}

/// Requeue lost runs, enqueue what is due, claim into free slots.
async fn pass(
    scheduler: &Scheduler,
    running: &mut Running,
    stop: &CancellationToken,
) -> Result<(), sqlx::Error> {
    let s = &scheduler.config.scheduler;
    let jobs = scheduler.jobs.len();
    crate::ledger::daemons::beat(
        &scheduler.pools.ledger,
        &scheduler.worker,
        jobs,
        running.len(),
    )
    .await?;
    reap_stale(&scheduler.pools.ledger, s).await?;
    crate::ledger::daemons::note_unloaded(&scheduler.pools.ledger, s.stale_after_secs).await?;
    scheduler.enqueue_due(Utc::now()).await?;
    for job in &scheduler.jobs {
        let free = s.max_parallel_runs.saturating_sub(running.len());
        if free == 0 || stop.is_cancelled() {
            break;
        }
        for run in scheduler.claim(job, free).await? {
            tracing::info!(job = %job.name, run_id = run.run_id, interval_start = %run.interval.start, "run claimed");
            running.spawn(
                scheduler.config.clone(),
                scheduler.pools.clone(),
                job.clone(),
                run,
                stop.clone(),
                Instant::now(),
            );
        }
    }
    Ok(())
}

/// Registers a cron wake-up for `job`; without one the poll still finds it.
async fn add_wakeup(cron: &tokio_cron_scheduler::JobScheduler, job: &Job, wake: Arc<Notify>) {
    // hxjobs schedules have five fields; the wake-up library wants seconds first.
    let Some(schedule) = &job.schedule else {
        return; // queued by completeness alone
    };
    let text = if schedule.text.split_whitespace().count() == 5 {
        format!("0 {}", schedule.text)
    } else {
        schedule.text.clone()
    };
    let made = tokio_cron_scheduler::Job::new_async_tz(text.as_str(), job.timezone, move |_, _| {
        let wake = wake.clone();
        Box::pin(async move { wake.notify_one() })
    });
    let added = match made {
        Ok(wakeup) => cron.add(wakeup).await.map(|_| ()),
        Err(e) => Err(e),
    };
    if let Err(e) = added {
        tracing::warn!(
            job = %job.name, schedule = %schedule.text, error = %e,
            "no cron wake-up for this job; the poll picks its runs up instead"
        );
    }
}

fn log_finished(done: &Finished) {
    match &done.result {
        Ok(report) => tracing::info!(
            job = %done.job, run_id = done.run.run_id, state = report.state(),
            interval_start = %done.run.interval.start, secs = done.elapsed.as_secs_f64(),
            "run finished"
        ),
        Err(e) => tracing::error!(
            job = %done.job, run_id = done.run.run_id, error = %e,
            "run could not be recorded; it will be reaped as lost"
        ),
    }
}
